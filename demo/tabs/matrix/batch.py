"""The similarity-matrix tab's logic, free of Gradio: the session's batch, its encodings, the views.

A `MatrixBatch` is built once ("Build batch") and kept in the session: its pairs, thumbnails, and
the embeddings of its images and of every caption seen so far, under one model. Views and caption
edits work on that batch only, so the matrix always shows the captions of its own images, and a
view change encodes nothing while a caption edit encodes only the new caption.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from core.errors import UserInputError
from core.loss import ContrastiveOutput, similarity
from core.receipts import receipt
from demo.inputs.images import pack, thumbnail_uri, unpack
from demo.inputs.pairs import Pairs
from demo.platform.gpu import embed_images, embed_texts
from demo.platform.services import model_key
from demo.tabs.matrix.microscope import GRADIENT_TITLE, GRADIENT_VIEW, false_negatives_markdown, gradient_values

SIGMOID_VIEW = "sigmoid per cell (SigLIP)"
VIEWS = {"cosine": "cosine similarity", "logits": "logits = logit scale × cosine",
         "softmax over rows (image → text)": "softmax over each row: which caption does each image pick?",
         "softmax over columns (text → image)": "softmax over each column: which image does each caption pick?",
         SIGMOID_VIEW: "sigmoid(logit + bias) per cell: is this pair a match? (each cell on its own, as SigLIP was trained)",
         GRADIENT_VIEW: GRADIENT_TITLE}


def view_values(out: ContrastiveOutput, view: str):
    """The [n, m] matrix shown for a view name."""
    table = {"cosine": out.cosine, "logits": out.logits, "softmax over rows (image → text)": out.probs_rows,
             "softmax over columns (text → image)": out.probs_cols}
    if view == GRADIENT_VIEW:
        return gradient_values(out)
    if view == SIGMOID_VIEW:
        if out.sigmoid_probs is None:
            raise UserInputError("the per-cell sigmoid view is for sigmoid-trained models (SigLIP): this model was "
                                 "trained with the softmax loss, whose logits mean something only against each other")
        return out.sigmoid_probs.numpy()
    if view not in table:
        raise UserInputError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}")
    return table[view].numpy()


def _wrap(caption: str, width: int = 16, lines: int = 3) -> str:
    parts = textwrap.wrap(caption, width) or [""]
    if len(parts) > lines:
        parts = parts[:lines]
        parts[-1] = parts[-1][: width - 1] + "…"
    return "<br>".join(parts)


def matrix_figure(values, thumbnails: list[str], captions: list[str], view: str, n_pairs: int) -> go.Figure:
    """The heatmap: values annotated, thumbnails for rows, captions for columns, the first
    `n_pairs` diagonal cells outlined, and each row's (▶) and column's (▼) argmax marked."""
    n, m = values.shape
    font = 12 if max(n, m) <= 10 else 10 if max(n, m) <= 16 else 8 if max(n, m) <= 24 else 6
    gradient = view == GRADIENT_VIEW
    fmt = ".1f" if view == "logits" else (("+.3f" if np.abs(values).max() >= 5e-3 else "+.0e") if gradient else ".2f")
    limit = float(np.abs(values).max()) or 1.0
    colours = dict(colorscale="RdBu_r", zmid=0, zmin=-limit, zmax=limit) if gradient else dict(colorscale="Viridis")
    heat = go.Heatmap(z=values, x=list(range(m)), y=list(range(n)), **colours,
                      text=[[format(v, fmt) for v in row] for row in values], texttemplate="%{text}",
                      textfont=dict(size=font), customdata=[[captions[j] for j in range(m)] for _ in range(n)],
                      hovertemplate="image %{y} · caption %{x}<br>%{customdata}<br>value %{z:.4f}<extra></extra>",
                      colorbar=dict(title=view.split(" (")[0], thickness=14))
    fig = go.Figure(heat)
    rows_arg, cols_arg = (values.argmax(1), values.argmax(0)) if not gradient else ([], [])  # no argmax of a gradient
    fig.add_trace(go.Scatter(x=[int(j) - 0.33 for j in rows_arg], y=list(range(len(rows_arg))), mode="markers",
                             name="row argmax ▶ (image → text)",
                             marker=dict(symbol="triangle-right", size=max(6, font), color="#ff4d4d", line=dict(color="white", width=1)),
                             hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=list(range(len(cols_arg))), y=[int(i) - 0.33 for i in cols_arg], mode="markers",
                             name="column argmax ▼ (text → image)",
                             marker=dict(symbol="triangle-down", size=max(6, font), color="#ffffff", line=dict(color="black", width=1)),
                             hoverinfo="skip"))
    for i in range(min(n_pairs, n, m)):
        fig.add_shape(type="rect", x0=i - 0.46, x1=i + 0.46, y0=i - 0.46, y1=i + 0.46, line=dict(color="#ff9f1c", width=3))
    cell = 1.0
    for i, uri in enumerate(thumbnails):
        fig.add_layout_image(source=uri, x=-0.55, y=i, xref="x", yref="y",
                             sizex=0.92 * cell, sizey=0.92 * cell, xanchor="right", yanchor="middle", layer="above")
    # cells shrink as the batch grows, so that 32 x 32 (with its colour bar) fits a 1,400 px page's panel
    cell_px = 80 if max(n, m) <= 8 else 56 if max(n, m) <= 16 else 34 if max(n, m) <= 24 else 28
    # a fixed width keeps cells readable on a narrow screen: the plot scrolls sideways (app.py's CSS)
    fig.update_layout(title=dict(text=VIEWS[view], x=0.01), height=cell_px * n + 230,
                      width=int(cell_px * (m + 1.6) + 260), autosize=False,
                      margin=dict(l=10, r=10, t=60, b=10),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, x=1, xanchor="right"), plot_bgcolor="white")
    fig.update_xaxes(tickvals=list(range(m)), ticktext=[_wrap(c) for c in captions], side="bottom", tickangle=0 if m <= 8 else -60,
                     range=[-1.6, m - 0.5], showgrid=False, zeroline=False, tickfont=dict(size=10 if m <= 12 else 8))
    fig.update_yaxes(tickvals=list(range(n)), ticktext=[f"img {i}" for i in range(n)], autorange=False, range=[n - 0.5, -0.5],
                     showgrid=False, zeroline=False, scaleanchor="x", tickfont=dict(size=9))
    return fig


def figures_markdown(out: ContrastiveOutput, n: int, m: int) -> str:
    """Loss and accuracy figures, or the reason there are none (non-square batch)."""
    if out.loss is None:
        return (f"**{n} images × {m} captions: non-square, so no loss.** CLIP's loss needs each image paired with "
                f"exactly one caption on the diagonal. The softmax views still show which caption each image picks "
                f"and which image each caption picks. Logit scale {out.scale:.2f}.")
    return (f"**loss_i** (image → text, mean of row cross-entropies) = **{float(out.loss_i):.4f}** · "
            f"**loss_t** (text → image, columns) = **{float(out.loss_t):.4f}** · "
            f"**loss** = (loss_i + loss_t) / 2 = **{float(out.loss):.4f}**  \n"
            f"**Accuracy** image → text {out.accuracy_i2t:.0%} · text → image {out.accuracy_t2i:.0%} · "
            f"logit scale {out.scale:.2f} · chance loss ln({n}) = {math.log(n):.3f}" + sigmoid_markdown(out, n))


def sigmoid_markdown(out: ContrastiveOutput, n: int) -> str:
    """For a sigmoid-trained model (SigLIP), the loss it was trained with, beside the softmax figures above."""
    if out.sigmoid_loss is None:
        return ""
    diagonal = float(out.sigmoid_cells.diagonal().sum()) / n
    return (f"  \n**This model was trained with the sigmoid loss (SigLIP)**: every cell is its own yes/no question, "
            f"p = sigmoid(logit + b) with bias b = {out.bias:+.2f}. **Sigmoid loss** = Σ −log σ(±(logit + b)) / n = "
            f"**{float(out.sigmoid_loss):.4f}** ({diagonal:.4f} from the {n} matching pairs, the rest from the "
            f"{n * n - n} non-matching ones). The softmax losses above are what CLIP's loss would give on the same logits.")


def loss_table(out: ContrastiveOutput, captions: list[str]) -> pd.DataFrame:
    """Per pair i: the row term -log p_rows[i, i] and the column term -log p_cols[i, i]."""
    if out.loss is None:
        return pd.DataFrame(columns=LOSS_COLUMNS)
    n = len(out.loss_rows)
    return pd.DataFrame({"pair": list(range(n)), "caption": captions[:n],
                         "row loss (image i → text)": _r(out.loss_rows), "p(own caption)": _r(out.probs_rows.diagonal()),
                         "column loss (caption i → image)": _r(out.loss_cols), "p(own image)": _r(out.probs_cols.diagonal())})


def _r(t) -> list[float]:
    return [round(float(v), 4) for v in t.tolist()]


MAX_KEPT_CAPTIONS = 256
LOSS_COLUMNS = ["pair", "caption", "row loss (image i → text)", "p(own caption)", "column loss (caption i → image)",
                "p(own image)"]


@dataclass
class MatrixBatch:
    """The session's batch: pairs (images shrunk for display), thumbnails, and embeddings under one model.

    image_emb [N, D]; caption_emb maps each caption text encoded so far to its embedding [D].
    """

    pairs: Pairs  # captions, names, labels; its images are kept packed in `blobs`
    source: str
    thumbnails: list[str]
    blobs: list[bytes] = field(default_factory=list)
    model: tuple = ()  # the model key its embeddings belong to
    model_name: str = ""  # the model (as the session names it) the batch was built with
    image_emb: torch.Tensor | None = None
    caption_emb: dict[str, torch.Tensor] = field(default_factory=dict)
    stale: bool = False
    view: str = ""  # the view last drawn (a refused redraw says the page still shows it)

    @property
    def captions(self) -> list[str]:
        return list(self.pairs.captions)


def new_batch(pairs: Pairs, source: str, max_pairs: int) -> MatrixBatch:
    """A batch for `pairs` (checked against max_pairs), with thumbnails for the matrix's rows."""
    if len(pairs) > max_pairs:
        raise UserInputError(f"a batch of {len(pairs)} pairs is too large to show; the limit is {max_pairs}")
    if len(pairs) < 1:
        raise UserInputError("the batch is empty")
    thumb = 64 if len(pairs) <= 16 else 40
    thumbnails, blobs = [thumbnail_uri(im, thumb) for im in pairs.images], [pack(im) for im in pairs.images]
    pairs.images = []  # the session keeps compact copies only (a few kB to ~100 kB each), not decoded images
    return MatrixBatch(pairs, source, thumbnails, blobs)


def parse_extra(text: str | None, limit: int) -> list[str]:
    """Extra captions (one per line) appended as columns: they make the batch non-square."""
    extra = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if len(extra) > limit:
        raise UserInputError(f"{len(extra)} extra captions; the limit is {limit}")
    return extra


def as_frame(table) -> pd.DataFrame | None:
    """A caption table as a DataFrame: from the UI (a DataFrame) or the API ({'headers', 'data'} or rows)."""
    if table is None or isinstance(table, pd.DataFrame):
        return table
    if isinstance(table, dict):
        return pd.DataFrame(table.get("data") or [], columns=table.get("headers") or ["image", "caption"])
    return pd.DataFrame(list(table), columns=["image", "caption"])


def captions_from_frame(frame, expected: int) -> list[str] | None:
    """Captions from the edited table, or None when it does not describe this batch."""
    frame = as_frame(frame)
    if frame is None or not hasattr(frame, "__len__") or len(frame) != expected or "caption" not in getattr(frame, "columns", []):
        return None
    return ["" if pd.isna(c) else str(c) for c in frame["caption"].tolist()]


def captions_frame(pairs: Pairs) -> pd.DataFrame:
    """The editable table: one row per image, its name and its caption."""
    return pd.DataFrame({"image": pairs.names, "caption": pairs.captions})


def embeddings(clip, batch: MatrixBatch, captions: list[str], progress=None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(image_emb [N, D], caption_emb [M, D], number of texts encoded now) for this model.

    Images are encoded once per model; a caption is encoded only the first time it is seen.
    """
    key = model_key(clip)
    if batch.model != key or batch.image_emb is None:
        images = [unpack(b) for b in batch.blobs]
        batch.model, batch.image_emb, batch.caption_emb = key, embed_images(clip, images, progress), {}
    new = [c for c in dict.fromkeys(captions) if c not in batch.caption_emb]
    if new:
        batch.caption_emb.update(zip(new, embed_texts(clip, new)))
    if len(batch.caption_emb) > MAX_KEPT_CAPTIONS:  # many edits: keep only what the matrix shows now
        batch.caption_emb = {c: batch.caption_emb[c] for c in captions}
    return batch.image_emb, torch.stack([batch.caption_emb[c] for c in captions]), len(new)


@dataclass
class MatrixResult:
    """What the tab shows for one batch and view."""

    output: ContrastiveOutput
    figure: go.Figure
    figures_md: str
    losses: pd.DataFrame
    data: dict


def matrix_data(out: ContrastiveOutput, view: str, captions: list[str], names: list[str]) -> dict:
    """The numbers of the matrix as JSON: the shown view's values, the cosines, the losses and accuracies."""
    r = lambda t: None if t is None else [round(float(v), 6) for v in t.reshape(-1).tolist()]  # noqa: E731
    n, m = out.cosine.shape
    return {"images": names, "captions": captions, "view": view, "logit_scale": out.scale,
            "values": [[round(float(v), 6) for v in row] for row in view_values(out, view).tolist()],
            "cosine": [[round(float(v), 6) for v in row] for row in out.cosine.tolist()],
            "square": n == m, "loss": None if out.loss is None else float(out.loss),
            "loss_i": None if out.loss_i is None else float(out.loss_i), "loss_t": None if out.loss_t is None else float(out.loss_t),
            "loss_rows": r(out.loss_rows), "loss_cols": r(out.loss_cols),
            "accuracy_i2t": out.accuracy_i2t, "accuracy_t2i": out.accuracy_t2i,
            "chance_loss": math.log(n) if n == m else None,
            "sigmoid_loss": None if out.sigmoid_loss is None else float(out.sigmoid_loss),
            "logit_bias": out.bias if out.sigmoid_loss is not None else None}


def compute_matrix(clip, batch: MatrixBatch, view: str, captions: list[str] | None = None,
                   extra_captions: list[str] | None = None, progress=None) -> MatrixResult:
    """The matrix of the session's batch: its images against its captions (edited, if given) and any
    extra captions, for one view. Encodes only what this model has not yet encoded for the batch."""
    if view not in VIEWS:
        raise UserInputError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}")
    captions = list(batch.captions if captions is None else captions)
    empty = [i for i, c in enumerate(captions) if not str(c).strip()]
    if empty:
        raise UserInputError(f"the caption of row {empty[0]} is empty: write one, or remove the image")
    captions = [str(c).strip() for c in captions]
    batch.pairs.captions = captions
    all_captions = captions + list(extra_captions or [])
    img, txt, _ = embeddings(clip, batch, all_captions, progress)
    out = similarity(img, txt, clip.logit_scale, clip.logit_bias if clip.family.independent else None)
    n, m = len(captions), len(all_captions)
    fig = matrix_figure(view_values(out, view), batch.thumbnails, all_captions, view, n)
    batch.view = view
    return MatrixResult(out, fig, figures_markdown(out, n, m) + false_negatives_markdown(out, all_captions),
                        loss_table(out, all_captions),
                        {**matrix_data(out, view, all_captions, batch.pairs.names), "receipt": receipt(clip)})
