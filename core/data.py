"""Image–caption data for training and evaluation: the shapes world, or any `datasets` source.

A source maps a step number to a batch, so training can resume at any step without replaying
data: batch `s` is always the same pairs. `batch_stream` wraps a source in a DataLoader whose
workers build batches ahead of the training loop, in step order.
"""

from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from .encode import arrays_to_pixels, normalise_uint8
from .model import OPENAI_MEAN, OPENAI_STD, looks_like_path
from .shapes import SHAPES, ShapesWorld


class DataError(ValueError):
    """A dataset could not be opened or lacks a needed column; the message is one line."""


@dataclass
class Batch:
    pixel_values: torch.Tensor  # [B, 3, S, S] float32, normalised; or uint8 with mean and std set
    captions: list[str]  # [B]
    n_groups: int = 0  # the first n_groups * group_size pairs are groups of hard negatives
    group_size: int = 0
    mean: tuple[float, ...] | None = None  # set when pixel_values is uint8: normalise after the copy
    std: tuple[float, ...] | None = None

    def pixels(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Normalised float32 pixels [B, 3, S, S] on `device`. A uint8 batch crosses from the data
        workers and to the GPU at a quarter of the bytes, and is rescaled and normalised there."""
        x = self.pixel_values.to(device, non_blocking=True)
        return normalise_uint8(x, self.mean, self.std) if x.dtype == torch.uint8 else x


@dataclass
class ShapesPairs:
    """Shapes-world pairs for step s: hard-negative groups (one colour and style, every shape) fill
    `hard_negatives` of the batch; the rest are samples [s*B, (s+1)*B) of the train split."""

    seed: int = 0
    hard_negatives: float = 0.5
    curriculum_steps: int = 0  # > 0: single objects start centred and may sit anywhere after this many steps
    image_size: int = 64
    mean: Sequence[float] = OPENAI_MEAN
    std: Sequence[float] = OPENAI_STD
    as_uint8: bool = False  # hand out uint8 pixels (Batch.pixels normalises them on the training device)

    def __post_init__(self) -> None:
        self.world = ShapesWorld(seed=self.seed, split="train", image_size=self.image_size)

    def batch(self, step: int, batch_size: int, rank: int = 0, world: int = 1) -> Batch:
        """This rank's `batch_size` pairs of global step `step` (shard `rank` of `world`)."""
        if self.curriculum_steps > 0:
            self.world.spread = min(1.0, step / self.curriculum_steps)
        base = (step * world + rank) * batch_size  # shards never overlap; world 1 gives step * batch_size
        samples, group = [], 0
        while len(samples) + len(SHAPES) <= self.hard_negatives * batch_size:
            samples += self.world.hard_negative_group(base + group)
            group += 1
        group_size = len(samples) // group if group else 0  # 7: every colour has one held-out shape
        samples += self.world.take(batch_size - len(samples), start=base)
        arr = np.stack([np.asarray(s.image) for s in samples])  # [B, S, S, 3] uint8
        captions = [s.caption for s in samples]
        if self.as_uint8:
            pixels = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()  # [B, 3, S, S] uint8
            return Batch(pixels, captions, group, group_size, tuple(self.mean), tuple(self.std))
        return Batch(arrays_to_pixels(arr, self.mean, self.std), captions, group, group_size)


def open_dataset(source: str, split: str = "train", streaming: bool = False):
    """Open a `datasets` source: a save_to_disk directory, a local image folder (imagefolder with
    a caption column in metadata.csv / metadata.jsonl), or a Hub dataset name."""
    import datasets

    path = Path(source).expanduser()
    try:
        if path.is_dir():
            if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
                ds = datasets.load_from_disk(str(path))
                if isinstance(ds, datasets.DatasetDict):
                    if split not in ds:
                        raise DataError(f"{source} has no split {split!r}; it has {', '.join(ds)}")
                    ds = ds[split]
                return ds.to_iterable_dataset() if streaming else ds
            return datasets.load_dataset("imagefolder", data_dir=str(path), split=split, streaming=streaming)
        if path.exists() or looks_like_path(source):
            raise DataError(f"{source}: not a dataset directory")
        return datasets.load_dataset(source, split=split, streaming=streaming)
    except DataError:
        raise
    except Exception as e:  # datasets raises many types; the user needs one line
        raise DataError(f"{source}: could not open dataset ({e.__class__.__name__}: {str(e).splitlines()[0][:200]})") from None


def as_rgb(image: Image.Image) -> Image.Image:
    """Any decoded PIL image as 8-bit RGB, the way a viewer would show it.

    - EXIF orientation is applied (a phone photo taken sideways comes out upright);
    - an animated image gives its first frame;
    - transparency (RGBA, LA, PA, palette with a transparent colour) is composited on white;
    - 16- and 32-bit greyscale (I;16, I, F) is rescaled to 8 bits rather than clipped to white;
    - CMYK, 1-bit, palette and the rest go through Pillow's own conversion.
    """
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    image = ImageOps.exif_transpose(image) or image
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        if mode == "F":
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        else:  # 16-bit range, whatever Pillow calls the mode
            arr = np.clip(arr, 0, 65535) / 257.0
        return Image.fromarray(np.round(arr).astype(np.uint8), "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def to_rgb(value) -> Image.Image:
    """A datasets image cell (PIL image, {'bytes','path'} dict, or path) as an RGB PIL image."""
    if isinstance(value, Image.Image):
        im = value
    elif isinstance(value, dict) and value.get("bytes"):
        im = Image.open(io.BytesIO(value["bytes"]))
    elif isinstance(value, dict) and value.get("path"):
        im = Image.open(value["path"])
    elif isinstance(value, (str, os.PathLike)):
        im = Image.open(value)
    else:
        raise DataError(f"cannot read an image from a {type(value).__name__}")
    return as_rgb(im)


def _caption(value) -> str:
    if isinstance(value, (list, tuple)):  # several captions per image: take the first
        value = value[0] if value else ""
    return str(value)


class HFPairs:
    """Pairs from a `datasets` source, reshuffled every epoch with the seed.

    Map-style sets: batch s is a deterministic slice of the epoch's permutation. Streaming sets are
    shuffled with a buffer and resumed by skipping s*B examples.
    """

    def __init__(self, dataset, processor, image_column: str = "image", text_column: str = "text", seed: int = 0):
        columns = getattr(dataset, "column_names", None)
        if columns is not None:
            missing = [c for c in (image_column, text_column) if c not in columns]
            if missing:
                raise DataError(f"dataset has no column {missing[0]!r}; columns are {', '.join(columns)} "
                                "(set --image-column / --text-column)")
        self.dataset, self.processor = dataset, processor
        self.image_column, self.text_column, self.seed = image_column, text_column, seed
        self.streaming = not hasattr(dataset, "__len__")
        self._iter: Iterator | None = None
        self._next_step = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def _pixels(self, rows: list[dict]) -> Batch:
        images = [to_rgb(r[self.image_column]) for r in rows]
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
        return Batch(pixels, [_caption(r[self.text_column]) for r in rows])

    def batch(self, step: int, batch_size: int, rank: int = 0, world: int = 1) -> Batch:
        """This rank's `batch_size` rows of global step `step`. Streaming sets are split by rank when
        opened (datasets.distributed.split_dataset_by_node), so each rank reads its own stream."""
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
            return self._pixels(rows)
        n, global_batch = len(self.dataset), batch_size * world
        if n < global_batch:
            raise DataError(f"the dataset has {n} examples, fewer than the batch size {global_batch}")
        per_epoch = n // global_batch  # drop the ragged tail of each epoch
        epoch, k = divmod(step, per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(n)
        start = k * global_batch + rank * batch_size
        idx = order[start : start + batch_size]
        return self._pixels([self.dataset[int(i)] for i in idx])


class _Stream(torch.utils.data.IterableDataset):
    def __init__(self, source, batch_size: int, start_step: int, end_step: int, rank: int = 0, world: int = 1):
        self.source, self.batch_size, self.start, self.end = source, batch_size, start_step, end_step
        self.rank, self.world = rank, world

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        for step in range(self.start + wid, self.end, nw):  # workers are read round-robin: order is kept
            b = self.source.batch(step, self.batch_size, self.rank, self.world)
            yield b.pixel_values, b.captions, b.n_groups, b.group_size, b.mean, b.std


def _lower_priority(nice: int, worker_id: int = 0) -> None:
    try:
        os.nice(nice)
    except OSError:  # not permitted here: keep the inherited priority
        pass


def batch_stream(source, batch_size: int, start_step: int, end_step: int, num_workers: int = 1,
                 rank: int = 0, world: int = 1, worker_nice: int = 0) -> Iterator[Batch]:
    """This rank's batches for steps start_step .. end_step-1 of `source`, built ahead by
    `num_workers` processes. batch_size is per rank; rank and world shard each global batch.
    worker_nice > 0 lowers the workers' CPU priority so that they do not slow the trainer."""
    workers = 0 if getattr(source, "streaming", False) else num_workers
    init = functools.partial(_lower_priority, worker_nice) if workers and worker_nice > 0 else None
    loader = torch.utils.data.DataLoader(_Stream(source, batch_size, start_step, end_step, rank, world), batch_size=None,
                                         num_workers=workers, prefetch_factor=4 if workers else None,
                                         persistent_workers=False, worker_init_fn=init)
    for pixels, captions, n_groups, group_size, mean, std in loader:
        yield Batch(pixels, list(captions), int(n_groups), int(group_size), mean, std)

