"""Evaluate tab: zero-shot accuracy on a labelled set, where it goes wrong, and what prompts and a few labels buy.

A labelled set (the shapes world, an uploaded zip or files with a labels.csv, or a `datasets`
source: demo/inputs/labelled_sets.py) is encoded once per model and kept by the services. Its class names
become prompts (renamed where asked), and templates come from the presets or the editor, as on the
zero-shot tab. The results (demo/tabs/evaluate/study.py): top-1, top-5 and mean per-class recall, a
per-class table, the confusion heatmap, galleries of confident mistakes and correct examples, each
template alone vs the ensemble, forward selection on one half scored on the other, and the
few-shot linear probe against zero-shot, all downloadable as JSON and CSV.
"""

from __future__ import annotations

import warnings

import gradio as gr

from core.receipts import receipt
from core.errors import UserInputError
from core.zeroshot import parse_templates
from demo.tabs.shared.api_examples import no_example
from demo.inputs.checks import at_most_chars, at_most_items, in_range, number
from demo.inputs.labelled_sets import MAX_SET_IMAGES, SET_SOURCES, SHAPES_LABELS, SetSpec, encode_set, load_set
from demo.inputs.presets import CUSTOM, DEFAULT_TEMPLATES, TEMPLATE_PRESETS, matching_preset, preset_text
from demo.platform.contract import Call, handler, input_names, listen, stop_button
from demo.platform.mcp import mcp_tool
from demo.platform.scratch import scratch_folder
from demo.tabs.evaluate.study import (
    CLASS_COLUMNS,
    GALLERY_CSS,
    TEMPLATE_COLUMNS,
    confusion_figure,
    galleries,
    per_class_frame,
    probe_figure,
    prompt_names_for,
    result_data,
    selection_markdown,
    summary_markdown,
    templates_frame,
    write_downloads,
)
from demo.tabs.evaluate.calibration import (COVERAGES, DEFAULT_COVERAGE, calibration_markdown, calibration_report,
                                            reliability_figure, risk_figure, zero_shot_record)
from demo.tabs.evaluate.several_labels import (COLUMNS as SEVERAL_COLUMNS, check_several_labels, several_labels_frame,
                                               several_labels_markdown, several_labels_record, several_labels_report)
from demo.tabs.evaluate.study import evaluate as evaluate_set
from demo.tabs.shared.session_model import model_notice
from demo.tabs.shared.zero_shot_scores import MAX_SCALE, MIN_SCALE, vocabulary_notice

# scikit-learn says so whenever a few-shot probe has more classes than half its examples: expected here
warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
DEFAULT_N, MIN_N = 1000, 10


def set_spec(source, n, seed, split, label, files, dataset, dataset_split, image_column, label_column,
             caption_column) -> tuple[SetSpec, str]:
    """The set the inputs describe and the shapes-world label kind (None means the input's default)."""
    source = source or "shapes world"
    if source not in SET_SOURCES:
        raise UserInputError(f"unknown source {source!r}; choose one of {', '.join(SET_SOURCES)}")
    n = number(n if n not in (None, "") else DEFAULT_N, "N", MIN_N, MAX_SET_IMAGES, integer=True)
    seed = number(seed or 0, "seed", 0, 2**31 - 1, integer=True)
    split = split or "eval"
    if split not in ("eval", "train"):
        raise UserInputError(f"the shapes-world split must be 'eval' or 'train', got {split!r}")
    label = SHAPES_LABELS.get(label or "shape", label)
    if label not in SHAPES_LABELS.values():
        raise UserInputError(f"label {label!r} is not one of {', '.join(SHAPES_LABELS)}")
    paths = tuple(str(getattr(f, "path", f)) for f in files or []) if source == "uploaded zip or files" else ()
    spec = SetSpec(source, n, seed, split, paths, (dataset or "").strip(), (dataset_split or "train").strip(),
                   (image_column or "image").strip(), (label_column or "label").strip(), (caption_column or "").strip())
    return spec, label


def encoded(ctx, clip, spec: SetSpec, progress, job):
    """The encoded set for this model, from the services' cache or read and encoded now (Stop-able)."""
    def build():
        if progress is not None:
            progress(0.01, desc="reading the set")
        lset = load_set(spec, ctx.config.data_dirs, ctx.services.dataset, job.reporter(progress, "reading the set", "images"))
        return encode_set(clip, lset, job.reporter(progress, "encoding images", "images"),
                          job.reporter(progress, "encoding captions", "captions"))

    return ctx.services.encoded_set(clip, spec.key(), build)[0]


def study_reporter(job, progress):
    """A (done, total) callback for the study: checks Stop, shows one bar for selection and probe."""
    def report(done: int, total: int) -> None:
        job.check()
        if progress is not None and total:
            progress(done / total, desc="forward selection and linear probe")
    return report


CHECKS = {"n": in_range("N", MIN_N, MAX_SET_IMAGES, integer=True, default=DEFAULT_N),
          "seed": in_range("seed", 0, 2**31 - 1, integer=True, default=0),
          "files": at_most_items("files", MAX_SET_IMAGES + 1),
          "prompt_names": at_most_chars("the prompt names"), "templates": at_most_chars("the templates")}


@handler("evaluate", checks=CHECKS, uploads=("files",), cost="heavy")
def evaluate(call: Call, source: str | None = None, n: float | None = None, seed: float | None = None,
             split: str | None = None, label: str | None = None, files: list | None = None, dataset: str | None = None,
             dataset_split: str | None = None, image_column: str | None = None, label_column: str | None = None,
             caption_column: str | None = None, prompt_names: str | None = None, templates: str | None = None,
             select_templates: bool | None = None, linear_probe: bool | None = None, calibration: bool | None = None,
             coverage: str | None = None, several_labels: bool | None = None, model: str | None = None):
    """Zero-shot evaluate CLIP on a labelled image set: accuracy, per-class table, confusion matrix, mistakes,
    each prompt template alone vs the ensemble, forward selection of templates, and a few-shot linear probe.

    Args:
        source: "shapes world" (synthetic), "uploaded zip or files" or "datasets source".
        n: images for the shapes world or rows of a dataset, 10 to 5,000 (default 1,000).
        seed: picks the shapes-world samples or dataset rows, and the half/half split of selection and probe.
        split: shapes-world split, "eval" (every colour-shape pair) or "train".
        label: what a shapes-world image is labelled by: "shape", "colour", "colour × shape" or "style".
        files: for "uploaded zip or files": one zip of class folders (or with a labels.csv), or images plus a
            labels.csv (columns filename,label); at most 5,000 images.
        dataset: a Hub dataset name or an allowed local folder, for "datasets source".
        dataset_split: the dataset's split, e.g. "train".
        image_column: the dataset's image column.
        label_column: the dataset's label column (ClassLabel names become the class names).
        caption_column: optional caption column of the dataset, for retrieval recall@K.
        prompt_names: optional renames, one per line as 'set name = prompt name' (e.g. 'crane = crane (bird)').
        templates: prompt templates, one per line, each with {} for the class name; omitted: the shapes-world templates.
        select_templates: run greedy forward selection of templates on one half, scored on the other (default true).
        linear_probe: fit few-shot linear probes (k = 1, 2, 4, 8, 16 per class, 3 draws, and all) beside zero-shot (default true).
        calibration: calibration (ECE, NLL, Brier before and after one fitted logit scale, half / half) and "none of
            these" (conformal prediction sets; a quarter of the classes held out as unknown images) (default true).
        coverage: the stated coverage of the conformal sets: "80%", "90%" (default) or "95%".
        several_labels: also score several labels per image on N shapes-world scenes of 2 or 3 objects (label
            "shape" or "colour"): mAP and per-class F1 at the model's sigmoid or at per-class thresholds chosen for F1
            on a calibration half (default false).
        model: the model: a bundled name, an allowed local folder or a Hub id; omitted: the app's default.
    """
    cfg = call.config
    model = model or cfg.default_model
    spec, kind = set_spec(source, n, seed, split, label, files, dataset, dataset_split, image_column, label_column,
                          caption_column)
    tpl_text = templates if (templates or "").strip() else preset_text("templates", DEFAULT_TEMPLATES)
    templates_ = parse_templates(tpl_text)
    if several_labels:
        check_several_labels(spec.source, kind)
    clip = call.model(model)
    enc = encoded(call.ctx, clip, spec, call.progress, call.job)
    _, classnames, _ = enc.task(kind)
    names, notices = prompt_names_for(classnames, prompt_names or "")
    if len(names) * len(templates_) > cfg.max_prompts:
        raise UserInputError(f"{len(names)} classes x {len(templates_)} templates = {len(names) * len(templates_):,} "
                             f"prompts; the limit is {cfg.max_prompts:,}: use fewer templates")
    head, _ = call.ctx.services.zero_shot_head(clip, names, templates_, progress=call.report("encoding prompts", "prompts"))
    notices += [x for x in (vocabulary_notice(clip.source, names),) if x]
    e = evaluate_set(enc, kind, names, head.template_emb, templates_, clip.logit_scale, model,
                     select_templates is not False, linear_probe is not False, spec.seed, notices,
                     progress=study_reporter(call.job, call.progress), logit_bias=clip.logit_bias, rule=clip.family.rule)
    e.receipt = receipt(clip, templates_)
    if calibration is not False:
        call.say(0.99, "calibrating")
        e.calibration = calibration_report(e.cosines, e.labels, e.logit_scale, e.probs, spec.seed,
                                           coverage or DEFAULT_COVERAGE)
    several = None
    if several_labels:
        several = several_labels_report(clip, head.head.numpy(), classnames, kind, spec.n, spec.seed,
                                        call.job.reporter(call.progress, "encoding scenes of several objects", "images"))
        e.several_labels = several
    wrong, right = galleries(e)
    paths = write_downloads(e, scratch_folder("evaluate", cfg.upload_ttl_s))
    picked = e.study.selection.chosen_templates if e.study.selection is not None else None
    summary = summary_markdown(e)
    cal = e.calibration
    return (summary, per_class_frame(e), confusion_figure(e), wrong, right, selection_markdown(e),
            templates_frame(e), probe_figure(e), paths, result_data(e, for_page=True), picked,
            matching_preset("templates", tpl_text), (model, summary),
            calibration_markdown(cal, e.prompt_names) if cal else "", reliability_figure(cal) if cal else None,
            risk_figure(cal) if cal else None,
            zero_shot_record(cal, model, names, templates_, e.description, several and several_labels_record(several)),
            several_labels_markdown(several) if several else "",
            several_labels_frame(several, names) if several else None)


@handler("evaluate", turn=False)
def use_calibrated_scale(call: Call, record: dict | None = None):
    """The fitted logit scale into the zero-shot tab's slider (its "use the model's scale" box unticked), and the
    calibration record that lets it draw prediction sets and decide several labels for the same model, classes and
    templates."""
    if record is None:
        gr.Warning("Run an evaluation with calibration (or several labels) first: there is nothing to use yet.")
        return gr.skip(), gr.skip(), gr.skip()
    several = " and decides several labels per image" if record.get("several_labels") else ""
    if record.get("fitted_scale") is None:
        gr.Info(f"The zero-shot tab now decides several labels per image for these {len(record['classnames'])} classes "
                "(no calibration was run: the logit scale stays as it is).")
        return gr.skip(), gr.skip(), record
    value = min(MAX_SCALE, max(MIN_SCALE, round(float(record["fitted_scale"]), 2)))
    gr.Info(f"The zero-shot tab now uses the logit scale {value:.2f}, fitted on this set's calibration half, shows "
            f"{record['target_coverage']:.0%} prediction sets{several} for these {len(record['classnames'])} classes.")
    return value, False, record


@handler("evaluate", turn=False)
def model_changed(call: Call, shown=None, model: str | None = None):
    """The session's model changed: the summary says whose study is shown (nothing is recomputed)."""
    if shown is None:
        return gr.skip()
    kept_model, summary = shown
    notice = model_notice(kept_model, model, call.config.default_model, "Evaluate")
    return "  \n".join(x for x in (notice, summary) if x)


@handler("evaluate", turn=False)
def templates_preset_picked(call: Call, name: str):
    """The text of a picked template preset ('custom' keeps the box)."""
    return gr.skip() if name == CUSTOM else preset_text("templates", name)


@handler("evaluate", turn=False)
def templates_preset_of(call: Call, text: str | None):
    """The template preset that a typed list equals, or 'custom'."""
    return matching_preset("templates", text)


@handler("evaluate", turn=False)
def default_templates(call: Call):
    """The default templates, for the box on page load (a multi-line default would break the API page's snippet)."""
    return preset_text("templates", DEFAULT_TEMPLATES)


@handler("evaluate", turn=False)
def use_chosen(call: Call, picked: list | None = None, own: dict | None = None):
    """The chosen templates into the zero-shot tab, as a preset of this session."""
    if not picked:
        gr.Warning("Run an evaluation with forward selection first: there are no chosen templates yet.")
        return gr.skip(), gr.skip(), gr.skip()
    text = "\n".join(picked)
    name = f"chosen in Evaluate ({len(picked)})"
    own = {**(own or {}), name: text}
    gr.Info(f"The {len(picked)} chosen template(s) are in the zero-shot tab, as the preset '{name}'.")
    choices = list(TEMPLATE_PRESETS) + list(own) + [CUSTOM]
    return text, gr.Dropdown(choices=choices, value=name), own


def build_tab(ctx, model_state: gr.State, zs_templates: gr.Textbox | None = None, zs_preset: gr.Dropdown | None = None,
              zs_saved: gr.State | None = None, zero_shot_tab=None) -> None:
    """The Evaluate tab; `zs_templates` (the zero-shot tab's template box) receives the chosen templates,
    which also become a template preset of this session in the zero-shot tab's menu (`zs_preset`,
    kept in `zs_saved`); `zero_shot_tab` (its ZeroShotHandles) receives a calibrated logit scale."""
    cfg = ctx.config
    chosen = gr.State(None, time_to_live=3600)
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            source = gr.Radio(list(SET_SOURCES), value="shapes world", label="Labelled set", elem_id="ev-source")
            n = gr.Slider(MIN_N, MAX_SET_IMAGES, value=DEFAULT_N, step=10, label="N images (shapes world / datasets)")
            with gr.Row():
                seed = gr.Number(0, precision=0, label="seed (the sample and the half/half split)")
                split = gr.Dropdown(["eval", "train"], value="eval", label="shapes-world split")
            label = gr.Radio(list(SHAPES_LABELS), value="shape", label="shapes-world label", elem_id="ev-label")
            files = no_example(gr.File(file_count="multiple", file_types=[".zip", ".csv", "image"], height=150,
                                       elem_id="ev-files",
                                       label="a zip of class folders (or with a labels.csv), or images + labels.csv"))
            with gr.Accordion("datasets source", open=False):
                ds_name = gr.Textbox(label="dataset (Hub name or allowed local folder)")
                with gr.Row():
                    ds_split = gr.Textbox("train", label="split")
                    img_col = gr.Textbox("image", label="image column")
                with gr.Row():
                    lbl_col = gr.Textbox("label", label="label column")
                    cap_col = gr.Textbox("", label="caption column (optional: retrieval R@K)")
        with gr.Column(scale=1, min_width=300):
            renames = gr.Textbox(None, lines=3, max_lines=8, elem_id="ev-renames", placeholder="crane = crane (bird)",
                                 label="Prompt names (optional): 'set name = prompt name', one per line")
            tpl_preset = gr.Dropdown(list(TEMPLATE_PRESETS) + [CUSTOM], value=DEFAULT_TEMPLATES, label="Template preset")
            templates = gr.Textbox(None, lines=6, max_lines=12, label="Templates (one per line, {} is the class name)",
                                   elem_id="ev-templates")
            with gr.Row():
                select = gr.Checkbox(True, label="forward selection of templates (half / half)")
                probe = gr.Checkbox(True, label="few-shot linear probe (k = 1, 2, 4, 8, 16, all)")
            with gr.Row():
                calibrate = gr.Checkbox(True, label="calibration and \"none of these\" (half / half)", elem_id="ev-calibrate")
                coverage = gr.Dropdown(list(COVERAGES), value=DEFAULT_COVERAGE, label="stated coverage of the sets",
                                       elem_id="ev-coverage")
            several = gr.Checkbox(False, label="several labels per image (shapes world: N scenes of 2 or 3 objects, "
                                  "label shape or colour)", elem_id="ev-several")
            with gr.Row():
                run = gr.Button("Evaluate", variant="primary", elem_id="ev-run", scale=3)
                stop = gr.Button("Stop", variant="stop", elem_id="ev-stop", scale=1)
    summary = gr.Markdown(label="Accuracy", elem_id="ev-summary")
    with gr.Row():
        with gr.Column(scale=1, min_width=400):
            confusion = gr.Plot(label="Confusion matrix, classes in confusion order (hover a cell for its count)",
                                elem_id="ev-confusion")
        with gr.Column(scale=1, min_width=400):
            classes = gr.Dataframe(headers=CLASS_COLUMNS, label="Per class: recall, precision and share in % (click a header "
                                   "to sort)", wrap=True, max_height=600, elem_id="ev-classes",
                                   column_widths=["15%", "16%", "8%", "13%", "17%", "19%", "12%"])
    with gr.Row():
        with gr.Column(scale=1, min_width=400):
            mistakes = gr.HTML(label="Most confident mistakes (true → predicted, probability of the prediction)",
                               show_label=True, container=True, css_template=GALLERY_CSS, elem_id="ev-mistakes")
        with gr.Column(scale=1, min_width=400):
            correct = gr.HTML(label="For contrast: confidently correct images of the same true classes", show_label=True,
                              container=True, css_template=GALLERY_CSS, elem_id="ev-correct")
    selection = gr.Markdown(label="Forward selection", elem_id="ev-selection")
    tpl_table = gr.Dataframe(headers=TEMPLATE_COLUMNS, label="Each template alone vs the ensemble", wrap=True,
                             elem_id="ev-templates-table")
    use = gr.Button("Use the chosen templates in the zero-shot tab", elem_id="ev-use",
                    visible=None not in (zs_templates, zs_preset, zs_saved))
    probe_plot = gr.Plot(label="Zero-shot vs few-shot linear probe", elem_id="ev-probe")
    cal_md = gr.Markdown(label="Calibration and none of these", elem_id="ev-calibration")
    with gr.Row():
        with gr.Column(scale=3, min_width=400):
            rel_plot = gr.Plot(label="Reliability diagram", elem_id="ev-reliability")
        with gr.Column(scale=2, min_width=300):
            risk_plot = gr.Plot(label="Risk against coverage", elem_id="ev-risk")
    several_md = gr.Markdown(label="Several labels per image", elem_id="ev-several-summary")
    several_table = gr.Dataframe(headers=SEVERAL_COLUMNS, label="Several labels: per class (AP and F1 in %)", wrap=True,
                                 elem_id="ev-several-table")
    fitted = gr.State(None, time_to_live=3600)
    use_scale = gr.Button("Use the calibrated scale in the zero-shot tab", elem_id="ev-use-scale",
                          visible=zero_shot_tab is not None)
    downloads = gr.File(label="Downloads: results (JSON, per-class and per-image CSV), chosen templates (.txt)",
                        file_count="multiple", elem_id="ev-downloads")
    with gr.Accordion("All numbers (JSON)", open=False):
        data = gr.JSON(label="All numbers (JSON)", elem_id="ev-json")

    shown = gr.State(None, time_to_live=3600)  # (model, summary) of the study on the page
    inputs = [source, n, seed, split, label, files, ds_name, ds_split, img_col, lbl_col, cap_col, renames, templates,
              select, probe, calibrate, coverage, several, model_state]
    outputs = [summary, classes, confusion, mistakes, correct, selection, tpl_table, probe_plot, downloads, data, chosen,
               tpl_preset, shown, cal_md, rel_plot, risk_plot, fitted, several_md, several_table]
    event = listen(ctx, run.click, evaluate, inputs, outputs, api_name="evaluate", concurrency_id="evaluate",
                   concurrency_limit=cfg.concurrency, show_progress_on=[summary])
    stop_button(ctx, stop, "evaluate", [event])
    mcp_tool(ctx, evaluate, input_names(evaluate, inputs), pick=9, n_outputs=len(outputs))
    listen(ctx, model_state.change, model_changed, [shown, model_state], summary)
    listen(ctx, tpl_preset.input, templates_preset_picked, [tpl_preset], templates)
    listen(ctx, [templates.blur, templates.submit], templates_preset_of, [templates], tpl_preset)
    listen(ctx, None, default_templates, [], templates)  # on page load
    if None not in (zs_templates, zs_preset, zs_saved):
        listen(ctx, use.click, use_chosen, [chosen, zs_saved], [zs_templates, zs_preset, zs_saved])
    if zero_shot_tab is not None:  # the zero-shot tab's slider and "use the model's scale" box, then its re-render
        zero_shot_tab.apply(listen(ctx, use_scale.click, use_calibrated_scale, [fitted],
                                   [zero_shot_tab.scale, zero_shot_tab.follow, zero_shot_tab.calibration]))
