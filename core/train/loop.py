"""The training loop: set up, then steps, then hooks, then finish.

    run = setup(cfg, start)      # run folder checked, model, state, data source, hooks
    for batch in run.batches():  # each step: train_step, then on_step / on_eval / on_snapshot,
        ...                      #   checkpoint when due, stop when a hook asks
    finish(run, finished)        # export the model when every step ran

Everything specific to a data source (the shapes world's eval and probe set) comes from the
source; the loop only knows that a source may have an `evaluator` and a `probe`.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from ..model import Clip, create, load, save_pretrained_atomic
from .checkpoint import ordinary_modes, prepare_run_dir, restore_checkpoint, save_checkpoint, trim_metrics
from .config import PRESET_MODELS, ConfigError, TrainConfig, validate
from .data import Batch, batch_stream, make_source
from .distributed import DistInfo, add_patch_dropout, init_from_env, mean_over_ranks
from .hooks import MetricsLog, ProgressBar, make_snapshot
from .readout import StepRecord
from .step import TrainState, enable_checkpointing, lr_at, train_step, wrap_towers


def _build_clip(cfg: TrainConfig, ckpt: Path | None) -> Clip:
    """The model, fresh (a preset), loaded (fine-tuning) or from a checkpoint, on the device.
    A preset trained with loss=siglip is a SigLIP model (its own logit_bias, scored with a sigmoid)."""
    device = cfg.runtime.device
    if ckpt is not None:
        return load(str(ckpt), device=device)
    if cfg.model.name not in PRESET_MODELS:
        return load(cfg.model.name, device=device)
    clip = create(cfg.model.name, seed=cfg.data.seed, family="siglip" if cfg.loss.kind == "siglip" else "clip")
    init = cfg.model.init_logit_scale or (10.0 if cfg.loss.kind == "siglip" else 0.0)  # SigLIP starts exp(t) at 10
    if init:
        with torch.no_grad():
            clip.model.logit_scale.fill_(math.log(init))
    clip.model.to(device)
    return clip


def family_notes(clip: Clip, cfg: TrainConfig) -> list[str]:
    """Whether the loss fits the model's family: a ConfigError for a sigmoid-scored model (SigLIP)
    trained with the softmax loss, whose bias would go stale; a note for a CLIP model trained with
    the sigmoid loss (an older checkpoint, a CLIP to fine-tune), whose export stays a CLIP."""
    if clip.family.independent and cfg.loss.kind != "siglip":
        raise ConfigError(f"{clip.source} is a {clip.family.title} model, scored with a sigmoid and its bias: "
                          "train it with loss=siglip")
    if cfg.loss.kind == "siglip" and not clip.family.independent:
        return [f"note: {clip.source} is a {clip.family.title} model: the sigmoid loss trains it with a separate bias "
                f"and its export stays a {clip.family.title}, scored with a softmax (a preset trains a SigLIP)"]
    return []


@dataclass
class Run:
    """A run once set up: its state, data, hooks and the clocks of its metrics."""

    cfg: TrainConfig
    state: TrainState
    source: object
    hooks: list
    run_dir: Path
    start_step: int
    evaluator: object = None
    probe: Batch | None = None
    snapshot_every: int = 0
    matrix_size: int = 8
    patch_hook: object = None
    notes: list[str] = field(default_factory=list)
    in_step: bool = False  # inside train_step (stop_now is asked only there, not in snapshots or evals)

    @property
    def info(self) -> DistInfo:
        return self.state.info

    def call(self, method: str, *args) -> None:
        """Call a hook method on every hook that has it (main rank only)."""
        if self.info.is_main:
            for h in self.hooks:
                fn = getattr(h, method, None)
                if fn is not None:
                    fn(*args)

    def should_stop(self) -> bool:
        """Any hook (on the main rank) asks to stop; every rank gets the same answer."""
        stop = self.info.is_main and any(getattr(h, "should_stop", lambda: False)() for h in self.hooks)
        stop = stop or (self.cfg.runtime.stop_at > 0 and self.state.step >= self.cfg.runtime.stop_at)
        if self.info.enabled:
            flag = torch.tensor([float(stop)], device=self.state.model.logit_scale.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            stop = bool(flag.item())
        return stop

    def batches(self) -> Iterator[Batch]:
        d = self.cfg.data
        return batch_stream(self.source, d.batch_size // self.info.world_size, self.start_step, self.cfg.optim.steps,
                            d.num_workers, self.info.rank, self.info.world_size, worker_nice=d.worker_nice,
                            pin_memory=self.state.model.logit_scale.device.type == "cuda")


def wants_snapshots(hooks: Sequence) -> bool:
    """Whether any hook asks for snapshots itself (has a wants_snapshot(step) method)."""
    return any(hasattr(h, "wants_snapshot") for h in hooks)


def setup(cfg: TrainConfig, start: str = "new", hooks: Sequence = (), snapshot_every: int = 0,
          probe_pairs: int = 32, matrix_size: int = 8) -> Run:
    """Join torchrun if present, check the config and the run folder, build or restore the model
    and optimizer, open the data source, and add the run's own hooks (metrics.jsonl, the bar)."""
    info, device = init_from_env(cfg.runtime.device)
    cfg = cfg.replace(device=device)
    validate(cfg, info.world_size)
    ckpt, notes = prepare_run_dir(cfg, start, info.world_size, main=info.is_main)
    run_dir = Path(cfg.output_dir)
    if info.enabled:
        torch.distributed.barrier()  # rank 0 has cleared the folder if it had to
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "train_config.json").write_text(cfg.to_json())
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    random.seed(cfg.data.seed)
    np.random.seed(cfg.data.seed)
    torch.manual_seed(cfg.data.seed)
    clip = _build_clip(cfg, ckpt)
    notes += family_notes(clip, cfg)
    if cfg.model.grad_checkpointing:
        enable_checkpointing(clip.model)
    state = TrainState.create(clip, cfg, info)
    if ckpt is not None:
        restore_checkpoint(state, ckpt)
        notes.insert(0, f"resumed from {ckpt} at step {state.step}")
    patch_hook = add_patch_dropout(clip.model.vision_model, cfg.model.patch_dropout) if cfg.model.patch_dropout else None
    state.runner = wrap_towers(state.towers, cfg, info)
    source = make_source(cfg, clip, info)
    metrics = run_dir / "metrics.jsonl"
    if info.is_main and metrics.exists():
        trim_metrics(metrics, state.step)  # a resumed run drops the lines of the steps it redoes
    own: list = [MetricsLog(metrics, cfg.log.log_every, cfg.optim.steps)]
    if cfg.log.progress:
        own.append(ProgressBar(cfg.optim.steps, cfg.log.log_every))
    evaluator = getattr(source, "evaluator", lambda c: None)(cfg)
    live = snapshot_every or wants_snapshots(hooks)
    probe = source.probe(probe_pairs) if live and hasattr(source, "probe") else None
    return Run(cfg, state, source, own + list(hooks), run_dir, state.step, evaluator, probe, snapshot_every,
               matrix_size, patch_hook, notes)


def _evaluate(run: Run) -> None:
    state = run.state
    state.guard.raise_if_bad()  # never an eval of a run that must stop
    state.model.eval()
    try:
        results = run.evaluator(state.clip)
    finally:
        state.train_mode()
    run.call("on_eval", state, results)


def _snapshot_due(run: Run, step: int) -> str | None:
    """"full" (every pair), "probe" (the matrix's pairs only) or None: what this step's snapshot is."""
    every = run.snapshot_every and step % run.snapshot_every == 0
    asked = [h.wants_snapshot(step) for h in run.hooks if hasattr(h, "wants_snapshot")]  # ask every hook
    if every or any(a is True or a == "full" for a in asked):
        return "full"
    return "probe" if any(a == "probe" for a in asked) else None


class StepInterrupted(Exception):
    """A hook's stop_now() ended a step midway: no weight was updated by it."""


def interrupt_checks(run: Run) -> list:
    """Checks of the hooks' stop_now() inside a step, so that a long step (a big model on a CPU) ends
    within one encoder layer's forward or backward: a forward pre-hook on every encoder layer, which
    also hooks the layer's input gradient. Single process only (under torchrun every rank must take
    the same steps); returns the handles, [] when no hook has stop_now."""
    wanted = [h.stop_now for h in run.hooks if hasattr(h, "stop_now")]
    if run.info.enabled or not wanted:
        return []

    def check(grad=None):
        if any(stop_now() for stop_now in wanted):
            raise StepInterrupted(f"stopped inside step {run.state.step + 1}")
        return grad

    def before_layer(module, args):
        if not run.in_step:
            return
        check()
        if args and isinstance(args[0], torch.Tensor) and args[0].requires_grad:
            args[0].register_hook(check)  # the same check as the gradient passes back through this layer

    layers = [m for m in run.state.model.modules() if m.__class__.__name__.endswith("EncoderLayer")]
    return [layer.register_forward_pre_hook(before_layer) for layer in layers]


def run_steps(run: Run) -> bool:
    """Train from run.start_step to cfg.steps or until a hook stops the run. True if every step ran."""
    handles = interrupt_checks(run)
    try:
        return _run_steps(run)
    finally:
        for handle in handles:
            handle.remove()


def _run_steps(run: Run) -> bool:
    cfg, state, info = run.cfg, run.state, run.info
    t0 = last = time.perf_counter()
    before = state.elapsed_s  # training time of earlier starts of this run (a resume goes on counting)
    wait = 0.0
    for batch in run.batches():
        wait += time.perf_counter() - last
        lr = lr_at(state.step, cfg)
        run.in_step = True
        try:
            out = train_step(state, batch, lr)
        except StepInterrupted:  # the step is dropped whole; the run ends as a should_stop would end it
            state.optimizer.zero_grad(set_to_none=True)
            if info.is_main:
                run.call("on_checkpoint", save_checkpoint(state, run.run_dir))
            return False
        finally:
            run.in_step = False
        last = time.perf_counter()
        elapsed = last - t0
        state.elapsed_s = before + elapsed
        if info.enabled:  # every rank reads the same flag, so all stop together (should_stop waits each step anyway)
            state.guard.raise_if_bad()
        # the record's numbers stay on the device until a hook reads them (metrics.jsonl: every log_every steps);
        # the clocks are the host's, so between reads they count queued work (exact over a run)
        values = out.unread()
        record = StepRecord({"step": state.step, "lr": lr, **values, "loss": mean_over_ranks(values["loss"], info),
                             "elapsed_s": round(state.elapsed_s, 2),
                             "samples_per_s": round((state.step - run.start_step) * cfg.data.batch_size / elapsed, 2),
                             "data_wait_share": round(wait / elapsed, 4)}, out.on_read)
        run.call("on_step", state, record)
        if info.is_main and run.evaluator is not None and state.step % cfg.log.eval_every == 0:
            _evaluate(run)
        due = _snapshot_due(run, state.step) if info.is_main and run.probe is not None else None
        if due:
            run.call("on_snapshot", state, make_snapshot(state, run.probe, run.matrix_size, full=due == "full"))
        stop = run.should_stop() and state.step < cfg.optim.steps
        if (cfg.runtime.save_every and state.step % cfg.runtime.save_every == 0) or state.step == cfg.optim.steps or stop:
            if info.is_main:
                run.call("on_checkpoint", save_checkpoint(state, run.run_dir))
            if info.enabled:
                torch.distributed.barrier()
        if stop:
            return False
    return state.step >= cfg.optim.steps


def finish(run: Run, finished: bool) -> None:
    """Export the model (only when every step ran), tell the hooks, and leave the process group."""
    state, cfg = run.state, run.cfg
    if run.patch_hook is not None:
        run.patch_hook.remove()
    state.model.eval()
    if finished and run.info.is_main:
        dtype = getattr(torch, cfg.runtime.save_dtype)
        target = Path(cfg.runtime.export_dir) if cfg.runtime.export_dir else run.run_dir / "model"
        ordinary_modes(save_pretrained_atomic(state.clip, target, dtype=None if dtype == torch.float32 else dtype))
    run.call("on_end", state, finished)
    if run.info.enabled:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def train(cfg: TrainConfig, hooks: Sequence = (), start: str = "new", snapshot_every: int = 0,
          probe_pairs: int = 32, matrix_size: int = 8) -> Clip:
    """Train to cfg.optim.steps (or until a hook's should_stop) and return the model.

    start: "new" (the output folder must be empty), "overwrite", "resume" (from the latest
    checkpoint; a changed data-order or schedule field is refused) or "resume_or_start".
    hooks: objects with any of the `core.train.hooks.Hook` methods, called on the main rank;
    snapshot_every > 0 sends them a `Snapshot` (probe similarity matrix, fixed-set embeddings) every
    that many steps, and a hook with wants_snapshot(step) gets one whenever it asks: the probe is
    the source's first `probe_pairs` probe pairs, the matrix their first `matrix_size`.
    Writes output_dir/train_config.json, metrics.jsonl, checkpoints/ and, when every step ran, the
    model to output_dir/model (or cfg.runtime.export_dir). Under torchrun every rank trains on its
    shard of each global batch; rank 0 alone logs, evaluates, checkpoints and exports.
    """
    run = setup(cfg, start, hooks, snapshot_every, probe_pairs, matrix_size)
    if run.info.is_main:
        for note in run.notes:
            print(note)
    run.call("on_start", run.state)
    try:
        finished = run_steps(run)
    except BaseException:
        run.call("on_end", run.state, False)  # the bar and the log close; the last checkpoint stays
        raise
    finish(run, finished)
    return run.state.clip
