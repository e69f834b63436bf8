"""The loss microscope: what the contrastive loss does to every cell of a batch's matrix.

For a square batch of n pairs with logits z [n, n] (z = scale · cos):

- **CLIP's symmetric loss** L = ½ (mean_i CE(z[i, :], i) + mean_j CE(z[:, j], j)). Its gradient with
  respect to one logit is ∂L/∂z_ij = ½ ((P_row[i, j] − δ_ij) + (P_col[i, j] − δ_ij)) / n: negative
  on the diagonal (gradient descent raises those logits: a *pull* of each pair together), positive
  off it (a *push* of non-pairs apart), and every row and column sums to zero.
- **SigLIP's sigmoid loss** L = −Σ_ij log σ(s_ij (z_ij + b)) / n with s = +1 on the diagonal and −1
  off it: ∂L/∂z_ij = −s_ij σ(−s_ij (z_ij + b)) / n, each cell on its own.

**False negatives.** Two pairs whose captions say the same thing (the same words)
are both right, yet the softmax loss pushes image i away from caption j. Their share of the loss is
what it would lose if j counted as a positive too: for row i, −log P_ii − (−log(P_ii + P_ij)), both ways.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def softmax_logit_gradients(logits: torch.Tensor) -> torch.Tensor:
    """∂L/∂z [n, n] of CLIP's symmetric loss at logits z [n, n] (closed form; see the module)."""
    n = logits.shape[0]
    eye = torch.eye(n, dtype=logits.dtype, device=logits.device)
    return ((logits.softmax(dim=1) - eye) + (logits.softmax(dim=0) - eye)) / (2 * n)


def sigmoid_logit_gradients(logits: torch.Tensor, bias: float) -> torch.Tensor:
    """∂L/∂z [n, n] of SigLIP's sigmoid loss at logits z [n, n] with bias b (closed form; see the module)."""
    n = logits.shape[0]
    signs = 2 * torch.eye(n, dtype=logits.dtype, device=logits.device) - 1
    return -signs * torch.sigmoid(-signs * (logits + bias)) / n


def same_meaning(captions: list[str]) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, whose captions say the same thing: equal once lower-cased, with punctuation and
    spacing ignored (each caption then fits both images as well as the other)."""
    keys = [" ".join("".join(ch if ch.isalnum() else " " for ch in c.lower()).split()) for c in captions]
    return [(i, j) for i in range(len(keys)) for j in range(i + 1, len(keys)) if keys[i] == keys[j]]


@dataclass
class FalseNegatives:
    """The batch's pairs that say the same thing, and the loss spent pushing them apart."""

    pairs: list[tuple[int, int]]
    loss: float  # of CLIP's symmetric loss, the part that vanishes if each such caption counted as right
    share: float  # loss / the whole symmetric loss (0 when the loss is 0)


def false_negative_loss(logits: torch.Tensor, pairs: list[tuple[int, int]]) -> FalseNegatives:
    """How much of CLIP's symmetric loss at logits [n, n] pushes apart the given same-meaning pairs."""
    n = logits.shape[0]
    rows, cols = logits.softmax(dim=1), logits.softmax(dim=0)
    partners: dict[int, set[int]] = {}
    for i, j in pairs:
        partners.setdefault(i, set()).add(j)
        partners.setdefault(j, set()).add(i)
    excess = 0.0
    for i, others in partners.items():
        idx = [i, *sorted(others)]
        excess += math.log(float(rows[i, idx].sum())) - math.log(float(rows[i, i]))  # image i: its caption or a twin
        excess += math.log(float(cols[idx, i].sum())) - math.log(float(cols[i, i]))  # caption i: its image or a twin
    excess /= 2 * n
    eye = torch.arange(n, device=logits.device)
    total = float((torch.nn.functional.cross_entropy(logits, eye) + torch.nn.functional.cross_entropy(logits.T, eye)) / 2)
    return FalseNegatives(list(pairs), excess, excess / total if total > 0 else 0.0)


@dataclass
class OneStep:
    """A batch's logits [n, n] and loss before and after one optimizer step on a copy of the model."""

    before: torch.Tensor
    after: torch.Tensor
    loss_before: float
    loss_after: float
    lr: float


def batch_logits(model, family, pixels: torch.Tensor, ids: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [n, n] = scale · cos, the loss of the family) of a batch, differentiable in the model."""
    import torch.nn.functional as F

    from .families import image_features, text_features

    img = F.normalize(image_features(model, pixels).float(), dim=-1)
    mask = ids.get("attention_mask")
    txt = F.normalize(text_features(model, ids["input_ids"], mask).float(), dim=-1)
    scale = model.logit_scale.float().exp()
    scale = scale.clamp(max=family.scale_limit) if family.scale_limit is not None else scale
    logits = scale * img @ txt.T
    n = logits.shape[0]
    if family.rule == "sigmoid":
        signs = 2 * torch.eye(n, device=logits.device) - 1
        loss = -F.logsigmoid(signs * (logits + model.logit_bias.float())).sum() / n
    else:
        target = torch.arange(n, device=logits.device)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    return logits, loss


def one_step(clip, images: list, captions: list[str], lr: float = 1e-4) -> OneStep:
    """One step of AdamW's first update (Δθ = −lr · sign(∂L/∂θ), no weight decay) on a copy of clip's
    model, on the batch of PIL images and their captions (n pairs, square); clip is never touched."""
    import copy

    from .encode import pixel_values, tokenize

    if len(images) != len(captions) or len(images) < 2:
        raise ValueError("one step needs a square batch of at least 2 pairs")
    model = copy.deepcopy(clip.model).float().eval()  # a bf16 served model would round a 1e-5 step away
    device = next(model.parameters()).device
    pixels = pixel_values(clip, images).to(device)
    ids = {k: (v.to(device) if v is not None else None) for k, v in tokenize(clip, captions).items()}
    with torch.inference_mode(False), torch.enable_grad():
        before, loss = batch_logits(model, clip.family, pixels, ids)
        params = [p for p in model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        with torch.no_grad():
            for p, g in zip(params, grads):
                if g is not None:
                    p.sub_(lr * g.sign())  # AdamW's first step: m̂ / √v̂ = g / |g|
            after, loss_after = batch_logits(model, clip.family, pixels, ids)
    del model
    return OneStep(before.detach().cpu(), after.cpu(), float(loss.detach()), float(loss_after), lr)
