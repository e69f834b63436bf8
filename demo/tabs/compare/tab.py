"""Compare tab: two models side by side on the same images, class names and templates.

Each model answers under its own probability rule (or one rule for both, to see the common mistake
flagged), with its time, its top-1 agreement with the other, its per-template cosines, and what it
actually saw. The models come from the cache's comparison pool (demo/platform/models.py), so a
comparison never evicts the model another visitor is using.
"""

from __future__ import annotations

import time

import gradio as gr

from core.errors import UserInputError
from demo.inputs.checks import at_most_chars, at_most_items, in_range
from demo.inputs.images import gather_images
from demo.inputs.presets import DEFAULT_CLASSNAMES, DEFAULT_TEMPLATES, preset_text
from demo.platform.contract import Call, handler, listen, stop_button
from demo.platform.mcp import mcp_tool
from demo.tabs.compare.side_by_side import (
    IMAGE_COLUMNS,
    RULES,
    TEMPLATE_COLUMNS,
    Side,
    apply_rule,
    comparison_figure,
    comparison_json,
    image_table,
    summary,
    template_table,
)
from demo.tabs.shared.api_examples import EXAMPLE_IMAGE, no_example, served_example
from demo.tabs.shared.zero_shot_scores import check_inputs, score

CHECKS = {"images": at_most_items("images"), "classnames": at_most_chars("the class names"),
          "templates": at_most_chars("the templates"), "top_k": in_range("top-k", 1, 20, integer=True, default=5)}
OWN_RULE = next(iter(RULES))


def _side(call: Call, name: str, images: list, image_names: list[str], classnames: list[str], templates: list[str],
          rule: str, letter: str) -> Side:
    models = call.ctx.models
    loaded = models.peek(models.resolve(name)) is None
    start = time.perf_counter()
    clip = call.model(name, pool="compare")
    head, cached = call.ctx.services.zero_shot_head(clip, classnames, templates,
                                                    progress=call.report(f"{letter}: encoding prompts", "prompts"))
    s = score(clip, head, images, image_names, name, [], progress=call.report(f"{letter}: encoding images", "images"))
    seconds = time.perf_counter() - start
    return Side(apply_rule(clip, s, rule), seconds, cached, loaded)


@handler("compare", checks=CHECKS, uploads=("image", "images"))
def compare_models(call: Call, image: str | None = str(EXAMPLE_IMAGE), images: list | None = None,
                   classnames: str | None = None, templates: str | None = None, model_a: str | None = None,
                   model_b: str | None = None, rule: str = OWN_RULE, top_k: float = 5):
    """Zero-shot classify the same images with two models side by side, each under its own probability rule.

    Args:
        image: one image file (path or URL); omitted: the app's example, a purple star.
        images: more image files (at most 64 images in all); the agreement counts every image.
        classnames: class names, one per line or comma-separated; omitted: the shapes-world shapes.
        templates: prompt templates, one per line, each with {} where the class name goes; omitted: the shapes-world templates.
        model_a: the first model (a bundled name, an allowed local folder or a Hub id); omitted: the app's default.
        model_b: the second model, different from the first; omitted: the next model in the app's list.
        rule: "each model's own rule" (right), or "softmax for both" / "sigmoid (with each bias) for both" (the mistakes, flagged).
        top_k: classes per model shown in the chart, 1 to 20.
    """
    cfg = call.config
    a = (model_a or "").strip() or cfg.default_model
    b = (model_b or "").strip() or other_model(call, a)
    if not b:
        raise UserInputError("pick a second model (B) to compare with: this app lists only one")
    if call.ctx.models.resolve(a) == call.ctx.models.resolve(b):
        raise UserInputError(f"A and B are the same model ({a}): pick two different ones")
    images_, names = gather_images(image, images, cfg.max_upload_images)
    classnames = classnames if (classnames or "").strip() else preset_text("classnames", DEFAULT_CLASSNAMES)
    templates = templates if (templates or "").strip() else preset_text("templates", DEFAULT_TEMPLATES)
    classes, templates_ = check_inputs(images_, classnames, templates, cfg.max_prompts)
    side_a = _side(call, a, images_, names, classes, templates_, rule, "A")
    side_b = _side(call, b, images_, names, classes, templates_, rule, "B")
    table, same = image_table(side_a, side_b)
    pair = (a, b)
    return (summary(side_a, side_b, pair, same), comparison_figure(side_a, side_b, pair, int(top_k)), table,
            template_table(side_a, side_b), side_a.scores.saw.markdown(side_a.scores.model_scale),
            side_b.scores.saw.markdown(side_b.scores.model_scale), comparison_json(side_a, side_b, pair, same))


def other_model(call: Call, a: str) -> str | None:
    """The first model of the app's list that is not `a` (None when it lists no other)."""
    return next((m for m in call.ctx.models.choices() if m != a), None)


@handler("compare", turn=False)
def fill_defaults(call: Call, model: str | None = None):
    """On page load: the default class names and templates, A the session's model, B the next in the list."""
    a = (model or "").strip() or call.config.default_model
    return preset_text("classnames", DEFAULT_CLASSNAMES), preset_text("templates", DEFAULT_TEMPLATES), a, other_model(call, a)


def build_tab(ctx, model_state: gr.State) -> list:
    """The comparison tab. Returns what `fill_defaults` fills on page load (the API's defaults stay single-line)."""
    choices = ctx.models.choices()
    gr.Markdown("Two models, the same images, classes and templates. Each answers under **its own probability "
                "rule**: CLIP and MetaCLIP 2 a softmax over the classes (they sum to 1), SigLIP a sigmoid with its "
                "bias per class (independent: they need not sum to 1).")
    with gr.Row():
        with gr.Column(scale=1):
            image = served_example(gr.Image(str(EXAMPLE_IMAGE), type="filepath", sources=["upload", "clipboard"],
                                            label="Image", height=240, elem_id="cmp-image"), ctx.config)
            files = no_example(gr.File(file_count="multiple", file_types=["image"], label="…or several images",
                                       height=140))
            with gr.Row():
                model_a = gr.Dropdown(choices, value=None, label="Model A", allow_custom_value=True, elem_id="cmp-a")
                model_b = gr.Dropdown(choices, value=None, label="Model B", allow_custom_value=True, elem_id="cmp-b")
            rule = gr.Radio(list(RULES), value=OWN_RULE, label="Probability rule",
                            info="Each model's own is right; the others show the common mistakes, flagged below")
            top_k = gr.Slider(1, 20, value=5, step=1, label="top-k per model in the chart")
            with gr.Row():
                run = gr.Button("Compare", variant="primary", elem_id="cmp-run")
                stop = gr.Button("Stop", variant="stop", elem_id="cmp-stop")
        with gr.Column(scale=1):
            classnames = gr.Textbox(None, lines=6, max_lines=12, label="Class names (one per line, or comma-separated)",
                                    elem_id="cmp-classnames")
            templates = gr.Textbox(None, lines=6, max_lines=12, label="Templates (one per line, {} is the class name)",
                                   elem_id="cmp-templates")
    info = gr.Markdown(label="The comparison in brief", elem_id="cmp-summary")
    plot = gr.Plot(label="Probabilities of the first image", elem_id="cmp-plot")
    per_image = gr.Dataframe(headers=IMAGE_COLUMNS, label="Per image: each model's top-1", wrap=True, elem_id="cmp-images")
    per_template = gr.Dataframe(headers=TEMPLATE_COLUMNS, label="Per template (first image): each model's top-1 and "
                                "its cosine", wrap=True, elem_id="cmp-templates-table")
    with gr.Accordion("What each model actually saw: templates, tokens, preprocessing, rule, pitfalls", open=True):
        with gr.Row():
            saw_a = gr.Markdown(label="What model A saw", elem_id="cmp-saw-a")
            saw_b = gr.Markdown(label="What model B saw", elem_id="cmp-saw-b")
    with gr.Accordion("All numbers (JSON, with each model's receipt)", open=False):
        data = gr.JSON(label="Comparison (JSON)", elem_id="cmp-json")
    inputs = [image, files, classnames, templates, model_a, model_b, rule, top_k]
    outputs = [info, plot, per_image, per_template, saw_a, saw_b, data]
    event = listen(ctx, run.click, compare_models, inputs, outputs, api_name="compare_models",
                   show_progress_on=[info, plot])
    stop_button(ctx, stop, "compare", [event])
    mcp_tool(ctx, compare_models, ["image", "images", "classnames", "templates", "model_a", "model_b", "rule", "top_k"],
             pick=6, n_outputs=len(outputs))
    return [classnames, templates, model_a, model_b]
