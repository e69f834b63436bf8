"""Zero-shot tab: which prompt wins and why.

Class names and templates are edited in the browser. The result shows the ensemble's top-k, each
template's own verdict with its cosines and logits, and a logit-scale slider that re-renders the
probabilities at once from the kept cosines (see demo/tabs/shared/zero_shot_scores.py for the logic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable
from pathlib import Path

import gradio as gr

from core.errors import UserInputError
from core.zeroshot import parse_templates
from demo.inputs.checks import at_most_chars, at_most_items, in_range
from demo.inputs.images import gather_images
from demo.inputs.presets import (
    CLASSNAME_PRESETS,
    CUSTOM,
    DEFAULT_CLASSNAMES,
    DEFAULT_TEMPLATES,
    TEMPLATE_PRESETS,
    matching_preset,
    preset_text,
)
from demo.platform.config import EXAMPLES_DIR
from demo.platform.contract import Call, handler, listen, stop_button
from demo.platform.mcp import mcp_tool
from demo.tabs.shared.prediction_sets import with_prediction_sets
from demo.tabs.shared.api_examples import EXAMPLE_IMAGE, no_example, served_example
from demo.tabs.shared.saliency_panels import build_zero_shot_saliency
from demo.tabs.shared.session_model import model_notice
from demo.tabs.shared.zero_shot_scores import (
    BATCH_COLUMNS,
    DEFAULT_SCALE,
    MAX_SCALE,
    MIN_SCALE,
    TEMPLATE_COLUMNS,
    check_inputs,
    duplicate_notice,
    render,
    score,
    vocabulary_notice,
)

PHOTO_CLASSES = "apple\nhouse\ntree\nsunset over the sea\nsailing boat\ncat\ncar"


def examples() -> tuple[list[list], list[str], list[list], list[str]]:
    """Examples from assets/examples/: shapes-world images (image only: the default class names
    fit them) with their labels, and synthetic photos with everyday class names, OpenAI's 7
    templates and labels. The bundled model names every shapes example correctly (see
    assets/examples/make_examples.py)."""
    paths = sorted(Path(EXAMPLES_DIR).glob("*.png"))
    shapes = [[str(p)] for p in paths if p.name.startswith("shapes_")]
    shape_labels = [Path(p[0]).stem.removeprefix("shapes_").replace("_", " ") for p in shapes]
    photos = [[str(p), PHOTO_CLASSES, preset_text("templates", "OpenAI's 7")] for p in paths if p.name.startswith("photo_")]
    labels = [f"{Path(p[0]).stem.removeprefix('photo_')} (synthetic photo)" for p in photos]
    return shapes, shape_labels, photos, labels


CHECKS = {"images": at_most_items("images"), "classnames": at_most_chars("the class names"),
          "templates": at_most_chars("the templates"), "top_k": in_range("top-k", 1, 20, integer=True, default=5),
          "logit_scale": in_range("the logit scale", MIN_SCALE, MAX_SCALE, default=DEFAULT_SCALE)}
VIEW_OUTPUTS = 8  # label, plot, info, templates table, heatmap, batch table, JSON, what the model saw


@handler("zero_shot", checks=CHECKS, uploads=("image", "images"))
def zero_shot(call: Call, image: str | None = str(EXAMPLE_IMAGE), images: list | None = None, classnames: str | None = None,
              templates: str | None = None, top_k: float = 5, logit_scale: float | None = None,
              use_model_scale: bool = True, model: str | None = None, calibration: dict | None = None):
    """Zero-shot classify images with CLIP: a prompt-template ensemble over the given class names.

    Args:
        image: one image file (path or URL); omitted: the app's example, a purple star.
        images: more image files; each gets a row in the per-image table (at most 64 images in all).
        classnames: class names, one per line or comma-separated; omitted: the shapes-world shapes.
        templates: prompt templates, one per line, each with {} where the class name goes; omitted: the shapes-world templates.
        top_k: how many classes to list, 1 to 20.
        logit_scale: the scale (1 / temperature) that turns cosines into probabilities, 1 to 150 (CLIP clamps its own at 100).
        use_model_scale: when true (the default), logit_scale is ignored and the model's own scale is used.
        model: the model: a bundled name, an allowed local folder or a Hub id; omitted: the app's default.
    """
    cfg = call.config
    model = model or cfg.default_model
    clip = call.model(model)
    images_, names = gather_images(image, images, cfg.max_upload_images)
    classnames = classnames if (classnames or "").strip() else preset_text("classnames", DEFAULT_CLASSNAMES)
    templates = templates if (templates or "").strip() else preset_text("templates", DEFAULT_TEMPLATES)
    names_, templates_ = check_inputs(images_, classnames, templates, cfg.max_prompts)
    head, _ = call.ctx.services.zero_shot_head(clip, names_, templates_, progress=call.report("encoding prompts", "prompts"))
    notices = [n for n in (vocabulary_notice(clip.source, names_), duplicate_notice(classnames, templates)) if n]
    s = score(clip, head, images_, names, model, notices, progress=call.report("encoding images", "images"))
    scale = s.model_scale if use_model_scale or logit_scale is None else logit_scale
    v = with_prediction_sets(render(s, top_k, scale), s, calibration)
    return (s, v.label, v.figure, v.info, v.templates, v.heatmap, v.batch, v.data, v.saw, round(scale, 2),
            matching_preset("classnames", classnames), matching_preset("templates", templates))


def shown(call: Call, scores, top_k: int, scale: float, model: str | None, calibration: dict | None = None) -> tuple:
    """The view outputs for kept scores at a scale, with a notice when they belong to another model (and the
    prediction sets of a calibration from the Evaluate tab, when it applies)."""
    v = with_prediction_sets(render(scores, top_k, scale), scores, calibration)
    notice = model_notice(scores.model_name, model, call.config.default_model, "Classify")
    return v.label, v.figure, "  \n".join(x for x in (notice, v.info) if x), v.templates, v.heatmap, v.batch, v.data, v.saw


@handler("zero_shot", turn=False, checks={"top_k": CHECKS["top_k"], "logit_scale": CHECKS["logit_scale"]})
def rescale(call: Call, scores=None, top_k: float = 5, logit_scale: float = DEFAULT_SCALE, use_model_scale: bool = True,
            model: str | None = None, calibration: dict | None = None):
    """Re-render the kept cosines at another top-k or scale (encodes nothing); the model's own scale when
    use_model_scale. Outputs: the view, the scale shown on the slider, the checkbox."""
    if scores is None:
        return (gr.skip(),) * (VIEW_OUTPUTS + 2)
    scale = scores.model_scale if use_model_scale else logit_scale
    return (*shown(call, scores, top_k, scale, model, calibration), round(scale, 2), use_model_scale)


@handler("zero_shot", turn=False, checks={"top_k": CHECKS["top_k"], "logit_scale": CHECKS["logit_scale"]})
def rescale_by_hand(call: Call, scores=None, top_k: float = 5, logit_scale: float = DEFAULT_SCALE, model: str | None = None,
                    calibration: dict | None = None):
    """The slider (or its number box) moved: render at that scale, and stop following the model's."""
    return rescale(call, scores, top_k, logit_scale, False, model, calibration)


@handler("zero_shot", turn=False)
def model_changed(call: Call, scores=None, model: str | None = None, use_model_scale: bool = True):
    """The session's model changed: the kept scores stay, said to belong to their model; the slider shows the
    new model's scale when it follows the model's (nothing is encoded)."""
    scale = loaded_scale(call, model) if use_model_scale else gr.skip()
    if scores is None:
        return gr.skip(), scale
    return shown(call, scores, 5, scores.model_scale, model)[2], scale


@handler("zero_shot", turn=False)
def classnames_preset_picked(call: Call, name: str):
    """The text of a picked class-name preset ('custom' keeps the box)."""
    return gr.skip() if name == CUSTOM else preset_text("classnames", name)


@handler("zero_shot", turn=False)
def templates_preset_picked(call: Call, name: str, own: dict | None = None):
    """The text of a picked template preset, or of one of this session's own presets."""
    if name in (own or {}):
        return own[name]
    return gr.skip() if name == CUSTOM else preset_text("templates", name)


@handler("zero_shot", turn=False)
def classnames_preset_of(call: Call, text: str | None):
    """The class-name preset that a typed list equals, or 'custom'."""
    return matching_preset("classnames", text)


@handler("zero_shot", turn=False)
def templates_preset_of(call: Call, text: str | None, own: dict | None = None):
    """The template preset (or the session's own preset) that a typed list equals, or 'custom' (also for
    a list that does not parse: the error shows when it is used)."""
    found = matching_preset("templates", text)
    if found == CUSTOM:
        try:
            entries = parse_templates(text or "") if (text or "").strip() else []
        except UserInputError:
            return CUSTOM
        found = next((n for n, t in (own or {}).items() if _parses_to(t, entries)), CUSTOM)
    return found


def _parses_to(text: str, entries: list[str]) -> bool:
    try:
        return parse_templates(text) == entries
    except UserInputError:
        return False


def loaded_scale(call: Call, model: str | None):
    """The logit scale of the model when it is in memory (rounded as the slider shows it), else a skip."""
    try:
        clip = call.ctx.models.peek(call.ctx.models.resolve(model or call.config.default_model))
    except UserInputError:  # a name that cannot be loaded: the slider stays as it is
        return gr.skip()
    return gr.skip() if clip is None else round(float(clip.logit_scale), 2)


@handler("zero_shot", turn=False)
def fill_defaults(call: Call, model: str | None = None):
    """On page load: the default presets' texts in the boxes, and the model's own scale on the slider
    (when the model is in memory; the first answer sets it otherwise)."""
    return preset_text("classnames", DEFAULT_CLASSNAMES), preset_text("templates", DEFAULT_TEMPLATES), loaded_scale(call, model)



@dataclass
class ZeroShotHandles:
    """What the zero-shot tab offers the app: its class-name and template boxes (the map uses them),
    and the page-load event that fills them with the default presets."""

    classnames: gr.Textbox
    templates: gr.Textbox
    scale: gr.Slider
    template_preset: gr.Dropdown | None = None  # the template preset menu (the Evaluate tab adds to it) ...
    saved_templates: gr.State | None = None  # ... and this session's own presets: {name: templates text}

    follow: gr.Checkbox | None = None  # "use the model's scale"
    rerender: Callable | None = None  # rerender(event): after `event` sets the scale, the view follows it
    calibration: gr.State | None = None  # a calibration record from the Evaluate tab: prediction sets

    def outputs(self) -> list:
        """What `fill_defaults` fills on page load."""
        return [self.classnames, self.templates, self.scale]

    def apply(self, event) -> None:
        """Another tab set `scale` (and `follow`) in `event`: re-render the kept cosines at it, so every number
        shown belongs to the scale on the slider."""
        if self.rerender is not None:
            self.rerender(event)


def build_tab(ctx, model_state: gr.State) -> ZeroShotHandles:
    """The zero-shot tab. The text boxes start empty and are filled on page load (see ZeroShotHandles),
    so the API's defaults are single-line (None: the shapes-world presets)."""
    scores = gr.State(None, time_to_live=3600)
    shape_rows, shape_labels, photo_rows, photo_labels = examples()
    with gr.Row():
        with gr.Column(scale=1):
            image = served_example(gr.Image(str(EXAMPLE_IMAGE), type="filepath",
                                            sources=["upload", "clipboard", "webcam"], label="Image", height=280,
                                            elem_id="zs-image"), ctx.config)
            files = no_example(gr.File(file_count="multiple", file_types=["image"],
                                       label="…or several images (gives a table)", height=180))
            top_k = gr.Slider(1, 20, value=5, step=1, label="top-k")
            with gr.Row():
                scale = gr.Slider(MIN_SCALE, MAX_SCALE, value=DEFAULT_SCALE, step=0.01, label="logit scale (1 / temperature)",
                                  info="CLIP: softmax(scale × cosine); SigLIP: sigmoid(scale × cosine + bias) per class. "
                                       "Moving it re-renders at once", scale=3,
                                  elem_id="zs-scale")
                follow = gr.Checkbox(True, label="use the model's scale", scale=1, elem_id="zs-follow")
            with gr.Row():
                run = gr.Button("Classify", variant="primary", elem_id="zs-run")
                stop = gr.Button("Stop", variant="stop", elem_id="zs-stop")
        with gr.Column(scale=1):
            with gr.Row():
                cls_preset = gr.Dropdown(list(CLASSNAME_PRESETS) + [CUSTOM], value=DEFAULT_CLASSNAMES, label="Class-name preset")
                tpl_preset = gr.Dropdown(list(TEMPLATE_PRESETS) + [CUSTOM], value=DEFAULT_TEMPLATES, label="Template preset",
                                         elem_id="zs-tpl-preset")
            classnames = gr.Textbox(None, lines=6, max_lines=12, label="Class names (one per line, or comma-separated)",
                                    elem_id="zs-classnames")
            templates = gr.Textbox(None, lines=6, max_lines=12, label="Templates (one per line, {} is the class name)",
                                   elem_id="zs-templates")
    with gr.Row():
        shape_ex = gr.Examples(shape_rows, inputs=[image], example_labels=shape_labels,
                               label="Shapes-world examples (for the bundled model): click one to classify it",
                               examples_per_page=12, elem_id="zs-examples")
        photo_ex = gr.Examples(photo_rows, inputs=[image, classnames, templates], example_labels=photo_labels,
                               label="Synthetic photos (for Hub CLIP models)", examples_per_page=12, elem_id="zs-photo-examples")
    info = gr.Markdown(label="How to read it", elem_id="zs-info")
    with gr.Row():
        with gr.Column(scale=1):
            label = gr.Label(label="Top-k (ensemble)", elem_id="zs-label")
        with gr.Column(scale=1):
            plot = gr.Plot(label="Probabilities", elem_id="zs-plot")
    build_zero_shot_saliency(ctx, model_state, image, files, scores)
    table = gr.Dataframe(headers=TEMPLATE_COLUMNS, label="Each template alone vs the ensemble (first image)", wrap=True,
                         elem_id="zs-templates-table")
    heatmap = gr.Plot(label="Cosine and logit of each template's prompt for the top classes (first image)", elem_id="zs-heatmap")
    batch = gr.Dataframe(headers=BATCH_COLUMNS, label="Predictions per image", wrap=True, elem_id="zs-batch")
    with gr.Accordion("All numbers (JSON: probabilities, per-template cosines, logits and probabilities)", open=False):
        data = gr.JSON(label="All numbers (JSON)", elem_id="zs-json")
    with gr.Accordion("What the model actually saw: templates, tokens, preprocessing, rule, pitfalls", open=False):
        saw = gr.Markdown(label="What the model actually saw", elem_id="zs-saw")
    view_outputs = [label, plot, info, table, heatmap, batch, data, saw]
    calibration = gr.State(None, time_to_live=3600)  # a calibration record from the Evaluate tab (prediction sets)
    run_inputs = [image, files, classnames, templates, top_k, scale, follow, model_state, calibration]
    run_outputs = [scores] + view_outputs + [scale, cls_preset, tpl_preset]
    event = listen(ctx, run.click, zero_shot, run_inputs, run_outputs, api_name="zero_shot",
                   show_progress_on=[label, plot, info])
    stop_button(ctx, stop, "zero_shot", [event])
    mcp_tool(ctx, zero_shot, ["image", "images", "classnames", "templates", "top_k", "logit_scale", "use_model_scale", "model"],
             pick=7, n_outputs=len(run_outputs))
    for ex in (shape_ex, photo_ex):
        listen(ctx, ex.load_input_event.then, zero_shot, run_inputs, run_outputs, show_progress_on=[label, plot, info])
    rescaled = view_outputs + [scale, follow]
    listen(ctx, [top_k.release, follow.input], rescale, [scores, top_k, scale, follow, model_state, calibration], rescaled)
    # the number box beside the slider fires `input` as it is typed in (Enter itself fires nothing), a drag
    # fires it as it moves, and `release` when it ends: each renders the kept cosines at the new scale
    listen(ctx, [scale.input, scale.release], rescale_by_hand, [scores, top_k, scale, model_state, calibration], rescaled,
           trigger_mode="always_last")
    listen(ctx, model_state.change, model_changed, [scores, model_state, follow], [info, scale])
    saved = gr.State({}, time_to_live=3600)  # this session's own template presets (e.g. chosen in the Evaluate tab)
    listen(ctx, cls_preset.input, classnames_preset_picked, [cls_preset], classnames)
    listen(ctx, tpl_preset.input, templates_preset_picked, [tpl_preset, saved], templates)
    listen(ctx, [classnames.blur, classnames.submit], classnames_preset_of, [classnames], cls_preset)
    listen(ctx, [templates.blur, templates.submit], templates_preset_of, [templates, saved], tpl_preset)
    def rerender(event) -> None:
        listen(ctx, event.then, rescale, [scores, top_k, scale, follow, model_state, calibration], rescaled)

    return ZeroShotHandles(classnames, templates, scale, tpl_preset, saved, follow, rerender, calibration)
