"""Training on several processes (torchrun, DDP) and on big effective batches.

CLIP needs every image to meet every caption of the global batch, so the features of all ranks are
gathered *with gradients* before the loss. The gather's backward sums each rank's gradient for the
features it sent, and DDP then averages the parameter gradients over ranks: together they give
exactly the gradient of the global-batch loss (tests/test_distributed.py checks it to 1e-5 against
one process on the concatenated batch, with 2 processes under gloo).

Also here: FLIP patch dropout, and open_clip-style two-pass gradient accumulation, which keeps the
negatives of the whole effective batch.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job. world_size 1 means no torch.distributed at all."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_env(device: str) -> tuple[DistInfo, str]:
    """Join the process group that torchrun describes in the environment (WORLD_SIZE, RANK, ...).

    Returns the DistInfo and the device this rank should use: 'cuda:<local_rank>' for CUDA jobs
    (NCCL), the given device otherwise (gloo, e.g. CPU processes). Without torchrun: (DistInfo(), device).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    return DistInfo(rank, world, local_rank), device


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward returns, to each rank, the sum over ranks of the
    gradient that reached its own slice (an all-reduce, so it also works on gloo)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.world, ctx.n = dist.get_rank(), dist.get_world_size(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(ctx.world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)  # [world * n, ...]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """[n, d] on each rank -> [world * n, d], rank order, differentiable. Every rank needs the same n."""
    return _GatherWithGrad.apply(x)


def mean_over_ranks(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """A 0-d metric averaged over ranks (for logging), still on the device (the all-reduce is queued,
    not waited for); the value itself without distribution. Every rank must call it."""
    if not info.enabled:
        return value
    t = value.detach().to(torch.float64).reshape(1).clone()
    dist.all_reduce(t)
    return t[0] / info.world_size


# ---- patch dropout (FLIP) -----------------------------------------------------------------------

def add_patch_dropout(vision_model, drop: float) -> torch.utils.hooks.RemovableHandle:
    """Drop a random `drop` share of patch tokens of every image while training (FLIP), keeping CLS.

    A forward hook on the vision embeddings [B, 1 + P, D] -> [B, 1 + keep, D] (SigLIP, which has no
    CLS token: [B, P, D] -> [B, keep, D]); in eval mode it leaves the sequence alone, so evaluation
    and the exported model see every patch.
    """
    if not 0.0 <= drop < 1.0:
        raise ValueError(f"patch dropout must lie in [0, 1), got {drop}")

    keep_per_mille = int(round((1.0 - drop) * 1000))  # integer maths: traceable by torch.compile with dynamic shapes
    cls = 1 if hasattr(vision_model.embeddings, "class_embedding") else 0  # CLIP's CLS token is always kept

    def hook(module, inputs, out: torch.Tensor) -> torch.Tensor:
        if not module.training or keep_per_mille == 1000:
            return out
        b, n, d = out.shape
        keep = max(1, ((n - cls) * keep_per_mille) // 1000)
        idx = torch.rand(b, n - cls, device=out.device).argsort(dim=1)[:, :keep] + cls  # [B, keep] patch positions
        patches = out.gather(1, idx.unsqueeze(-1).expand(b, keep, d))  # [B, keep, D]
        return torch.cat([out[:, :cls], patches], dim=1)

    return vision_model.embeddings.register_forward_hook(hook)


# ---- gradient accumulation with the whole batch's negatives -------------------------------------

def accumulate_two_pass(encode: Callable[[int], tuple[torch.Tensor, torch.Tensor]], chunks: int,
                        loss_fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
                        check: Callable[[torch.Tensor], None] | None = None,
                        no_sync: Callable[[], contextlib.AbstractContextManager] | None = None) -> torch.Tensor:
    """Gradients of the full-batch loss, holding activations for one chunk at a time.

    encode(j) returns (image features, text features) of chunk j. Pass 1 encodes every chunk without
    gradients and caches the features; `check` sees the full-batch loss before anything is
    back-propagated. Pass 2 re-encodes chunk j with gradients, puts it in place of its cached copy
    and back-propagates the full-batch loss through chunk j only. Summed over chunks this is exactly
    the full batch's gradient (open_clip's --accum-freq works the same way): the memory of one
    chunk, the negatives of the whole batch, one extra forward. loss_fn(img, txt, j) must let only
    one chunk (j == 0) carry gradients to the loss's own parameters (temperature, bias), or they
    would be counted `chunks` times. `no_sync` (DDP's) defers the gradient all-reduce to the last
    chunk. Returns the full-batch loss (detached).
    """
    with torch.no_grad():
        cached = [encode(j) for j in range(chunks)]
        full = loss_fn(torch.cat([c[0] for c in cached]), torch.cat([c[1] for c in cached]), 0)
    if check is not None:
        check(full)
    for j in range(chunks):
        ctx = no_sync() if (no_sync is not None and j < chunks - 1) else contextlib.nullcontext()
        with ctx:
            img_j, txt_j = encode(j)
            imgs = torch.cat([img_j if k == j else cached[k][0] for k in range(chunks)])
            txts = torch.cat([txt_j if k == j else cached[k][1] for k in range(chunks)])
            loss_fn(imgs, txts, j).backward()
    return full
