"""The embedding map's figure: colours, axis ranges, the thumbnail sheet, the plotly traces.

Pure drawing from coordinates and per-pair data; no model, no projection. Sizes are kept small
for large maps: coordinates travel as float32 typed arrays (plotly's `bdata`), each trace point
carries only its pair index (`customdata`), and `layout.meta` holds each pair's caption and name
once plus all thumbnails as one JPEG sheet, which the hover card (demo/tabs/shared/hover.py) crops, instead of
one data: URI and caption per point. Plotly's own hover label is off for image and caption points
(hoverinfo 'none' still fires plotly_hover): the card shows kind, name, thumbnail and caption.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from core.shapes import COLOURS
from demo.inputs.pairs import LABEL_KEYS

COLOUR_BY = ("modality",) + LABEL_KEYS
MODALITY_COLOURS = {"image": "#4e79a7", "caption": "#f28e2b"}
# For labels without a named colour: Tableau 10 then a few more, in order of first appearance.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#17becf")
HELD_OUT_NAMES = {True: "held-out combination", False: "seen in training"}
LARGE_N = 2000  # from this many pairs on: smaller, more transparent markers


def rgb(name: str) -> str:
    """The plotly colour string of a named shapes-world colour: 'red' -> 'rgb(215,30,35)'."""
    r, g, b = COLOURS[name]
    return f"rgb({r},{g},{b})"


def label_values(labels: list[dict], key: str, n: int) -> list[str]:
    """The readable value of label `key` for each of n pairs ('n/a' where missing).

    held_out reads 'held-out combination' / 'seen in training' instead of True / False.
    """
    labels = labels or [{}] * n
    out = []
    for lab in labels:
        value = (lab or {}).get(key, "n/a")
        if key == "held_out" and isinstance(value, (bool, np.bool_)):
            value = HELD_OUT_NAMES[bool(value)]
        out.append(str(value))
    return out


def group_colours(values: list[str], key: str) -> dict[str, str]:
    """A colour per distinct value, in order of first appearance: the named colour itself when
    colouring by 'colour' (a yellow shape is drawn yellow), else the palette in turn."""
    colours, k = {}, 0
    for value in dict.fromkeys(values):
        if key == "colour" and value in COLOURS:
            colours[value] = rgb(value)
        else:
            colours[value] = PALETTE[k % len(PALETTE)]
            k += 1
    return colours


def robust_range(values: np.ndarray, lo: float = 1.0, hi: float = 99.0, pad: float = 0.12) -> tuple[float, float]:
    """An axis range [a, b] for values [N] that outliers cannot stretch.

    The 1st..99th percentile span, padded by `pad` of itself on each side, but never wider than the
    data's own range plus 3% (so a map without outliers shows every point with a small margin).
    """
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return -1.0, 1.0
    p_lo, p_hi = np.percentile(v, [lo, hi])
    span = max(p_hi - p_lo, 1e-6)
    full_lo, full_hi = v.min(), v.max()
    margin = 0.03 * max(full_hi - full_lo, 1e-6)
    a, b = max(p_lo - pad * span, full_lo - margin), min(p_hi + pad * span, full_hi + margin)
    return float(a), float(b)


@dataclass(frozen=True)
class Atlas:
    """Thumbnails of N images tiled row-major on one JPEG sheet: tile i is at column i % cols, row i // cols."""

    uri: str
    tile: int
    cols: int

    def meta(self) -> dict:
        return {"atlas": self.uri, "tile": self.tile, "cols": self.cols}


def atlas_tile(n: int) -> int:
    """Thumbnail side in pixels for a map of n pairs (the sheet of 5,000 at 24 px is ~0.8 MB)."""
    return 48 if n <= 1000 else 32 if n <= 2500 else 24


def thumbnail_atlas(images: list, tile: int = 32, quality: int = 75) -> Atlas:
    """One data: URI JPEG holding a tile x tile thumbnail of every image (centred, white margins).

    One sheet compresses far better than N small JPEGs, each with its own ~600-byte header.
    """
    n = len(images)
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    sheet = Image.new("RGB", (cols * tile, rows * tile), "white")
    for i, image in enumerate(images):
        thumb = image.convert("RGB")
        thumb.thumbnail((tile, tile))
        x, y = (i % cols) * tile + (tile - thumb.width) // 2, (i // cols) * tile + (tile - thumb.height) // 2
        sheet.paste(thumb, (x, y))
    buf = io.BytesIO()
    sheet.save(buf, format="JPEG", quality=quality)
    return Atlas(f"data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()}", tile, cols)


def marker_style(n: int, three: bool) -> dict:
    """Marker size and opacities for a map of n pairs: smaller and more transparent as n grows."""
    if n >= LARGE_N:
        return {"size": 2.5 if three else 3.5, "image": 0.45, "caption": 0.35}
    if n > 1000:
        return {"size": 3 if three else 5, "image": 0.7, "caption": 0.55}
    return {"size": 3.5 if three else 6, "image": 0.85, "caption": 0.65}


def map_figure(coords: np.ndarray, n: int, captions: list[str], names: list[str], groups: list[str] | None,
               colour_by: str, prompt_names: list[str], atlas: Atlas | None, show_links: bool = True,
               title: str = "") -> go.Figure:
    """Images (circles) and captions (diamonds), each image linked to its caption, plus class prompts (stars).

    coords [2n + P, dims]: n images, then their n captions, then P class prompts. groups [n]: the
    colour label of each pair (None: colour by modality). Each point's customdata is its pair index
    (-1 for a class prompt); each trace's meta.kind says 'image', 'caption', 'prompt' or 'link';
    layout.meta holds captions [n], names [n] and the thumbnail sheet (atlas, tile, cols).
    """
    dims = coords.shape[1]
    three = dims == 3
    coords = coords.astype(np.float32)
    img_xy, txt_xy, prm_xy = coords[:n], coords[n:2 * n], coords[2 * n:]
    Scatter = go.Scatter3d if three else (go.Scattergl if n > 2500 else go.Scatter)
    style = marker_style(n, three)

    def xyz(a):
        return dict(x=a[:, 0], y=a[:, 1], **({"z": a[:, 2]} if three else {}))

    fig = go.Figure()
    if show_links and n:
        # one polyline, image -> caption -> gap per pair (NaN breaks a line in scatter, scattergl and scatter3d)
        link = np.full((3 * n, dims), np.nan, np.float32)
        link[0::3], link[1::3] = img_xy, txt_xy
        alpha = min(0.5, 60 / n) if three else min(0.35, 40 / n)
        fig.add_trace(Scatter(**xyz(link), mode="lines", name="image–caption link",
                              hoverinfo="skip", connectgaps=False, meta={"kind": "link"},
                              # scatter3d (WebGL) drops translucent lines: an opaque light grey there
                              line=dict(color="rgb(200,200,200)" if three else f"rgba(90,90,90,{max(alpha, 0.04):.3f})",
                                        width=2 if three else 1)))
    if groups is None:
        traces = [("images", "image", np.arange(n), MODALITY_COLOURS["image"], True),
                  ("captions", "caption", np.arange(n), MODALITY_COLOURS["caption"], True)]
    else:
        colours = group_colours(groups, colour_by)
        members = {value: np.flatnonzero(np.array(groups) == value) for value in colours}
        traces = [(value, kind, members[value], colours[value], kind == "image")
                  for value in colours for kind in ("image", "caption")]
    for name, kind, idx, colour, legend in traces:
        xy = img_xy if kind == "image" else txt_xy
        marker = dict(symbol="circle" if kind == "image" else "diamond", size=style["size"], color=colour,
                      opacity=style[kind])
        if not three and n <= 1000:
            marker["line"] = dict(width=0.5, color="white")
        fig.add_trace(Scatter(**xyz(xy[idx]), mode="markers", name=name, legendgroup=name, showlegend=legend,
                              marker=marker, customdata=idx.astype(np.int32), meta={"kind": kind}, hoverinfo="none"))
    if len(prm_xy):
        fig.add_trace(Scatter(**xyz(prm_xy), mode="markers+text", name="class prompts", text=list(prompt_names),
                              textposition="top center", textfont=dict(size=10, color="#222"), meta={"kind": "prompt"},
                              marker=dict(symbol="diamond-open" if three else "star", size=6 if three else 12, color="#111"),
                              customdata=np.full(len(prm_xy), -1, np.int32),
                              hovertemplate="<b>class prompt</b><br>%{text}<extra></extra>"))
    legend_title = "" if groups is None else f"{colour_by} (● image, ◆ caption)"
    fig.update_layout(title=dict(text=title, x=0.01), height=640, margin=dict(l=10, r=10, t=50, b=10),
                      legend=dict(itemsizing="constant", font=dict(size=11), title=dict(text=legend_title)),
                      hoverlabel=dict(align="left"), uirevision=title,
                      meta={"captions": list(captions), "names": list(names), **(atlas.meta() if atlas else {})})
    ranges = [robust_range(coords[:, d]) for d in range(dims)]
    if three:
        axis = dict(showticklabels=False, title="")
        fig.update_layout(scene=dict(xaxis=dict(axis, range=ranges[0]), yaxis=dict(axis, range=ranges[1]),
                                     zaxis=dict(axis, range=ranges[2]), aspectmode="cube"))
    else:
        fig.update_xaxes(showticklabels=False, title="", range=ranges[0])
        fig.update_yaxes(showticklabels=False, title="", range=ranges[1], scaleanchor="x")
    return fig
