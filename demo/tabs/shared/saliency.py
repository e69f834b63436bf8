"""Saliency in the app: "where in this image does this text match?", drawn over the image.

A map comes from core.saliency (relevance by default: the method that won the pointing game,
benchmarks/results/pointing_game.json) on the square the model sees, is upsampled with
core.saliency.upsample, coloured with a hand-made inferno-like colormap (no matplotlib) and blended
over the image at a chosen opacity. A `SaliencyView` keeps the map and the small base image, so the
opacity slider re-blends without running the model again.

Three places use it: the Search tab's selected hit (for the query), the zero-shot tab's accordion
"Where does the model look?" (for a class's template ensemble), and the /saliency endpoint (any image
and text), whose panel sits in the Search tab. The panels are in saliency_panels.py; this module
has no Gradio import.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from core.errors import UserInputError
from core.pointing import refined_peaks
from core.saliency import DEFAULT_METHOD, METHODS, TEXT_FREE_METHODS, saliency_map, to_unit, upsample
from demo.platform.config import EXAMPLES_DIR
from demo.platform.gpu import ZERO_GPU, _resolve, on_gpu

METHOD_INFO = {"relevance": "gradient-weighted attention relevance (Chefer et al.): the default, "
                            "best of the text-dependent maps in our pointing game",
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
