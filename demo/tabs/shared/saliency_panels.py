"""The saliency panels: the zero-shot tab's "Where does the model look?" and the /saliency tool.

The maps themselves are drawn by demo/tabs/shared/saliency.py; here are the controls and the
handlers, under the contract (demo/platform/contract.py).
"""

from __future__ import annotations

import time

import gradio as gr
import torch

from core.receipts import receipt
from core.errors import UserInputError
from core.saliency import DEFAULT_METHOD, METHODS, TEXT_FREE_METHODS
from core.zeroshot import ensemble_head, template_embeddings
from demo.tabs.shared.api_examples import served_example
from demo.inputs.checks import at_most_chars, in_range
from demo.inputs.images import display_name, open_image
from demo.platform.contract import Call, handler, listen
from demo.platform.gpu import embed_texts
from demo.platform.mcp import mcp_tool
from demo.platform.services import model_key
from demo.tabs.shared.saliency import (
    DEFAULT_OPACITY,
    EXAMPLE,
    EXAMPLE_TEXT,
    MAX_TEXT_CHARS,
    compute,
    overlay,
    saliency_data,
    saliency_note,
)

OPACITY = in_range("the opacity", 0, 1, default=DEFAULT_OPACITY)


def method_dropdown(elem_id: str) -> gr.Dropdown:
    """The method picker, relevance first."""
    return gr.Dropdown(list(METHODS), value=DEFAULT_METHOD, label="saliency method", elem_id=elem_id,
                       info="relevance is the default (pointing game: 88% of its peaks on the named object)")


def opacity_slider(elem_id: str) -> gr.Slider:
    return gr.Slider(0.0, 1.0, value=DEFAULT_OPACITY, step=0.05, label="heatmap opacity",
                     info="at the map's peak; lower values cover less", elem_id=elem_id)


@handler("saliency", turn=False, checks={"opacity": OPACITY})
def reblend(call: Call, view=None, opacity: float = DEFAULT_OPACITY):
    """Redraw an overlay at another opacity (no model call); nothing to do before a map exists."""
    return gr.skip() if view is None else overlay(view, opacity)


def class_choices(scores) -> tuple[list[tuple[str, str]], str]:
    """The zero-shot classes ranked by the first image's probability (at the model's scale): choices and the top one."""
    probs = scores.probabilities(scores.cosines[0], scores.model_scale)  # [C], under the model family's rule
    order = probs.argsort(descending=True).tolist()[:200]
    return [(f"{scores.classnames[j]} · {float(probs[j]):.0%}", scores.classnames[j]) for j in order], scores.classnames[order[0]]


def class_vector(ctx, clip, scores, class_name: str) -> torch.Tensor:
    """A class's template ensemble [D]: its row of the zero-shot head when that is still in the services'
    memory cache, else encoded now from its templates alone (a few prompts; no new cache entry)."""
    cached = ctx.services.heads.get((model_key(clip), tuple(scores.classnames), tuple(scores.templates)))
    if cached is not None:
        return cached.head[cached.classnames.index(class_name)]
    return ensemble_head(template_embeddings(clip, [class_name], list(scores.templates), encode=embed_texts))[0]


def first_image(image_path, file_list):
    items = ([image_path] if image_path else []) + list(file_list or [])
    return items[0] if items else None


@handler("zero_shot_saliency", checks={"opacity": OPACITY}, uploads=("image", "files"))
def class_saliency(call: Call, scores=None, image: str | None = None, files: list | None = None,
                   class_name: str | None = None, method: str = DEFAULT_METHOD, opacity: float = DEFAULT_OPACITY,
                   model: str | None = None, opened: bool = False):
    """The map of a zero-shot class on the first image (while the accordion is open): overlay, note, view."""
    if not opened or scores is None:
        return gr.skip(), gr.skip(), gr.skip()
    first = first_image(image, files)
    if first is None or display_name(first) != scores.names[0]:
        return gr.skip(), "The image changed since it was classified: press **Classify** first.", gr.skip()
    if (model or call.config.default_model) != scores.model_name:
        return gr.skip(), "The session's model changed since this was classified: press **Classify** first.", gr.skip()
    class_name = class_name if class_name in scores.classnames else class_choices(scores)[1]
    clip = call.model(model)
    v = compute(clip, open_image(first), class_vector(call.ctx, clip, scores, class_name), method,
                f'the class "{class_name}" (its {len(scores.templates)}-template ensemble)', scores.names[0])
    return overlay(v, opacity), saliency_note(v), v


@handler("zero_shot_saliency", checks={"opacity": OPACITY}, uploads=("image", "files"))
def top_class_saliency(call: Call, scores=None, image: str | None = None, files: list | None = None,
                       method: str = DEFAULT_METHOD, opacity: float = DEFAULT_OPACITY, model: str | None = None,
                       opened: bool = False):
    """The map of the top class, right after a classification (the class menu may not show it yet)."""
    return class_saliency(call, scores, image, files, None, method, opacity, model, opened)


@handler("zero_shot_saliency", turn=False)
def saliency_classes(call: Call, scores=None, opened: bool = False):
    """After a classification: the ranked classes, a cleared map, and (only while the accordion is open) a
    new value of the draw token, whose change asks `class_saliency` for the map: a classification with the
    accordion closed sends no request of its own."""
    if scores is None:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
    choices, top = class_choices(scores)
    note = "Drawing the map of the top class…" if opened else "Open to see the map of the top class."
    return gr.Dropdown(choices=choices, value=top), None, note, None, time.monotonic_ns() if opened else gr.skip()


@handler("zero_shot_saliency", turn=False)
def set_open(call: Call, opened: bool = True) -> bool:
    """Whether the accordion is open (the map is computed only then)."""
    return bool(opened)


def build_zero_shot_saliency(ctx, model_state: gr.State, image: gr.Image, files: gr.File, scores: gr.State) -> None:
    """The zero-shot tab's accordion "Where does the model look?": the saliency of the top class (or a
    picked one) for the first image, for the class's template ensemble (the vector that scored it).
    It is computed only while the accordion is open: on opening, after each classification, and on a pick."""
    is_open, view = gr.State(False), gr.State(None, time_to_live=3600)
    yes, no = gr.State(True), gr.State(False)
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
    draw = gr.Number(0, visible=False, label="draw the map")  # changed (only while open) after a classification
    inputs = [scores, image, files, classname, method, opacity, model_state, is_open]
    outputs = [picture, note, view]
    listen(ctx, scores.change, saliency_classes, [scores, is_open], [classname, picture, note, view, draw])
    listen(ctx, draw.change, top_class_saliency, [scores, image, files, method, opacity, model_state, is_open], outputs,
           show_progress_on=[picture])
    opened = listen(ctx, accordion.expand, set_open, [yes], is_open)
    listen(ctx, opened.then, class_saliency, inputs, outputs, show_progress_on=[picture])
    listen(ctx, accordion.collapse, set_open, [no], is_open)
    listen(ctx, [classname.input, method.input], class_saliency, inputs, outputs, show_progress_on=[picture])
    listen(ctx, opacity.release, reblend, [view, opacity], picture)


@handler("saliency", checks={"text": at_most_chars("the text", MAX_TEXT_CHARS),
                             "opacity": OPACITY}, uploads=("image",))
def saliency(call: Call, image: str | None = str(EXAMPLE), text: str = EXAMPLE_TEXT, method: str = DEFAULT_METHOD,
             opacity: float = DEFAULT_OPACITY, model_name: str | None = None):
    """Where in an image does a text match? A saliency heatmap over the image, and the map itself.

    Args:
        image: an image file (path or URL); omitted: the app's example, a purple star.
        text: the text to locate, e.g. "a purple star" (ignored by the text-free methods rollout and centre).
        method: "relevance" (gradient-weighted attention relevance, the default), "patch_text", "rollout" or "centre".
        opacity: the heatmap's opacity where the map peaks, 0 to 1 (lower values cover less).
        model_name: the model: a bundled name, an allowed local folder or a Hub id; omitted: the app's default.

    Returns the overlay (the square the model sees, photos centre-cropped) and the map as JSON:
    method, grid [g, g] (the model's patch grid), min, max, peak cell and every value (row 0 at the top).
    """
    if not image:
        raise UserInputError("no image: upload or paste one first")
    words = (text or "").strip()
    if not words and method not in TEXT_FREE_METHODS:
        raise UserInputError("type a text to locate in the image")
    clip = call.model(model_name)
    v = compute(clip, open_image(image), words, method, f'the text "{words}"' if words else "the image",
                display_name(image))
    return overlay(v, opacity), saliency_note(v), {**saliency_data(v), "receipt": receipt(clip)}, v


def build_saliency_tool(ctx, model_state: gr.State) -> None:
    """A panel for any image and text, which is also the /saliency endpoint (an MCP tool)."""
    view = gr.State(None, time_to_live=3600)
    with gr.Row():
        with gr.Column(scale=1, min_width=260):
            image = served_example(gr.Image(EXAMPLE if EXAMPLE.is_file() else None, type="filepath", label="image",
                                            height=240, elem_id="sal-image-in", sources=["upload", "clipboard"]),
                                   ctx.config, EXAMPLE)
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
    listen(ctx, [run.click, query.submit], saliency, [image, query, method, opacity, model_state],
           [picture, note, data, view], api_name="saliency", show_progress_on=[picture])
    mcp_tool(ctx, saliency, ["image", "text", "method", "opacity", "model_name"], pick=2, n_outputs=4)
    listen(ctx, opacity.release, reblend, [view, opacity], picture)
