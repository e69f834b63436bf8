"""The pointing game on the shapes world: does a saliency map's peak land on the named object?

For eval-split images, each method maps the text of the first object's true class (by default
"a {colour} {shape}"). The map is upsampled bilinearly to the 64×64 image and its peak (the first
maximum; on a plateau of maxima, its most central pixel) scores a hit when it falls inside that object's filled silhouette
(`core.shapes.object_mask`), or within `tolerance` pixels of it (Zhang et al.'s original game
allows 15 px on ~224-px images, about 4 px here). In scenes of 2–3 objects a peak on one of the
other objects is counted too: a map that follows the text lands there rarely, an objectness map
often.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from .encode import arrays_to_pixels, encode_texts, pixel_values
from .model import Clip
from .saliency import METHODS, saliency_maps, upsample
from .shapes import ShapesWorld, object_mask


@dataclass
class PointingResult:
    """One method's score on one set of scenes."""

    method: str
    prompt: str
    objects: str  # "1" or "2-3" objects per scene
    tolerance: float
    n: int
    hits: int  # peaks on the named object
    other_hits: int = 0  # peaks on another object of the scene
    by_style: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0  # time spent making the maps

    @property
    def accuracy(self) -> float:
        return self.hits / self.n if self.n else float("nan")

    @property
    def other_rate(self) -> float:
        return self.other_hits / self.n if self.n else float("nan")


def peaks(maps: np.ndarray, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Row and column [B] of each map's maximum after upsampling maps [B, g, g] to size × size.

    Bilinear upsampling turns two equal neighbouring cells, or a cell at the border, into a
    plateau of maxima; the peak is then the plateau's pixel nearest to its centroid (not its
    first pixel, which would pull every tie up and to the left).
    """
    up = upsample(maps, size).reshape(len(maps), -1)  # shape = [B, size * size]
    top = up.max(axis=1, keepdims=True)
    ties = up >= top - 1e-6 * np.maximum(np.abs(top), 1e-12)  # [B, size * size]
    rows, cols = np.divmod(np.arange(size * size), size)
    flat = np.empty(len(up), dtype=np.int64)
    for i, tie in enumerate(ties):
        where = np.flatnonzero(tie)
        r, c = rows[where], cols[where]
        flat[i] = where[np.argmin((r - r.mean()) ** 2 + (c - c.mean()) ** 2)]  # first on equal distance
    return flat // size, flat % size


def _near(masks: np.ndarray, rows: np.ndarray, cols: np.ndarray, tolerance: float) -> np.ndarray:
    """Whether masks [B, S, S] hold a True pixel within `tolerance` px (Euclidean) of each (row, col): bool [B]."""
    r = int(np.floor(tolerance))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    keep = dy ** 2 + dx ** 2 <= tolerance ** 2
    dy, dx = dy[keep], dx[keep]  # [K] offsets inside the disc, (0, 0) included
    size = masks.shape[-1]
    ys = np.clip(rows[:, None] + dy, 0, size - 1)  # [B, K]
    xs = np.clip(cols[:, None] + dx, 0, size - 1)
    inside = (rows[:, None] + dy >= 0) & (rows[:, None] + dy < size) & (cols[:, None] + dx >= 0) & (cols[:, None] + dx < size)
    return (masks[np.arange(len(masks))[:, None], ys, xs] & inside).any(axis=1)


def pointing_hits(maps: np.ndarray, masks: np.ndarray, tolerance: float = 0.0) -> np.ndarray:
    """Whether each map's peak lies in (or within tolerance px of) its mask: maps [B, g, g],
    masks bool [B, S, S] -> bool [B]. The maps are upsampled to S × S first."""
    rows, cols = peaks(maps, masks.shape[-1])
    return _near(masks, rows, cols, tolerance)


def _pixels(clip: Clip, images) -> torch.Tensor:
    """Model inputs [B, 3, S, S] for 64-px shapes images: the fast path when the model is 64 px."""
    if clip.image_size == 64:
        arrays = np.stack([np.asarray(im) for im in images])  # [B, 64, 64, 3] uint8
        return arrays_to_pixels(arrays, clip.processor.image_mean, clip.processor.image_std)
    return pixel_values(clip, images)


def pointing_game(clip: Clip, methods: Sequence[str] = METHODS, n: int = 500, seed: int = 1234,
                  prompt: str = "a {colour} {shape}", max_objects: int = 1, tolerance: float = 0.0,
                  batch_size: int = 50) -> list[PointingResult]:
    """Each method's pointing-game score on the same n eval-split scenes.

    max_objects 1: single-object scenes (the images of `core.evaluate.shapes_eval_set`); 2 or 3:
    scenes of 2..max_objects objects, the text naming the first. prompt is formatted with that
    object's colour and shape ("{shape}" alone is fine).
    """
    multi = max_objects > 1
    world = ShapesWorld(seed=seed, split="eval", min_objects=2 if multi else 1, max_objects=max_objects)
    samples = world.take(n)
    masks = np.stack([object_mask(s.objects[0]) for s in samples])  # [N, 64, 64] bool
    others = np.stack([np.logical_or.reduce([object_mask(o) for o in s.objects[1:]] + [np.zeros((64, 64), bool)])
                       for s in samples])  # [N, 64, 64] bool: the other objects of each scene
    texts = [prompt.format(colour=s.objects[0].colour, shape=s.objects[0].shape) for s in samples]
    unique = sorted(set(texts))
    table = encode_texts(clip, unique)  # [U, D]
    text_emb = table[torch.as_tensor([unique.index(t) for t in texts])]  # [N, D]
    styles = np.array([s.style for s in samples])
    results = []
    for method in methods:
        hits, other = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        t0 = time.perf_counter()
        for start in range(0, n, batch_size):
            part = slice(start, min(n, start + batch_size))
            pixels = _pixels(clip, [s.image for s in samples[part]])
            maps = saliency_maps(clip.model, pixels, text_emb[part], method)  # [b, g, g]
            rows, cols = peaks(maps, 64)
            hits[part] = _near(masks[part], rows, cols, tolerance)
            other[part] = _near(others[part], rows, cols, tolerance) & ~hits[part]
        seconds = time.perf_counter() - t0
        by_style = {str(st): float(hits[styles == st].mean()) for st in sorted(set(styles))}
        results.append(PointingResult(method, prompt, f"2-{max_objects}" if multi else "1", tolerance, n,
                                      int(hits.sum()), int(other.sum()), by_style, seconds))
    return results


def chance_rate(n: int = 500, seed: int = 1234, max_objects: int = 1) -> float:
    """The hit rate of a uniformly random peak: the mean fraction of the image the named object covers."""
    world = ShapesWorld(seed=seed, split="eval", min_objects=2 if max_objects > 1 else 1, max_objects=max_objects)
    return float(np.mean([object_mask(s.objects[0]).mean() for s in world.take(n)]))
