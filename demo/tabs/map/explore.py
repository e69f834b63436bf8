"""Exploring an embedding set on the map (no Gradio): which sets may be opened, the WebGL figure of up to a few
hundred thousand points, what a lasso or box holds, and the gallery and summary of a selection.

The figure sends each point as two uint16 coordinates (the map's bounding box cut into 65,536 steps a side:
finer than any screen) and its uint32 row, as plotly's base64 typed arrays: 8 bytes a point, about 10.7 once
encoded, so 100,000 pairs (200,000 points) make a reply of about 2.2 MB. Captions and thumbnails are not in
it: the hover card and the gallery ask for the few they show.
"""

from __future__ import annotations

import base64
import html
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from core.embedding_set import FORMAT, EmbeddingSet
from core.errors import UserInputError
from core.set_projection import SetProjection

STEPS = 65535
MAX_LEGEND = 12  # the most frequent labels get a colour each; the rest are "other"
GALLERY = 48
PALETTE = ["#4f46e5", "#dc2626", "#16a34a", "#ea580c", "#0891b2", "#9333ea", "#ca8a04", "#db2777", "#2563eb", "#65a30d",
           "#0d9488", "#b45309"]


@dataclass
class Explored:
    """What a visitor's map shows (kept per session; the set itself is in the app's shared cache)."""

    folder: str
    created: str
    settings: SetProjection
    rows: int
    points: int
    selected: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # image rows of the selection
    highlight: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # image rows a query ranked
    query_xy: tuple[float, float] | None = None
    query_text: str = ""


def find_sets(data_dirs: list[Path], depth: int = 2) -> list[tuple[str, str]]:
    """(label, folder) of the complete embedding sets inside the allowed folders, up to `depth` levels down."""
    found = []
    for root in data_dirs:
        for receipt in sorted(root.glob("receipt.json")) + [p for d in range(1, depth + 1)
                                                            for p in sorted(root.glob("/".join(["*"] * d) + "/receipt.json"))]:
            try:
                r = json.loads(receipt.read_text())
            except (OSError, ValueError):
                continue
            if r.get("format") == FORMAT and r.get("complete"):
                found.append((f"{receipt.parent.name}: {r['rows']:,} rows by {r['model']}", str(receipt.parent)))
    return found


def allowed_set_folder(text: str, data_dirs: list[Path]) -> Path:
    """A set folder must lie inside an allowed folder."""
    if not (text or "").strip():
        raise UserInputError("no embedding set chosen: pick one, or give the folder of one made by scripts/embed.py")
    path = Path(text.strip()).expanduser().resolve()
    if not any(path == d or d in path.parents for d in data_dirs):
        allowed = ", ".join(str(d) for d in data_dirs) or "none configured (set CLIP_LAB_DATA_DIRS)"
        raise UserInputError(f"{text.strip()}: embedding sets may only be opened from the allowed folders: {allowed}")
    return path


def quantise(xy: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """uint16 coordinates [P, 2] and the box (x0, y0, x1, y1) they span."""
    lo, hi = xy.min(0), xy.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    q = np.round((xy - lo) / span * STEPS).astype(np.uint16)
    return q, (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))


def to_steps(box: tuple[float, float, float, float], x: float, y: float) -> tuple[float, float]:
    """A map position in the figure's uint16 steps."""
    x0, y0, x1, y1 = box
    return (x - x0) / ((x1 - x0) or 1.0) * STEPS, (y - y0) / ((y1 - y0) or 1.0) * STEPS


def label_groups(labels: list[str]) -> list[tuple[str, np.ndarray]]:
    """(name, rows) of the most frequent labels, then 'other' (unlabelled sets: one group, 'images')."""
    if not any(labels):
        return [("images", np.arange(len(labels)))]
    counts = Counter(labels)
    top = [name for name, _ in counts.most_common(MAX_LEGEND)]
    index = {name: i for i, name in enumerate(top)}
    which = np.array([index.get(lab, len(top)) for lab in labels])
    groups = [(name, np.flatnonzero(which == i)) for i, name in enumerate(top)]
    rest = np.flatnonzero(which == len(top))
    return groups + ([("other", rest)] if len(rest) else [])


def atlas_figure(es: EmbeddingSet, xy: np.ndarray, ex: Explored) -> go.Figure:
    """Images (circles) and captions (diamonds) by label, the two modality centroids joined (the gap), the
    selection's links, a query's nearest images ringed and the query itself."""
    q, box = quantise(xy)
    n = len(es)
    caption_rows = np.flatnonzero(es.has_caption)
    caption_point = np.full(n, -1)
    caption_point[caption_rows] = n + np.arange(len(caption_rows))
    dim = len(ex.highlight) > 0 or len(ex.selected) > 0
    fig = go.Figure()
    for i, (name, rows) in enumerate(label_groups(es.labels)):
        colour = PALETTE[i] if i < len(PALETTE) else "#9ca3af"
        fig.add_trace(go.Scattergl(x=q[rows, 0], y=q[rows, 1], customdata=rows.astype(np.uint32), mode="markers",
                                   name=name, legendgroup=name, hoverinfo="none", meta={"kind": "image"},
                                   marker=dict(size=5, color=colour, opacity=0.25 if dim else 0.75)))
        owners = rows[es.has_caption[rows]]  # the rows whose caption is drawn; customdata is the row
        if len(owners):
            cap = caption_point[owners]
            fig.add_trace(go.Scattergl(x=q[cap, 0], y=q[cap, 1], customdata=owners.astype(np.uint32), mode="markers",
                                       name=f"{name} (captions)", legendgroup=name, showlegend=False, hoverinfo="none",
                                       meta={"kind": "caption"},
                                       marker=dict(size=6, symbol="diamond", color=colour, opacity=0.2 if dim else 0.5)))
    centroid_img, centroid_txt = q[:n].mean(0), q[n:].mean(0) if len(q) > n else None
    if centroid_txt is not None:
        fig.add_trace(go.Scatter(x=[centroid_img[0], centroid_txt[0]], y=[centroid_img[1], centroid_txt[1]],
                                 mode="lines+markers+text", text=["images' centre", "captions' centre"],
                                 textposition="top center", name="modality gap (centres)", hoverinfo="skip",
                                 line=dict(color="black", width=2, dash="dot"), marker=dict(size=10, color="black")))
    if len(ex.selected):
        _links(fig, q, ex.selected, caption_point)
    if len(ex.highlight):
        fig.add_trace(go.Scattergl(x=q[ex.highlight, 0], y=q[ex.highlight, 1], customdata=ex.highlight.astype(np.uint32),
                                   mode="markers", name=f"nearest to {ex.query_text[:30]!r}", hoverinfo="none",
                                   meta={"kind": "image"}, marker=dict(size=9, color="rgba(0,0,0,0)",
                                                                     line=dict(color="#111827", width=2))))
    if ex.query_xy is not None:
        qx, qy = to_steps(box, *ex.query_xy)
        fig.add_trace(go.Scatter(x=[qx], y=[qy], mode="markers+text", text=["query"], textposition="bottom center",
                                 name="the query (placed among its nearest images)", hoverinfo="skip",
                                 marker=dict(size=16, symbol="star", color="#facc15", line=dict(color="black", width=1))))
    fig.update_layout(template="none", height=640, dragmode="lasso", margin=dict(l=10, r=10, t=30, b=10),
                      xaxis=dict(visible=False), yaxis=dict(visible=False, scaleanchor="x"),
                      legend=dict(orientation="h", y=-0.02, itemsizing="constant"), uirevision=ex.folder,
                      meta={"rows": n, "points": len(q), "box": box, "set": ex.folder})
    return fig


def _links(fig: go.Figure, q: np.ndarray, rows: np.ndarray, caption_point: np.ndarray, limit: int = 500) -> None:
    """Each selected image joined to its caption (at most `limit` links)."""
    rows = rows[caption_point[rows] >= 0][:limit]
    if not len(rows):
        return
    x = np.full(3 * len(rows), np.nan, dtype=np.float32)
    y = x.copy()
    x[0::3], y[0::3] = q[rows, 0], q[rows, 1]
    x[1::3], y[1::3] = q[caption_point[rows], 0], q[caption_point[rows], 1]
    fig.add_trace(go.Scattergl(x=x, y=y, mode="lines", name="selection: image → its caption", hoverinfo="skip",
                               line=dict(color="rgba(17,24,39,0.2)", width=1)))


def inside(xy_steps: np.ndarray, lasso: dict | None, box: dict | None) -> np.ndarray:
    """bool [P]: the points inside a lasso polygon {x: [...], y: [...]} or a box {x: [x0, x1], y: [y0, y1]}
    (figure coordinates), by the even-odd rule."""
    x, y = xy_steps[:, 0].astype(np.float64), xy_steps[:, 1].astype(np.float64)
    if box:
        (x0, x1), (y0, y1) = sorted(box["x"]), sorted(box["y"])
        return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    px, py = np.asarray(lasso["x"], dtype=np.float64), np.asarray(lasso["y"], dtype=np.float64)
    if len(px) < 3:
        raise UserInputError("a lasso needs at least three corners")
    hit = np.zeros(len(x), dtype=bool)
    for (ax, ay), (bx, by) in zip(zip(px, py), zip(np.roll(px, 1), np.roll(py, 1))):
        crosses = (ay > y) != (by > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = ax + (y - ay) * (bx - ax) / (by - ay)
        hit ^= crosses & (x < at)
    return hit


def gallery_html(es: EmbeddingSet, rows: np.ndarray, title: str, scores: np.ndarray | None = None) -> str:
    """The first GALLERY images of `rows` with label and caption (thumbnails inline, a few KB each)."""
    shown = np.asarray(rows[:GALLERY], dtype=np.int64)
    if not len(shown):
        return f"<p>{html.escape(title)}: nothing.</p>"
    cards = []
    for k, (i, thumb) in enumerate(zip(shown, es.thumbs(shown))):
        uri = "data:image/webp;base64," + base64.b64encode(thumb).decode()
        score = f" · cos {scores[k]:.3f}" if scores is not None else ""
        cards.append(f"<figure data-row='{int(i)}'><img src='{uri}' alt='{html.escape(es.labels[i])}'>"
                     f"<figcaption><b>{html.escape(es.labels[i] or es.ids[i])}</b>{score}<br>"
                     f"{html.escape(es.captions[i][:90])}</figcaption></figure>")
    more = f" (the first {GALLERY} of {len(rows):,})" if len(rows) > GALLERY else ""
    return f"<p><b>{html.escape(title)}</b>{more}</p><div class='atlas-gallery'>{''.join(cards)}</div>"


GALLERY_CSS = """
.atlas-gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(110px, 1fr)); gap: 8px; }
.atlas-gallery figure { margin: 0; font-size: 11px; }
.atlas-gallery img { width: 96px; height: 96px; image-rendering: pixelated; border: 1px solid #ddd; }
"""


def selection_markdown(es: EmbeddingSet, rows: np.ndarray, captions_in: int, prompts: list[tuple[str, float]]) -> str:
    """How many, which labels, and the class prompts nearest to the selection's centroid."""
    counts = Counter(es.labels[i] for i in rows)
    top = ", ".join(f"{name or '(none)'} {c:,}" for name, c in counts.most_common(8))
    near = ", ".join(f"{p} ({c:.3f})" for p, c in prompts)
    return (f"**Selection:** {len(rows):,} images and {captions_in:,} captions. **Labels:** {top}."
            + (f"  \n**Class prompts nearest to its centroid** (cosine of 'a photo of a {{label}}.' with the mean of its "
               f"images, normalised): {near}." if prompts else ""))
