"""The training loop: from scratch (a preset) or fine-tuning any loadable CLIP.

AdamW with decoupled weight decay (not on gains, biases or the temperature), linear warm-up then
cosine decay, gradient clipping, logit scale clamped at ln(100), optional bf16 autocast with the
loss in fp32, LiT-style tower locking, periodic zero-shot evaluation, JSON-lines metrics, and
atomic HF-format checkpoints that carry optimizer, step and RNG state so `resume` continues
exactly where a run stopped.
"""

from __future__ import annotations

import ast
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .data import HFPairs, ShapesPairs, batch_stream, open_dataset
from .encode import autocast_context, image_features, text_features, tokenize
from .evaluate import evaluate_shapes
from .distributed import DistInfo, accumulate_two_pass, add_patch_dropout, gather_with_grad, init_from_env, mean_over_ranks
from .loss import MAX_LOGIT_SCALE, contrastive_loss, group_contrastive_loss, siglip_loss
from .model import Clip, create, load, save_pretrained_atomic
from .zeroshot import template_presets


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the run stopped before the bad step touched the weights."""


@dataclass
class TrainConfig:
    """Everything a run needs. Saved as train_config.json next to the checkpoints."""

    output_dir: str
    model: str = "tiny"  # a preset name (from scratch) or any source `load` accepts (fine-tune)
    data: str = "shapes"  # "shapes", or a datasets source (folder, save_to_disk dir, Hub name)
    image_column: str = "image"
    text_column: str = "text"
    split: str = "train"
    streaming: bool = False
    hard_negatives: float = 0.5  # shapes data: share of each batch in same-colour, all-shapes groups
    curriculum_steps: int = 0  # shapes data: single objects go from centred to anywhere over this many steps
    group_loss: float = 0.0  # weight of the extra InfoNCE inside each hard-negative group (shapes data)
    init_logit_scale: float = 0.0  # from scratch: exp(t) at step 0 (0 keeps the paper's 1/0.07); still learned
    loss: str = "clip"  # "clip" (softmax InfoNCE) or "siglip" (sigmoid, with a learnable bias)
    local_loss: bool = False  # distributed: each rank scores its rows against all columns (O(n) memory)
    accum_freq: int = 1  # split each batch into this many chunks (two-pass, exact full-batch gradients)
    grad_checkpointing: bool = False  # recompute activations in backward (HF gradient checkpointing)
    compile: str = ""  # a torch.compile backend ("inductor"), or "" for none
    patch_dropout: float = 0.0  # FLIP: share of image patches dropped while training
    steps: int = 1000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0
    beta2: float = 0.98
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "cpu"
    precision: str = "fp32"  # or "bf16" (autocast; the loss stays fp32)
    lock_image: bool = False
    lock_text: bool = False
    eval_every: int = 250  # 0 disables
    eval_samples: int = 500
    eval_templates: str = "shapes_world"  # template preset (assets/templates/) of the in-run zero-shot eval
    save_every: int = 250  # 0: only at the end
    keep_checkpoints: int = 2
    log_every: int = 10
    num_workers: int = 1
    worker_nice: int = 19  # data workers yield the cores to the trainer (2 CPU cores, tiny: 1.35 s a step vs 1.55 at +5)
    threads: int = 0  # torch CPU threads; 0 leaves torch's default
    save_dtype: str = "float32"  # dtype of the final exported model ("float16" halves its size)
    export_dir: str = ""  # where the final model goes (default: output_dir/model)
    progress: bool = True


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate at a step: linear warm-up, then cosine decay to min_lr_ratio * lr."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay only on matrices (ndim >= 2), never on gains, biases or logit_scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 and "logit_scale" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = cfg.device.startswith("cuda")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, cfg.beta2), eps=1e-6, fused=fused or None)


def lock_towers(model, lock_image: bool, lock_text: bool) -> None:
    """LiT: freeze the image and/or text tower (encoder and projection)."""
    for flag, modules in ((lock_image, (model.vision_model, model.visual_projection)),
                          (lock_text, (model.text_model, model.text_projection))):
        if flag:
            for m in modules:
                m.requires_grad_(False)
                m.eval()


class Towers(torch.nn.Module):
    """The two encoders as one module, which is what DDP and torch.compile wrap.

    forward(pixels [B, 3, S, S], input_ids [B, L], attention_mask [B, L]) -> (image features [B, D],
    text features [B, D]), projected, not normalised. Holds SigLIP's learnable bias when that loss is used.
    """

    def __init__(self, model, loss: str = "clip"):
        super().__init__()
        self.model = model
        self.siglip_bias = torch.nn.Parameter(torch.tensor(-10.0)) if loss == "siglip" else None

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        return image_features(self.model, pixels), text_features(self.model, input_ids, attention_mask)


def wrap_towers(towers: Towers, cfg: TrainConfig, info: DistInfo = DistInfo()) -> torch.nn.Module:
    """What the loop calls: the towers, in DDP under torchrun, then torch.compile'd if asked."""
    runner: torch.nn.Module = towers
    if info.enabled:
        runner = torch.nn.parallel.DistributedDataParallel(
            towers, device_ids=[info.local_rank] if cfg.device.startswith("cuda") else None)
    if cfg.compile:
        runner = torch.compile(runner, backend=cfg.compile, dynamic=True)  # captions vary in length
    return runner


def train_step(clip: Clip, pixels: torch.Tensor, captions: list[str], optimizer, cfg: TrainConfig, lr: float,
               n_groups: int = 0, group_size: int = 0, towers: torch.nn.Module | None = None,
               info: DistInfo = DistInfo()) -> dict:
    """One optimisation step on this rank's batch. Returns loss, logit scale and gradient norm.

    pixels [b, 3, S, S], captions [b] (b = the global batch / world size). `towers` is the Towers
    module, possibly wrapped in DDP or compiled (default: a plain Towers of clip.model). Under
    torchrun the loss sees every rank's features (gathered with gradients). With cfg.group_loss > 0,
    the first n_groups * group_size pairs are hard-negative groups and their in-group InfoNCE is
    added. cfg.accum_freq > 1 splits the batch into chunks (two-pass accumulation, exact gradients).
    Raises NonFiniteLossError, before any weight changes, on a NaN or infinite loss.
    """
    model, device = clip.model, clip.device
    towers = towers if towers is not None else Towers(model, cfg.loss)
    plain = getattr(towers, "_orig_mod", towers)  # through torch.compile
    plain = getattr(plain, "module", plain)  # through DDP
    tokens = tokenize(clip, captions, warn=False)
    pixels = pixels.to(device, non_blocking=True)
    ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
    gather = gather_with_grad if info.enabled else None
    offset = info.rank * pixels.shape[0]

    def loss_fn(img: torch.Tensor, txt: torch.Tensor, chunk: int = 0) -> torch.Tensor:
        own = chunk == 0  # the temperature and bias get their gradient once, not once per chunk
        log_scale = model.logit_scale if own else model.logit_scale.detach()
        img, txt = img.float(), txt.float()  # the loss is fp32, outside autocast
        if cfg.loss == "siglip":
            bias = plain.siglip_bias if own else plain.siglip_bias.detach()
            loss = siglip_loss(img, txt, log_scale, bias, gather, offset)
        else:
            loss = contrastive_loss(img, txt, log_scale, gather, offset, local=cfg.local_loss)
        if cfg.group_loss and n_groups:
            loss = loss + cfg.group_loss * group_contrastive_loss(img, txt, log_scale, n_groups, group_size)
        return loss

    def check(loss: torch.Tensor) -> None:
        finite = torch.isfinite(loss.detach()).float()
        if info.enabled:  # every rank stops together
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        if not bool(finite):
            raise NonFiniteLossError(f"loss is {loss.item()} — stopping; no weights were updated by this step")

    for g in optimizer.param_groups:
        g["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    if cfg.accum_freq > 1:
        parts = [torch.tensor_split(x, cfg.accum_freq) for x in (pixels, ids, mask)]

        def encode(j: int):
            with autocast_context(device, cfg.precision):
                return towers(parts[0][j], parts[1][j], parts[2][j])

        loss = accumulate_two_pass(encode, cfg.accum_freq, loss_fn, check, getattr(towers, "no_sync", None))
    else:
        with autocast_context(device, cfg.precision):
            img, txt = towers(pixels, ids, mask)  # [b, D], [b, D]
        loss = loss_fn(img, txt)
        check(loss)
        loss.backward()
    params = [p for p in plain.parameters() if p.requires_grad]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(MAX_LOGIT_SCALE))
    return {"loss": loss.item(), "logit_scale": model.logit_scale.exp().item(), "grad_norm": grad_norm.item()}


# ---- checkpoints -------------------------------------------------------------------------------

def _optimizer_state(optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON metadata: no pickle."""
    sd = optimizer.state_dict()
    tensors = {f"{pid}.{k}": v.detach().cpu().contiguous() for pid, st in sd["state"].items() for k, v in st.items()}
    return tensors, {"param_groups": sd["param_groups"]}


def _restore_optimizer(optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict = {}
    for key, v in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(clip: Clip, optimizer, step: int, cfg: TrainConfig, run_dir: Path,
                    loss_params: dict[str, torch.Tensor] | None = None) -> Path:
    """Write checkpoints/step-NNNNNN atomically (model + optimizer + RNG, and the loss's own
    parameters such as SigLIP's bias), then point `latest` at it."""
    ckpt_root = run_dir / "checkpoints"
    target = ckpt_root / f"step-{step:07d}"
    opt_tensors, opt_meta = _optimizer_state(optimizer)
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    state = {"step": step, "optimizer": opt_meta, "numpy_rng": np.random.get_state()[1].tolist(),
             "numpy_pos": int(np.random.get_state()[2]), "python_rng": repr(random.getstate()), "config": asdict(cfg)}
    tmp_files = run_dir / ".pending"
    tmp_files.mkdir(parents=True, exist_ok=True)
    save_file(opt_tensors, str(tmp_files / "optimizer.safetensors"))
    save_file(rng, str(tmp_files / "rng.safetensors"))
    save_file({k: v.detach().cpu().reshape(1) for k, v in (loss_params or {}).items()}, str(tmp_files / "loss.safetensors"))
    extra = {"trainer_state.json": json.dumps(state)}
    save_pretrained_atomic(clip, target, extra_files=extra)
    for name in ("optimizer.safetensors", "rng.safetensors", "loss.safetensors"):
        os.replace(tmp_files / name, target / name)  # same filesystem: atomic; the dir already exists
    _write_latest(run_dir, target.name)
    old = sorted(p for p in ckpt_root.glob("step-*") if p.is_dir())[: -cfg.keep_checkpoints]
    for p in old:
        shutil.rmtree(p, ignore_errors=True)
    return target


def _write_latest(run_dir: Path, name: str) -> None:
    tmp = run_dir / "latest.tmp"
    tmp.write_text(name)
    os.replace(tmp, run_dir / "latest")


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    run_dir = Path(run_dir)
    pointer = run_dir / "latest"
    candidates = []
    if pointer.is_file():
        candidates.append(run_dir / "checkpoints" / pointer.read_text().strip())
    candidates += sorted((run_dir / "checkpoints").glob("step-*"), reverse=True)
    for c in candidates:
        if (c / "trainer_state.json").is_file() and (c / "optimizer.safetensors").is_file() and (c / "model.safetensors").is_file():
            return c
    return None


# ---- the loop ------------------------------------------------------------------------------------

def _source(cfg: TrainConfig, clip: Clip, info: DistInfo = DistInfo()):
    if cfg.data == "shapes":
        return ShapesPairs(seed=cfg.seed, hard_negatives=cfg.hard_negatives, curriculum_steps=cfg.curriculum_steps,
                           image_size=clip.image_size, mean=clip.processor.image_mean, std=clip.processor.image_std,
                           as_uint8=True)
    ds = open_dataset(cfg.data, split=cfg.split, streaming=cfg.streaming)
    if cfg.streaming and info.enabled:  # each rank reads its own part of the stream
        from datasets.distributed import split_dataset_by_node
        ds = split_dataset_by_node(ds, rank=info.rank, world_size=info.world_size)
    return HFPairs(ds, clip.processor, cfg.image_column, cfg.text_column, seed=cfg.seed)


def _check_config(cfg: TrainConfig, info: DistInfo) -> None:
    if cfg.loss not in ("clip", "siglip"):
        raise ValueError(f"loss must be 'clip' or 'siglip', got {cfg.loss!r}")
    if cfg.batch_size % (info.world_size * max(1, cfg.accum_freq)):
        raise ValueError(f"batch size {cfg.batch_size} must divide evenly by world size x accum freq "
                         f"({info.world_size} x {cfg.accum_freq})")
    if cfg.init_logit_scale and cfg.model not in ("tiny", "small", "base"):
        raise ValueError("init_logit_scale applies when training from scratch (a preset); a loaded model keeps its learned scale")
    if cfg.eval_every and cfg.data == "shapes" and cfg.eval_templates not in template_presets():
        raise ValueError(f"unknown eval template preset {cfg.eval_templates!r}; known: {', '.join(template_presets())}")


def enable_checkpointing(model) -> None:
    """Recompute each layer's activations in backward (transformers' own checkpointing, non-reentrant)."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x's name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _build(cfg: TrainConfig, ckpt: Path | None) -> tuple[Clip, Towers]:
    """The model (fresh, loaded, or from a checkpoint) and its Towers, on cfg.device."""
    if ckpt is not None:
        clip = load(str(ckpt), device=cfg.device)
    elif cfg.model in ("tiny", "small", "base"):
        clip = create(cfg.model, seed=cfg.seed)
        init = cfg.init_logit_scale or (10.0 if cfg.loss == "siglip" else 0.0)  # SigLIP starts exp(t) at 10
        if init:
            with torch.no_grad():
                clip.model.logit_scale.fill_(math.log(init))
        clip.model.to(cfg.device)
    else:
        clip = load(cfg.model, device=cfg.device)
    towers = Towers(clip.model, cfg.loss).to(cfg.device)
    if ckpt is not None and (ckpt / "loss.safetensors").is_file() and towers.siglip_bias is not None:
        with torch.no_grad():
            towers.siglip_bias.copy_(load_file(str(ckpt / "loss.safetensors"))["siglip_bias"].reshape(()))
    if cfg.grad_checkpointing:
        enable_checkpointing(clip.model)
    return clip, towers


def _restore_state(ckpt: Path, optimizer) -> int:
    state = json.loads((ckpt / "trainer_state.json").read_text())
    _restore_optimizer(optimizer, load_file(str(ckpt / "optimizer.safetensors")), state["optimizer"])
    rng = load_file(str(ckpt / "rng.safetensors"))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    np.random.set_state(("MT19937", np.array(state["numpy_rng"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate(ast.literal_eval(state["python_rng"]))
    return int(state["step"])


def _trim_metrics(path: Path, keep_until: int) -> None:
    """Keep the complete log lines of steps <= keep_until (a kill can cut the last line in half)."""
    kept = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("step", 0) <= keep_until:
            kept.append(line)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(l + "\n" for l in kept))
    os.replace(tmp, path)


def train(cfg: TrainConfig, resume: bool = False, on_log: Callable[[dict], None] | None = None) -> Clip:
    """Run training to cfg.steps. With resume=True, continue from the latest checkpoint in output_dir.

    Writes output_dir/metrics.jsonl, checkpoints/step-*/ (HF format + trainer state), and the final
    model to output_dir/model/ (or cfg.export_dir). Returns the trained model. Under torchrun every
    rank trains on its shard of each global batch of cfg.batch_size; rank 0 alone logs, evaluates,
    checkpoints and exports.
    """
    info, device = init_from_env(cfg.device)
    cfg = replace(cfg, device=device)
    _check_config(cfg, info)
    run_dir = Path(cfg.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ckpt = latest_checkpoint(run_dir) if resume else None
    if resume and ckpt is None and info.is_main:
        print(f"no complete checkpoint in {run_dir}; starting from step 0")
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    clip, towers = _build(cfg, ckpt)
    model = clip.model
    model.train()
    lock_towers(model, cfg.lock_image, cfg.lock_text)
    optimizer = make_optimizer(towers, cfg)
    start_step = _restore_state(ckpt, optimizer) if ckpt is not None else 0
    if ckpt is not None and info.is_main:
        print(f"resumed from {ckpt} at step {start_step}")
    hook = add_patch_dropout(model.vision_model, cfg.patch_dropout) if cfg.patch_dropout else None
    runner = wrap_towers(towers, cfg, info)
    if info.is_main:
        (run_dir / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))

    source = _source(cfg, clip, info)
    local_batch = cfg.batch_size // info.world_size
    metrics_path = run_dir / "metrics.jsonl"
    if info.is_main and metrics_path.exists():
        _trim_metrics(metrics_path, start_step)  # a fresh run starts an empty log; a resumed one drops what it redoes
    bar = None
    if cfg.progress and info.is_main:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)
    t0, wait, last = time.perf_counter(), 0.0, time.perf_counter()
    step = start_step
    eval_templates = template_presets().get(cfg.eval_templates)
    loss_params = (lambda: {"siglip_bias": towers.siglip_bias}) if towers.siglip_bias is not None else (lambda: None)
    with (metrics_path.open("a") if info.is_main else open(os.devnull, "w")) as log:
        def emit(rec: dict) -> None:
            if info.is_main:
                log.write(json.dumps(rec) + "\n")
                log.flush()
                if on_log:
                    on_log(rec)

        for batch in batch_stream(source, local_batch, start_step, cfg.steps, cfg.num_workers, info.rank, info.world_size,
                                  worker_nice=cfg.worker_nice):
            wait += time.perf_counter() - last
            lr = lr_at(step, cfg)
            out = train_step(clip, batch.pixels(device), batch.captions, optimizer, cfg, lr, batch.n_groups,
                             batch.group_size, runner, info)
            step += 1
            last = time.perf_counter()
            if step % cfg.log_every == 0 or step == cfg.steps:
                out["loss"] = mean_over_ranks(out["loss"], info, device)
                elapsed = last - t0
                emit({"step": step, "lr": lr, **out, "elapsed_s": round(elapsed, 2),
                      "samples_per_s": round((step - start_step) * cfg.batch_size / elapsed, 2),
                      "data_wait_share": round(wait / elapsed, 4)})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{out['loss']:.3f}", scale=f"{out['logit_scale']:.1f}")
            if info.is_main and cfg.eval_every and step % cfg.eval_every == 0 and cfg.data == "shapes":
                model.eval()
                res = evaluate_shapes(clip, n=cfg.eval_samples, seed=cfg.seed + 10_000, templates=eval_templates)
                emit({"step": step, "eval": {k: v["top1"] for k, v in res.items() if "top1" in v}})
                model.train()
                lock_towers(model, cfg.lock_image, cfg.lock_text)
            if (cfg.save_every and step % cfg.save_every == 0) or step == cfg.steps:
                if info.is_main:
                    save_checkpoint(clip, optimizer, step, cfg, run_dir, loss_params())
                if info.enabled:
                    torch.distributed.barrier()
    if bar is not None:
        bar.close()
    if hook is not None:
        hook.remove()
    model.eval()
    if info.is_main:
        dtype = getattr(torch, cfg.save_dtype)
        save_pretrained_atomic(clip, Path(cfg.export_dir) if cfg.export_dir else run_dir / "model",
                               dtype=None if dtype == torch.float32 else dtype)
    if info.enabled:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return clip
