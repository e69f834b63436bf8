"""CLIP's symmetric contrastive loss (InfoNCE), in fp32, with everything the matrix view shows.

The seed pseudo-code, for a batch of n pairs:

    logits = exp(t) * I_e @ T_e.T                      # [n, n]
    loss_i = cross_entropy(logits, arange(n), axis=1)  # each image picks its caption (rows)
    loss_t = cross_entropy(logits, arange(n), axis=0)  # each caption picks its image (columns)
    loss   = (loss_i + loss_t) / 2

Distributed training drops in through `gather`: a function that all-gathers features from every
rank *with gradients*. Each rank then scores its own rows against every column ("local loss"),
and `label_offset` tells it where its own pairs sit in the global batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

MAX_LOGIT_SCALE = 100.0
INIT_LOGIT_SCALE = 1 / 0.07


@dataclass
class ContrastiveOutput:
    """Everything about one batch's matrix. Shapes for n images and m captions (n == m for a loss).

    cosine [n, m]; logits [n, m] = scale * cosine; probs_rows [n, m] (softmax over each row,
    image -> text); probs_cols [n, m] (softmax over each column, text -> image); loss_rows [n] and
    loss_cols [m] are the per-row / per-column cross-entropy terms; loss_i, loss_t, loss are their
    means (None when n != m: a non-square batch has no diagonal to score).
    """

    cosine: torch.Tensor
    logits: torch.Tensor
    probs_rows: torch.Tensor
    probs_cols: torch.Tensor
    scale: float
    loss_rows: torch.Tensor | None = None
    loss_cols: torch.Tensor | None = None
    loss_i: torch.Tensor | None = None
    loss_t: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    bias: float = 0.0  # SigLIP's b: its cell probabilities are sigmoid(logit + b)
    sigmoid_probs: torch.Tensor | None = None  # [n, m] sigmoid(logit + b) per cell, for a sigmoid-trained model
    sigmoid_cells: torch.Tensor | None = None  # [n, n] each cell's binary term -log sigmoid(±(logit + b)), square only
    sigmoid_loss: torch.Tensor | None = None  # SigLIP's loss of the batch: sigmoid_cells.sum() / n

    @property
    def accuracy_i2t(self) -> float | None:
        """Share of rows whose argmax is the diagonal (image finds its caption)."""
        if self.loss is None:
            return None
        return float((self.logits.argmax(1) == torch.arange(len(self.logits), device=self.logits.device)).float().mean())

    @property
    def accuracy_t2i(self) -> float | None:
        """Share of columns whose argmax is the diagonal (caption finds its image)."""
        if self.loss is None:
            return None
        return float((self.logits.argmax(0) == torch.arange(len(self.logits), device=self.logits.device)).float().mean())


def clamp_logit_scale(log_scale: torch.Tensor) -> torch.Tensor:
    """exp(t) clamped to at most 100 (the paper's stability fix); gradients flow below the clamp."""
    return log_scale.float().exp().clamp(max=MAX_LOGIT_SCALE)


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, log_scale: torch.Tensor | float,
                     gather: Callable[[torch.Tensor], torch.Tensor] | None = None, label_offset: int = 0,
                     local: bool = True) -> torch.Tensor:
    """The symmetric InfoNCE loss, a scalar, computed in fp32.

    image_features [n, d], text_features [n, d]: paired rows, not necessarily normalised.
    log_scale: t, the learnable log temperature (logits = exp(t) * cosine, exp(t) clamped at 100).
    gather: optional all-gather with gradients ([n, d] per rank -> [N, d]). With local=True each rank
    scores its own n rows against all N columns ([n, N] logits, O(n) memory per rank); with
    local=False every rank scores the whole [N, N] matrix. Both give the global batch's loss.
    label_offset: the global index of this rank's first pair (rank * n) when `gather` is given.
    """
    img = F.normalize(image_features.float(), dim=-1)  # [n, d]
    txt = F.normalize(text_features.float(), dim=-1)  # [n, d]
    scale = clamp_logit_scale(torch.as_tensor(log_scale, device=img.device))
    all_img = gather(img) if gather is not None else img  # [N, d]
    all_txt = gather(txt) if gather is not None else txt  # [N, d]
    if gather is not None and not local:
        img, txt, label_offset = all_img, all_txt, 0  # every rank computes the full [N, N] loss
    labels = torch.arange(img.shape[0], device=img.device) + label_offset  # [n]
    logits_i = scale * img @ all_txt.T  # [n, N]: my images against every caption
    logits_t = scale * txt @ all_img.T  # [n, N]: my captions against every image
    return (F.cross_entropy(logits_i, labels) + F.cross_entropy(logits_t, labels)) / 2


def siglip_loss(image_features: torch.Tensor, text_features: torch.Tensor, log_scale: torch.Tensor | float,
                bias: torch.Tensor | float, gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
                label_offset: int = 0) -> torch.Tensor:
    """The sigmoid loss of SigLIP (Zhai et al., 2023), a scalar, in fp32.

    Every (image i, caption j) pair is its own binary problem: logit = exp(t) * cos(i, j) + b, the
    label is +1 on the diagonal and -1 elsewhere, and the loss is -sum(log sigmoid(label * logit)) / n.
    image_features [n, d], text_features [n, d]; bias b is learnable (SigLIP starts it at -10 and
    exp(t) at 10). With `gather`, each rank scores its n images against all N captions; the mean of
    the ranks' losses is the loss of the global batch.
    """
    img = F.normalize(image_features.float(), dim=-1)  # [n, d]
    txt = F.normalize(text_features.float(), dim=-1)  # [n, d]
    all_txt = gather(txt) if gather is not None else txt  # [N, d]
    scale = clamp_logit_scale(torch.as_tensor(log_scale, device=img.device))
    logits = scale * img @ all_txt.T + torch.as_tensor(bias, device=img.device).float()  # [n, N]
    signs = -torch.ones_like(logits)
    signs[torch.arange(img.shape[0], device=img.device), torch.arange(img.shape[0], device=img.device) + label_offset] = 1.0
    return -F.logsigmoid(signs * logits).sum() / img.shape[0]


def group_contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, log_scale: torch.Tensor | float,
                           n_groups: int, group_size: int) -> torch.Tensor:
    """The symmetric InfoNCE inside each group of hard negatives, a scalar, in fp32.

    The first n_groups * group_size rows of image_features [n, d] and text_features [n, d] form
    consecutive groups (for the shapes world: one scene drawn once per shape). Each group is scored
    on its own [group_size, group_size] matrix, so the only negatives are the group's other members.
    Added to `contrastive_loss`, it weights the one cue that tells a group apart (the shape) as much
    as the whole batch. Zero when n_groups is 0.
    """
    if n_groups <= 0:
        return image_features.new_zeros((), dtype=torch.float32)
    n = n_groups * group_size
    img = F.normalize(image_features[:n].float(), dim=-1).view(n_groups, group_size, -1)  # [G, k, d]
    txt = F.normalize(text_features[:n].float(), dim=-1).view(n_groups, group_size, -1)  # [G, k, d]
    scale = clamp_logit_scale(torch.as_tensor(log_scale, device=img.device))
    logits = scale * img @ txt.transpose(1, 2)  # [G, k, k]
    labels = torch.arange(group_size, device=img.device).repeat(n_groups)  # [G*k]
    loss_i = F.cross_entropy(logits.reshape(n, group_size), labels)
    loss_t = F.cross_entropy(logits.transpose(1, 2).reshape(n, group_size), labels)
    return (loss_i + loss_t) / 2


def similarity(image_features: torch.Tensor, text_features: torch.Tensor,
               scale: float | torch.Tensor = INIT_LOGIT_SCALE, bias: float | None = None) -> ContrastiveOutput:
    """The full matrix view of a batch, for display and teaching (no gradients needed).

    image_features [n, d] and text_features [m, d]; when n == m, row i and column i are a pair and
    the losses are filled in. Features are normalised here; scale multiplies cosines into logits
    (clamped at 100 as CLIP does). With `bias` (a sigmoid-trained model: SigLIP) the scale is the
    model's own, unclamped, and a square batch also gets SigLIP's loss: every cell a binary term
    -log sigmoid(label · (logit + b)), label +1 on the diagonal and -1 elsewhere, summed over the
    cells and divided by n; the softmax figures then say what CLIP's loss would give on the same logits.
    """
    img = F.normalize(image_features.detach().float(), dim=-1)
    txt = F.normalize(text_features.detach().float(), dim=-1)
    scale_t = torch.as_tensor(scale, dtype=torch.float32)
    scale_t = scale_t if bias is not None else scale_t.clamp(max=MAX_LOGIT_SCALE)
    cosine = img @ txt.T  # [n, m]
    logits = scale_t * cosine
    out = ContrastiveOutput(cosine=cosine, logits=logits, probs_rows=logits.softmax(dim=1),
                            probs_cols=logits.softmax(dim=0), scale=float(scale_t))
    if bias is not None:
        out.bias = float(bias)
        out.sigmoid_probs = (logits + out.bias).sigmoid()  # [n, m]: each cell its own yes/no
    if img.shape[0] == txt.shape[0] and img.shape[0] > 0:
        labels = torch.arange(img.shape[0])
        out.loss_rows = F.cross_entropy(logits, labels, reduction="none")  # [n]: -log probs_rows[i, i]
        out.loss_cols = F.cross_entropy(logits.T, labels, reduction="none")  # [n]: -log probs_cols[j, j]
        out.loss_i = out.loss_rows.mean()
        out.loss_t = out.loss_cols.mean()
        out.loss = (out.loss_i + out.loss_t) / 2
        if bias is not None:
            signs = 2 * torch.eye(img.shape[0]) - 1  # +1 on the diagonal, -1 elsewhere
            out.sigmoid_cells = -F.logsigmoid(signs * (logits + out.bias))  # [n, n]
            out.sigmoid_loss = out.sigmoid_cells.sum() / img.shape[0]
    return out


def init_log_scale() -> float:
    """t at initialisation: log(1 / 0.07)."""
    return math.log(INIT_LOGIT_SCALE)
