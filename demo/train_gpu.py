"""Training on ZeroGPU: a run as a sequence of `@spaces.GPU` chunks, each within the call's duration.

On a ZeroGPU Space a GPU is lent per call of a `@spaces.GPU` function, for a duration of about a
minute, and the call runs in a forked worker process: it shares nothing with the app but the disk;
its arguments and what it returns (or yields) are pickled. A run of many minutes is therefore cut
into chunks:

- each chunk is one call of `train_chunk`, a generator: it resumes the run from its latest
  checkpoint (the first chunk starts it), trains for `CHUNK_SECONDS`, stops cleanly with a
  checkpoint, and yields what happens as it happens (step records, evals, snapshots), which spaces
  sends back to the app one message at a time;
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
from core.train.live import LiveRecorder
from demo.gpu import on_gpu

log = logging.getLogger("clip_lab")
CHUNK_SECONDS = 30.0  # training time per GPU call ...
SETUP_SECONDS = 25  # ... plus building the model, the data source and the probe, and the checkpoint
STOP_FLAG, EXPORT_FLAG = "stop.flag", "export.flag"


def chunk_duration(flat_cfg: dict, start: str, seconds: float = CHUNK_SECONDS, *args, **kwargs) -> int:
    """The ZeroGPU duration asked for one chunk: its training time plus setup (at most 120 s)."""
    return int(min(120, seconds + SETUP_SECONDS))


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
    """In the GPU worker: sends each event as a picklable message; decides when snapshots come with a
    LiveRecorder of its own (its time budgets), since the app's recorder is in another process."""

    def __init__(self, send: Callable[[tuple], None], total_steps: int):
        self.send, self.pacer = send, LiveRecorder(total_steps, max_frames=2)

    def on_step(self, state, record):
        self.pacer.on_step(state, record)
        self.send(("step", plain(dict(record))))

    def wants_snapshot(self, step):
        return self.pacer.wants_snapshot(step)

    def on_snapshot(self, state, snapshot):
        self.pacer.on_snapshot(state, snapshot)
        self.send(("snapshot", plain(snapshot)))

    def on_eval(self, state, results):
        self.pacer.on_eval(state, results)
        self.send(("eval", state.step, plain(results)))

    def on_end(self, state, finished):
        self.send(("end", state.step, bool(finished)))


class ChunkControl(Hook):
    """In the GPU worker: ends the chunk after `seconds` of training or when stop.flag appears, and
    writes the current weights to current/ when export.flag appears."""

    def __init__(self, run_dir: Path, seconds: float, send: Callable[[tuple], None]):
        self.run_dir, self.seconds, self.send = Path(run_dir), float(seconds), send
        self.t0 = time.monotonic()

    def on_start(self, state):
        self.t0 = time.monotonic()

    def on_step(self, state, record):
        flag = self.run_dir / EXPORT_FLAG
        if flag.exists():
            save_pretrained_atomic(state.clip, self.run_dir / "current")
            flag.unlink(missing_ok=True)
            self.send(("exported",))

    def should_stop(self) -> bool:
        return (self.run_dir / STOP_FLAG).exists() or time.monotonic() - self.t0 >= self.seconds


@on_gpu(chunk_duration)
def train_chunk(flat_cfg: dict, start: str, seconds: float = CHUNK_SECONDS, probe_pairs: int = 300,
                matrix_size: int = 16) -> Iterator[tuple]:
    """One GPU call of a run: train `flat_cfg` (TrainConfig.flat()) from `start` ("new" or "resume")
    for about `seconds`, yielding ("step", record), ("eval", step, results), ("snapshot", Snapshot),
    ("exported",), then ("end", step, finished), or ("error", "user" | "internal", line, traceback)."""
    cfg = TrainConfig.from_flat(flat_cfg)
    messages: queue.Queue = queue.Queue()

    def work():
        try:
            hooks = [Relay(messages.put, cfg.optim.steps), ChunkControl(Path(cfg.output_dir), seconds, messages.put)]
            train(cfg, hooks=hooks, start=start, probe_pairs=probe_pairs, matrix_size=matrix_size)
        except UserInputError as e:
            messages.put(("error", "user", str(e).splitlines()[0], ""))
        except BaseException as e:  # noqa: BLE001 - sent to the app, which logs it with this traceback
            messages.put(("error", "internal", f"{e.__class__.__name__}: {e}", traceback.format_exc()))
        finally:
            messages.put(None)

    worker = threading.Thread(target=work, name="train-chunk", daemon=True)
    worker.start()
    while (message := messages.get()) is not None:
        yield message
    worker.join()


def replay(message: tuple, hooks: list, exported: threading.Event) -> tuple | None:
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
        exported.set()
    elif kind == "end":
        return message
    elif kind == "error":
        _, who, line, trace = message
        if who == "user":
            raise UserInputError(line)
        log.error("training chunk failed in the GPU worker:\n%s", trace)
        raise RuntimeError(line)
    return None


def request_export(run_dir: Path) -> None:
    """Ask the chunk that trains the run to write its current weights to current/ at its next step."""
    (Path(run_dir) / EXPORT_FLAG).touch()


def train_in_chunks(cfg: TrainConfig, start: str, hooks: list, stop: threading.Event, exported: threading.Event,
                    chunk: Callable[..., Iterator[tuple]] | None = None, seconds: float = CHUNK_SECONDS,
                    probe_pairs: int = 300, matrix_size: int = 16,
                    on_call: Callable[[], None] | None = None) -> bool:
    """Drive a run through GPU chunks until every step ran (True) or `stop` is set (False).

    `hooks` are the app's (their should_stop is read through `stop`: RunControl sets it); `chunk` is
    `train_chunk` (a ZeroGPU call on a Space) or a stand-in with its contract; on_call() is called
    as each chunk is asked for (the tab counts GPU calls)."""
    chunk = chunk or train_chunk
    run_dir = Path(cfg.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in (STOP_FLAG, EXPORT_FLAG):
        (run_dir / name).unlink(missing_ok=True)
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
            except UserInputError:
                raise
            except Exception as e:
                if e.__class__.__module__.startswith("gradio"):  # spaces' own errors: no quota left, GPU aborted
                    raise UserInputError(f"the GPU call failed: {getattr(e, 'message', e) or e}") from e
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
