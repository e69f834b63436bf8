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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .data import HFPairs, ShapesPairs, batch_stream, open_dataset
from .encode import autocast_context, image_features, text_features, tokenize
from .evaluate import evaluate_shapes
from .loss import MAX_LOGIT_SCALE, contrastive_loss, group_contrastive_loss
from .model import Clip, create, load, save_pretrained_atomic


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
    save_every: int = 250  # 0: only at the end
    keep_checkpoints: int = 2
    log_every: int = 10
    num_workers: int = 1
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


def train_step(clip: Clip, pixels: torch.Tensor, captions: list[str], optimizer, cfg: TrainConfig, lr: float,
               n_groups: int = 0, group_size: int = 0) -> dict:
    """One optimisation step on a batch. Returns the loss and logit scale; raises on a non-finite loss.

    pixels [B, 3, S, S], captions [B]. With cfg.group_loss > 0 and n_groups > 0, the first
    n_groups * group_size pairs are hard-negative groups and their in-group InfoNCE is added.
    """
    model = clip.model
    device = clip.device
    tokens = tokenize(clip, captions, warn=False)
    with autocast_context(device, cfg.precision):
        img = image_features(model, pixels.to(device, non_blocking=True))  # [B, D]
        txt = text_features(model, tokens["input_ids"].to(device), tokens["attention_mask"].to(device))  # [B, D]
    loss = contrastive_loss(img.float(), txt.float(), model.logit_scale)  # fp32, outside autocast
    if cfg.group_loss and n_groups:
        loss = loss + cfg.group_loss * group_contrastive_loss(img, txt, model.logit_scale, n_groups, group_size)
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"loss is {loss.item()} — stopping; no weights were updated by this step")
    for g in optimizer.param_groups:
        g["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
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


def save_checkpoint(clip: Clip, optimizer, step: int, cfg: TrainConfig, run_dir: Path) -> Path:
    """Write checkpoints/step-NNNNNN atomically (model + optimizer + RNG), then point `latest` at it."""
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
    extra = {"trainer_state.json": json.dumps(state)}
    save_pretrained_atomic(clip, target, extra_files=extra)
    for name in ("optimizer.safetensors", "rng.safetensors"):
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

def _source(cfg: TrainConfig, clip: Clip):
    if cfg.data == "shapes":
        return ShapesPairs(seed=cfg.seed, hard_negatives=cfg.hard_negatives, curriculum_steps=cfg.curriculum_steps,
                           image_size=clip.image_size, mean=clip.processor.image_mean, std=clip.processor.image_std)
    ds = open_dataset(cfg.data, split=cfg.split, streaming=cfg.streaming)
    return HFPairs(ds, clip.processor, cfg.image_column, cfg.text_column, seed=cfg.seed)


def train(cfg: TrainConfig, resume: bool = False, on_log: Callable[[dict], None] | None = None) -> Clip:
    """Run training to cfg.steps. With resume=True, continue from the latest checkpoint in output_dir.

    Writes output_dir/metrics.jsonl, checkpoints/step-*/ (HF format + trainer state), and the final
    model to output_dir/model/ (or cfg.export_dir). Returns the trained model.
    """
    run_dir = Path(cfg.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    start_step = 0
    ckpt = latest_checkpoint(run_dir) if resume else None
    if resume and ckpt is None:
        print(f"no complete checkpoint in {run_dir}; starting from step 0")
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if ckpt is not None:
        clip = load(str(ckpt), device=cfg.device)
    elif cfg.model in ("tiny", "small", "base"):
        clip = create(cfg.model, seed=cfg.seed)
        if cfg.init_logit_scale:
            with torch.no_grad():
                clip.model.logit_scale.fill_(math.log(cfg.init_logit_scale))
        clip.model.to(cfg.device)
    else:
        if cfg.init_logit_scale:
            raise ValueError("init_logit_scale applies when training from scratch (a preset); a loaded model keeps its learned scale")
        clip = load(cfg.model, device=cfg.device)
    model = clip.model
    model.train()
    lock_towers(model, cfg.lock_image, cfg.lock_text)
    optimizer = make_optimizer(model, cfg)
    if ckpt is not None:
        state = json.loads((ckpt / "trainer_state.json").read_text())
        _restore_optimizer(optimizer, load_file(str(ckpt / "optimizer.safetensors")), state["optimizer"])
        rng = load_file(str(ckpt / "rng.safetensors"))
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
        np.random.set_state(("MT19937", np.array(state["numpy_rng"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
        random.setstate(ast.literal_eval(state["python_rng"]))
        start_step = int(state["step"])
        print(f"resumed from {ckpt} at step {start_step}")
    (run_dir / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))

    source = _source(cfg, clip)
    metrics_path = run_dir / "metrics.jsonl"
    if ckpt is None and metrics_path.exists():
        metrics_path.unlink()
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)
    t0, wait, last = time.perf_counter(), 0.0, time.perf_counter()
    step = start_step
    with metrics_path.open("a") as log:
        def emit(rec: dict) -> None:
            log.write(json.dumps(rec) + "\n")
            log.flush()
            if on_log:
                on_log(rec)

        for batch in batch_stream(source, cfg.batch_size, start_step, cfg.steps, cfg.num_workers):
            wait += time.perf_counter() - last
            lr = lr_at(step, cfg)
            out = train_step(clip, batch.pixel_values, batch.captions, optimizer, cfg, lr, batch.n_groups, batch.group_size)
            step += 1
            last = time.perf_counter()
            if step % cfg.log_every == 0 or step == cfg.steps:
                elapsed = last - t0
                emit({"step": step, "lr": lr, **out, "elapsed_s": round(elapsed, 2),
                      "samples_per_s": round((step - start_step) * cfg.batch_size / elapsed, 2),
                      "data_wait_share": round(wait / elapsed, 4)})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{out['loss']:.3f}", scale=f"{out['logit_scale']:.1f}")
            if cfg.eval_every and step % cfg.eval_every == 0 and cfg.data == "shapes":
                model.eval()
                res = evaluate_shapes(clip, n=cfg.eval_samples, seed=cfg.seed + 10_000)
                emit({"step": step, "eval": {k: v["top1"] for k, v in res.items() if "top1" in v}})
                model.train()
                lock_towers(model, cfg.lock_image, cfg.lock_text)
            if (cfg.save_every and step % cfg.save_every == 0) or step == cfg.steps:
                save_checkpoint(clip, optimizer, step, cfg, run_dir)
    if bar is not None:
        bar.close()
    model.eval()
    dtype = getattr(torch, cfg.save_dtype)
    save_pretrained_atomic(clip, Path(cfg.export_dir) if cfg.export_dir else run_dir / "model",
                           dtype=None if dtype == torch.float32 else dtype)
    return clip

