"""Run folders and checkpoints: save, restore, find the latest, and the rules that keep two runs
from mixing in one folder.

A run folder holds train_config.json, metrics.jsonl, checkpoints/step-NNNNNNN/ (an HF folder plus
optimizer.safetensors, rng.safetensors, loss.safetensors and trainer_state.json: safetensors and
JSON, never pickle), `latest` (the newest checkpoint's name) and model/ (the finished model).
"""

from __future__ import annotations

import ast
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..model import save_pretrained_atomic
from .config import TrainConfig, resume_changes
from .step import TrainState

RUN_FILES = ("train_config.json", "metrics.jsonl", "checkpoints", "latest", "latest.tmp", "model", ".pending")
START_MODES = ("new", "resume", "resume_or_start", "overwrite")


class RunFolderError(ValueError):
    """The run folder does not fit the request (reused, nothing to resume, a changed config).
    The message is one line and says what to do."""


def ordinary_modes(path: Path) -> None:
    """Give a folder made by tempfile (mode 0700) and its subfolders the usual mode (0777 & ~umask)."""
    mask = os.umask(0)
    os.umask(mask)
    for p in [path, *(q for q in path.rglob("*") if q.is_dir())]:
        os.chmod(p, 0o777 & ~mask)


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


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, path)


def save_checkpoint(state: TrainState, run_dir: str | os.PathLike) -> Path:
    """Write checkpoints/step-NNNNNNN (model, optimizer, RNG, the loss's own parameters, step,
    config and world size), point `latest` at it and drop checkpoints beyond keep_checkpoints.

    The HF folder is renamed into place whole; optimizer.safetensors is written last, and a
    checkpoint counts as complete only with it (see latest_checkpoint), so a kill at any moment
    leaves the previous checkpoint as the latest.
    """
    run_dir = Path(run_dir)
    ckpt_root = run_dir / "checkpoints"
    target = ckpt_root / f"step-{state.step:07d}"
    opt_tensors, opt_meta = _optimizer_state(state.optimizer)
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    meta = {"step": state.step, "optimizer": opt_meta, "numpy_rng": np.random.get_state()[1].tolist(),
            "numpy_pos": int(np.random.get_state()[2]), "python_rng": repr(random.getstate()),
            "config": state.cfg.flat(), "world_size": state.info.world_size}
    save_pretrained_atomic(state.clip, target, extra_files={"trainer_state.json": json.dumps(meta)})
    ordinary_modes(ckpt_root)
    _save_atomic(rng, target / "rng.safetensors")
    _save_atomic({k: v.detach().cpu().reshape(1) for k, v in state.loss_params().items()}, target / "loss.safetensors")
    _save_atomic(opt_tensors, target / "optimizer.safetensors")  # last: marks the checkpoint complete
    tmp = run_dir / "latest.tmp"
    tmp.write_text(target.name)
    os.replace(tmp, run_dir / "latest")
    for old in sorted(p for p in ckpt_root.glob("step-*") if p.is_dir())[: -state.cfg.runtime.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _complete(c: Path) -> bool:
    return all((c / f).is_file() for f in ("trainer_state.json", "optimizer.safetensors", "model.safetensors"))


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    run_dir = Path(run_dir)
    pointer = run_dir / "latest"
    candidates = []
    if pointer.is_file():
        candidates.append(run_dir / "checkpoints" / pointer.read_text().strip())
    candidates += sorted((run_dir / "checkpoints").glob("step-*"), reverse=True)
    return next((c for c in candidates if _complete(c)), None)


def restore_checkpoint(state: TrainState, ckpt: Path) -> None:
    """Optimizer, RNG streams, the loss's parameters and the step from a checkpoint into state
    (the model's weights come from loading the checkpoint folder itself)."""
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


def _describe(run_dir: Path) -> str:
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None:
        return f"a run with a checkpoint at step {int(ckpt.name.split('-')[1])}"
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
    ckpt = latest_checkpoint(run_dir) if present and start in ("resume", "resume_or_start") else None
    if ckpt is not None:
        return ckpt, check_resume(ckpt, cfg, world_size)
    if start == "resume":
        raise RunFolderError(f"nothing to resume in {run_dir}: it holds no complete checkpoint "
                             "(start it without resume, or use resume-or-start)")
    if present and start == "new":
        raise RunFolderError(f"{run_dir} is not empty ({_describe(run_dir)}): resume it (--resume) "
                             "or replace it (--overwrite)")
    if present and main:
        _clear_run(run_dir)
    return None, []


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
