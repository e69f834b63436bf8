"""The matrix tab's loss microscope: each cell's gradient, the false negatives, and one step.

- The gradient view shows ∂L/∂logit for every cell of a square batch, for the loss the model was
  trained with (CLIP's symmetric softmax loss, or SigLIP's sigmoid loss): negative on the diagonal
  (a descent step raises those logits: *pull*), positive off it (*push*).
- Captions that say the same thing are false negatives: the softmax loss pushes apart two pairs that
  are both right. They are named, with the part of the loss they cost (core.microscope).
- "One step" takes one optimizer step on this batch with a copy of the weights (never the session's
  model) and shows the loss and each cell's logit before and after.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from core.errors import UserInputError
from core.loss import ContrastiveOutput
from core.microscope import OneStep, false_negative_loss, same_meaning, sigmoid_logit_gradients, softmax_logit_gradients

GRADIENT_VIEW = "gradient ∂L/∂logit (pull and push)"
GRADIENT_TITLE = ("∂L/∂logit per cell, of the loss this model was trained with: blue < 0 = pull (a step raises "
                  "this logit), red > 0 = push (a step lowers it)")
STEP_RATES = ("1e-6", "1e-5", "1e-4", "1e-3")  # the menu's learning rates, as the API sends them


def gradient_values(out: ContrastiveOutput) -> np.ndarray:
    """∂L/∂z [n, n] of the model's own loss at the batch's logits: SigLIP's for a sigmoid model, else CLIP's."""
    if out.loss is None:
        raise UserInputError("the gradient view needs a square batch (one caption per image): remove the extra captions")
    if out.sigmoid_probs is not None:
        return sigmoid_logit_gradients(out.logits, out.bias).numpy()
    return softmax_logit_gradients(out.logits).numpy()


def false_negatives_markdown(out: ContrastiveOutput, captions: list[str]) -> str:
    """A paragraph naming the batch's same-meaning caption pairs and the softmax loss they cost ('' if none)."""
    n = out.logits.shape[0]
    pairs = same_meaning(captions[:n]) if out.loss is not None else []
    if not pairs:
        return ""
    fn = false_negative_loss(out.logits, pairs)
    shown = "; ".join(f"{i} and {j} (“{captions[i]}”)" for i, j in pairs[:4]) + (" …" if len(pairs) > 4 else "")
    return (f"  \n⚠️ **False negatives:** pairs {shown} have captions that say the same thing, so each caption fits "
            f"both images, yet the softmax loss counts the other one as wrong and pushes it away. They cost "
            f"**{fn.loss:.4f}** of the loss ({fn.share:.0%}): what it would lose if each such caption counted as right "
            "(the row and column probabilities split between the twins).")


def step_figure(step: OneStep, captions: list[str]) -> go.Figure:
    """The change of every cell's logit after one step [n, n], diverging around 0."""
    change = (step.after - step.before).numpy()
    n = change.shape[0]
    limit = float(np.abs(change).max()) or 1.0
    fig = go.Figure(go.Heatmap(z=change, x=list(range(n)), y=list(range(n)), colorscale="RdBu", zmid=0, zmin=-limit,
                               zmax=limit, text=[[f"{v:+.2f}" for v in row] for row in change], texttemplate="%{text}",
                               customdata=[[captions[j] for j in range(n)] for _ in range(n)],
                               hovertemplate="image %{y} · caption %{x}<br>%{customdata}<br>Δ logit %{z:+.4f}<extra></extra>",
                               colorbar=dict(title="Δ logit", thickness=14)))
    for i in range(n):
        fig.add_shape(type="rect", x0=i - 0.46, x1=i + 0.46, y0=i - 0.46, y1=i + 0.46, line=dict(color="#ff9f1c", width=2))
    fig.update_layout(title=dict(text=f"change of each logit after one step (lr {step.lr:g})", x=0.01),
                      height=40 * n + 200, margin=dict(l=10, r=10, t=50, b=10))
    fig.update_yaxes(autorange="reversed", title="image")
    fig.update_xaxes(title="caption")
    return fig


def step_markdown(step: OneStep) -> str:
    """The step in words: the loss before and after, and how the diagonal and the rest moved."""
    change = (step.after - step.before)
    n = change.shape[0]
    diagonal = float(change.diagonal().mean())
    off = float((change.sum() - change.diagonal().sum()) / max(1, n * n - n))
    verdict = ("lower: the step helped" if step.loss_after < step.loss_before else
               "higher: the step overshot (try a smaller learning rate)")
    return (f"**One step** of AdamW's first update (each weight moves by lr = {step.lr:g} against the sign of its "
            f"gradient) on a copy of the model: the batch's loss went from **{step.loss_before:.4g}** to "
            f"**{step.loss_after:.4g}**, {verdict}. Matching pairs' logits moved by {diagonal:+.3f} on average, the "
            f"others by {off:+.3f}. The session's model is untouched.")


def step_data(step: OneStep) -> dict:
    """The step's numbers as JSON: learning rate, losses, and the logits [n][n] before and after."""
    r = lambda t: [[round(float(v), 5) for v in row] for row in t.tolist()]  # noqa: E731
    return {"lr": step.lr, "loss_before": step.loss_before, "loss_after": step.loss_after,
            "logits_before": r(step.before), "logits_after": r(step.after)}
