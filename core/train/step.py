"""One optimisation step, and the state it works on.

AdamW with decoupled weight decay (not on gains, biases or the temperature), linear warm-up then
cosine decay, gradient clipping, the logit scale clamped at ln(100), optional bf16 autocast with
the loss in fp32, LiT-style tower locking, and under torchrun a loss over every rank's features.
A step never makes the host wait for the device (core.train.readout): its numbers stay on the device
until read, and a non-finite loss is caught by a device flag that the fused optimizer skips on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from transformers import CLIPModel

from ..encode import autocast_context, image_features, text_features
from ..loss import MAX_LOGIT_SCALE, contrastive_loss, group_contrastive_loss, siglip_loss
from ..model import Clip
from .config import TrainConfig
from .data import Batch
from .distributed import DistInfo, accumulate_two_pass, gather_with_grad
from .readout import FiniteGuard, StepRecord, defers_checks


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate at a step: linear warm-up, then cosine decay to min_lr_ratio * lr."""
    o = cfg.optim
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    progress = (step - o.warmup_steps) / max(1, o.steps - o.warmup_steps)
    return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW, fused (one kernel for every tensor, and a step skipped on the device when the loss was not
    finite: core.train.readout); weight decay only on matrices (ndim >= 2), never on gains, biases or
    logit_scale. Fused AdamW runs on CUDA and on the CPU (6x faster there than the for-loop one, measured
    on the small preset); other devices get PyTorch's default."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 and "logit_scale" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = cfg.runtime.device.split(":")[0] in ("cuda", "cpu")
    return torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=(0.9, cfg.optim.beta2), eps=1e-6, fused=fused or None)


def lock_towers(model, lock_image: bool, lock_text: bool) -> None:
    """LiT: freeze the image and/or text tower (encoder and projection; SigLIP has no projections)."""
    for flag, modules in ((lock_image, (model.vision_model, getattr(model, "visual_projection", None))),
                          (lock_text, (model.text_model, getattr(model, "text_projection", None)))):
        if flag:
            for m in filter(None, modules):
                m.requires_grad_(False)
                m.eval()


def enable_checkpointing(model) -> None:
    """Recompute each layer's activations in backward (transformers' own checkpointing, non-reentrant)."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x's name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


class Towers(torch.nn.Module):
    """The two encoders as one module, which is what DDP and torch.compile wrap.

    forward(pixels [B, 3, S, S], input_ids [B, L], attention_mask [B, L] or None) -> (image features
    [B, D], text features [B, D]), projected, not normalised.

    The sigmoid loss's bias is the model's own `logit_bias` (a SigLIP model: exported with it). A CLIP
    model trained with that loss has no place for one, so it is a parameter here (`siglip_bias`, saved
    in checkpoints' loss.safetensors) and its export stays a CLIP, scored with a softmax.

    CLIP's text tower is causal and its captions are padded on the right, so no padding token reaches
    the end-of-text token that is pooled: the mask changes nothing there (identical features, tested),
    and without it transformers neither reads the mask on the host (a wait for the GPU, each step) nor
    keeps SDPA off its causal kernel. Towers drops it for a CLIPModel.
    """

    def __init__(self, model, loss: str = "clip"):
        super().__init__()
        self.model = model
        self.causal_text = isinstance(model, CLIPModel)
        own = loss == "siglip" and getattr(model, "logit_bias", None) is None
        self.siglip_bias = torch.nn.Parameter(torch.tensor(-10.0)) if own else None

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None):
        mask = None if self.causal_text else attention_mask
        return image_features(self.model, pixels), text_features(self.model, input_ids, mask)

    def logit_bias(self) -> torch.Tensor | None:
        """The sigmoid loss's bias b ([] here, [1] in a SigLIP model), or None when there is none."""
        return self.siglip_bias if self.siglip_bias is not None else getattr(self.model, "logit_bias", None)


def wrap_towers(towers: Towers, cfg: TrainConfig, info: DistInfo = DistInfo()) -> torch.nn.Module:
    """What the step calls: the towers, in DDP under torchrun, then torch.compile'd if asked."""
    runner: torch.nn.Module = towers
    if info.enabled:
        runner = torch.nn.parallel.DistributedDataParallel(
            towers, device_ids=[info.local_rank] if cfg.runtime.device.startswith("cuda") else None)
    if cfg.model.compile:
        runner = torch.compile(runner, backend=cfg.model.compile, dynamic=True)  # captions vary in length
    return runner


@dataclass
class TrainState:
    """What a step changes and what hooks read: the model, its towers (plain, and as the step runs
    them: DDP, compiled), the optimizer, the number of steps done, the config and the rank."""

    clip: Clip
    towers: Towers
    optimizer: torch.optim.Optimizer
    cfg: TrainConfig
    info: DistInfo = field(default_factory=DistInfo)
    step: int = 0
    runner: torch.nn.Module | None = None  # default: towers
    elapsed_s: float = 0.0  # seconds of training so far, across resumes (kept in each checkpoint)
    guard: FiniteGuard | None = None  # whether every loss so far was finite (made on the model's device)

    def __post_init__(self):
        if self.guard is None:
            self.guard = FiniteGuard(self.clip.model.logit_scale.device)

    @classmethod
    def create(cls, clip: Clip, cfg: TrainConfig, info: DistInfo = DistInfo(), step: int = 0) -> "TrainState":
        """Towers, locking and optimizer for `clip` as cfg says (no DDP or compile: see wrap_towers)."""
        towers = Towers(clip.model, cfg.loss.kind).to(clip.device)
        clip.model.train()
        lock_towers(clip.model, cfg.model.lock_image, cfg.model.lock_text)
        clip.model.logit_scale.requires_grad_(cfg.model.learn_logit_scale)
        return cls(clip, towers, make_optimizer(towers, cfg), cfg, info, step)

    @property
    def model(self):
        return self.clip.model

    def train_mode(self) -> None:
        """Back to training after an eval: dropout on, locked towers stay in eval mode."""
        self.model.train()
        lock_towers(self.model, self.cfg.model.lock_image, self.cfg.model.lock_text)

    def loss_params(self) -> dict[str, torch.Tensor]:
        """The loss's own parameters (SigLIP's bias), saved beside the model in checkpoints."""
        return {"siglip_bias": self.towers.siglip_bias} if self.towers.siglip_bias is not None else {}


def train_step(state: TrainState, batch: Batch, lr: float) -> StepRecord:
    """One optimisation step on this rank's batch; state.step goes up by one. The host never waits for
    the device here: the numbers come back as a StepRecord, read when wanted.

    batch: pixels [b, 3, S, S] and token ids / mask [b, L] (b = the global batch / world size; the
    mask is None for a tokenizer without one, as SigLIP's own).
    Under torchrun the loss sees every rank's features (gathered with gradients). With
    cfg.loss.group_loss > 0 and hard-negative groups in the batch, the in-group InfoNCE is added.
    A NaN/inf loss or gradient norm never touches the weights: with the fused optimizer the step (and every later one)
    is skipped on the device and NonFiniteLossError is raised where the host next reads (a record's
    number, state.guard.raise_if_bad()); with another optimizer it is raised here, before the update.
    Returns a StepRecord of "loss", "logit_scale" and "grad_norm" (0-d tensors until read as floats).
    """
    cfg, info, plain, optimizer, guard = state.cfg, state.info, state.towers, state.optimizer, state.guard
    towers = state.runner if state.runner is not None else plain
    model = state.model
    device = model.logit_scale.device
    pixels = batch.pixels(device)
    ids = batch.input_ids.to(device, non_blocking=True)
    mask = batch.attention_mask.to(device, non_blocking=True) if batch.attention_mask is not None else None
    gather = gather_with_grad if info.enabled else None
    offset = info.rank * pixels.shape[0]
    weight = cfg.loss.group_loss if batch.n_groups else 0.0
    deferred = defers_checks(optimizer)

    def loss_fn(img: torch.Tensor, txt: torch.Tensor, chunk: int = 0) -> torch.Tensor:
        own = chunk == 0  # the temperature and bias get their gradient once, not once per chunk
        log_scale = model.logit_scale if own else model.logit_scale.detach()
        img, txt = img.float(), txt.float()  # the loss is fp32, outside autocast
        if cfg.loss.kind == "siglip":
            bias = plain.logit_bias() if own else plain.logit_bias().detach()
            loss = siglip_loss(img, txt, log_scale, bias, gather, offset)
        else:
            loss = contrastive_loss(img, txt, log_scale, gather, offset, local=cfg.loss.local_loss)
        if weight:
            loss = loss + weight * group_contrastive_loss(img, txt, log_scale, batch.n_groups, batch.group_size)
        return loss

    def check(loss: torch.Tensor) -> None:
        guard.update(loss, state.step + 1, info.enabled)
        if not deferred:
            guard.raise_if_bad()

    for g in optimizer.param_groups:
        g["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    k = cfg.optim.accum_freq
    if k > 1:
        parts = [torch.tensor_split(x, k) if x is not None else [None] * k for x in (pixels, ids, mask)]

        def encode(j: int):
            with autocast_context(device, cfg.runtime.precision):
                return towers(parts[0][j], parts[1][j], parts[2][j])

        loss = accumulate_two_pass(encode, k, loss_fn, check, getattr(towers, "no_sync", None))
    else:
        with autocast_context(device, cfg.runtime.precision):
            img, txt = towers(pixels, ids, mask)  # [b, D], [b, D]
        loss = loss_fn(img, txt)
        check(loss)
        loss.backward()
    params = [p for p in plain.parameters() if p.requires_grad]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
    guard.update(grad_norm, state.step + 1, what=guard.GRADIENTS)  # equal on every rank: no collective
    if deferred:
        optimizer.found_inf = guard.skip  # fused AdamW skips the update (weights, moments, step count)
    else:
        guard.raise_if_bad()
    optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(MAX_LOGIT_SCALE))
    state.step += 1
    return StepRecord({"loss": loss.detach(), "logit_scale": model.logit_scale.detach().exp(), "grad_norm": grad_norm},
                      on_read=None if info.enabled else guard.raise_if_bad)
