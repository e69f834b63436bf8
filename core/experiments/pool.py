"""Shapes-world data for the experiments that train: a fixed training pool rendered once per seed
(every objective and condition of a seed sees the same images in the same order: same data, same
compute), and eval sets of fresh single-object images with their labels and captions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..model import OPENAI_MEAN, OPENAI_STD, Preset
from ..shapes import STYLES, ShapesWorld, colour_classnames, shape_classnames
from ..train.data import Batch

# The small model the from-scratch experiments train: the bundled `tiny` preset's layout at about a
# sixth of its CPU time per step (16 patches of 16 px, width 96, 3 + 2 layers, 32 text positions).
MICRO = Preset(image_size=64, patch_size=16, vision_width=96, vision_layers=3, vision_heads=3, text_width=96,
               text_layers=2, text_heads=2, embed_dim=96, context_length=32)
EVAL_OFFSET = 50_000  # eval images of seed s are drawn with seed s + this, on the eval split
PLAIN = ("white", "light")  # the backgrounds of the in-distribution set in the shift experiment


@dataclass
class Pool:
    """Images (uint8 [P, 3, S, S]), captions [P] and labels [P] of shapes-world samples."""

    pixels: torch.Tensor
    captions: list[str]
    labels: list[dict]
    styles: list[str]
    backgrounds: list[str]

    def __len__(self) -> int:
        return len(self.captions)

    def batch(self, index: np.ndarray) -> Batch:
        """The pairs at `index` as a training batch (normalised on use: Batch.pixels)."""
        return Batch(self.pixels[torch.as_tensor(index)], [self.captions[i] for i in index],
                     mean=OPENAI_MEAN, std=OPENAI_STD)

    def normalised(self) -> torch.Tensor:
        """Every image as normalised float32 pixels [P, 3, S, S]."""
        from ..encode import normalise_uint8

        return normalise_uint8(self.pixels, OPENAI_MEAN, OPENAI_STD)

    def targets(self, task: str) -> tuple[list[str], np.ndarray]:
        """(class names, labels [P]) of a zero-shot task: 'colour' or 'shape'."""
        if task == "colour":
            names = colour_classnames()
            return names, np.array([names.index(f"{lab['colour']} shape") for lab in self.labels])
        if task == "shape":
            names = shape_classnames()
            return names, np.array([names.index(lab["shape"]) for lab in self.labels])
        raise ValueError(f"task must be colour or shape, got {task!r}")


def render(samples) -> Pool:
    """A pool from shapes-world samples."""
    arr = np.stack([np.asarray(s.image) for s in samples])  # [P, S, S, 3]
    pixels = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
    return Pool(pixels, [s.caption for s in samples], [s.labels for s in samples], [s.style for s in samples],
                [s.background for s in samples])


def train_pool(n: int, seed: int, styles: tuple[str, ...] = STYLES, plain_only: bool = False,
               image_size: int = 64) -> Pool:
    """n single-object pairs of the train split drawn with `seed` (plain_only: white or light backgrounds)."""
    world = ShapesWorld(seed=seed, split="train", image_size=image_size, min_objects=1, max_objects=1, styles=styles)
    return render(_draw(world, n, plain_only))


def eval_pool(n: int, seed: int, styles: tuple[str, ...] = STYLES, plain_only: bool | None = False,
              image_size: int = 64) -> Pool:
    """n fresh single-object images of the eval split. plain_only True: only white or light
    backgrounds; None: only the others (with `styles`, the shifted set of the shift experiment)."""
    world = ShapesWorld(seed=seed + EVAL_OFFSET, split="eval", image_size=image_size, min_objects=1, max_objects=1,
                        styles=styles)
    return render(_draw(world, n, plain_only))


def _draw(world: ShapesWorld, n: int, plain_only: bool | None) -> list:
    """The first n samples of the world whose background passes the filter (False: any; True: plain; None: not plain)."""
    out, i = [], 0
    while len(out) < n:
        s = world[i]
        i += 1
        plain = s.background in PLAIN
        if plain_only is False or (plain if plain_only else not plain):
            out.append(s)
    return out


def order(n_pool: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """[steps, batch_size] pool indices: epochs of seeded permutations, cut into batches."""
    need = steps * batch_size
    rng = np.random.default_rng([seed, 7])
    epochs = [rng.permutation(n_pool) for _ in range(-(-need // n_pool))]
    return np.concatenate(epochs)[:need].reshape(steps, batch_size)
