"""The pointing game on the shapes world: does a saliency map's peak land on the named object?

For eval-split images, each method maps the text of the first object's true class (by default
"a {colour} {shape}"). The map's peak scores a hit when it falls inside that object's filled
silhouette (`core.shapes.object_mask`), or within `tolerance` pixels of it (Zhang et al.'s original
game allows 15 px on ~224-px images, about 4 px here). In scenes of 2–3 objects a peak on one of the
other objects is counted too: a map that follows the text lands there rarely, an objectness map
often.

The peak of a patch-level map [g, g] over a 64-px image (8-px patches for the bundled model) is
located below the patch size: the maximal cell, moved to the centroid of the map's excess over its
median in the 3 x 3 cells around it (`refined_peaks`). The plain maximum of the bilinearly
upsampled map (refine=False) always lies on a patch centre, which falls outside a small object
whenever the object only clips that patch. The refinement rule was chosen on a selection set
(seed 777, 300 images; benchmarks/pointing_game.py --seed 777) and is reported on seed 1234,
with the plain maximum beside it."""

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
    refine: bool  # the peak: refined within its 3 x 3 cells (True) or the bilinear maximum
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


def _central_argmax(m: np.ndarray) -> tuple[int, int]:
    """(row, col) of the maximum of m [h, w]; on ties, the tied cell nearest the ties' centroid
    (not the first one, which would pull every tie up and to the left)."""
    top = m.max()
    where = np.argwhere(m >= top - 1e-6 * max(abs(float(top)), 1e-12))  # [K, 2]
    pick = np.argmin(((where - where.mean(0)) ** 2).sum(1))  # the first on equal distance
    return int(where[pick, 0]), int(where[pick, 1])


def refined_peaks(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sub-cell peak positions (row, col) [B], in cell units, of maps [B, g, g]: the maximal cell,
    moved to the centroid of the map's excess over its median (the background level) in the 3 x 3
    cells around it (around tied maxima, the cells within one of their centroid). A patch-level map
    cannot say where inside the peak patch the evidence is; its neighbours can: an object that
    straddles two patches lights both, and the centroid sits between them, as sub-pixel peak
    localisation does for keypoint heatmaps."""
    maps = np.asarray(maps, dtype=np.float64)
    g_rows, g_cols = maps.shape[-2:]
    rows, cols = np.empty(len(maps)), np.empty(len(maps))
    for i, m in enumerate(maps):
        top = m.max()
        r, c = np.argwhere(m >= top - 1e-6 * max(abs(float(top)), 1e-12)).mean(0)  # tied maxima: their centroid
        r0, r1 = max(0, int(np.floor(r - 1))), min(g_rows, int(np.ceil(r + 1)) + 1)  # 3 cells around one maximum,
        c0, c1 = max(0, int(np.floor(c - 1))), min(g_cols, int(np.ceil(c + 1)) + 1)  # 4 around a tied pair
        weight = np.clip(m[r0:r1, c0:c1] - np.median(m), 0, None)  # [<=4, <=4]
        if weight.sum() <= 0:  # a flat map: the maxima themselves
            rows[i], cols[i] = r, c
            continue
        rr, cc = np.mgrid[r0:r1, c0:c1]
        rows[i], cols[i] = (weight * rr).sum() / weight.sum(), (weight * cc).sum() / weight.sum()
    return rows, cols


def peaks(maps: np.ndarray, size: int = 64, refine: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Pixel row and column [B] of each map's peak, for maps [B, g, g] over a size x size image.

    refine (the default): `refined_peaks`, mapped from cell units to pixels (cell centres at
    (i + 0.5) * size / g - 0.5). refine=False: the maximum of the map upsampled bilinearly to
    size x size, which always lies on a cell centre; two equal neighbouring cells, or a cell at the
    border, make a plateau of maxima, and the peak is the plateau's pixel nearest its centroid.
    """
    maps = np.asarray(maps)
    if refine:
        rows, cols = refined_peaks(maps)
        to_px = lambda v, g: np.clip(np.rint((v + 0.5) * size / g - 0.5), 0, size - 1).astype(np.int64)
        return to_px(rows, maps.shape[-2]), to_px(cols, maps.shape[-1])
    up = upsample(maps, size)  # shape = [B, size, size]
    flat = np.array([r * size + c for r, c in map(_central_argmax, up)], dtype=np.int64)
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


def pointing_hits(maps: np.ndarray, masks: np.ndarray, tolerance: float = 0.0, refine: bool = True) -> np.ndarray:
    """Whether each map's peak (`peaks`) lies in (or within tolerance px of) its mask: maps [B, g, g],
    masks bool [B, S, S] -> bool [B]."""
    rows, cols = peaks(maps, masks.shape[-1], refine)
    return _near(masks, rows, cols, tolerance)


def _pixels(clip: Clip, images) -> torch.Tensor:
    """Model inputs [B, 3, S, S] for 64-px shapes images: the fast path when the model is 64 px."""
    if clip.image_size == 64:
        arrays = np.stack([np.asarray(im) for im in images])  # [B, 64, 64, 3] uint8
        return arrays_to_pixels(arrays, clip.processor.image_mean, clip.processor.image_std)
    return pixel_values(clip, images)


def pointing_game(clip: Clip, methods: Sequence[str] = METHODS, n: int = 500, seed: int = 1234,
                  prompt: str = "a {colour} {shape}", max_objects: int = 1, tolerance: float = 0.0,
                  batch_size: int = 50, refine: bool = True) -> list[PointingResult]:
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
            rows, cols = peaks(maps, 64, refine)
            hits[part] = _near(masks[part], rows, cols, tolerance)
            other[part] = _near(others[part], rows, cols, tolerance) & ~hits[part]
        seconds = time.perf_counter() - t0
        by_style = {str(st): float(hits[styles == st].mean()) for st in sorted(set(styles))}
        results.append(PointingResult(method, prompt, f"2-{max_objects}" if multi else "1", tolerance, refine, n,
                                      int(hits.sum()), int(other.sum()), by_style, seconds))
    return results


def chance_rate(n: int = 500, seed: int = 1234, max_objects: int = 1) -> float:
    """The hit rate of a uniformly random peak: the mean fraction of the image the named object covers."""
    world = ShapesWorld(seed=seed, split="eval", min_objects=2 if max_objects > 1 else 1, max_objects=max_objects)
    return float(np.mean([object_mask(s.objects[0]).mean() for s in world.take(n)]))
