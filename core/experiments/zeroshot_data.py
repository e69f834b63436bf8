"""One seed's encoded zero-shot data for the experiments on a trained model: fresh single-object
eval images of the shapes world, the class prompts of every template, and a seeded, class-stratified
split into a selection half and a held-out half (core.eval_study.split_halves)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BARE, PHOTO = "{}", "a photo of a {}."


@dataclass
class SeedData:
    """img [n, D] (normalised), y [n], template_emb [T, C, D], the templates, and the split's indices."""

    img: np.ndarray
    y: np.ndarray
    template_emb: np.ndarray
    templates: list[str]
    selection: np.ndarray
    held_out: np.ndarray


def templates_of(run) -> list[str]:
    """The recipe's template preset plus the bare class name and "a photo of a {}." (each once)."""
    from ..zeroshot import template_presets

    return list(dict.fromkeys([*template_presets()[run.templates], BARE, PHOTO]))


def encode_samples(clip, samples, check=None) -> np.ndarray:
    """Normalised image embeddings [n, D] of shapes-world samples; check() between batches."""
    from ..encode import arrays_to_pixels, encode_images

    pixels = arrays_to_pixels(np.stack([np.asarray(s.image) for s in samples]), clip.processor.image_mean,
                              clip.processor.image_std)
    return encode_images(clip, pixels, progress=None if check is None else lambda done, total: check()).numpy()


def class_prompts(clip, run, classes, ctx) -> np.ndarray:
    """[T, C, D] prompt embeddings of the recipe's templates, encoded once per run (kept in ctx)."""
    from ..zeroshot import template_embeddings

    key = ("template_emb", run.model, tuple(classes))
    if key not in ctx.cache:
        ctx.cache[key] = template_embeddings(clip, classes, templates_of(run)).numpy()
    return ctx.cache[key]


def encode_seed(clip, run, seed: int, ctx) -> SeedData:
    """Fresh single-object eval images drawn with `seed`, encoded, with the class prompts and the split."""
    from ..eval_study import shapes_task, split_halves
    from ..evaluate import shapes_eval_set

    samples = shapes_eval_set(run.n, seed, clip.image_size)  # single objects, as core.evaluate and the model card
    classes, labels = shapes_task(samples, run.task)
    img = encode_samples(clip, samples, ctx.check)
    y = np.asarray(labels, dtype=np.int64)
    sel, held = split_halves(y, seed)
    return SeedData(img, y, class_prompts(clip, run, classes, ctx), templates_of(run), sel, held)
