"""Two models on one request, each under its own probability rule: the comparison's logic (no Gradio).

One image set, one class list and one template set go through both models. Each model keeps its
own rule (softmax over the classes for CLIP and MetaCLIP 2, an independent sigmoid with the bias per
class for SigLIP), unless the visitor applies one rule to both to see the common mistake, which the
pitfall checker then flags. The result holds each model's ZeroShotScores (cosines, the panel of what
it saw, its receipt) and the seconds it took.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go

from core.errors import UserInputError
from demo.tabs.shared.model_saw import model_saw
from demo.tabs.shared.zero_shot_scores import ZeroShotScores

RULES = {"each model's own rule": None, "softmax for both": "softmax", "sigmoid (with each bias) for both": "sigmoid"}
COLOURS = ("#4f46e5", "#d97706")
IMAGE_COLUMNS = ["image", "A: top-1", "A: p", "B: top-1", "B: p", "same top-1"]
TEMPLATE_COLUMNS = ["template", "A: top-1", "A: cosine", "B: top-1", "B: cosine"]


@dataclass
class Side:
    """One model's part: its scores (under the rule applied), and how long it took."""

    scores: ZeroShotScores
    seconds: float
    head_cached: bool
    loaded: bool  # whether this request loaded the model (its load time is in `seconds`)

    def probabilities(self):
        """[N, C] at the model's own scale, under the rule applied."""
        return self.scores.probabilities(self.scores.cosines, self.scores.model_scale)


def apply_rule(clip, scores: ZeroShotScores, rule_choice: str) -> ZeroShotScores:
    """The scores under the chosen rule: the model's own, or one rule for both (then the panel flags it)."""
    if rule_choice not in RULES:
        raise UserInputError(f"unknown rule {rule_choice!r}: pick one of {', '.join(RULES)}")
    rule = RULES[rule_choice] or scores.rule
    if rule == scores.rule:
        return scores
    bias = scores.model_bias if rule == "sigmoid" else None
    return dataclasses.replace(scores, rule=rule, saw=model_saw(clip, scores.classnames, scores.templates, rule),
                               receipt={**scores.receipt, "probability_rule": rule, "logit_bias": bias})


def _rule_words(s: ZeroShotScores) -> str:
    return "softmax: sums to 1" if s.rule == "softmax" else "sigmoid: independent, need not sum to 1"


def comparison_figure(a: Side, b: Side, names: tuple[str, str], top_k: int = 5) -> go.Figure:
    """Grouped bars of the first image's probabilities under each model: the union of both top-k classes."""
    pa, pb = a.probabilities()[0], b.probabilities()[0]
    k = min(top_k, len(a.scores.classnames))
    classes = list(dict.fromkeys(pa.topk(k).indices.tolist() + pb.topk(k).indices.tolist()))
    classes.sort(key=lambda j: -float(pa[j] + pb[j]))
    labels = [a.scores.classnames[j] for j in classes][::-1]
    fig = go.Figure()
    for side, probs, name, colour in ((a, pa, names[0], COLOURS[0]), (b, pb, names[1], COLOURS[1])):
        values = [float(probs[j]) for j in classes][::-1]
        fig.add_trace(go.Bar(x=values, y=labels, orientation="h", name=f"{name} ({_rule_words(side.scores)})",
                             marker_color=colour, text=[f"{v:.1%}" for v in values], textposition="auto",
                             hovertemplate="%{y}: %{x:.2%}<extra>" + name + "</extra>"))
    own = all(side.scores.rule == side.scores.saw.own_rule for side in (a, b))
    title = "each model under its own rule" if own else f"both under a {a.scores.rule} (not each model's own rule)"
    fig.update_layout(barmode="group", title=f"{a.scores.names[0]}: {title}",
                      xaxis=dict(range=[0, 1], tickformat=".0%", title="probability"),
                      legend=dict(orientation="h", y=-0.25), height=max(300, 56 * len(labels) + 150),
                      margin=dict(l=10, r=10, t=50, b=40))
    return fig


def image_table(a: Side, b: Side) -> tuple[pd.DataFrame, int]:
    """Per image: each model's top-1 and its probability, and whether they agree; and how many agree."""
    rows, same = [], 0
    for name, p, q in zip(a.scores.names, a.probabilities(), b.probabilities()):
        i, j = int(p.argmax()), int(q.argmax())
        same += i == j
        rows.append([name, a.scores.classnames[i], round(float(p[i]), 4), b.scores.classnames[j], round(float(q[j]), 4),
                     "✓" if i == j else "✗"])
    return pd.DataFrame(rows, columns=IMAGE_COLUMNS), same


def template_table(a: Side, b: Side) -> pd.DataFrame:
    """Per template (first image): each model's top-1 class and its cosine."""
    rows = []
    for t, ca, cb in zip(a.scores.templates, a.scores.template_cosines, b.scores.template_cosines):
        i, j = int(ca.argmax()), int(cb.argmax())
        rows.append([t, a.scores.classnames[i], round(float(ca[i]), 4), b.scores.classnames[j], round(float(cb[j]), 4)])
    return pd.DataFrame(rows, columns=TEMPLATE_COLUMNS)


def _side_line(letter: str, name: str, side: Side) -> str:
    s = side.scores
    how = "loaded and encoded" if side.loaded else ("prompts from the cache" if side.head_cached else "prompts encoded")
    bias = f", bias {s.model_bias:+.2f}" if s.rule == "sigmoid" else ""
    return (f"**{letter}: `{name}`** ({s.receipt.get('family', '?')}) · {_rule_words(s)} · scale {s.model_scale:.2f}{bias} · "
            f"**{side.seconds:.2f} s** ({how})")


def summary(a: Side, b: Side, names: tuple[str, str], same: int) -> str:
    """The comparison in a few lines: each model's rule, scale, bias and time, and the top-1 agreement."""
    n = len(a.scores.names)
    lines = [_side_line("A", names[0], a), _side_line("B", names[1], b),
             f"**Top-1 agreement: {same} of {n} image{'s' if n != 1 else ''} ({same / n:.0%}).** "
             f"Same {len(a.scores.classnames)} classes and {len(a.scores.templates)} template(s) for both; "
             "cosines are not comparable across models (each space has its own spread), probabilities are, "
             "each under its model's rule."]
    flagged = [f"⚠️ {letter}: {p.code}" for letter, side in (("A", a), ("B", b)) for p in side.scores.saw.pitfalls]
    if flagged:
        lines.append(" · ".join(flagged) + " (see what each model saw, below)")
    return "  \n".join(lines)


def comparison_json(a: Side, b: Side, names: tuple[str, str], same: int) -> dict:
    """Every number of the comparison, with each model's receipt and pitfalls."""
    def side_json(name: str, side: Side) -> dict:
        s, probs = side.scores, side.probabilities()
        return {"model": name, "seconds": round(side.seconds, 4), "probability_rule": s.rule,
                "logit_scale": s.model_scale, "logit_bias": s.model_bias if s.rule == "sigmoid" else None,
                "images": [{"image": img, "probabilities": {c: round(float(v), 6) for c, v in zip(s.classnames, p)},
                            "cosines": {c: round(float(v), 6) for c, v in zip(s.classnames, cos)}}
                           for img, p, cos in zip(s.names, probs, s.cosines)],
                "per_template_first_image": [{"template": t, "cosines": {c: round(float(v), 6)
                                                                         for c, v in zip(s.classnames, cos)}}
                                             for t, cos in zip(s.templates, s.template_cosines)],
                **s.saw.json(), "receipt": s.receipt}
    return {"top1_agreement": same / len(a.scores.names), "images": len(a.scores.names),
            "classes": a.scores.classnames, "templates": a.scores.templates,
            "models": [side_json(names[0], a), side_json(names[1], b)]}
