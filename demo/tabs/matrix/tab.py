"""Similarity-matrix tab: how a batch's image–text matrix turns into the contrastive loss.

Rows are images (thumbnails on the left), columns are captions. Four views of the same batch:
cosine, logits (× logit scale), softmax over rows (image → text) and over columns (text → image).
The diagonal holds the true pairs; the per-row and per-column cross-entropies average into
loss_i and loss_t, whose mean is CLIP's loss. The built batch lives in the session (see
demo/tabs/matrix/batch.py): the source controls only take effect on "Build batch".
"""

from __future__ import annotations

import gradio as gr

from core.errors import UserInputError
from core.microscope import one_step
from demo.inputs.checks import at_most_chars, at_most_items, in_range, one_of
from demo.inputs.pairs import SOURCES, SourceSpec, build_pairs
from demo.platform.contract import Call, handler, input_names, listen, stop_button
from demo.platform.mcp import mcp_tool
from demo.inputs.images import unpack
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
from demo.tabs.matrix.microscope import STEP_RATES, step_data, step_figure, step_markdown
from demo.tabs.shared.session_model import model_notice, same_model
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


CHECKS = {"n": in_range("N", 2, "max_matrix_pairs", integer=True, default=8),
          "seed": in_range("seed", 0, 2**31 - 1, integer=True, default=0),
          "files": at_most_items("images", "max_matrix_pairs"), "extra_captions": at_most_chars("the extra captions")}
STEP_CHECKS = {"lr": one_of("the learning rate", STEP_RATES, default="1e-5")}


@handler("matrix", checks=CHECKS, uploads=("files",))
def build_batch(call: Call, source: str = "shapes world", n: float = 8, seed: float = 0, split: str = "eval",
                files: list | None = None, dataset: str | None = None, dataset_split: str = "train",
                image_column: str = "image", text_column: str = "text", extra_captions: str | None = None,
                view: str = "cosine", model: str | None = None):
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
        model: the model: a bundled name, an allowed local folder or a Hub id; omitted: the app's default.
    """
    cfg = call.config
    model = model or cfg.default_model
    clip = call.model(model)
    call.say(0.3, "building the batch")
    spec = SourceSpec(source, n, seed, split, files, dataset or "", dataset_split, image_column, text_column)
    pairs = build_pairs(spec, cfg.data_dirs, cfg.max_matrix_pairs, call.ctx.services.dataset,
                        call.report("drawing shapes-world images", "images"))
    batch = new_batch(pairs, source, cfg.max_matrix_pairs)
    batch.model_name = model
    r = compute_matrix(clip, batch, view, None, parse_extra(extra_captions, cfg.max_extra_captions),
                       call.report("encoding the batch", "images"))
    return batch, captions_frame(pairs), r.figure, r.figures_md, r.losses, r.data, ""


@handler("matrix", checks={"extra_captions": CHECKS["extra_captions"]}, refusal_output=5)
def similarity_matrix(call: Call, batch=None, captions=None, extra_captions: str | None = None, view: str = "cosine",
                      model: str | None = None):
    """Redraw the session's batch (built by build_batch) with edited captions, extra captions or another view.

    A session that has built no batch gets the default one: 8 shapes-world pairs, seed 0, eval split.
    A batch built with another model than the session's is not redrawn (that would encode it with
    the new model): build it again. A refusal (that, an empty caption) keeps the matrix as it was
    and says why in the batch status, the last output.

    Args:
        captions: the caption table (columns 'image' and 'caption', one row per image); omitted: the batch's captions.
        extra_captions: more captions, one per line, added as columns (a non-square batch has no loss).
        view: 'cosine', 'logits', 'softmax over rows (image → text)' or 'softmax over columns (text → image)'.
    """
    cfg = call.config
    model = model or cfg.default_model
    note = gr.skip()
    if batch is None:  # nothing built in this session yet: the default batch, and say so
        batch = new_batch(build_pairs(SourceSpec(), cfg.data_dirs), "shapes world", cfg.max_matrix_pairs)
        batch.model_name = model
        note = NO_BATCH
    if not same_model(batch.model_name, model, cfg.default_model):
        raise UserInputError(f"this batch was built with `{batch.model_name}`; the session's model is now `{model}`: "
                             "press Build batch to encode it with the new model" + shown_view(batch))
    clip = call.model(model)
    captions = as_frame(captions)
    if captions is not None and captions.empty:
        captions = None  # an empty table (the API's default): the batch's own captions
    edited = None if captions is None else captions_from_frame(captions, len(batch.pairs))
    if captions is not None and edited is None:
        raise UserInputError(f"the caption table must have a 'caption' column and {len(batch.pairs)} rows, one per image")
    r = compute_matrix(clip, batch, view, edited, parse_extra(extra_captions, cfg.max_extra_captions),
                       call.report("encoding the batch", "images"))
    return batch, r.figure, r.figures_md, r.losses, r.data, note


@handler("matrix", cost="heavy", checks=STEP_CHECKS)
def take_one_step(call: Call, batch=None, lr: str = "1e-5", model: str | None = None):
    """One optimizer step on the session's batch with a copy of the model (never the session's model itself):
    the loss before and after, and how every cell's logit moved.

    Args:
        lr: the step's learning rate (AdamW's first update moves each weight by lr against its gradient's sign): 1e-6, 1e-5, 1e-4 or 1e-3.
    """
    cfg = call.config
    model = model or cfg.default_model
    if batch is None:
        raise UserInputError("build a batch first: one step is taken on the batch the matrix shows")
    if not same_model(batch.model_name, model, cfg.default_model):
        raise UserInputError(f"this batch was built with `{batch.model_name}`; the session's model is now `{model}`: "
                             "press Build batch first")
    clip = call.model(model)
    captions = list(batch.pairs.captions)
    call.say(0.3, "one step on a copy of the model")
    step = one_step(clip, [unpack(b) for b in batch.blobs], captions, float(lr))
    return step_markdown(step), step_figure(step, captions), step_data(step)


def shown_view(batch) -> str:
    """What a refused redraw leaves on the page, for its message (the view menu already shows the new choice)."""
    return f" (the matrix shown is still its {batch.view} view)" if batch.view else ""


@handler("matrix", turn=False)
def model_changed(call: Call, batch=None, model: str | None = None):
    """The session's model changed: the batch status says whose matrix is shown (nothing is encoded)."""
    if batch is None:
        return gr.skip()
    return model_notice(batch.model_name, model, call.config.default_model, "Build batch")


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
    with gr.Accordion("One step: watch the gradient act on this batch (on a copy of the model)", open=False):
        with gr.Row():
            lr = gr.Dropdown(list(STEP_RATES), value="1e-5", label="learning rate", scale=1, elem_id="mx-lr")
            step_button = gr.Button("Take one step", scale=1, elem_id="mx-step")
        step_md = gr.Markdown(label="One step", elem_id="mx-step-md")
        step_plot = gr.Plot(label="Change of each logit", elem_id="mx-step-plot")
        with gr.Accordion("The step's numbers (JSON)", open=False):
            step_json = gr.JSON(label="One step (JSON)", elem_id="mx-step-json")

    build_inputs = [source, n, seed, split, files, ds_name, ds_split, img_col, txt_col, extra, view, model_state]
    built = listen(ctx, build.click, build_batch, build_inputs, [batch_state, table, plot, figures, losses, data, stale],
                   api_name="build_batch", js=FORGET_EDITS_JS)
    # Gradio's table fires `input` twice for one edit committed with Enter or Tab; a browser-side
    # check passes each distinct table on once, as a new value of a hidden edit counter
    edits = gr.Textbox("0", visible="hidden", elem_id="mx-edits")
    table.input(None, table, edits, js=COUNT_EDITS_JS, api_visibility="private", queue=False)
    redrawn = listen(ctx, [edits.change, view.input, extra.blur], similarity_matrix,
                     [batch_state, table, extra, view, model_state], [batch_state, plot, figures, losses, data, stale],
                     api_name="similarity_matrix", trigger_mode="always_last")
    stepped = listen(ctx, step_button.click, take_one_step, [batch_state, lr, model_state], [step_md, step_plot, step_json],
                     api_name="take_one_step", show_progress_on=[step_md])
    stop_button(ctx, stop, "matrix", [built, redrawn, stepped])
    mcp_tool(ctx, build_batch, [n for n in input_names(build_batch, build_inputs)], pick=5, n_outputs=7)
    listen(ctx, model_state.change, model_changed, [batch_state, model_state], stale)
    # the batch is only rebuilt on "Build batch": a changed source control just says so (in the browser, no request)
    gr.on([source.input, n.release, seed.input, split.input, files.upload, files.clear, ds_name.input, ds_split.input,
           img_col.input, txt_col.input], None, None, stale, js=f"() => {STALE!r}", api_visibility="private", queue=False)
