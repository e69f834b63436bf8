"""Saliency in the app: "where in this image does this text match?", drawn over the image.

A map comes from core.saliency (relevance by default: the method that won the pointing game,
benchmarks/results/pointing_game.json) on the square the model sees, is upsampled with
core.saliency.upsample, coloured with a hand-made inferno-like colormap (no matplotlib) and blended
over the image at a chosen opacity. A `SaliencyView` keeps the map and the small base image, so the
opacity slider re-blends without running the model again.

Three places use it: the Search tab's selected hit (for the query), the zero-shot tab's accordion
"Where does the model look?" (for a class's template ensemble), and the /saliency endpoint (any image
and text), whose panel sits in the Search tab.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import numpy as np
import torch
from PIL import Image, ImageDraw

from core.errors import UserInputError
from core.pointing import refined_peaks
from core.saliency import DEFAULT_METHOD, METHODS, TEXT_FREE_METHODS, saliency_map, to_unit, upsample
from core.zeroshot import ensemble_head, template_embeddings
from demo.inputs.checks import text as checked_text
from demo.inputs.images import display_name, open_image
from demo.platform.config import EXAMPLES_DIR
from demo.platform.contract import get_model, running, user_errors
from demo.platform.gpu import ZERO_GPU, _resolve, embed_texts, on_gpu
from demo.platform.services import model_key

METHOD_INFO = {"relevance": "gradient-weighted attention relevance (Chefer et al.): the default, best of the text-dependent maps in our pointing game",
               "patch_text": "each patch token's cosine with the text (cheap; weak on CLIP)",
               "rollout": "attention rollout: ignores the text (where the model looks at all)",
               "centre": "a centre bump: the baseline any map must beat"}
# inferno at 0, 1/7, ..., 1 (dark purple to pale yellow), linearly interpolated in between
_ANCHORS = np.array([(0, 0, 4), (40, 11, 84), (101, 21, 110), (159, 42, 99), (212, 72, 66), (245, 125, 21),
                     (250, 193, 39), (252, 255, 164)], np.float32)
DEFAULT_OPACITY = 0.7  # at the map's peak; lower values cover less
MIN_SIDE, MAX_SIDE = 256, 448  # the overlay's side: small images enlarged (crisp pixels), large ones shrunk
MAX_TEXT_CHARS = 1000
EXAMPLE, EXAMPLE_TEXT = EXAMPLES_DIR / "shapes_purple_star.png", "a purple star"  # the /saliency panel's starting inputs


def colormap(unit: np.ndarray) -> np.ndarray:
    """Values in [0, 1] [H, W] -> uint8 RGB [H, W, 3] (inferno-like: low dark purple, high pale yellow)."""
    x = np.clip(np.nan_to_num(unit, nan=0.0), 0.0, 1.0) * (len(_ANCHORS) - 1)
    lo = np.minimum(x.astype(np.int64), len(_ANCHORS) - 2)
    frac = (x - lo)[..., None]
    return np.round(_ANCHORS[lo] * (1 - frac) + _ANCHORS[lo + 1] * frac).astype(np.uint8)  # [H, W, 3]


def model_square(clip, image: Image.Image) -> Image.Image:
    """The part of `image` the model sees: its centre square when the preprocessing centre-crops
    (CLIP's does, after resizing the short side), else the whole image."""
    if getattr(clip.processor, "do_center_crop", True) and image.width != image.height:
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        return image.crop((left, top, left + side, top + side))
    return image


def display_base(square: Image.Image) -> np.ndarray:
    """The square at display size, uint8 [S, S, 3]: small images enlarged with crisp pixels, large ones shrunk."""
    side = square.width
    if side < MIN_SIDE:
        square = square.resize((MIN_SIDE * square.width // side, MIN_SIDE * square.height // side), Image.NEAREST)
    elif side > MAX_SIDE:
        square = square.resize((MAX_SIDE, MAX_SIDE * square.height // square.width), Image.LANCZOS)
    return np.asarray(square.convert("RGB"), np.uint8)


@dataclass
class SaliencyView:
    """One computed map and what it is drawn over: enough to re-blend at any opacity.

    base: uint8 [S, S, 3], the square the model sees at display size; grid_map: float32 [g, g], the raw map.
    """

    base: np.ndarray
    grid_map: np.ndarray
    method: str
    target: str  # what the map is for, in words ('the text "a red circle"', 'the class "circle"')
    image_name: str = ""


@on_gpu(lambda *args, **kwargs: 20)
def _saliency(model, image: Image.Image, target, method: str) -> np.ndarray:
    """core.saliency.saliency_map inside a GPU function (ZeroGPU); `model` is a Clip or its name."""
    return saliency_map(_resolve(model), image, target, method)


def compute(clip, image: Image.Image, target: str | torch.Tensor, method: str, what: str, image_name: str = "") -> SaliencyView:
    """The map of `target` (a text, or an embedding [D]: a query, a class's template ensemble) over `image`."""
    method = method or DEFAULT_METHOD
    if method not in METHODS:
        raise UserInputError(f"unknown saliency method {method!r}; choose one of {', '.join(METHODS)}")
    square = model_square(clip, image)
    grid = _saliency(clip.source if ZERO_GPU else clip, square, target, method)  # [g, g]
    return SaliencyView(display_base(square), grid, method, what, image_name)


def peak_point(grid_map: np.ndarray) -> tuple[float, float]:
    """Where the map points, as (row, col) fractions of the image's side: its peak located below the
    patch size (core.pointing.refined_peaks, the pointing game's peak); cell i spans [i/g, (i+1)/g)."""
    rows, cols = refined_peaks(grid_map[None])
    g_rows, g_cols = grid_map.shape
    return float((rows[0] + 0.5) / g_rows), float((cols[0] + 0.5) / g_cols)


def overlay(view: SaliencyView, opacity: float = DEFAULT_OPACITY) -> Image.Image:
    """The map, upsampled bilinearly to the base's size and coloured, over the image: each pixel's heat
    covers it in proportion to its value, up to `opacity` (0 to 1) where the map peaks. So the image
    stays visible where the map is low, and a dark image does not vanish under the colormap's dark end.
    A ring (white inside black) marks the peak (`peak_point`); opacity 0 shows the image alone."""
    opacity = min(1.0, max(0.0, float(opacity)))
    h, w = view.base.shape[:2]
    unit = to_unit(upsample(view.grid_map, (h, w)))  # [h, w] in [0, 1]
    alpha = (opacity * unit)[..., None]  # [h, w, 1]
    blend = (1 - alpha) * view.base.astype(np.float32) + alpha * colormap(unit).astype(np.float32)
    out = Image.fromarray(np.round(blend).astype(np.uint8))
    if opacity > 0:
        fy, fx = peak_point(view.grid_map)
        y, x, r = fy * h, fx * w, max(5.0, min(h, w) / 28)
        draw = ImageDraw.Draw(out)
        draw.ellipse((x - r - 1, y - r - 1, x + r + 1, y + r + 1), outline=(0, 0, 0), width=4)
        draw.ellipse((x - r, y - r, x + r, y + r), outline=(255, 255, 255), width=2)
    return out


def saliency_data(view: SaliencyView, decimals: int = 5) -> dict:
    """The map as JSON: method, target, grid size, the raw values [g][g] (row 0 at the top), the peak
    cell, and the point the ring marks (`peak_point`: fractions of the image's side, 0 at the top left)."""
    g = view.grid_map
    peak = np.unravel_index(int(np.argmax(g)), g.shape)
    fy, fx = peak_point(g)
    return {"method": view.method, "target": view.target, "image": view.image_name, "grid": list(g.shape),
            "min": round(float(g.min()), decimals), "max": round(float(g.max()), decimals),
            "peak": {"row": int(peak[0]), "col": int(peak[1])}, "point": {"y": round(fy, 4), "x": round(fx, 4)},
            "map": np.round(g.astype(np.float64), decimals).tolist()}


def saliency_note(view: SaliencyView) -> str:
    """What the overlay shows, in one short paragraph."""
    g = view.grid_map.shape[0]
    ignores = " It ignores the text." if view.method in TEXT_FREE_METHODS else ""
    return (f"**{view.method}** map of {view.target}: {METHOD_INFO[view.method]}.{ignores} One value per patch "
            f"({g} × {g}), scaled to [0, 1] for this image: **pale yellow = most**, through red and purple, to "
            "uncoloured = least. The ring marks its peak, located within the patch from its neighbours (the "
            "pointing game's peak). The image is the square the model sees (photos are centre-cropped).")


def method_dropdown(elem_id: str) -> gr.Dropdown:
    """The method picker, relevance first."""
    return gr.Dropdown(list(METHODS), value=DEFAULT_METHOD, label="saliency method", elem_id=elem_id,
                       info="relevance is the default (pointing game: 88% of its peaks on the named object)")


def opacity_slider(elem_id: str) -> gr.Slider:
    return gr.Slider(0.0, 1.0, value=DEFAULT_OPACITY, step=0.05, label="heatmap opacity",
                     info="at the map's peak; lower values cover less", elem_id=elem_id)


def reblend(view, opacity):
    """Redraw an overlay at another opacity (no model call); nothing to do before a map exists."""
    return gr.skip() if view is None else overlay(view, opacity)


def class_choices(scores) -> tuple[list[tuple[str, str]], str]:
    """The zero-shot classes ranked by the first image's probability (at the model's scale): choices and the top one."""
    probs = (scores.model_scale * scores.cosines[0]).softmax(-1)  # [C]
    order = probs.argsort(descending=True).tolist()[:200]
    return [(f"{scores.classnames[j]} · {float(probs[j]):.0%}", scores.classnames[j]) for j in order], scores.classnames[order[0]]


def class_vector(ctx, clip, scores, class_name: str) -> torch.Tensor:
    """A class's template ensemble [D]: its row of the zero-shot head when that is still in the services'
    memory cache, else encoded now from its templates alone (a few prompts; no new cache entry)."""
    cached = ctx.services.heads.get((model_key(clip), tuple(scores.classnames), tuple(scores.templates)))
    if cached is not None:
        return cached.head[cached.classnames.index(class_name)]
    return ensemble_head(template_embeddings(clip, [class_name], list(scores.templates), encode=embed_texts))[0]


def build_zero_shot_saliency(ctx, model_state: gr.State, image: gr.Image, files: gr.File, scores: gr.State) -> None:
    """The zero-shot tab's accordion "Where does the model look?": the saliency of the top class (or a
    picked one) for the first image, for the class's template ensemble (the vector that scored it).
    It is computed only while the accordion is open: on opening, after each classification, and on a pick."""
    is_open, view = gr.State(False), gr.State(None, time_to_live=3600)
    with gr.Accordion("Where does the model look? (saliency of a class on the first image)", open=False,
                      elem_id="zs-saliency") as accordion:
        with gr.Row():
            with gr.Column(scale=1, min_width=260):
                classname = gr.Dropdown([], label="class (ranked by probability)", elem_id="zs-sal-class")
                method = method_dropdown("zs-sal-method")
                opacity = opacity_slider("zs-sal-opacity")
                note = gr.Markdown("Classify an image first; the map of its top class shows here.", label="About the map",
                                   elem_id="zs-sal-note")
            with gr.Column(scale=1, min_width=260):
                picture = gr.Image(None, type="pil", label="saliency over the image", interactive=False, height=340,
                                   elem_id="zs-sal-image", buttons=["download"])

    def first_image(image_path, file_list):
        items = ([image_path] if image_path else []) + list(file_list or [])
        return items[0] if items else None

    @user_errors
    def show(scores_, image_path, file_list, class_name, method_name, opacity_value, model_name, opened,
             request: gr.Request = None):
        if not opened or scores_ is None:
            return gr.skip(), gr.skip(), gr.skip()
        first = first_image(image_path, file_list)
        if first is None or display_name(first) != scores_.names[0]:
            return gr.skip(), "The image changed since it was classified: press **Classify** first.", gr.skip()
        class_name = class_name if class_name in scores_.classnames else class_choices(scores_)[1]
        ctx.check_own_uploads(request, first)
        with running(ctx, request, "zero_shot_saliency"):
            clip = get_model(ctx, model_name or "")
            v = compute(clip, open_image(first), class_vector(ctx, clip, scores_, class_name), method_name,
                        f'the class "{class_name}" (its {len(scores_.templates)}-template ensemble)', scores_.names[0])
        return overlay(v, opacity_value), saliency_note(v), v

    def refresh(scores_, image_path, file_list, method_name, opacity_value, model_name, opened,
                request: gr.Request = None):
        """After a classification: the ranked classes, and (only while open) the top class's map. It skips
        Gradio's queue, so a classification with the accordion closed still sends one queued request;
        the work, when there is any, still waits for its fair turn (demo/fair.py) inside `show`."""
        if scores_ is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        choices, top = class_choices(scores_)
        if not opened:  # drawn on opening, for this classification
            return gr.Dropdown(choices=choices, value=top), None, "Open to see the map of the top class.", None
        shown = show(scores_, image_path, file_list, top, method_name, opacity_value, model_name, opened, request)
        return (gr.Dropdown(choices=choices, value=top), *(shown if isinstance(shown, tuple) else [gr.skip()] * 3))

    io = dict(inputs=[scores, image, files, classname, method, opacity, model_state, is_open], outputs=[picture, note, view],
              api_visibility="private", concurrency_id="inference", concurrency_limit=ctx.config.inference_threads(),
              show_progress_on=[picture])
    scores.change(refresh, [scores, image, files, method, opacity, model_state, is_open], [classname, picture, note, view],
                  api_visibility="private", queue=False)
    accordion.expand(lambda: True, None, is_open, api_visibility="private", queue=False).then(show, **io)
    accordion.collapse(lambda: False, None, is_open, api_visibility="private", queue=False)
    gr.on([classname.input, method.input], show, **io)
    opacity.release(reblend, [view, opacity], picture, api_visibility="private", queue=False)


def build_saliency_tool(ctx, model_state: gr.State) -> None:
    """A panel for any image and text, which is also the /saliency endpoint (an MCP tool)."""
    view = gr.State(None, time_to_live=3600)
    with gr.Row():
        with gr.Column(scale=1, min_width=260):
            image = gr.Image(EXAMPLE if EXAMPLE.is_file() else None, type="filepath", label="image", height=240,
                             elem_id="sal-image-in", sources=["upload", "clipboard"])
            query = gr.Textbox(EXAMPLE_TEXT, label="text to locate", max_lines=2, elem_id="sal-text")
            method = method_dropdown("sal-method")
            opacity = opacity_slider("sal-opacity")
            run = gr.Button("Show where it matches", variant="primary", elem_id="sal-run")
        with gr.Column(scale=1, min_width=260):
            picture = gr.Image(None, type="pil", label="saliency over the image", interactive=False, height=340,
                               elem_id="sal-image-out", buttons=["download"])
            note = gr.Markdown(label="About the map", elem_id="sal-note")
            with gr.Accordion("The map (JSON)", open=False):
                data = gr.JSON(label="saliency map (JSON)", elem_id="sal-json")

    @user_errors
    def saliency(image: str | None = None, text: str = EXAMPLE_TEXT, method: str = DEFAULT_METHOD,
                 opacity: float = DEFAULT_OPACITY, model_name: str | None = None, request: gr.Request = None):
        """Where in an image does a text match? A saliency heatmap over the image, and the map itself.

        Args:
            image: an image file (path or URL).
            text: the text to locate, e.g. "a purple star" (ignored by the text-free methods rollout and centre).
            method: "relevance" (gradient-weighted attention relevance, the default), "patch_text", "rollout" or "centre".
            opacity: the heatmap's opacity where the map peaks, 0 to 1 (lower values cover less).

        Returns the overlay (the square the model sees, photos centre-cropped) and the map as JSON:
        method, grid [g, g] (the model's patch grid), min, max, peak cell and every value (row 0 at the top).
        """
        if not image:
            raise UserInputError("no image: upload or paste one first")
        ctx.check_own_uploads(request, image)
        words = checked_text(text, "the text", MAX_TEXT_CHARS).strip()
        if not words and method not in TEXT_FREE_METHODS:
            raise UserInputError("type a text to locate in the image")
        with running(ctx, request, "saliency"):
            clip = get_model(ctx, model_name or "")
            v = compute(clip, open_image(image), words, method, f'the text "{words}"' if words else "the image",
                        display_name(image))
        return overlay(v, opacity), saliency_note(v), saliency_data(v), v

    gr.on([run.click, query.submit], saliency, [image, query, method, opacity, model_state], [picture, note, data, view],
          api_name="saliency", concurrency_id="inference", concurrency_limit=ctx.config.inference_threads(),
          show_progress_on=[picture])
    opacity.release(reblend, [view, opacity], picture, api_visibility="private", queue=False)

