"""Similarity-matrix tab: how a batch's image–text matrix turns into the contrastive loss.

Rows are images (thumbnails on the left), columns are captions. Four views of the same batch:
cosine, logits (× logit scale), softmax over rows (image → text) and over columns (text → image).
The diagonal holds the true pairs; the per-row and per-column cross-entropies average into
loss_i and loss_t, whose mean is CLIP's loss. The built batch lives in the session (see
demo/matrix_view.py): the source controls only take effect on "Build batch".
"""

from __future__ import annotations

import gradio as gr

from core.errors import UserInputError
from demo.inputs.checks import count_at_most, early_checks, number, text
from demo.inputs.pairs import SOURCES, SourceSpec, build_pairs
from demo.platform.contract import get_model, running, stop_button, user_errors
from demo.tabs.matrix.batch import (
    LOSS_COLUMNS,
    VIEWS,
    as_frame,
    captions_frame,
    captions_from_frame,
    compute_matrix,
    new_batch,
    parse_extra,
)
from demo.tabs.shared.source_inputs import upload_and_dataset_inputs

# browser side: a table that differs from the last one sent bumps the edit counter; the same table does not
COUNT_EDITS_JS = """(table) => {
  const seen = JSON.stringify(table && table.data !== undefined ? table.data : table);
  if (seen !== window.clipLabMatrixTable) {
    window.clipLabMatrixTable = seen;
    window.clipLabMatrixEdits = (window.clipLabMatrixEdits || 0) + 1;
  }
  return String(window.clipLabMatrixEdits || 0);
}"""
FORGET_EDITS_JS = "(...args) => { window.clipLabMatrixTable = undefined; return args; }"
NO_BATCH = ("ℹ️ No batch was built in this session yet, so this is the default batch: 8 shapes-world pairs "
            "(seed 0, eval split). Press **Build batch** for another.")
STALE = ("⚠️ **The source controls changed since this batch was built**: the matrix below still shows the "
         "built batch. Press **Build batch** to use the new settings.")


def build_tab(ctx, model_state: gr.State) -> None:
    """The similarity-matrix tab."""
    cfg = ctx.config
    batch_state = gr.State(None, time_to_live=3600)
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            source = gr.Radio(list(SOURCES), value="shapes world", label="Batch source")
            n = gr.Slider(2, cfg.max_matrix_pairs, value=8, step=1, label="N pairs (shapes world / datasets)")
            seed = gr.Number(0, precision=0, label="seed")
            split = gr.Dropdown(["eval", "train"], value="eval", label="shapes-world split")
            files, ds_name, ds_split, img_col, txt_col = upload_and_dataset_inputs()
            with gr.Row():
                build = gr.Button("Build batch", variant="primary", elem_id="mx-build", scale=3)
                stop = gr.Button("Stop", variant="stop", elem_id="mx-stop", scale=1)
        with gr.Column(scale=1, min_width=300):
            table = gr.Dataframe(headers=["image", "caption"], column_count=(2, "fixed"), interactive=True, wrap=True,
                                 column_widths=["18%", "82%"], label="Captions (edit a cell and the matrix updates)",
                                 elem_id="mx-table", max_height=380)
            extra = gr.Textbox(lines=2, label="Extra captions, one per line (adds columns: an M×N batch, no loss); "
                               "the matrix updates when you leave the box", elem_id="mx-extra")
            view = gr.Radio(list(VIEWS), value="cosine", label="View", elem_id="mx-view")
    stale = gr.Markdown(label="Batch status", elem_id="mx-stale")
    figures = gr.Markdown(label="Loss and accuracy", elem_id="mx-figures")
    plot = gr.Plot(label="Image–text matrix", elem_id="mx-plot")
    losses = gr.Dataframe(headers=LOSS_COLUMNS, label="Per-row and per-column loss terms", wrap=True, elem_id="mx-losses")
    with gr.Accordion("All numbers (JSON: the shown values, cosines, losses and accuracies)", open=False):
        data = gr.JSON(label="All numbers (JSON)", elem_id="mx-json")

    @user_errors
    def build_batch(source: str = "shapes world", n: float = 8, seed: float = 0, split: str = "eval",
                    files: list | None = None, dataset: str | None = None, dataset_split: str = "train",
                    image_column: str = "image", text_column: str = "text", extra_captions: str | None = None,
                    view: str = "cosine", model: str | None = None, request: gr.Request = None,
                    progress=gr.Progress()):
        """Build a batch of image–caption pairs and show its CLIP similarity matrix, softmaxes and contrastive loss.

        Args:
            source: 'shapes world' (synthetic pairs), 'uploaded images' (captioned by file name) or 'datasets source'.
            n: how many pairs (shapes world and datasets), 2 to 32.
            seed: which pairs are drawn.
            split: the shapes-world split, 'eval' or 'train'.
            files: image files, for source 'uploaded images' (at most 32).
            dataset: a Hub dataset name or an allowed local folder, for source 'datasets source'.
            dataset_split: the dataset's split.
            image_column: the dataset's image column.
            text_column: the dataset's caption column.
            extra_captions: more captions, one per line, added as columns (a non-square batch has no loss).
            view: 'cosine', 'logits', 'softmax over rows (image → text)' or 'softmax over columns (text → image)'.
        """
        ctx.check_own_uploads(request, files)
        clip = get_model(ctx, model or "", progress)
        if progress is not None:
            progress(0.3, desc="building the batch")
        spec = SourceSpec(source, number(8 if n is None else n, "N", 2, cfg.max_matrix_pairs, integer=True),
                          number(seed or 0, "seed", 0, 2**31 - 1, integer=True), split, files, dataset or "",
                          dataset_split, image_column, text_column)
        extra_captions = text(extra_captions, "the extra captions", cfg.max_text_chars)
        if source == "uploaded images" and len(files or []) > cfg.max_matrix_pairs:
            raise UserInputError(f"{len(files)} images uploaded; the matrix shows at most {cfg.max_matrix_pairs}")
        pairs = build_pairs(spec, cfg.data_dirs, cfg.max_matrix_pairs, ctx.services.dataset)
        batch = new_batch(pairs, source, cfg.max_matrix_pairs)
        if progress is not None:
            progress(0.6, desc=f"encoding {len(pairs)} images and captions")
        with running(ctx, request, "matrix") as job:
            r = compute_matrix(clip, batch, view, None, parse_extra(extra_captions, cfg.max_extra_captions),
                               job.reporter(progress, "encoding the batch", "images"))
        return batch, captions_frame(pairs), r.figure, r.figures_md, r.losses, r.data, ""

    @user_errors
    def similarity_matrix(batch, captions=None, extra_captions: str | None = None, view: str = "cosine",
                          model: str | None = None, request: gr.Request = None, progress=gr.Progress()):
        """Redraw the session's batch (built by build_batch) with edited captions, extra captions or another view.

        A session that has built no batch gets the default one: 8 shapes-world pairs, seed 0, eval split.

        Args:
            captions: the caption table (columns 'image' and 'caption', one row per image); omitted: the batch's captions.
            extra_captions: more captions, one per line, added as columns (a non-square batch has no loss).
            view: 'cosine', 'logits', 'softmax over rows (image → text)' or 'softmax over columns (text → image)'.
        """
        clip = get_model(ctx, model or "", progress)
        extra_captions = text(extra_captions, "the extra captions", cfg.max_text_chars)
        note = gr.skip()
        if batch is None:  # nothing built in this session yet: the default batch, and say so
            batch = new_batch(build_pairs(SourceSpec(), cfg.data_dirs), "shapes world", cfg.max_matrix_pairs)
            note = NO_BATCH
        captions = as_frame(captions)
        if captions is not None and captions.empty:
            captions = None  # an empty table (the API's default): the batch's own captions
        edited = None if captions is None else captions_from_frame(captions, len(batch.pairs))
        if captions is not None and edited is None:
            raise UserInputError(f"the caption table must have a 'caption' column and {len(batch.pairs)} rows, one per image")
        with running(ctx, request, "matrix") as job:
            r = compute_matrix(clip, batch, view, edited, parse_extra(extra_captions, cfg.max_extra_captions),
                               job.reporter(progress, "encoding the batch", "images"))
        return batch, r.figure, r.figures_md, r.losses, r.data, note

    build_inputs = [source, n, seed, split, files, ds_name, ds_split, img_col, txt_col, extra, view, model_state]
    checks = early_checks({1: lambda v: number(v, "N", 2, cfg.max_matrix_pairs, integer=True),
                           2: lambda v: number(v or 0, "seed", 0, 2**31 - 1, integer=True),
                           4: count_at_most(cfg.max_matrix_pairs, "images"),
                           9: lambda v: text(v, "the extra captions", cfg.max_text_chars)})
    built = build.click(build_batch, build_inputs, [batch_state, table, plot, figures, losses, data, stale],
                        validator=checks,
                        api_name="build_batch", concurrency_id="inference", concurrency_limit=cfg.inference_threads(),
                        js=FORGET_EDITS_JS)
    # Gradio's table fires `input` twice for one edit committed with Enter or Tab; a browser-side
    # check passes each distinct table on once, as a new value of a hidden edit counter
    edits = gr.Textbox("0", visible="hidden", elem_id="mx-edits")
    table.input(None, table, edits, js=COUNT_EDITS_JS, api_visibility="private", queue=False)
    redrawn = gr.on([edits.change, view.input, extra.blur], similarity_matrix, [batch_state, table, extra, view, model_state],
                    [batch_state, plot, figures, losses, data, stale], api_name="similarity_matrix",
                    concurrency_id="inference", concurrency_limit=cfg.inference_threads(), trigger_mode="always_last",
                    validator=early_checks({2: lambda v: text(v, "the extra captions", cfg.max_text_chars)}))
    stop_button(ctx, stop, "matrix", [built, redrawn])
    # the batch is only rebuilt on "Build batch": a changed source control just says so (in the browser, no request)
    gr.on([source.input, n.release, seed.input, split.input, files.upload, files.clear, ds_name.input, ds_split.input,
           img_col.input, txt_col.input], None, None, stale, js=f"() => {STALE!r}", api_visibility="private", queue=False)
