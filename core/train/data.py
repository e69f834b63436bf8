"""Training batches: a source maps a step number to a batch, so training resumes at any step
without replaying data (batch `s` is always the same pairs). `batch_stream` runs a source in
DataLoader workers that build batches ahead of the loop, in step order; the workers also
tokenize the captions, so a `Batch` arrives with its token ids.

Sources: `HFPairs` (any `datasets` source) here, `ShapesPairs` (the shapes world) in
`core.train.shapes_source`. `make_source` picks one from a config.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import signal
import sys
import threading
from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np
import torch

from ..data import DataError, first_caption, open_dataset, to_rgb
from ..encode import family_of, tokenize
from ..families import CLIP, Family


@dataclass
class TextTokens:
    """What tokenizing needs, without the model: pickled into each data worker."""

    tokenizer: object
    context_length: int
    family: Family = CLIP  # how the model's family pads (SigLIP: 64 positions), as core.encode reads it

    @classmethod
    def of(cls, clip) -> "TextTokens":
        return cls(clip.tokenizer, clip.context_length, family_of(clip))

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """input_ids and attention_mask [B, L]: padded as the model's family pads (CLIP: to the longest
        caption; SigLIP: to 64, the mask None when its tokenizer has none), cut at the context
        (core.encode.tokenize's ids exactly: it reads only .tokenizer, .context_length and .family)."""
        t = tokenize(self, captions, warn=False)
        return t["input_ids"], t["attention_mask"]


@dataclass
class Batch:
    pixel_values: torch.Tensor  # [B, 3, S, S] float32, normalised; or uint8 with mean and std set
    captions: list[str]  # [B]
    n_groups: int = 0  # the first n_groups * group_size pairs are groups of hard negatives
    group_size: int = 0
    mean: tuple[float, ...] | None = None  # set when pixel_values is uint8: normalise after the copy
    std: tuple[float, ...] | None = None
    input_ids: torch.Tensor | None = None  # [B, L] int64, filled by the source's tokens
    attention_mask: torch.Tensor | None = None  # [B, L]
    labels: list[dict] | None = None  # per-pair labels where the source has them (shapes world)

    def pixels(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Normalised float32 pixels [B, 3, S, S] on `device`. A uint8 batch crosses from the data
        workers and to the GPU at a quarter of the bytes, and is rescaled and normalised there."""
        from ..encode import normalise_uint8

        x = self.pixel_values.to(device, non_blocking=True)
        return normalise_uint8(x, self.mean, self.std) if x.dtype == torch.uint8 else x

    def tokenized(self, tokens: TextTokens | None) -> "Batch":
        """This batch with its captions' token ids (itself when it has them or tokens is None)."""
        if self.input_ids is not None or tokens is None:
            return self
        ids, mask = tokens(self.captions)
        return replace(self, input_ids=ids, attention_mask=mask)


class HFPairs:
    """Pairs from a `datasets` source, reshuffled every epoch with the seed.

    Map-style sets: batch s is a deterministic slice of the epoch's permutation. Streaming sets are
    shuffled with a buffer and resumed by skipping s*B examples; under torchrun each rank opens its
    own part of the stream (`datasets.distributed.split_dataset_by_node`, see make_source).
    """

    def __init__(self, dataset, processor, image_column: str = "image", text_column: str = "text", seed: int = 0,
                 tokens: TextTokens | None = None):
        columns = getattr(dataset, "column_names", None)
        if columns is not None:
            missing = [c for c in (image_column, text_column) if c not in columns]
            if missing:
                raise DataError(f"dataset has no column {missing[0]!r}; columns are {', '.join(columns)} "
                                "(set --image-column / --text-column)")
        self.dataset, self.processor, self.tokens = dataset, processor, tokens
        self.image_column, self.text_column, self.seed = image_column, text_column, seed
        self.streaming = not hasattr(dataset, "__len__")
        self._iter: Iterator | None = None
        self._next_step = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def _batch(self, rows: list[dict]) -> Batch:
        images = [to_rgb(r[self.image_column]) for r in rows]
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]  # [B, 3, S, S]
        return Batch(pixels, [first_caption(r[self.text_column]) for r in rows]).tokenized(self.tokens)

    def batch(self, step: int, batch_size: int, rank: int = 0, world: int = 1) -> Batch:
        """This rank's `batch_size` rows of global step `step`."""
        if self.streaming:
            if self._iter is None or step != self._next_step:
                stream = self.dataset.shuffle(seed=self.seed, buffer_size=1000).skip(step * batch_size)
                self._iter = iter(stream)
            rows = []
            for _ in range(batch_size):
                try:
                    rows.append(next(self._iter))
                except StopIteration:  # next pass over the stream
                    self._iter = iter(self.dataset.shuffle(seed=self.seed + 1, buffer_size=1000))
                    rows.append(next(self._iter))
            self._next_step = step + 1
            return self._batch(rows)
        n, global_batch = len(self.dataset), batch_size * world
        if n < global_batch:
            raise DataError(f"the dataset has {n} examples, fewer than the batch size {global_batch}")
        per_epoch = n // global_batch  # drop the ragged tail of each epoch
        epoch, k = divmod(step, per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(n)
        start = k * global_batch + rank * batch_size
        idx = order[start : start + batch_size]
        return self._batch([self.dataset[int(i)] for i in idx])

    def probe(self, n: int) -> Batch:
        """A fixed batch for live views: the first n pairs of the data as stored."""
        if self.streaming:
            rows = [r for _, r in zip(range(n), iter(self.dataset))]
        else:
            rows = [self.dataset[i] for i in range(min(n, len(self.dataset)))]
        return self._batch(rows)


def make_source(cfg, clip, info=None):
    """The data source a config names, tokenizing with clip's tokenizer: ShapesPairs for 'shapes',
    else HFPairs over open_dataset (a streamed set split by rank under torchrun)."""
    tokens = TextTokens.of(clip)
    d = cfg.data
    if d.source == "shapes":
        from .shapes_source import ShapesPairs

        return ShapesPairs(seed=d.seed, hard_negatives=d.hard_negatives, curriculum_steps=d.curriculum_steps,
                           image_size=clip.image_size, mean=clip.processor.image_mean, std=clip.processor.image_std,
                           as_uint8=True, tokens=tokens)
    ds = open_dataset(d.source, split=d.split, streaming=d.streaming)
    if d.streaming and info is not None and info.enabled:  # each rank reads its own part of the stream
        from datasets.distributed import split_dataset_by_node

        ds = split_dataset_by_node(ds, rank=info.rank, world_size=info.world_size)
    return HFPairs(ds, clip.processor, d.image_column, d.text_column, seed=d.seed, tokens=tokens)


class _Stream(torch.utils.data.IterableDataset):
    def __init__(self, source, batch_size: int, start_step: int, end_step: int, rank: int = 0, world: int = 1):
        self.source, self.batch_size, self.start, self.end = source, batch_size, start_step, end_step
        self.rank, self.world = rank, world

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        for step in range(self.start + wid, self.end, nw):  # workers are read round-robin: order is kept
            b = self.source.batch(step, self.batch_size, self.rank, self.world)
            yield (b.pixel_values, b.captions, b.n_groups, b.group_size, b.mean, b.std, b.input_ids, b.attention_mask)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_POLL_S = 0.5  # the fallback watchdog's interval


def _exit_with_parent(parent: int) -> None:
    """End this process (SIGTERM) when `parent`, the trainer, dies, even by `kill -9`, which gives
    the trainer no chance to shut its workers down; else they run on as orphans, mid-batch.

    Linux: the kernel sends the signal (prctl PR_SET_PDEATHSIG; strictly, when the thread that
    forked the worker ends: the one iterating batch_stream, which outlives its loader). Elsewhere,
    or if prctl fails, a daemon thread polls os.getppid(), which changes when the parent dies.
    Either way a parent that died before this call is caught by the first check."""
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0
        except (OSError, AttributeError):  # no libc or no prctl: the watchdog below
            armed = False
    if os.getppid() != parent:  # died before the signal was armed
        os.kill(os.getpid(), signal.SIGTERM)
    if not armed:
        def watch() -> None:
            while os.getppid() == parent:
                threading.Event().wait(PARENT_POLL_S)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _init_worker(nice: int, parent: int, worker_id: int = 0) -> None:
    """A data worker leaves Ctrl-C to the trainer (which stops after its step and shuts the workers
    down), yields the cores to it by `nice`, and exits if the trainer (pid `parent`) dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent(parent)
    if nice > 0:
        try:
            os.nice(nice)
        except OSError:  # not permitted here: keep the inherited priority
            pass


def batch_stream(source, batch_size: int, start_step: int, end_step: int, num_workers: int = 1,
                 rank: int = 0, world: int = 1, worker_nice: int = 0, pin_memory: bool = False) -> Iterator[Batch]:
    """This rank's batches for steps start_step .. end_step-1 of `source`, built ahead by
    `num_workers` processes. batch_size is per rank; rank and world shard each global batch.
    worker_nice > 0 lowers the workers' CPU priority so that they do not slow the trainer.
    pin_memory (for a CUDA trainer) puts each batch in page-locked memory, from a thread of the
    loader, so that its copy to the GPU runs beside the step before it. The workers end when this
    process does, even when it is killed with SIGKILL."""
    workers = 0 if getattr(source, "streaming", False) else num_workers
    if workers:  # the workers tokenize: no Rust thread pool across fork
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    init = functools.partial(_init_worker, worker_nice, os.getpid()) if workers else None
    loader = torch.utils.data.DataLoader(_Stream(source, batch_size, start_step, end_step, rank, world), batch_size=None,
                                         num_workers=workers, prefetch_factor=4 if workers else None,
                                         persistent_workers=False, worker_init_fn=init, pin_memory=pin_memory)
    for pixels, captions, n_groups, group_size, mean, std, ids, mask in loader:
        yield Batch(pixels, list(captions), int(n_groups), int(group_size), mean, std, ids, mask)
