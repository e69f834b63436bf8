"""The zero-shot tab's logic, free of Gradio: scoring, notices, and everything shown for a scale.

Scoring encodes (images, and the prompts unless the head is cached) once and keeps only cosines in
a `ZeroShotScores`; `render(scores, top_k, scale)` turns them into what the tab shows. So moving the
logit-scale slider re-renders from the cosines and encodes nothing.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd
import plotly.graph_objects as go
import torch

from core.errors import UserInputError
from core.families import probabilities
from core.model import bundled_models
from core.receipts import receipt
from core.zeroshot import parse_classnames, parse_templates, per_template_cosines, split_classnames, split_templates
from demo.platform.gpu import embed_images
from demo.tabs.shared.model_saw import ModelSaw, model_saw

# the slider's range: CLIP clamps its scale at 100 (the default shown); SigLIP's learned scales lie above it
MIN_SCALE, MAX_SCALE, DEFAULT_SCALE = 1.0, 150.0, 100.0
TEMPLATE_COLUMNS = ["template", "top-1", "p(top-1)", "agrees with ensemble", "cosine of top-1", "margin over runner-up"]
BATCH_COLUMNS = ["image", "top-1", "p(top-1)", "top-k"]


@dataclass
class ZeroShotScores:
    """Cosines of one call, kept per session: enough to re-render at any logit scale.

    cosines [N, C]: each image with each class's ensemble head; template_cosines [T, C]: the first
    image with each template's own prompts.
    """

    names: list[str]
    classnames: list[str]
    templates: list[str]
    cosines: torch.Tensor
    template_cosines: torch.Tensor
    model_name: str
    model_scale: float
    notices: list[str] = field(default_factory=list)
    model_bias: float = 0.0  # the bias b of sigmoid(scale · cos + b) (sigmoid families)
    rule: str = "softmax"  # the model family's probability rule (core.families.Family.rule)
    saw: ModelSaw | None = None  # what the model saw: the panel, the pitfalls, the first prompts' tokens
    receipt: dict = field(default_factory=dict)  # what made these numbers (core.receipts.receipt)

    def probabilities(self, cosines: torch.Tensor, scale: float) -> torch.Tensor:
        """Probabilities [..., C] of cosines [..., C] at `scale` under the family's rule: softmax over the
        classes (CLIP), or sigmoid(scale · cos + bias) per class (SigLIP), which need not sum to 1."""
        return probabilities(scale * cosines, self.rule, self.model_bias)


@functools.lru_cache(maxsize=1)
def shapes_vocabulary() -> frozenset[str]:
    """Every word in 400 shapes-world captions and the shapes-world templates: what shapes-tiny learnt."""
    from core.shapes import ShapesWorld
    from core.zeroshot import template_presets

    text = " ".join(s.caption for s in ShapesWorld(seed=0, split="train").take(400))
    text += " " + " ".join(template_presets().get("shapes_world", []))
    return frozenset(_words(text))


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def vocabulary_notice(model_source: str, classnames: list[str]) -> str | None:
    """For a bundled model (trained on the shapes world only): which class-name words it never saw."""
    if model_source not in bundled_models():
        return None
    known = shapes_vocabulary()
    unknown = list(dict.fromkeys(w for name in classnames for w in _words(name) if w not in known))
    if not unknown:
        return None
    shown = ", ".join(f"'{w}'" for w in unknown[:6]) + (f" and {len(unknown) - 6} more" if len(unknown) > 6 else "")
    return (f"⚠️ **{model_source} knows only shapes-world words** (colours, shapes, styles, sizes, positions). "
            f"{shown} never appeared in its training captions, so these probabilities are not knowledge. "
            "For everyday classes pick a Hub CLIP model in the model picker.")


def duplicate_notice(classnames_text: str, templates_text: str) -> str | None:
    """Which repeated class names or templates were dropped (each counts once), and which differ only in
    case or spacing: CLIP's tokenizer lowercases and splits on spaces, so those read the same to the model
    (their prompts are identical, and their probabilities tie)."""
    parts = []
    for kind, entries in (("class name", split_classnames(classnames_text)), ("template", split_templates(templates_text))):
        repeated = [name for name, count in Counter(entries).items() if count > 1]
        if repeated:
            shown = ", ".join(repr(r) for r in repeated[:4]) + (" …" if len(repeated) > 4 else "")
            parts.append(f"{len(repeated)} repeated {kind}{'s' if len(repeated) > 1 else ''} ({shown})")
    notes = [f"ℹ️ Dropped duplicates: {'; '.join(parts)}; each counts once."] if parts else []
    groups: dict[str, list[str]] = {}
    for name in dict.fromkeys(split_classnames(classnames_text)):
        groups.setdefault(" ".join(name.lower().split()), []).append(name)
    same = [g for g in groups.values() if len(g) > 1]
    if same:
        shown = "; ".join(" = ".join(repr(n) for n in g) for g in same[:4]) + (" …" if len(same) > 4 else "")
        notes.append(f"⚠️ These class names read the same to CLIP (its tokenizer lowercases): {shown}. Their prompts "
                     "are identical, so they tie: merge them, or tell them apart in words.")
    return "  \n".join(notes) or None


def check_inputs(images: list, classnames_text: str, templates_text: str, max_prompts: int) -> tuple[list[str], list[str]]:
    """Parse and check the class names and templates; raises UserInputError with what to change."""
    classnames = parse_classnames(classnames_text)
    templates = parse_templates(templates_text)
    if not images:
        raise UserInputError("no image: upload, paste or pick an example first")
    if len(classnames) < 2:
        raise UserInputError(f"only one class ({classnames[0]!r}): zero-shot compares classes, so give at least two "
                             "(with one, its probability is always 100%)")
    if len(classnames) * len(templates) > max_prompts:
        raise UserInputError(f"{len(classnames)} classes x {len(templates)} templates = {len(classnames) * len(templates):,} "
                             f"prompts; the limit is {max_prompts:,}: use fewer templates (e.g. OpenAI's 7) or classes")
    return classnames, templates


def score(clip, head, images: list, names: list[str], model_name: str, notices: list[str],
          progress=None) -> ZeroShotScores:
    """Cosines of `images` with a ZeroShotHead (services.ZeroShotHead): [N, C] and the first image's [T, C].
    progress(done, total) is called as the images are encoded."""
    image_emb = embed_images(clip, images, progress)  # [N, D]
    cosines = image_emb @ head.head.T  # [N, C]
    template_cos = per_template_cosines(image_emb[:1], head.template_emb)[:, 0]  # [T, C]
    saw = head.derived.get("saw")
    if saw is None:  # the head is cached per model, classes and templates: so is what the model saw
        saw = head.derived.setdefault("saw", model_saw(clip, list(head.classnames), list(head.templates)))
    return ZeroShotScores(list(names), list(head.classnames), list(head.templates), cosines, template_cos,
                          model_name, float(clip.logit_scale), notices, float(clip.logit_bias), clip.family.rule,
                          saw, receipt(clip, head.templates))


def plural(n: int, word: str, words: str | None = None) -> str:
    """'1 template', '7 templates'."""
    return f"{n:,} {word if n == 1 else (words or word + 's')}"


def check_scale(scale) -> float:
    """The logit scale to render with, inside [MIN_SCALE, MAX_SCALE]."""
    try:
        value = float(scale)
    except (TypeError, ValueError) as e:
        raise UserInputError(f"the logit scale must be a number between {MIN_SCALE:g} and {MAX_SCALE:g}") from e
    if not MIN_SCALE <= value <= MAX_SCALE:  # also refuses NaN
        raise UserInputError(f"the logit scale must be between {MIN_SCALE:g} and {MAX_SCALE:g}, got {scale}")
    return value


@dataclass
class ZeroShotView:
    """Everything the tab shows for one set of scores at one scale."""

    label: dict[str, float]
    figure: go.Figure
    heatmap: go.Figure
    templates: pd.DataFrame
    batch: pd.DataFrame
    info: str
    data: dict
    saw: str = ""  # the "what the model actually saw" panel at this scale


def bar_chart(top: list[tuple[str, float]], title: str) -> go.Figure:
    """A horizontal bar chart of (class, probability), best on top."""
    names = [n for n, _ in top][::-1]
    probs = [p for _, p in top][::-1]
    fig = go.Figure(go.Bar(x=probs, y=names, orientation="h", text=[f"{p:.1%}" for p in probs],
                           textposition="auto", marker_color="#4f46e5", hovertemplate="%{y}: %{x:.2%}<extra></extra>"))
    fig.update_layout(title=title, xaxis=dict(range=[0, 1], tickformat=".0%", title="probability"),
                      height=max(260, 40 * len(names) + 110), margin=dict(l=10, r=10, t=50, b=40))
    return fig


def template_heatmap(template_cos: torch.Tensor, classes: list[int], classnames: list[str], templates: list[str],
                     scale: float) -> go.Figure:
    """Cosine of the first image with each template's prompt for the shown classes [T, k], with its logit."""
    z = template_cos[:, classes].numpy()  # [T, k]
    text = [[f"{c:.3f}<br>{scale * c:.1f}" for c in row] for row in z]
    fig = go.Figure(go.Heatmap(z=z, x=[classnames[j] for j in classes], y=templates, colorscale="Viridis", text=text,
                               texttemplate="%{text}", colorbar=dict(title="cosine", thickness=12),
                               hovertemplate="%{y}<br>%{x}: cosine %{z:.4f}<extra></extra>"))
    fig.update_layout(title=dict(text=f"cosine (top) and logit = {scale:.2f} × cosine (bottom), per template", x=0.01),
                      height=max(240, 44 * len(templates) + 130), margin=dict(l=10, r=10, t=50, b=40))
    fig.update_yaxes(autorange="reversed")
    return fig


def render(s: ZeroShotScores, top_k: int, scale: float) -> ZeroShotView:
    """What the tab shows for scores `s`, the top-k and a logit scale (1 to 150)."""
    scale = check_scale(scale)
    top_k = max(1, min(int(top_k), len(s.classnames)))
    probs = s.probabilities(s.cosines, scale)  # [N, C]
    t_probs = s.probabilities(s.template_cosines, scale)  # [T, C]
    first = probs[0]
    values, idx = first.topk(top_k)
    top = [(s.classnames[j], float(v)) for v, j in zip(values.tolist(), idx.tolist())]
    winner = int(idx[0])
    rows = []
    for t, cos, p in zip(s.templates, s.template_cosines, t_probs):
        best2 = cos.topk(min(2, len(cos))).indices.tolist()
        rows.append({"template": t, "top-1": s.classnames[best2[0]], "p(top-1)": round(float(p[best2[0]]), 4),
                     "agrees with ensemble": "✓" if best2[0] == winner else "✗",
                     "cosine of top-1": round(float(cos[best2[0]]), 4),
                     "margin over runner-up": round(float(cos[best2[0]] - cos[best2[-1]]), 4)})
    ens = s.cosines[0]
    runner = ens.topk(min(2, len(ens))).indices.tolist()[-1]
    rows.append({"template": f"ENSEMBLE (mean of {len(s.templates)})", "top-1": s.classnames[winner],
                 "p(top-1)": round(float(first[winner]), 4), "agrees with ensemble": "✓",
                 "cosine of top-1": round(float(ens[winner]), 4), "margin over runner-up": round(float(ens[winner] - ens[runner]), 4)})
    batch_rows = []
    for name, p in zip(s.names, probs):
        v, i = p.topk(top_k)
        batch_rows.append({"image": name, "top-1": s.classnames[int(i[0])], "p(top-1)": round(float(v[0]), 4),
                           "top-k": ", ".join(f"{s.classnames[j]} {q:.0%}" for q, j in zip(v.tolist(), i.tolist()))})
    cosine = float(ens[winner])
    scale_note = "the model's own" if abs(scale - s.model_scale) < 5e-3 else f"set by you; the model's is {s.model_scale:.2f}"
    rule = ("softmax(scale × cosine) over the classes" if s.rule == "softmax" else
            f"sigmoid(scale × cosine + bias {s.model_bias:+.2f}) per class: **independent probabilities, they need not sum "
            "to 1** (this model was trained with the sigmoid loss; a softmax over its logits would be wrong)")
    bias = s.model_bias if s.rule == "sigmoid" else 0.0
    how = ("Only these differences, times the scale, decide the probabilities: at a scale near 100 a gap of 0.05 in "
           "cosine is already e⁵ ≈ 150× in odds, so every prompt reads p ≈ 1; lower the scale to see which prompts are "
           "closer calls." if s.rule == "softmax" else
           "Each class's probability is the sigmoid of its own logit, whatever the other classes score: a class "
           "is a match when scale × cosine rises above −bias.")
    info = (f"**Logit scale {scale:.2f}** ({scale_note}): probabilities are {rule}. "
            f"The winner's cosine is **{cosine:.3f}**, its logit {scale * cosine + bias:.1f}; the runner-up "
            f"({s.classnames[runner]}) is {float(ens[runner]):.3f}. {how} (OpenAI's CLIP puts matching image–text cosines "
            f"near 0.2–0.3; a small model trained on one world, like shapes-tiny, can sit higher.)  \n"
            f"**Prompts:** {plural(len(s.classnames), 'class', 'classes')} × {plural(len(s.templates), 'template')}. "
            f"**Model:** `{s.model_name}`.")
    info = "  \n".join(s.notices + [info])
    data = {"model": s.model_name, "logit_scale": scale, "model_logit_scale": s.model_scale,
            "probability_rule": s.rule, "logit_bias": s.model_bias,
            "num_classes": len(s.classnames), "templates": s.templates,
            "images": [{"image": name, "top_k": [{"class": s.classnames[j], "probability": float(q), "cosine": float(c[j])}
                                                  for q, j in zip(*[x.tolist() for x in p.topk(top_k)])]}
                       for name, p, c in zip(s.names, probs, s.cosines)],
            "per_template_first_image": [
                {"template": t, "classes": {s.classnames[j]: {"cosine": float(cos[j]), "logit": scale * float(cos[j]) + bias,
                                                              "probability": float(p[j])} for j in idx.tolist()}}
                for t, cos, p in zip(s.templates, s.template_cosines, t_probs)],
            "notices": s.notices, **(s.saw.json() if s.saw else {}),
            "receipt": {**s.receipt, "logit_scale": round(scale, 4)} if s.receipt else None}
    return ZeroShotView(dict(top), bar_chart(top, f"{s.names[0]}: top-{top_k}"),
                        template_heatmap(s.template_cosines, idx.tolist(), s.classnames, s.templates, scale),
                        pd.DataFrame(rows, columns=TEMPLATE_COLUMNS), pd.DataFrame(batch_rows, columns=BATCH_COLUMNS), info, data,
                        s.saw.markdown(scale) if s.saw else "")
