"""Several labels per image: which shapes (or colours) are in a shapes-world scene of 2 or 3 objects.

A zero-shot head scores every class for every image; a class is decided present by the model's own
rule where it has one for that (a sigmoid-trained model: sigmoid(scale x cosine + bias) >= 0.5), or
otherwise by a per-class threshold on the cosine that maximises F1 on a calibration half (stated as
such: a softmax model has no per-class decision of its own). Scored on the other half: mean average
precision (ranking, threshold-free) and per-class F1 at the decision (core.calibration).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from . import calibration as cal
from .model import Clip
from .shapes import COLOURS, SHAPES, ShapesWorld

TASKS = {"shape": list(SHAPES), "colour": [f"{c} shape" for c in COLOURS]}


def multi_object_scenes(n: int, seed: int, image_size: int = 64):
    """n eval-split scenes of 2 or 3 objects, drawn with `seed`."""
    return ShapesWorld(seed=seed, split="eval", image_size=image_size, min_objects=2, max_objects=3).take(n)


def targets_of(samples, task: str, names: Sequence[str] | None = None) -> np.ndarray:
    """[N, C] 0/1: which classes of the task (in the order of `names`, default TASKS[task]) appear in each
    scene (a class twice counts once)."""
    names = list(names or TASKS[task])
    out = np.zeros((len(samples), len(names)), dtype=np.int64)
    for i, s in enumerate(samples):
        for o in s.objects:
            out[i, names.index(o.shape if task == "shape" else f"{o.colour} shape")] = 1
    return out


def encode_scenes(clip: Clip, n: int, seed: int, progress: Callable[[int, int], None] | None = None):
    """(image embeddings [N, D] float32, the scenes): n multi-object scenes encoded by `clip`; progress(done,
    total) after each batch (an exception it raises stops the work)."""
    from .encode import arrays_to_pixels, encode_images

    samples = multi_object_scenes(n, seed, clip.image_size)
    pixels = arrays_to_pixels(np.stack([np.asarray(s.image) for s in samples]), clip.processor.image_mean,
                              clip.processor.image_std)
    return encode_images(clip, pixels, progress=progress).numpy(), samples


def multilabel_study(cosines: np.ndarray, targets: np.ndarray, rule: str, scale: float, bias: float = 0.0,
                     seed: int = 0) -> dict:
    """mAP and per-class F1 on an evaluation half; the decision: the sigmoid rule at 0.5, or per-class cosine
    thresholds chosen for F1 on the calibration half."""
    rng = np.random.default_rng([seed, 3])
    order = rng.permutation(len(targets))
    calib, held = np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2:])
    if rule == "sigmoid":
        scores_ = 1.0 / (1.0 + np.exp(-(scale * cosines + bias)))
        thresholds, how = np.full(cosines.shape[1], 0.5), "the model's sigmoid, present when p >= 0.5"
        score = "sigmoid probability"
    else:
        score = "cosine"
        scores_ = cosines
        thresholds = cal.f1_thresholds(cosines[calib], targets[calib])
        how = "per-class cosine thresholds chosen for F1 on a calibration half (a softmax model decides no class alone)"
    out = cal.multilabel_scores(scores_[held], targets[held], thresholds)
    return {**out, "decision": how, "score": score, "thresholds": [float(t) for t in thresholds], "n_calibration": int(len(calib)),
            "n_evaluation": int(len(held)), "labels_per_image": float(targets.sum(1).mean())}


def evaluate_multilabel(clip: Clip, n: int = 1000, seed: int = 0, task: str = "shape",
                        templates: Sequence[str] = ("a photo of a {}.",)) -> dict:
    """The multi-label study of `clip` on n multi-object shapes-world scenes."""
    from .zeroshot import build_classifier

    img, samples = encode_scenes(clip, n, seed)
    head = build_classifier(clip, TASKS[task], templates).numpy()
    return {"task": task, "n": n, "seed": seed, "classes": TASKS[task],
            **multilabel_study(img @ head.T, targets_of(samples, task), clip.family.rule, clip.logit_scale,
                               clip.logit_bias, seed)}
