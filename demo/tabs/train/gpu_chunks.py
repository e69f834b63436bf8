"""Training on ZeroGPU: a run as a sequence of `@spaces.GPU` chunks, each within the call's duration.

On a ZeroGPU Space a GPU is lent per call of a `@spaces.GPU` function, for a duration of about a
minute, and the call runs in a forked worker process: it shares nothing with the app but the disk;
its arguments and what it returns (or yields) are pickled. A run of many minutes is therefore cut
into chunks:

- each chunk is one call of `train_chunk`, a generator: it resumes the run from its latest
  checkpoint (the first chunk starts it), trains until `CHUNK_SECONDS` after the call began (setup
  included), stops cleanly with a checkpoint, and yields what happens as it happens (step records,
  evals, snapshots), which spaces sends back to the app one message at a time. The call asks
  ZeroGPU for SAVE_SECONDS more than that, for the last step and the checkpoint;
- the app (`train_in_chunks`) replays those messages into the run's own hooks, the LiveRecorder and
  the RunControl, so the live views, the caps and the idle stop work as they do off ZeroGPU;
- Stop and "use this model" reach the worker through the run folder: `stop.flag` ends the chunk at
  its next step (with a checkpoint), `export.flag` makes it write its current weights to current/.

Off ZeroGPU the decorator does nothing and `train_chunk` runs in the calling thread; the tests drive
it there and in a forked process that pickles every message, as ZeroGPU's worker does.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterator

import numpy as np
import torch

from core.errors import UserInputError
from core.model import save_pretrained_atomic
from core.train import Hook, TrainConfig, train
from demo.platform.config import TRAIN_CHUNK_SECONDS
from demo.platform.gpu import ZERO_GPU, on_gpu
from demo.tabs.train.live import SnapshotPacer

log = logging.getLogger("clip_lab")
CHUNK_SECONDS = TRAIN_CHUNK_SECONDS  # per GPU call, from its start: setup and steps (set in the app config) ...
SAVE_SECONDS = 20  # ... then the step under way, the checkpoint and an export: ZeroGPU is asked for both
MAX_DURATION = 120  # the longest call asked for (ZeroGPU's limit is "a couple of minutes")
STOP_FLAG, EXPORT_FLAG = "stop.flag", "export.flag"


class WorkerError(RuntimeError):
    """An unexpected error in the GPU worker; `kind` is its class's name there."""

    def __init__(self, kind: str, line: str):
        super().__init__(line)
        self.kind = kind


def chunk_seconds(seconds: float) -> float:
    """A chunk's time from its start to its stop, within MAX_DURATION once SAVE_SECONDS are added."""
    return max(1.0, min(float(seconds), MAX_DURATION - SAVE_SECONDS))


def chunk_duration(flat_cfg: dict, start: str, seconds: float = CHUNK_SECONDS, *args, **kwargs) -> int:
    """The ZeroGPU duration asked for one chunk: its time plus SAVE_SECONDS (at most MAX_DURATION)."""
    return int(chunk_seconds(seconds) + SAVE_SECONDS)


def plain(value):
    """`value` with every tensor as a NumPy array, through dicts, lists, tuples and dataclasses: torch's
    pickler would pass a tensor as a shared-memory handle, which dies with the worker that sent it."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)})
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value


def as_tensors(snapshot):
    """A Snapshot sent by `plain` with its arrays as tensors again (its matrix's too)."""
    def back(obj):
        return dataclasses.replace(obj, **{f.name: torch.from_numpy(v) for f in dataclasses.fields(obj)
                                           if isinstance(v := getattr(obj, f.name), np.ndarray)})
    return dataclasses.replace(back(snapshot), matrix=back(snapshot.matrix))


class Relay(Hook):
    """In the GPU worker: sends each event as a picklable message, and decides when snapshots come
    (a SnapshotPacer with the app's budgets), since the app's recorder is in another process."""

    def __init__(self, send: Callable[[tuple], None], total_steps: int):
        self.send, self.pacer = send, SnapshotPacer(total_steps)

    def on_step(self, state, record):
        self.pacer.stepped(time.monotonic())
        self.send(("step", plain(dict(record))))

    def wants_snapshot(self, step):
        return self.pacer.wants(step)

    def on_snapshot(self, state, snapshot):
        self.pacer.took(snapshot.full, snapshot.seconds, time.monotonic())
        self.send(("snapshot", plain(snapshot)))

    def on_eval(self, state, results):
        self.pacer.paused(time.monotonic())
        self.send(("eval", state.step, plain(results)))

    def on_end(self, state, finished):
        self.send(("end", state.step, bool(finished)))


class ChunkControl(Hook):
    """In the GPU worker: ends the chunk at `deadline` (time.monotonic()), when stop.flag appears or
    when `cancel` is set, and writes the current weights to current/ when export.flag appears."""

    def __init__(self, run_dir: Path, deadline: float, send: Callable[[tuple], None], cancel: threading.Event):
        self.run_dir, self.deadline, self.send, self.cancel = Path(run_dir), float(deadline), send, cancel

    def on_step(self, state, record):
        flag = self.run_dir / EXPORT_FLAG
        if flag.exists():
            save_pretrained_atomic(state.clip, self.run_dir / "current")
            flag.unlink(missing_ok=True)
            self.send(("exported",))

    def should_stop(self) -> bool:
        return self.cancel.is_set() or (self.run_dir / STOP_FLAG).exists() or time.monotonic() >= self.deadline


@on_gpu(chunk_duration)
def train_chunk(flat_cfg: dict, start: str, seconds: float = CHUNK_SECONDS, probe_pairs: int = 300,
                matrix_size: int = 16) -> Iterator[tuple]:
    """One GPU call of a run: train `flat_cfg` (TrainConfig.flat()) from `start` ("new" or "resume")
    until `seconds` after the call began, yielding ("step", record), ("eval", step, results),
    ("snapshot", Snapshot), ("exported",), then ("end", step, finished), or ("error", "user" |
    "internal", line, traceback, class name). If the caller stops iterating, the run stops at its
    next step (with a checkpoint) before the call returns."""
    deadline = time.monotonic() + chunk_seconds(seconds)
    messages: queue.Queue = queue.Queue()
    cancel = threading.Event()

    def work():
        try:
            cfg = TrainConfig.from_flat(flat_cfg)
            if ZERO_GPU and torch.cuda.is_available():  # the call holds a GPU: train on it
                cfg = cfg.replace(device="cuda")
            hooks = [Relay(messages.put, cfg.optim.steps),
                     ChunkControl(Path(cfg.output_dir), deadline, messages.put, cancel)]
            train(cfg, hooks=hooks, start=start, probe_pairs=probe_pairs, matrix_size=matrix_size)
        except UserInputError as e:
            messages.put(("error", "user", (str(e).splitlines() or [e.__class__.__name__])[0], "", ""))
        except BaseException as e:  # noqa: BLE001 - sent to the app, which logs it with this traceback
            messages.put(("error", "internal", f"{e.__class__.__name__}: {e}", traceback.format_exc(),
                          e.__class__.__name__))
        finally:
            messages.put(None)

    worker = threading.Thread(target=work, name="train-chunk", daemon=True)
    worker.start()
    try:
        while (message := messages.get()) is not None:
            yield message
    finally:
        cancel.set()  # the caller stopped listening (or the run ended): no training without a listener
        worker.join()


def replay(message: tuple, hooks: list, exported: Callable[[], None]) -> tuple | None:
    """Call the app-side hooks as the loop would have; the ("end", step, finished) message is returned."""
    kind = message[0]
    if kind == "step":
        state = SimpleNamespace(step=message[1]["step"])
        for hook in hooks:
            hook.on_step(state, message[1])
    elif kind == "eval":
        for hook in hooks:
            hook.on_eval(SimpleNamespace(step=message[1]), message[2])
    elif kind == "snapshot":
        snapshot = as_tensors(message[1])
        for hook in hooks:
            hook.on_snapshot(SimpleNamespace(step=snapshot.step), snapshot)
    elif kind == "exported":
        exported()
    elif kind == "end":
        return message
    elif kind == "error":
        _, who, line, trace, cls = message
        if who == "user":
            raise UserInputError(line)
        log.error("training chunk failed in the GPU worker:\n%s", trace)
        raise WorkerError(cls, line)
    return None


def _is_gradio_error(e: Exception) -> bool:
    """Whether e is a gr.Error (what spaces raises when ZeroGPU refuses or aborts a call)."""
    try:
        import gradio as gr
    except ImportError:
        return False
    return isinstance(e, gr.Error)


def request_export(run_dir: Path) -> None:
    """Ask the chunk that trains the run to write its current weights to current/ at its next step."""
    (Path(run_dir) / EXPORT_FLAG).touch()


def request_stop(run_dir: Path) -> None:
    """Ask the chunk that trains the run (or the next one) to stop at its next step, with a checkpoint."""
    if Path(run_dir).is_dir():
        (Path(run_dir) / STOP_FLAG).touch()


def train_in_chunks(cfg: TrainConfig, start: str, hooks: list, stop: threading.Event, exported: Callable[[], None],
                    chunk: Callable[..., Iterator[tuple]] | None = None, seconds: float = CHUNK_SECONDS,
                    probe_pairs: int = 300, matrix_size: int = 16,
                    on_call: Callable[[], None] | None = None) -> bool:
    """Drive a run through GPU chunks until every step ran (True) or `stop` is set (False).

    `hooks` are the app's (their should_stop is read through `stop`: RunControl sets it); exported()
    is called when the worker has written current/ (asked by request_export); `chunk` is
    `train_chunk` (a ZeroGPU call on a Space) or a stand-in with its contract; on_call() is called
    as each chunk is asked for (the tab counts GPU calls)."""
    chunk = chunk or train_chunk
    run_dir = Path(cfg.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in (STOP_FLAG, EXPORT_FLAG):
        (run_dir / name).unlink(missing_ok=True)
    for hook in hooks:  # once, as the loop would (the chunks' own starts are not the run's)
        getattr(hook, "on_start", lambda state: None)(SimpleNamespace(step=None))
    try:
        while not stop.is_set():
            end = None
            if on_call is not None:
                on_call()
            try:
                for message in chunk(cfg.flat(), start, seconds, probe_pairs, matrix_size):
                    end = replay(message, hooks, exported) or end
                    if stop.is_set():
                        (run_dir / STOP_FLAG).touch()
            except (UserInputError, WorkerError):
                raise
            except Exception as e:
                if _is_gradio_error(e):  # spaces' own errors: no quota left, queue timeout, GPU task aborted
                    raise UserInputError(f"the GPU call failed: {getattr(e, 'message', '') or e}") from e
                raise
            if end is None:
                raise RuntimeError("a training chunk ended without reporting its last step")
            if end[2]:
                return True
            start = "resume"
        return False
    finally:
        for name in (STOP_FLAG, EXPORT_FLAG):
            (run_dir / name).unlink(missing_ok=True)
