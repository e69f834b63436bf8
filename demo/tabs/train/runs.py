"""Training runs started from the Train tab: a registry, a queue, and a worker thread per run.

Each run drives `core.train.train` (the CLI's loop, recipes and checkpoints) with two hooks: a
`LiveRecorder` for the live views and a `RunControl` that stops it cleanly (Stop, the wall-time
cap, an owner who stopped looking) and exports its current weights between steps on request.

- At most `max_runs` train at once (CLIP_LAB_MAX_RUNS, 1 by default); later runs wait in line and
  are told their place; at most `max_waiting` wait, and one more is refused.
- The worker is a thread at a lower CPU priority (nice 10, which its torch threads inherit), so
  that requests of the other tabs, at normal priority, get the CPU first.
- A run belongs to whoever holds its key (kept in the browser's BrowserState): a reloaded page
  finds its run again, nobody else can stop or download it.
- Its folder is runs/app-<id>/ (train_config.json, metrics.jsonl, checkpoints/, model/), the same
  layout as scripts/train.py's, so `scripts/train.py --resume --out runs/app-<id>` continues it and
  its weights load (ModelCache.add_private) under a private name that only its owner is given; the
  picker never lists runs/app-*, and nobody loads them by path. At most `max_kept` ended app runs,
  and `max_disk_mb` of run folders, stay on disk; the folders of an earlier start of the app (whose
  tickets died with it) are deleted at start (`clean_orphans`).
"""

from __future__ import annotations

import contextvars
import logging
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import UserInputError
from core.model import save_pretrained_atomic
from core.train import Hook, TrainConfig, latest_checkpoint, train
from demo.platform.low_priority import lower_this_thread
from demo.tabs.train.gpu_chunks import CHUNK_SECONDS, request_export, request_stop, train_in_chunks
from demo.tabs.train.gpu_chunks import chunk_seconds as clamp_chunk
from demo.tabs.train.live import LiveRecorder

log = logging.getLogger("clip_lab")
PROBE_PAIRS, MATRIX_SIZE = 300, 16  # the moving map's fixed set, and the probe matrix's pairs


def parameters_of(model: str, loaded=None) -> int:
    """How many parameters a run trains: a preset's (counted on the meta device, nothing allocated), or
    a loaded model's (`loaded`: a Clip, for a fine-tune)."""
    if loaded is not None:
        return sum(p.numel() for p in loaded.model.parameters())
    import torch
    from transformers import CLIPModel

    from core.model import PRESETS

    with torch.device("meta"):
        return sum(p.numel() for p in CLIPModel(PRESETS[model].to_config()).parameters())


def check_fits_cpu(parameters: int, batch_size: int, budget: float) -> None:
    """On a CPU server a run must fit: parameters × batch size at most `budget` (AppConfig.cpu_train_budget).
    A step's time and memory grow with that product; over it, steps take minutes and memory runs out."""
    if parameters * batch_size > budget:
        fits = max(1, int(budget // parameters))
        raise UserInputError(f"{parameters / 1e6:,.0f} M parameters × batch {batch_size} is too big to train on this "
                             f"CPU server (the limit is {budget / 1e9:g} G parameter-samples a step): "
                             + (f"use a batch of at most {fits}, or a smaller recipe" if fits >= 2 else "pick a smaller recipe"))


def folder_bytes(folder: Path) -> int:
    """The bytes of the files under a folder (0 when it is gone)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) if Path(folder).is_dir() else 0


class RunNotFound(UserInputError):
    """No run with this id and key (it ended long ago, or the key is not its owner's)."""


@dataclass
class TrainRun:
    """One run: its config, what it recorded, and where it stands."""

    id: str
    key: str
    cfg: TrainConfig
    recorder: LiveRecorder
    status: str = "queued"  # queued, running, stopped, finished, failed
    error: str = ""
    start: str = "new"  # how the next start of its worker begins: "new" or "resume"
    stop: threading.Event = field(default_factory=threading.Event)
    export_wanted: threading.Event = field(default_factory=threading.Event)
    exported: threading.Event = field(default_factory=threading.Event)
    export_done: bool = False  # whether the last export asked for was written (not only given up on)
    last_seen: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    stop_reason: str = ""
    meta: dict = field(default_factory=dict)  # what the tab shows about how it was started (mode, recipe)
    gpu_calls: int = 0  # GPU calls asked for so far, when it trains in chunks (ZeroGPU)
    context: contextvars.Context | None = None  # the request's that (re)started it: ZeroGPU bills its visitor
    owner: str = ""  # the visitor who started it (demo.platform.fair.visitor_of): one waiting run each

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.output_dir)


class RunControl(Hook):
    """Stops a run cleanly (with a checkpoint) and exports its weights between steps when asked.
    chunked: the run trains in GPU chunks in another process (demo.tabs.train.gpu_chunks), which is asked to export."""

    def __init__(self, run: TrainRun, max_wall_s: float, idle_s: float, chunked: bool = False):
        self.run, self.max_wall_s, self.idle_s, self.chunked = run, max_wall_s, idle_s, chunked
        self.t0 = time.monotonic()

    def on_step(self, state, record):
        run = self.run
        if run.export_wanted.is_set():
            run.export_wanted.clear()
            if self.chunked:
                request_export(run.run_dir)  # the chunk writes current/ and reports it (run.exported)
            else:
                save_pretrained_atomic(state.clip, run.run_dir / "current")
                run.export_done = True
                run.exported.set()
        now = time.monotonic()
        if now - self.t0 > self.max_wall_s:
            run.stop_reason = f"stopped at the app's time limit of {self.max_wall_s / 60:g} minutes per run"
            run.stop.set()
        elif now - run.last_seen > self.idle_s:
            run.stop_reason = f"stopped: nobody watched it for {self.idle_s / 60:g} minutes"
            run.stop.set()

    def should_stop(self) -> bool:
        return self.run.stop.is_set()

    def stop_now(self) -> bool:
        """Inside a step (core.train checks it at every encoder layer): a Stop ends even a long step at once."""
        return self.run.stop.is_set()


class TrainRuns:
    """The app's training runs (thread-safe)."""

    def __init__(self, runs_dir: Path, max_runs: int = 1, max_steps: int = 5000, max_wall_s: float = 1800,
                 idle_s: float = 300, nice: int = 10, max_kept: int = 8, max_waiting: int = 8, max_disk_mb: int = 4096,
                 chunked: bool = False, chunk=None, chunk_seconds: float | None = None):
        self.runs_dir, self.max_runs, self.max_steps = Path(runs_dir), int(max_runs), int(max_steps)
        self.max_wall_s, self.idle_s, self.nice, self.max_kept = float(max_wall_s), float(idle_s), int(nice), int(max_kept)
        self.max_waiting, self.max_disk_mb = int(max_waiting), int(max_disk_mb)
        # chunked (on ZeroGPU): runs train in GPU calls of chunk_seconds each (demo.tabs.train.gpu_chunks); chunk
        # stands in for train_gpu.train_chunk in tests
        self.chunked, self.chunk, self.chunk_seconds = bool(chunked), chunk, clamp_chunk(chunk_seconds or CHUNK_SECONDS)
        self._runs: dict[str, TrainRun] = {}
        self._line: list[str] = []  # queued run ids, first in first out
        self._lock = threading.Lock()

    def submit(self, cfg: TrainConfig, meta: dict | None = None, owner: str = "") -> TrainRun:
        """Queue a new run of `cfg` (its output_dir is set here); it starts when a place is free.
        An owner (a visitor) may have one run waiting besides the one training."""
        if cfg.optim.steps > self.max_steps:
            raise UserInputError(f"{cfg.optim.steps:,} steps; the app trains at most {self.max_steps:,} per run")
        with self._lock:
            if owner and any(self._runs[i].owner == owner for i in self._line):
                raise UserInputError("you already have a run waiting to train: stop it, or wait until it has started")
            if len(self._line) >= self.max_waiting:
                raise UserInputError(f"{len(self._line)} runs are already waiting to train here (the limit is "
                                     f"{self.max_waiting}); try again when one has finished")
        run_id = secrets.token_hex(4)
        cfg = cfg.replace(output_dir=str(self.runs_dir / f"app-{run_id}"), progress=False)
        run = TrainRun(run_id, secrets.token_urlsafe(16), cfg, LiveRecorder(cfg.optim.steps), meta=dict(meta or {}),
                       context=contextvars.copy_context(), owner=owner)
        with self._lock:
            self._runs[run_id] = run
            self._line.append(run_id)
        self._forget_old()
        self._pump()
        return run

    def get(self, run_id: str | None, key: str | None) -> TrainRun:
        """The run with this id, if `key` is its key; RunNotFound otherwise. Marks it as watched."""
        with self._lock:
            run = self._runs.get(run_id or "")
        if run is None or not secrets.compare_digest(run.key, key or ""):
            raise RunNotFound("no such run: it was never started here, or the app restarted since")
        run.last_seen = time.monotonic()
        return run

    def place(self, run: TrainRun) -> int:
        """0 when the run is not waiting, else its place in line (1: next)."""
        with self._lock:
            return self._line.index(run.id) + 1 if run.id in self._line else 0

    def running(self) -> int:
        with self._lock:
            return sum(r.status == "running" for r in self._runs.values())

    def stop(self, run: TrainRun) -> None:
        """Stop a run cleanly (a checkpoint is written), or take it out of the line."""
        with self._lock:
            if run.id in self._line:
                self._line.remove(run.id)
                run.status = "stopped"
                return
        run.stop_reason = run.stop_reason or "stopped by you"
        run.stop.set()
        if self.chunked:
            request_stop(run.run_dir)  # a chunk that is setting up or waiting for its GPU sees it too

    def resume(self, run: TrainRun) -> None:
        """Put a stopped (or failed) run back in line; it goes on from its latest checkpoint."""
        if run.status not in ("stopped", "failed"):
            raise UserInputError(f"this run is {run.status}; only a stopped run can be resumed")
        if latest_checkpoint(run.run_dir) is None:
            raise UserInputError("this run has no checkpoint to resume from yet; start a new one")
        run.stop.clear()
        run.status, run.error, run.stop_reason, run.start = "queued", "", "", "resume"
        run.context = contextvars.copy_context()
        with self._lock:
            self._line.append(run.id)
        self._pump()

    def current_weights(self, run: TrainRun, timeout: float | None = None) -> Path:
        """A folder with the run's weights now, for the model picker: exported between two steps
        while it trains (waiting up to `timeout`: 60 s, or 20 s in GPU chunks, which may be waiting
        for a GPU); else its final model or its latest checkpoint."""
        if run.status == "running":
            run.export_done = False
            run.exported.clear()
            run.export_wanted.set()
            if run.exported.wait(timeout if timeout is not None else (20.0 if self.chunked else 60.0)) and run.export_done:
                return run.run_dir / "current"
            run.export_wanted.clear()
        if (run.run_dir / "model" / "config.json").exists():
            return run.run_dir / "model"
        ckpt = latest_checkpoint(run.run_dir)
        if ckpt is None:
            raise UserInputError("the run has no weights yet: wait for its first steps")
        return ckpt

    def stable_weights(self, run: TrainRun, keep: int = 4) -> Path:
        """A folder of the run's weights now that nothing prunes while the run lives: a copy of
        `current_weights` in runs/app-<id>/exports/step-<N> (the trainer prunes checkpoints/ and
        rewrites current/, so a session pointed at either would later find other weights, or none).
        The `keep` latest exports stay; all go with the run's folder."""
        folder = self.current_weights(run)
        step = run.recorder.view().last_step
        exports = run.run_dir / "exports"
        dest = exports / f"step-{max(step, 0):07d}"
        if not (dest / "config.json").is_file():
            exports.mkdir(parents=True, exist_ok=True)
            tmp = exports / f".tmp-{secrets.token_hex(4)}"
            tmp.mkdir()
            for path in Path(folder).iterdir():
                if path.is_file() and path.suffix in (".json", ".safetensors", ".txt"):
                    shutil.copy2(path, tmp / path.name)
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(tmp, dest)
        for old in sorted(p for p in exports.iterdir() if p.name.startswith("step-"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        return dest

    @classmethod
    def from_config(cls, config) -> "TrainRuns":
        """The app's runs, with the limits of an AppConfig."""
        runs = cls(config.runs_dir, config.max_runs, config.max_train_steps, 60 * config.max_train_minutes,
                   60 * config.train_idle_minutes, chunked=config.train_chunk_s > 0,
                   chunk_seconds=config.train_chunk_s or None, max_disk_mb=config.runs_disk_mb,
                   nice=config.heavy_nice)
        runs.clean_orphans()
        return runs

    def _pump(self) -> None:
        """Start queued runs while places are free."""
        with self._lock:
            while self._line and sum(r.status == "running" for r in self._runs.values()) < self.max_runs:
                run = self._runs[self._line.pop(0)]
                run.status, run.started_at = "running", time.monotonic()
                context = run.context or contextvars.copy_context()
                threading.Thread(target=context.run, args=(self._work, run), name=f"train-{run.id}", daemon=True).start()

    def _work(self, run: TrainRun) -> None:
        lower_this_thread(self.nice)  # its torch threads inherit it
        try:
            hooks = [run.recorder, RunControl(run, self.max_wall_s, self.idle_s, self.chunked)]
            if self.chunked:
                def count_call():
                    run.gpu_calls += 1

                def exported():
                    run.export_done = True
                    run.exported.set()

                finished = train_in_chunks(run.cfg, run.start, hooks, run.stop, exported, self.chunk,
                                           seconds=self.chunk_seconds, probe_pairs=PROBE_PAIRS,
                                           matrix_size=MATRIX_SIZE, on_call=count_call)
                run.status = "finished" if finished else "stopped"
            else:
                train(run.cfg, hooks=hooks, start=run.start, probe_pairs=PROBE_PAIRS, matrix_size=MATRIX_SIZE)
                run.status = "stopped" if run.stop.is_set() else "finished"
        except UserInputError as e:
            run.status, run.error = "failed", (str(e).splitlines() or [e.__class__.__name__])[0]
        except Exception as e:  # an operator's problem: logged in full, shown in one line
            log.exception("training run %s failed", run.id)
            kind = getattr(e, "kind", e.__class__.__name__)  # a GPU worker's error keeps its class's name
            run.status, run.error = "failed", f"internal error ({kind}); the server log has details"
        finally:
            run.export_wanted.clear()
            run.exported.set()  # nobody waits for an export that will not come
            self._forget_old()
            self._pump()

    def _forget_old(self) -> None:
        """Keep at most max_kept ended app runs (in memory and on disk), and their folders within
        max_disk_mb together; the run seen longest ago goes first."""
        with self._lock:
            ended = sorted((r for r in self._runs.values() if r.status in ("stopped", "finished", "failed")),
                           key=lambda r: r.last_seen)
            total = sum(folder_bytes(r.run_dir) for r in self._runs.values())
            while ended and (len(ended) > self.max_kept or total > self.max_disk_mb << 20):
                run = ended.pop(0)
                total -= folder_bytes(run.run_dir)
                del self._runs[run.id]
                shutil.rmtree(run.run_dir, ignore_errors=True)

    def clean_orphans(self) -> list[str]:
        """Delete the app-* run folders that no run of this process owns: runs of an earlier start of the app.
        Their tickets died with it (a run is reached only through this process's registry), so nobody can
        resume or use them. Returns the names deleted. Called once at start (from_config)."""
        if not self.runs_dir.is_dir():
            return []
        with self._lock:
            owned = {r.run_dir.name for r in self._runs.values()}
        gone = [p.name for p in self.runs_dir.glob("app-*") if p.is_dir() and p.name not in owned]
        for name in gone:
            shutil.rmtree(self.runs_dir / name, ignore_errors=True)
        if gone:
            log.info("deleted %d run folders left by an earlier start of the app", len(gone))
        return gone
