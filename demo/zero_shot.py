"""Zero-shot tab: which prompt wins and why.

Class names and templates are edited in the browser; the result shows the ensemble's top-k, each
template's own verdict next to the ensemble's, and the logit scale that turns cosines into logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd
import plotly.graph_objects as go
import torch

from core.errors import UserInputError
from core.encode import encode_images
from core.zeroshot import (build_classifier, classify_embeddings, classname_presets, parse_classnames,
                           parse_templates, per_template_probs, template_presets)

from .common import get_model, user_errors
from .context import EXAMPLES_DIR
from .images import display_name, open_image

CLASSNAME_PRESETS = {"shapes world: shapes": "shapes_world_shapes", "shapes world: colours": "shapes_world_colours",
                     "shapes world: colour + shape": "shapes_world_combos", "CIFAR-10": "cifar10",
                     "CIFAR-100": "cifar100", "ImageNet-1k": "imagenet1k"}
TEMPLATE_PRESETS = {"single": "single", "OpenAI's 7": "openai_imagenet_7", "OpenAI's 80": "openai_imagenet_80",
                    "CIFAR": "cifar", "shapes world": "shapes_world"}
MAX_PROMPTS = 20_000  # classes x templates encoded for one head


def preset_text(kind: str, name: str) -> str:
    """The text of a class-name ('classnames') or template ('templates') preset, one per line."""
    table, files = (CLASSNAME_PRESETS, classname_presets()) if kind == "classnames" else (TEMPLATE_PRESETS, template_presets())
    if name not in table or table[name] not in files:
        raise UserInputError(f"unknown {kind} preset {name!r}; choose one of {', '.join(table)}")
    return "\n".join(files[table[name]])


@dataclass
class ZeroShotHandles:
    """What the zero-shot tab offers other tabs: its class-name and template boxes."""

    classnames: gr.Textbox
    templates: gr.Textbox


@dataclass
class ZeroShotResult:
    """Everything the tab shows for one call."""

    label: dict[str, float]  # first image: class -> probability (top-k)
    figure: go.Figure
    templates: pd.DataFrame  # per-template verdicts for the first image, then the ensemble
    info: str
    batch: pd.DataFrame  # one row per image


def bar_chart(top: list[tuple[str, float]], title: str) -> go.Figure:
    """A horizontal bar chart of (class, probability), best on top."""
    names = [n for n, _ in top][::-1]
    probs = [p for _, p in top][::-1]
    fig = go.Figure(go.Bar(x=probs, y=names, orientation="h", text=[f"{p:.1%}" for p in probs],
                           textposition="auto", marker_color="#4f46e5", hovertemplate="%{y}: %{x:.2%}<extra></extra>"))
    fig.update_layout(title=title, xaxis=dict(range=[0, 1], tickformat=".0%", title="probability"),
                      height=max(260, 40 * len(names) + 110), margin=dict(l=10, r=10, t=50, b=40))
    return fig


def template_table(probs_t: torch.Tensor, ensemble: torch.Tensor, classnames: list[str], templates: list[str]) -> pd.DataFrame:
    """Per template (and the ensemble): its top-1 class and probability, and its probability of the
    ensemble's winner. probs_t [T, C] and ensemble [C] are for one image."""
    winner = int(ensemble.argmax())
    rows = []
    for t, p in zip(templates, probs_t):
        top = int(p.argmax())
        rows.append({"template": t, "top-1": classnames[top], "p(top-1)": round(float(p[top]), 4),
                     f"p({classnames[winner]})": round(float(p[winner]), 4), "agrees": "✓" if top == winner else "✗"})
    rows.append({"template": f"ENSEMBLE (mean of {len(templates)})", "top-1": classnames[winner],
                 "p(top-1)": round(float(ensemble[winner]), 4), f"p({classnames[winner]})": round(float(ensemble[winner]), 4),
                 "agrees": "✓"})
    return pd.DataFrame(rows)


def run_zero_shot(clip, images: list, names: list[str], classnames_text: str, templates_text: str,
                  top_k: int = 5, model_name: str = "", progress=None) -> ZeroShotResult:
    """Classify PIL `images` (named `names`) among the parsed class names with the template ensemble."""
    classnames = parse_classnames(classnames_text)
    templates = parse_templates(templates_text)
    if not images:
        raise UserInputError("no image: upload, paste or pick an example first")
    if len(classnames) < 2:
        raise UserInputError(f"only one class ({classnames[0]!r}): zero-shot compares classes, so give at least two "
                         "(with one, its probability is always 100%)")
    if len(classnames) * len(templates) > MAX_PROMPTS:
        raise UserInputError(f"{len(classnames)} classes x {len(templates)} templates = {len(classnames) * len(templates):,} prompts; "
                         f"the limit is {MAX_PROMPTS:,}: use fewer templates (e.g. OpenAI's 7) or classes")
    top_k = max(1, min(int(top_k), len(classnames)))
    cached = False  # TODO services
    if progress and not cached:
        progress(0.35, desc=f"encoding {len(classnames) * len(templates):,} prompts")
    head = build_classifier(clip, classnames, templates)  # [C, D], cached per model
    if progress:
        progress(0.8, desc=f"encoding {len(images)} image(s)")
    image_emb = encode_images(clip, images)  # [N, D]
    probs = classify_embeddings(image_emb, head, clip.logit_scale)  # [N, C]
    probs_t = per_template_probs(clip, image_emb[:1], classnames, templates)[:, 0]  # [T, C]
    first = probs[0]
    values, idx = first.topk(top_k)
    top = [(classnames[j], float(v)) for v, j in zip(values.tolist(), idx.tolist())]
    cosine = float(image_emb[0] @ head[idx[0]])
    batch_rows = []
    for name, p in zip(names, probs):
        v, i = p.topk(top_k)
        batch_rows.append({"image": name, "top-1": classnames[int(i[0])], "p(top-1)": round(float(v[0]), 4),
                           f"top-{top_k}": ", ".join(f"{classnames[j]} {q:.0%}" for q, j in zip(v.tolist(), i.tolist()))})
    info = (f"**Logit scale:** {clip.logit_scale:.2f} — probabilities are softmax(scale × cosine). "
            f"The winner's raw cosine is **{cosine:.3f}**, i.e. logit {clip.logit_scale * cosine:.1f}: raw CLIP cosines "
            f"sit near 0.2–0.3, and only their differences, multiplied by the scale, matter.  \n"
            f"**Prompts:** {len(classnames)} classes × {len(templates)} templates; class embeddings "
            f"{'reused from the cache' if cached else 'computed and cached'}. **Model:** `{model_name or clip.source}`.")
    return ZeroShotResult(label=dict(top), figure=bar_chart(top, f"{names[0]}: top-{top_k}"),
                          templates=template_table(probs_t, first, classnames, templates), info=info,
                          batch=pd.DataFrame(batch_rows))


def gather_images(image, files) -> tuple[list, list[str]]:
    """The single image (a path) and any uploaded files, opened safely, with display names."""
    items = ([image] if image else []) + list(files or [])
    return [open_image(item) for item in items], [display_name(item) for item in items]


PHOTO_CLASSES = "apple\nhouse\ntree\nsunset over the sea\nsailing boat\ncat\ncar"


def examples() -> tuple[list[list], list[list], list[str]]:
    """Examples from assets/examples/: shapes-world images (image only: the default class names
    fit them), and synthetic photos with everyday class names, OpenAI's 7 templates and labels."""
    paths = sorted(Path(EXAMPLES_DIR).glob("*.png"))
    shapes = [[str(p)] for p in paths if p.name.startswith("shapes_")]
    photos = [[str(p), PHOTO_CLASSES, preset_text("templates", "OpenAI's 7")] for p in paths if p.name.startswith("photo_")]
    labels = [f"{Path(p[0]).stem.removeprefix('photo_')} (synthetic photo)" for p in photos]
    return shapes, photos, labels


def build_tab(ctx, model_state: gr.State):
    """The zero-shot tab; registers its class-name and template boxes in ctx.shared."""
    with gr.Row():
        with gr.Column(scale=1):
            image = gr.Image(type="filepath", sources=["upload", "clipboard", "webcam"], label="Image", height=280,
                             elem_id="zs-image")
            files = gr.File(file_count="multiple", file_types=["image"], label="…or several images (gives a table)",
                            height=110)
            top_k = gr.Slider(1, 20, value=5, step=1, label="top-k")
            run = gr.Button("Classify", variant="primary", elem_id="zs-run")
        with gr.Column(scale=1):
            with gr.Row():
                cls_preset = gr.Dropdown(list(CLASSNAME_PRESETS), value="shapes world: shapes", label="Class-name preset")
                tpl_preset = gr.Dropdown(list(TEMPLATE_PRESETS), value="shapes world", label="Template preset")
            classnames = gr.Textbox(preset_text("classnames", "shapes world: shapes"), lines=6, max_lines=12,
                                    label="Class names (one per line, or comma-separated)", elem_id="zs-classnames")
            templates = gr.Textbox(preset_text("templates", "shapes world"), lines=6, max_lines=12,
                                   label="Templates (one per line, {} is the class name)", elem_id="zs-templates")
    shape_rows, photo_rows, photo_labels = examples()
    with gr.Row():
        gr.Examples(shape_rows, inputs=[image], label="Shapes-world examples (for the bundled model)",
                    examples_per_page=12, elem_id="zs-examples")
        gr.Examples(photo_rows, inputs=[image, classnames, templates], example_labels=photo_labels,
                    label="Synthetic photos (for Hub CLIP models)", examples_per_page=12, elem_id="zs-photo-examples")
    with gr.Row():
        with gr.Column(scale=1):
            label = gr.Label(label="Top-k (ensemble)", elem_id="zs-label")
        with gr.Column(scale=1):
            plot = gr.Plot(label="Probabilities", elem_id="zs-plot")
    info = gr.Markdown(elem_id="zs-info")
    table = gr.Dataframe(label="Each template alone vs the ensemble (first image)", wrap=True, elem_id="zs-templates-table")
    batch = gr.Dataframe(label="Predictions per image", wrap=True)

    @user_errors
    def on_run(image, files, classnames, templates, top_k, model_name, progress=gr.Progress()):
        try:
            clip = get_model(ctx, model_name, progress)
            images, names = gather_images(image, files)
            r = run_zero_shot(clip, images, names, classnames, templates, top_k, model_name, progress)
            return r.label, r.figure, r.info, r.templates, r.batch
        finally:
            ctx.first_answer.set()  # lets the start-up map warm-up begin (app.start_warmup)

    run.click(on_run, inputs=[image, files, classnames, templates, top_k, model_state],
              outputs=[label, plot, info, table, batch], api_name="zero_shot", concurrency_id="inference")

    @user_errors
    def on_classnames_preset(name):
        return preset_text("classnames", name)

    @user_errors
    def on_templates_preset(name):
        return preset_text("templates", name)

    cls_preset.input(on_classnames_preset, cls_preset, classnames, api_name="classname_preset")
    tpl_preset.input(on_templates_preset, tpl_preset, templates, api_name="template_preset")
    return ZeroShotHandles(classnames, templates)
