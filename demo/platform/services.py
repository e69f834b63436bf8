"""The app's services: one object that owns the models, zero-shot heads, encoded sets and datasets.

Every cache here is bounded in bytes (or, for opened datasets, in entries) by one set of limits
from `AppConfig`, is shared by all sessions, and is keyed so that two models never see each
other's entries: by the model's source *and* the revision of its weights (`Clip.revision`).
Tabs never build caches of their own; they call these methods.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Hashable

import torch

from core.zeroshot import ensemble_head, template_embeddings
from demo.platform.disk_cache import DiskCache
from demo.platform.errors import Busy
from demo.platform.fair import FairScheduler, current_turn
from demo.platform.config import AppConfig
from demo.platform.lru import ByteLRU
from demo.platform.low_priority import LowPriority
from demo.platform.gpu import embed_texts, use_models
from demo.platform.models import ModelCache


MB = 1 << 20
BUSY = ("the server is busy with {n} big requests (large class lists, sets, studies or maps); try again in a "
        "minute, or ask for less")



@dataclass
class ZeroShotHead:
    """Template embeddings [T, C, D] and the ensemble head [C, D] for one class list and template list.
    `derived` memoises what views compute from the head alone (the "what the model saw" panel: tokenizing
    up to 2,000 prompts), so a cached head answers again without that work."""

    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    template_emb: torch.Tensor
    head: torch.Tensor
    derived: dict = field(default_factory=dict, compare=False, repr=False)


def model_key(clip) -> tuple[str, str]:
    """What a cache entry of a model is keyed by: its source and the revision of its weights."""
    return (clip.source, getattr(clip, "revision", ""))


class Services:
    """Models, zero-shot heads, encoded sets and opened datasets, with the app's limits."""

    def __init__(self, config: "AppConfig", loader=None):
        self.config = config
        self.models = ModelCache(config, loader)
        use_models(self.models)  # the GPU functions look models up here on ZeroGPU
        self.heads = ByteLRU(config.head_cache_mb * MB)
        self.sets = ByteLRU(config.set_cache_mb * MB)
        self.datasets = ByteLRU(max_bytes=1 << 62, max_items=config.max_datasets)  # memory-mapped: count them
        self._building: dict[Hashable, threading.Lock] = {}  # one build per encoded set at a time (not one for all)
        self._building_lock = threading.Lock()
        self.heavy = threading.BoundedSemaphore(config.concurrency)  # big encodes outside any turn (the warm-up)
        # requests running at once, served fairly per visitor; `concurrency` of them may be heavy
        self.cpu = FairScheduler(config.inference_slots(), heavy_slots=config.concurrency)
        # heavy work runs on low-priority threads: a heavy turn of each slot, an upgraded one, the warm-up
        self.background = LowPriority(2 * config.concurrency + 1, config.heavy_nice)
        self.disk = DiskCache(config.cache_dir / "heads", config.disk_cache_mb * MB) if config.cache_dir else None

    def zero_shot_head(self, clip, classnames: list[str], templates: list[str],
                       progress: Callable[[int, int], None] | None = None) -> tuple[ZeroShotHead, bool]:
        """(head, was_cached) for this model, class names and templates; computed once and kept.

        Kept in memory (bounded in bytes) and, for models with weights on disk, in the disk cache,
        which survives restarts and model eviction. A head of more than config.heavy_prompts
        prompts is built under the `heavy` semaphore, so big builds never take every core.
        """
        key = (model_key(clip), tuple(classnames), tuple(templates))

        def compute() -> ZeroShotHead:  # only on a miss in memory
            disk_key = DiskCache.key(*model_key(clip), list(classnames), list(templates)) if self.disk and clip.revision else None
            emb = self.disk.get(disk_key) if disk_key else None  # [T, C, D]
            if emb is None or tuple(emb.shape[:2]) != (len(templates), len(classnames)):
                heavy = len(classnames) * len(templates) > self.config.heavy_prompts
                build = lambda: template_embeddings(clip, classnames, templates, progress, encode=embed_texts)  # noqa: E731
                emb = self.heavy_work(build) if heavy else build()
                if disk_key:
                    self.disk.put(disk_key, emb)
            return ZeroShotHead(tuple(classnames), tuple(templates), emb, ensemble_head(emb))

        return self.heads.get_or_compute(key, compute)

    @contextmanager
    def heavy_slot(self):
        """Big work (a huge head, a set encode) holds one of the `concurrency` heavy slots: a heavy
        request already does; a quick one is upgraded (unless heavy requests owed the slot more wait),
        and if no heavy slot frees up within heavy_wait_s, a busy message rather than holding a quick
        slot while waiting. Work outside any request (the warm-up) takes a semaphore."""
        turn = current_turn()
        if turn is not None and turn.heavy:
            yield
            return
        if turn is None:
            if not self.heavy.acquire(timeout=self.config.heavy_wait_s):
                raise Busy(BUSY.format(n=self.config.concurrency))
            try:
                yield
            finally:
                self.heavy.release()
            return
        if not self.cpu.upgrade(turn, self.config.heavy_wait_s):
            raise Busy(BUSY.format(n=self.config.concurrency))
        try:
            yield
        finally:
            self.cpu.downgrade(turn)

    def heavy_work(self, fn: Callable[[], object]):
        """fn() in a heavy slot (`heavy_slot`), on a low-priority thread (demo/platform/low_priority.py)."""
        with self.heavy_slot():
            return self.background.run(fn)

    def encoded_set(self, clip, key: Hashable, build: Callable[[], object]) -> tuple[object, bool]:
        """(value, was_cached) for an encoded set of this model: build() runs once (a second request for
        the same set waits for it), in a heavy slot; other sets build beside it."""
        full_key = (model_key(clip), key)
        value = self.sets.get(full_key)
        if value is not None:
            return value, True
        with self._building_lock:
            gate = self._building.setdefault(full_key, threading.Lock())
        try:
            with gate:  # two requests for one set build it once; other sets build beside it
                return self.heavy_work(lambda: self.sets.get_or_compute(full_key, build))
        finally:
            with self._building_lock:
                if not gate.locked():
                    self._building.pop(full_key, None)

    def dataset(self, source: str, split: str, opener: Callable[[], object]):
        """An opened `datasets` split, kept for reuse (at most config.max_datasets of them)."""
        return self.datasets.get_or_compute((source, split), opener)[0]
