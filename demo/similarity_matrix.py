"""Similarity-matrix tab: how a batch's image–text matrix turns into the contrastive loss.

Rows are images (thumbnails on the left), columns are captions. Four views of the same batch:
cosine, logits (× logit scale), softmax over rows (image → text) and over columns (text → image).
The diagonal holds the true pairs; the per-row and per-column cross-entropies average into
loss_i and loss_t, whose mean is CLIP's loss.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from core.errors import UserInputError
from core.encode import encode_images, encode_texts
from core.loss import ContrastiveOutput, similarity

from .common import get_model, upload_and_dataset_inputs, user_errors
from .images import thumbnail_uri
from .sources import SOURCES, Pairs, SourceSpec, build_pairs

VIEWS = {"cosine": "cosine similarity", "logits": "logits = logit scale × cosine",
         "softmax over rows (image → text)": "softmax over each row: which caption does each image pick?",
         "softmax over columns (text → image)": "softmax over each column: which image does each caption pick?"}
MAX_N = 32
MAX_EXTRA = 16


def view_values(out: ContrastiveOutput, view: str):
    """The [n, m] matrix shown for a view name."""
    table = {"cosine": out.cosine, "logits": out.logits, "softmax over rows (image → text)": out.probs_rows,
             "softmax over columns (text → image)": out.probs_cols}
    if view not in table:
        raise UserInputError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}")
    return table[view].numpy()


def _wrap(caption: str, width: int = 16, lines: int = 3) -> str:
    parts = textwrap.wrap(caption, width) or [""]
    if len(parts) > lines:
        parts = parts[:lines]
        parts[-1] = parts[-1][: width - 1] + "…"
    return "<br>".join(parts)


def matrix_figure(values, images: list, captions: list[str], view: str, n_pairs: int) -> go.Figure:
    """The heatmap: values annotated, thumbnails for rows, captions for columns, the first
    `n_pairs` diagonal cells outlined, and each row's (▶) and column's (▼) argmax marked."""
    n, m = values.shape
    font = 12 if max(n, m) <= 10 else 10 if max(n, m) <= 16 else 8 if max(n, m) <= 24 else 6
    fmt = ".2f" if view != "logits" else ".1f"
    heat = go.Heatmap(z=values, x=list(range(m)), y=list(range(n)), colorscale="Viridis",
                      text=[[format(v, fmt) for v in row] for row in values], texttemplate="%{text}",
                      textfont=dict(size=font), customdata=[[captions[j] for j in range(m)] for _ in range(n)],
                      hovertemplate="image %{y} · caption %{x}<br>%{customdata}<br>value %{z:.4f}<extra></extra>",
                      colorbar=dict(title=view.split(" (")[0], thickness=14))
    fig = go.Figure(heat)
    rows_arg, cols_arg = values.argmax(1), values.argmax(0)
    fig.add_trace(go.Scatter(x=[int(j) - 0.33 for j in rows_arg], y=list(range(n)), mode="markers", name="row argmax ▶ (image → text)",
                             marker=dict(symbol="triangle-right", size=max(6, font), color="#ff4d4d", line=dict(color="white", width=1)),
                             hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=list(range(m)), y=[int(i) - 0.33 for i in cols_arg], mode="markers", name="column argmax ▼ (text → image)",
                             marker=dict(symbol="triangle-down", size=max(6, font), color="#ffffff", line=dict(color="black", width=1)),
                             hoverinfo="skip"))
    for i in range(min(n_pairs, n, m)):
        fig.add_shape(type="rect", x0=i - 0.46, x1=i + 0.46, y0=i - 0.46, y1=i + 0.46, line=dict(color="#ff9f1c", width=3))
    cell = 1.0
    for i, im in enumerate(images):
        fig.add_layout_image(source=thumbnail_uri(im, 64 if n <= 16 else 40), x=-0.55, y=i, xref="x", yref="y",
                             sizex=0.92 * cell, sizey=0.92 * cell, xanchor="right", yanchor="middle", layer="above")
    cell_px = 80 if max(n, m) <= 8 else 56 if max(n, m) <= 16 else 34
    fig.update_layout(title=dict(text=VIEWS[view], x=0.01), height=cell_px * n + 230,
                      margin=dict(l=10, r=10, t=60, b=10),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, x=1, xanchor="right"), plot_bgcolor="white")
    fig.update_xaxes(tickvals=list(range(m)), ticktext=[_wrap(c) for c in captions], side="bottom", tickangle=0 if m <= 8 else -60,
                     range=[-1.6, m - 0.5], showgrid=False, zeroline=False, tickfont=dict(size=10 if m <= 12 else 8))
    fig.update_yaxes(tickvals=list(range(n)), ticktext=[f"img {i}" for i in range(n)], autorange=False, range=[n - 0.5, -0.5],
                     showgrid=False, zeroline=False, scaleanchor="x", tickfont=dict(size=9))
    return fig


@dataclass
class MatrixResult:
    """What the tab shows for one batch and view."""

    output: ContrastiveOutput
    figure: go.Figure
    figures_md: str
    losses: pd.DataFrame


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
            f"logit scale {out.scale:.2f} · chance loss ln({n}) = {math.log(n):.3f}")


def loss_table(out: ContrastiveOutput, captions: list[str]) -> pd.DataFrame:
    """Per pair i: the row term -log p_rows[i, i] and the column term -log p_cols[i, i]."""
    if out.loss is None:
        return pd.DataFrame(columns=["pair", "caption", "row loss (image i → text)", "p(own caption)",
                                     "column loss (caption i → image)", "p(own image)"])
    n = len(out.loss_rows)
    return pd.DataFrame({"pair": list(range(n)), "caption": captions[:n],
                         "row loss (image i → text)": _r(out.loss_rows), "p(own caption)": _r(out.probs_rows.diagonal()),
                         "column loss (caption i → image)": _r(out.loss_cols), "p(own image)": _r(out.probs_cols.diagonal())})


def _r(t) -> list[float]:
    return [round(float(v), 4) for v in t.tolist()]


def parse_extra(text: str) -> list[str]:
    """Extra captions (one per line) appended as columns: they make the batch non-square."""
    extra = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if len(extra) > MAX_EXTRA:
        raise UserInputError(f"{len(extra)} extra captions; the limit is {MAX_EXTRA}")
    return extra


def compute_matrix(clip, pairs: Pairs, view: str, extra_captions: list[str] | None = None) -> MatrixResult:
    """Encode the batch, build the matrix (square, or M×N with extra captions) and its figures."""
    if len(pairs) > MAX_N:
        raise UserInputError(f"a batch of {len(pairs)} pairs is too large to show; the limit is {MAX_N}")
    if len(pairs) < 1:
        raise UserInputError("the batch is empty")
    empty = [i for i, c in enumerate(pairs.captions) if not str(c).strip()]
    if empty:
        raise UserInputError(f"the caption of row {empty[0]} is empty: write one, or remove the image")
    captions = [str(c).strip() for c in pairs.captions] + list(extra_captions or [])
    img = encode_images(clip, pairs.images)
    txt = encode_texts(clip, captions)
    out = similarity(img, txt, clip.logit_scale)
    n, m = len(pairs), len(captions)
    fig = matrix_figure(view_values(out, view), pairs.images, captions, view, n)
    return MatrixResult(out, fig, figures_markdown(out, n, m), loss_table(out, captions))


def captions_frame(pairs: Pairs) -> pd.DataFrame:
    """The editable table: one row per image, its name and its caption."""
    return pd.DataFrame({"image": pairs.names, "caption": pairs.captions})


def captions_from_frame(frame, expected: int) -> list[str] | None:
    """Captions from the edited table, or None when it does not describe this batch."""
    if frame is None or not hasattr(frame, "__len__") or len(frame) != expected or "caption" not in getattr(frame, "columns", []):
        return None
    return ["" if pd.isna(c) else str(c) for c in frame["caption"].tolist()]


def build_tab(ctx, model_state: gr.State):
    """The similarity-matrix tab."""
    cfg = ctx.config
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            source = gr.Radio(list(SOURCES), value="shapes world", label="Batch source")
            n = gr.Slider(2, MAX_N, value=8, step=1, label="N pairs")
            seed = gr.Number(0, precision=0, label="seed")
            split = gr.Dropdown(["eval", "train"], value="eval", label="shapes-world split")
            files, ds_name, ds_split, img_col, txt_col = upload_and_dataset_inputs()
            build = gr.Button("Build batch", variant="primary", elem_id="mx-build")
        with gr.Column(scale=1, min_width=300):
            table = gr.Dataframe(headers=["image", "caption"], column_count=(2, "fixed"), interactive=True, wrap=True,
                                 column_widths=["18%", "82%"], label="Captions (edit a cell and the matrix updates)", elem_id="mx-table", max_height=380)
            extra = gr.Textbox(lines=2, label="Extra captions, one per line (adds columns: an M×N batch, no loss)")
            view = gr.Radio(list(VIEWS), value="cosine", label="View", elem_id="mx-view")
    figures = gr.Markdown(elem_id="mx-figures")
    plot = gr.Plot(label="Image–text matrix", elem_id="mx-plot")
    losses = gr.Dataframe(label="Per-row and per-column loss terms", wrap=True)

    def spec_of(source, n, seed, split, files, ds_name, ds_split, img_col, txt_col) -> SourceSpec:
        return SourceSpec(source, int(n or 8), int(seed or 0), split, files, ds_name, ds_split, img_col, txt_col)

    source_inputs = [source, n, seed, split, files, ds_name, ds_split, img_col, txt_col]

    @user_errors
    def on_build(*args, progress=gr.Progress()):
        progress(0.1, desc="building the batch")
        return captions_frame(build_pairs(spec_of(*args), cfg.data_dirs, cfg.max_upload_images, ctx.services.dataset))

    @user_errors
    def on_matrix(*args, progress=gr.Progress()):
        *src, frame, extra_text, view_name, model_name = args
        clip = get_model(ctx, model_name, progress)
        progress(0.4, desc="encoding the batch")
        pairs = build_pairs(spec_of(*src), cfg.data_dirs, cfg.max_upload_images, ctx.services.dataset)
        captions = captions_from_frame(frame, len(pairs))
        if captions is not None:
            pairs.captions = captions
        r = compute_matrix(clip, pairs, view_name, parse_extra(extra_text))
        return r.figure, r.figures_md, r.losses

    matrix_inputs = source_inputs + [table, extra, view, model_state]
    build.click(on_build, source_inputs, table, api_name="build_batch").success(
        on_matrix, matrix_inputs, [plot, figures, losses], api_name="similarity_matrix_after_build",
        api_visibility="undocumented", concurrency_id="inference")
    gr.on([table.input, view.input, extra.submit], on_matrix, matrix_inputs, [plot, figures, losses],
          api_name="similarity_matrix", concurrency_id="inference", trigger_mode="always_last")
