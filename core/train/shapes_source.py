"""The shapes world as a training source, and its in-run evaluation.

Everything the trainer knows about the shapes world is here, not in the loop: minimal-pair
batches (hard negatives), the placement curriculum, the fixed probe set of live views, and the
zero-shot eval (colour, shape, colour x shape, held-out combinations) run every `eval_every` steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..encode import arrays_to_pixels
from ..model import OPENAI_MEAN, OPENAI_STD
from ..shapes import COLOURS, SHAPES, ShapesWorld
from .data import Batch, TextTokens

EVAL_SEED_OFFSET = 10_000  # the in-run eval's images: seed + this, on the eval split
CHANCE = {"colour": 1 / 8, "shape": 1 / 8, "combo": 1 / 64, "held_out": 1 / 64}


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
    tokens: TextTokens | None = None  # when set, batches carry token ids (tokenized in the data workers)

    def __post_init__(self) -> None:
        self.world = ShapesWorld(seed=self.seed, split="train", image_size=self.image_size)

    def _to_batch(self, samples: list, n_groups: int = 0, group_size: int = 0, labels: bool = False) -> Batch:
        arr = np.stack([np.asarray(s.image) for s in samples])  # [B, S, S, 3] uint8
        captions = [s.caption for s in samples]
        extra = {"labels": [s.labels for s in samples]} if labels else {}
        if self.as_uint8:
            pixels = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()  # [B, 3, S, S] uint8
            b = Batch(pixels, captions, n_groups, group_size, tuple(self.mean), tuple(self.std), **extra)
        else:
            b = Batch(arrays_to_pixels(arr, self.mean, self.std), captions, n_groups, group_size, **extra)
        return b.tokenized(self.tokens)

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
        return self._to_batch(samples, group, group_size)

    def probe(self, n: int) -> Batch:
        """A fixed set for live views: n single-object images of the eval split, with labels.

        The first 16 (the probe matrix of the Train tab) hold every colour twice, in two different
        drawing styles, with shapes drawn at random: a batch whose diagonal can emerge from what a
        short run learns first (colour, then style). Of 16 pairs drawn at random, about 2 share a
        colour and a style, so a model that knows colour and style but not yet shape has no way to
        tell them apart; measured at step 300 of quick-demo: 88% row accuracy on this batch, 61% on
        average over random batches of 16."""
        eval_world = ShapesWorld(seed=self.seed + EVAL_SEED_OFFSET + 1, split="eval", image_size=self.image_size,
                                 min_objects=1, max_objects=1)
        rng = np.random.default_rng(self.seed + EVAL_SEED_OFFSET + 2)
        first = []
        for i, colour in enumerate(COLOURS):
            for j, style in enumerate(rng.choice(eval_world.styles, size=2, replace=False)):
                first.append(eval_world.sample(2 * i + j, stream=3, colour=colour, style=str(style)))
        order = rng.permutation(len(first))  # not grouped by colour on the matrix
        samples = [first[k] for k in order][:n] + eval_world.take(max(0, n - len(first)))
        return self._to_batch(samples, labels=True)

    def evaluator(self, cfg) -> "ShapesEval | None":
        """The in-run eval of this source (None when cfg.log.eval_every is 0)."""
        if not cfg.log.eval_every:
            return None
        from ..zeroshot import template_presets

        return ShapesEval(n=cfg.log.eval_samples, seed=cfg.data.seed + EVAL_SEED_OFFSET,
                          templates=tuple(template_presets()[cfg.log.eval_templates]))


@dataclass
class ShapesEval:
    """Zero-shot accuracy on n fresh eval-split images: exactly `core.evaluate.evaluate_shapes`
    (and so scripts/evaluate.py), with each task's chance level added as `chance`."""

    n: int = 500
    seed: int = EVAL_SEED_OFFSET
    templates: tuple[str, ...] = ("a photo of a {}.",)

    def __call__(self, clip) -> dict:
        from ..evaluate import evaluate_shapes

        results = evaluate_shapes(clip, n=self.n, seed=self.seed, templates=self.templates)
        for task, chance in CHANCE.items():
            if task in results:
                results[task]["chance"] = chance
        return results
