"""Run folders and checkpoints: save, restore, find the latest, and the rules that keep two runs
from mixing in one folder.

A run folder holds train_config.json, metrics.jsonl, checkpoints/step-NNNNNNN/ (an HF folder plus
optimizer.safetensors, rng.safetensors, loss.safetensors and trainer_state.json: safetensors and
JSON, never pickle), `latest` (the newest checkpoint's name) and model/ (the finished model).
A SigLIP model keeps its bias in its own weights (`logit_bias`); loss.safetensors holds the sigmoid
loss's bias only for a CLIP model trained with that loss (and for runs saved before SigLIP models).

Resume takes the newest *complete* checkpoint: every file present and readable (see
checkpoint_problem). A damaged one (a file missing or cut short, by a full disk or a crash that the
atomic renames could not cover) is skipped with a one-line note; leftover temporary folders of a
save cut short are not checkpoints.
"""

from __future__ import annotations

import ast
import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..model import ordinary_modes, save_pretrained_atomic
from .config import TrainConfig, resume_changes
from .step import TrainState

RUN_FILES = ("train_config.json", "metrics.jsonl", "checkpoints", "latest", "latest.tmp", "model", ".pending")
START_MODES = ("new", "resume", "resume_or_start", "overwrite")
STEP_NAME = re.compile(r"step-(\d{7,})")  # a checkpoint folder's name; anything else in checkpoints/ is not one
# a checkpoint's files: (name, kind, required). Tensors are safetensors, the rest JSON: nothing is unpickled
CHECKPOINT_FILES = (("trainer_state.json", "json", True), ("config.json", "json", True),
                    ("preprocessor_config.json", "json", True), ("tokenizer_config.json", "json", True),
                    ("rng.safetensors", "tensors", True), ("optimizer.safetensors", "tensors", True),
                    ("loss.safetensors", "tensors", False))


class RunFolderError(ValueError):
    """The run folder does not fit the request (reused, nothing to resume, a changed config).
    The message is one line and says what to do."""


def _optimizer_state(optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON metadata: no pickle."""
    sd = optimizer.state_dict()
    tensors = {f"{pid}.{k}": v.detach().cpu().contiguous() for pid, st in sd["state"].items() for k, v in st.items()}
    return tensors, {"param_groups": sd["param_groups"]}


IMPLEMENTATION = ("fused", "foreach", "capturable")  # how this optimizer runs, not what it learned


def _restore_optimizer(optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Load the saved state; the groups keep this optimizer's implementation flags (load_state_dict would
    take the saved ones: a checkpoint from before AdamW was fused on the CPU would resume unfused)."""
    state: dict = {}
    for key, v in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    groups = [{**saved, **{k: own[k] for k in IMPLEMENTATION if k in own}}
              for saved, own in zip(meta["param_groups"], optimizer.param_groups)]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, path)


def save_checkpoint(state: TrainState, run_dir: str | os.PathLike) -> Path:
    """Write checkpoints/step-NNNNNNN (model, optimizer, RNG, the loss's own parameters, step,
    config and world size), point `latest` at it and drop checkpoints beyond keep_checkpoints.

    The HF folder is renamed into place whole; optimizer.safetensors is written last, and a
    checkpoint counts as complete only with it (see latest_checkpoint), so a kill at any moment
    leaves the previous checkpoint as the latest. Never after a NaN: state.guard raises
    NonFiniteLossError first, so a run ends with its last good checkpoint.
    """
    state.guard.raise_if_bad()
    run_dir = Path(run_dir)
    ckpt_root = run_dir / "checkpoints"
    target = ckpt_root / f"step-{state.step:07d}"
    opt_tensors, opt_meta = _optimizer_state(state.optimizer)
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    meta = {"step": state.step, "optimizer": opt_meta, "numpy_rng": np.random.get_state()[1].tolist(),
            "numpy_pos": int(np.random.get_state()[2]), "python_rng": repr(random.getstate()),
            "config": state.cfg.flat(), "world_size": state.info.world_size, "elapsed_s": round(state.elapsed_s, 3)}
    save_pretrained_atomic(state.clip, target, extra_files={"trainer_state.json": json.dumps(meta)})
    ordinary_modes(ckpt_root)
    _save_atomic(rng, target / "rng.safetensors")
    _save_atomic({k: v.detach().cpu().reshape(1) for k, v in state.loss_params().items()}, target / "loss.safetensors")
    _save_atomic(opt_tensors, target / "optimizer.safetensors")  # last: marks the checkpoint complete
    tmp = run_dir / "latest.tmp"
    tmp.write_text(target.name)
    os.replace(tmp, run_dir / "latest")
    # folders of later steps are from before a resume (damaged ones, skipped): this run writes them anew
    stale = [c for c in _step_folders(ckpt_root) if _step_of(c) > state.step]
    older = [c for c in _step_folders(ckpt_root) if _step_of(c) <= state.step]
    for old in stale + older[: -state.cfg.runtime.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _step_of(c: Path) -> int:
    return int(STEP_NAME.fullmatch(c.name).group(1))


def _step_folders(ckpt_root: Path) -> list[Path]:
    """checkpoints/step-N folders, oldest first (by step, not by name)."""
    if not ckpt_root.is_dir():
        return []
    return sorted((p for p in ckpt_root.iterdir() if STEP_NAME.fullmatch(p.name) and p.is_dir()), key=_step_of)


def _tensors_problem(path: Path) -> str | None:
    """None if path is a whole safetensors file: its header parses and covers the file exactly
    (safetensors checks both, so a file cut short is caught without reading its tensors)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError) as e:
        return f"{path.name} is unreadable ({e})"
    return None


def checkpoint_problem(c: Path) -> str | None:
    """Why checkpoint folder c cannot be resumed from, or None when it is complete: every file
    present, each safetensors file whole, each JSON file parsed, and the model's weights (one file,
    or the shards its index names) whole. Nothing is unpickled."""
    if not c.is_dir():
        return "not a folder"
    for name, kind, required in CHECKPOINT_FILES:
        f = c / name
        if not f.is_file():
            if required:
                return f"{name} is missing"
            continue
        if kind == "tensors":
            problem = _tensors_problem(f)
            if problem:
                return problem
        else:
            try:
                json.loads(f.read_text())
            except (OSError, ValueError) as e:
                return f"{name} is unreadable ({e})"
    meta = json.loads((c / "trainer_state.json").read_text())
    if not isinstance(meta, dict) or not {"step", "optimizer", "config"} <= meta.keys():
        return "trainer_state.json lacks the step, optimizer or config"
    if STEP_NAME.fullmatch(c.name) and meta["step"] != _step_of(c):
        return f"trainer_state.json is for step {meta['step']}"
    index = c / "model.safetensors.index.json"
    if (c / "model.safetensors").is_file() or not index.is_file():
        shards = ["model.safetensors"]
    else:
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as e:
            return f"{index.name} is unreadable ({e})"
    for shard in shards:
        if not (c / shard).is_file():
            return f"{shard} is missing"
        problem = _tensors_problem(c / shard)
        if problem:
            return problem
    return None


def latest_checkpoint(run_dir: str | os.PathLike, damaged: list[str] | None = None) -> Path | None:
    """The newest complete checkpoint of a run (by step), or None. Newer checkpoints that are damaged
    are skipped, each described in one line ("step-0000004: optimizer.safetensors is missing")
    appended to `damaged` when given. The `latest` pointer is not trusted: it is only written after
    a checkpoint is complete, but it can be missing, stale or hand-edited."""
    for c in reversed(_step_folders(Path(run_dir) / "checkpoints")):
        problem = checkpoint_problem(c)
        if problem is None:
            return c
        if damaged is not None:
            damaged.append(f"{c.name}: {problem}")
    return None


def _leftovers(run_dir: Path) -> list[Path]:
    """Temporary folders of checkpoint saves cut short (save_pretrained_atomic's .NAME.tmp-* / .old-*)."""
    root = run_dir / "checkpoints"
    return sorted(p for p in root.glob(".step-*") if ".tmp-" in p.name or ".old-" in p.name) if root.is_dir() else []


def restore_checkpoint(state: TrainState, ckpt: Path) -> None:
    """Optimizer, RNG streams, the loss's parameters and the step from a checkpoint into state
    (the model's weights come from loading the checkpoint folder itself)."""
    try:
        _restore(state, ckpt)
    except (SafetensorError, OSError, KeyError, ValueError) as e:  # checked by checkpoint_problem, yet unusable
        raise RunFolderError(f"cannot resume from {ckpt}: {e} (resume from an earlier checkpoint by moving this "
                             "one away, or start again with --overwrite)") from e


def _restore(state: TrainState, ckpt: Path) -> None:
    meta = json.loads((ckpt / "trainer_state.json").read_text())
    _restore_optimizer(state.optimizer, load_file(str(ckpt / "optimizer.safetensors")), meta["optimizer"])
    rng = load_file(str(ckpt / "rng.safetensors"))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    np.random.set_state(("MT19937", np.array(meta["numpy_rng"], dtype=np.uint32), meta["numpy_pos"], 0, 0.0))
    random.setstate(ast.literal_eval(meta["python_rng"]))
    loss_file = ckpt / "loss.safetensors"
    if state.towers.siglip_bias is not None and loss_file.is_file():
        with torch.no_grad():
            state.towers.siglip_bias.copy_(load_file(str(loss_file))["siglip_bias"].reshape(()))
    state.step = int(meta["step"])
    state.elapsed_s = float(meta.get("elapsed_s", 0.0))  # older checkpoints lack it: counted from this start


def _describe(run_dir: Path) -> str:
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None:
        return f"a run with a checkpoint at step {_step_of(ckpt)}"
    return "files of a run" if any((run_dir / f).exists() for f in RUN_FILES) else "other files"


def _clear_run(run_dir: Path) -> None:
    """Remove a run's own files; refuse (RunFolderError) if the folder holds anything else."""
    strays = sorted(p.name for p in run_dir.iterdir()
                    if p.name not in RUN_FILES and not p.name.startswith((".model.tmp-", ".model.old-")))
    if strays:
        raise RunFolderError(f"{run_dir} holds files that are not a run's ({', '.join(strays[:3])}); "
                             "refusing to overwrite it: choose another output folder")
    for name in RUN_FILES:
        p = run_dir / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    for p in run_dir.glob(".model.*"):
        shutil.rmtree(p, ignore_errors=True)


def check_resume(ckpt: Path, cfg: TrainConfig, world_size: int) -> list[str]:
    """Compare cfg with the config a checkpoint was made with. A change to a field that decides the
    data order, the schedule or a step's maths (batch size, seed, steps, warm-up, data, ...) or to
    the world size raises RunFolderError naming it; free changes come back as notes."""
    meta = json.loads((ckpt / "trainer_state.json").read_text())
    locked, free = resume_changes(meta.get("config", {}), cfg)
    stored, now = meta.get("config", {}), cfg.flat()
    if locked:
        key = locked[0]
        raise RunFolderError(f"cannot resume {ckpt.parent.parent} with {key}={now[key]!r}: the run was started with "
                             f"{key}={stored.get(key)!r}, and {key} decides the data order or the schedule "
                             "(start a new run in another folder, or resume with the stored value)")
    if int(meta.get("world_size", 1)) != world_size:
        raise RunFolderError(f"cannot resume {ckpt.parent.parent} on {world_size} process(es): it was started on "
                             f"{meta.get('world_size', 1)}, and the world size decides which pairs each rank sees")
    return [f"{k} changed from {stored.get(k)!r} to {now[k]!r} (allowed on resume)" for k in free if k != "output_dir"]


def prepare_run_dir(cfg: TrainConfig, start: str = "new", world_size: int = 1,
                    main: bool = True) -> tuple[Path | None, list[str]]:
    """Make the run folder ready for `start` and return (checkpoint to resume from or None, notes).

    new: the folder must be empty or absent. overwrite: a run's files are removed first.
    resume: the latest complete checkpoint, with the config check; none is an error.
    resume_or_start: resume if there is a checkpoint, else start afresh (a run's files are cleared).
    Only the main rank (main=True) changes files; the others just look.
    """
    if start not in START_MODES:
        raise ValueError(f"start must be one of {', '.join(START_MODES)}, got {start!r}")
    run_dir = Path(cfg.output_dir)
    present = run_dir.is_dir() and any(run_dir.iterdir())
    damaged: list[str] = []
    ckpt = latest_checkpoint(run_dir, damaged) if present and start in ("resume", "resume_or_start") else None
    notes = [f"skipped damaged checkpoint {d}" for d in damaged]
    if ckpt is not None:
        notes += check_resume(ckpt, cfg, world_size)
        leftovers = _leftovers(run_dir)
        if leftovers and main:
            for p in leftovers:
                shutil.rmtree(p, ignore_errors=True)
            notes.append(f"removed {len(leftovers)} temporary folder(s) of a save cut short "
                         f"({', '.join(p.name for p in leftovers[:2])}{', ...' if len(leftovers) > 2 else ''})")
        return ckpt, notes
    if start == "resume":
        if damaged:
            what = f"its only checkpoint is damaged ({damaged[0]})" if len(damaged) == 1 else \
                f"its {len(damaged)} checkpoints are damaged (the newest: {damaged[0]})"
            raise RunFolderError(f"nothing to resume in {run_dir}: {what}; start again with --overwrite")
        raise RunFolderError(f"nothing to resume in {run_dir}: it holds no complete checkpoint "
                             "(start it without resume, or use resume-or-start)")
    if present and start == "new":
        raise RunFolderError(f"{run_dir} is not empty ({_describe(run_dir)}): resume it (--resume) "
                             "or replace it (--overwrite)")
    if present and main:
        _clear_run(run_dir)
    return None, [n + " (removed: starting afresh)" for n in notes]


def trim_metrics(path: Path, keep_until: int) -> None:
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
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)
