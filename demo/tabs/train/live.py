"""Live views of a run: curves, probe-matrix frames and a map whose frame stays put.

`LiveRecorder` is a hook (core.train.hooks): the loop hands it every step's record, every eval and
every snapshot, and it keeps what a live view draws, bounded in memory, behind a lock, so that a UI
thread can read it (`view()`) while the training thread writes.

- Curves: loss, logit scale, learning rate and samples/s per step (thinned to `max_points`).
- ETA: the steps left times the wall seconds per step over the last `eta_window_s` (everything
  included: snapshots, evals, a GPU chunk's setup), counted from the run's (re)start.
- Evals: zero-shot top-1 per task (colour, shape, combo, held_out on the shapes world) per eval.
- Frames: at each snapshot, the probe matrix of the first `matrix_size` probe pairs (cosine and
  row softmax, its loss and row accuracy) and the map of all probe pairs. The map is PCA of the
  joint image+caption embeddings, rotated (orthogonal Procrustes) onto the previous frame's map so
  that the picture does not spin or flip between frames: points travel, the frame stays put.
  Coordinates are in embedding units (unit vectors), so a collapsed start shows as one small blob.
  At most `max_frames` are kept: when full, every other frame is dropped (the first and last stay).
- Snapshots are asked for by time (`wants_snapshot`), in two kinds: "probe" encodes only the
  matrix's pairs (cheap: a frame every few seconds), "full" also the map's pairs. Each kind comes
  whenever the training time since its last one is at least its cost / its budget (`probe_budget`,
  `map_budget`), so the live views take about their budgets of the run's time whatever the model's
  speed; a probe-only frame shows the map of the last full one (MapFrame.step says which).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from core.projection import pca
from core.train.hooks import Hook, Snapshot, eval_top1


@dataclass
class ProbeFrame:
    """The probe matrix at one step: cosine and row softmax [k, k], the symmetric loss, the share of
    rows whose argmax is the diagonal, and the logit scale. For a SigLIP model, probs_rows holds each
    cell's sigmoid(logit + bias) and loss the sigmoid loss (`sigmoid` True)."""

    cosine: np.ndarray
    probs_rows: np.ndarray
    loss: float
    accuracy: float
    scale: float
    sigmoid: bool = False


@dataclass
class MapFrame:
    """The fixed set's map at one step: coords [2n, 2] (n images, then their n captions) and the gap
    between the two modalities' centroids (|mean image - mean caption|, unit embeddings)."""

    coords: np.ndarray
    gap: float
    step: int = 0


@dataclass
class Frame:
    step: int
    probe: ProbeFrame
    map: MapFrame


@dataclass
class LiveView:
    """A copy of what the recorder holds, for drawing: safe to read while the run goes on."""

    steps: list[int]
    loss: list[float]
    logit_scale: list[float]
    lr: list[float]
    samples_per_s: float | None
    evals: list[tuple[int, dict[str, float]]]
    frames: list[Frame]
    captions: list[str]
    labels: list[dict] | None
    last_step: int
    total_steps: int
    eta_s: float | None
    snapshot_share: float  # share of the run's time spent on snapshots so far


def align_to(coords: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """coords [m, 2] rotated (or reflected) about the origin to best match reference [m, 2]:
    the orthogonal Procrustes solution R = U V^T of svd(coords^T reference); no scaling."""
    u, _, vt = np.linalg.svd(coords.T @ reference)  # [2, 2]
    return coords @ (u @ vt)


def map_frame(image_emb, text_emb, previous: np.ndarray | None = None, step: int = 0) -> MapFrame:
    """The map of n pairs (image_emb, text_emb [n, D], unit rows), aligned to the previous frame's coords."""
    img, txt = np.asarray(image_emb, dtype=np.float64), np.asarray(text_emb, dtype=np.float64)
    coords = pca(np.concatenate([img, txt]), 2).astype(np.float64)  # [2n, 2]: the map tab's PCA
    if previous is not None and previous.shape == coords.shape:
        coords = align_to(coords, previous)
    return MapFrame(coords.astype(np.float32), float(np.linalg.norm(img.mean(0) - txt.mean(0))), step)


def probe_frame(snapshot: Snapshot) -> ProbeFrame:
    """The probe matrix of a snapshot as NumPy."""
    m = snapshot.matrix
    if m.sigmoid_probs is not None:  # a SigLIP model: the rule and the loss it is trained with
        return ProbeFrame(m.cosine.numpy().astype(np.float32), m.sigmoid_probs.numpy().astype(np.float32),
                          float(m.sigmoid_loss), float(m.accuracy_i2t), float(m.scale), sigmoid=True)
    return ProbeFrame(m.cosine.numpy().astype(np.float32), m.probs_rows.numpy().astype(np.float32),
                      float(m.loss), float(m.accuracy_i2t), float(m.scale))


def thin(items: list, limit: int) -> list:
    """At most `limit` items: while over, drop every other one, keeping the first and the last."""
    while len(items) > limit >= 2:
        items = items[:-1:2] + [items[-1]]
    return items


@dataclass
class SnapshotPacer:
    """When a live view's snapshot is due: each kind ("probe", "full") whenever the training time since
    its last one pays for its measured cost within its budget. Not thread-safe (its owner locks)."""

    total_steps: int
    probe_budget: float = 0.025
    map_budget: float = 0.04

    def __post_init__(self):
        self.cost = {"probe": [0.0, 0], "full": [0.0, 0]}  # seconds and count of each kind
        self.since = {"probe": 0.0, "full": 0.0}  # training seconds since the last of each kind
        self.last: float | None = None  # when the last step (or snapshot, or eval) ended

    def stepped(self, now: float) -> float | None:
        """A step ended at `now`: its seconds (None for the first), counted as training time."""
        dt = None if self.last is None else now - self.last
        if dt is not None:
            for kind in self.since:
                self.since[kind] += dt
        self.last = now
        return dt

    def paused(self, now: float) -> None:
        """Time up to `now` was not a step's (a snapshot, an eval)."""
        self.last = now

    def wants(self, step: int) -> str | bool:
        """"full" at the first step, the last, and whenever the training time since the last full one
        pays for its cost within `map_budget`; else "probe" when that holds for a probe-only one
        within `probe_budget`; else False."""
        if not self.cost["full"][1] or step >= self.total_steps:
            return "full"
        for kind, budget in (("full", self.map_budget), ("probe", self.probe_budget)):
            seconds, count = self.cost[kind]
            if not count or self.since[kind] * budget >= seconds / count:
                return kind  # (the first probe-only one comes at once: it measures its cost)
        return False

    def took(self, full: bool, seconds: float, now: float) -> None:
        """A snapshot (full or probe-only) took `seconds` and ended at `now`."""
        kind = "full" if full else "probe"
        self.cost[kind][0] += seconds
        self.cost[kind][1] += 1
        self.since["probe"] = 0.0  # a full snapshot draws the matrix too
        if full:
            self.since["full"] = 0.0
        self.paused(now)


@dataclass
class LiveRecorder(Hook):
    """Records a run for live views (see the module docstring); every method is thread-safe."""

    total_steps: int
    max_frames: int = 120
    max_points: int = 2000
    probe_budget: float = 0.025  # share of the training time that probe-only snapshots may take ...
    map_budget: float = 0.04  # ... and full ones (the map's pairs too)
    eta_window_s: float = 120.0  # the ETA's rate: steps per wall second over about this long
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self):
        self.steps, self.loss, self.scale, self.lr = [], [], [], []
        self.evals: list[tuple[int, dict[str, float]]] = []
        self.frames: list[Frame] = []
        self.captions: list[str] = []
        self.labels: list[dict] | None = None
        self.samples_per_s: float | None = None
        self.last_step = 0
        self.snapshot_s = 0.0  # time spent on snapshots, both kinds
        self.pacer = SnapshotPacer(self.total_steps, self.probe_budget, self.map_budget)
        self._step_times: list[float] = []  # recent seconds per step (snapshots and evals left out)
        self._marks: list[tuple[float, int]] = []  # (time, step) of the steps in the ETA's window
        self.started = self.clock()

    def on_start(self, state):
        with self._lock:
            self._marks = []  # a stopped run's pause is not training time

    def on_step(self, state, record):
        now = self.clock()
        with self._lock:
            dt = self.pacer.stepped(now)
            if dt is not None:
                self._step_times = (self._step_times + [dt])[-20:]
            step = int(record["step"])
            if self.steps and step <= self.steps[-1]:  # a resume from an earlier checkpoint redoes steps
                self._forget_from(step)
            self._marks.append((now, step))
            while len(self._marks) > 2 and self._marks[1][0] <= now - self.eta_window_s:
                self._marks.pop(0)
            self.steps.append(step)
            self.loss.append(float(record["loss"]))
            self.scale.append(float(record["logit_scale"]))
            self.lr.append(float(record["lr"]))
            self.samples_per_s = record.get("samples_per_s")
            self.last_step = int(record["step"])
            if len(self.steps) > self.max_points:
                keep = thin(list(range(len(self.steps))), self.max_points // 2)
                for name in ("steps", "loss", "scale", "lr"):
                    values = getattr(self, name)
                    setattr(self, name, [values[i] for i in keep])

    def _forget_from(self, step: int) -> None:
        """Drop what was recorded at `step` and after (the caller holds the lock)."""
        keep = [i for i, s in enumerate(self.steps) if s < step]
        for name in ("steps", "loss", "scale", "lr"):
            values = getattr(self, name)
            setattr(self, name, [values[i] for i in keep])
        self.evals = [e for e in self.evals if e[0] < step]
        self.frames = [f for f in self.frames if f.step < step]
        self._marks = [m for m in self._marks if m[1] < step]

    def wants_snapshot(self, step: int) -> str | bool:
        """What snapshot this step wants (SnapshotPacer.wants): "full", "probe" or False."""
        with self._lock:
            return self.pacer.wants(step)

    def on_snapshot(self, state, snapshot: Snapshot):
        probe = probe_frame(snapshot)
        with self._lock:
            last_map = self.frames[-1].map if self.frames else None
        if snapshot.full:
            last_map = map_frame(snapshot.image_emb.numpy(), snapshot.text_emb.numpy(),
                                 last_map.coords if last_map is not None else None, snapshot.step)
        if last_map is None:  # a probe-only snapshot before any full one: nothing to place yet
            last_map = MapFrame(np.zeros((0, 2), np.float32), float("nan"), snapshot.step)
        frame = Frame(snapshot.step, probe, last_map)
        with self._lock:
            if snapshot.full:
                self.captions, self.labels = list(snapshot.captions), snapshot.labels
            self.snapshot_s += snapshot.seconds
            self.pacer.took(snapshot.full, snapshot.seconds, self.clock())  # its time is not a step's
            self.frames = thin(self.frames + [frame], self.max_frames)

    def on_eval(self, state, results):
        with self._lock:
            self.evals.append((int(state.step), eval_top1(results)))
            self.pacer.paused(self.clock())  # nor is the eval's

    def _seconds_per_step(self) -> float | None:
        """Wall seconds per step over the ETA's window, everything included (snapshots, evals, the
        setup of each GPU chunk); the median step time until two steps are in the window."""
        (t0, s0), (t1, s1) = (self._marks[0], self._marks[-1]) if self._marks else ((0.0, 0), (0.0, 0))
        if s1 > s0:
            return (t1 - t0) / (s1 - s0)
        return float(np.median(self._step_times)) if self._step_times else None

    def view(self) -> LiveView:
        """A consistent copy of everything recorded so far."""
        with self._lock:
            per_step = self._seconds_per_step()
            left = max(0, self.total_steps - self.last_step)
            elapsed = max(1e-9, self.clock() - self.started)
            return LiveView(list(self.steps), list(self.loss), list(self.scale), list(self.lr), self.samples_per_s,
                            list(self.evals), list(self.frames), list(self.captions), self.labels, self.last_step,
                            self.total_steps, None if per_step is None else per_step * left,
                            self.snapshot_s / elapsed)
