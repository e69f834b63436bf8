"""Evaluation: zero-shot accuracy (top-1, top-5, mean per-class recall) and retrieval recall@K."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .encode import arrays_to_pixels, encode_images, encode_texts
from .model import Clip
from .shapes import HELD_OUT, ShapesWorld, colour_classnames, combo_classnames, shape_classnames
from .zeroshot import build_classifier, classify_embeddings


def zero_shot_metrics(probs: torch.Tensor, labels: Sequence[int], num_classes: int | None = None) -> dict:
    """Top-1, top-5 and mean per-class recall from probabilities [N, C] and true class ids [N]."""
    y = torch.as_tensor(list(labels))
    c = num_classes or probs.shape[1]
    top = probs.topk(min(5, probs.shape[1]), dim=1).indices  # [N, k]
    hit1 = top[:, 0] == y
    recalls = [float(hit1[y == k].float().mean()) for k in range(c) if (y == k).any()]
    return {"top1": float(hit1.float().mean()), "top5": float((top == y[:, None]).any(1).float().mean()),
            "mean_per_class_recall": float(np.mean(recalls)) if recalls else float("nan"), "n": len(y)}


def retrieval_metrics(image_emb: torch.Tensor, text_emb: torch.Tensor, text_to_image: Sequence[int] | None = None,
                      ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Recall@K for image->text and text->image retrieval.

    image_emb [N, D], text_emb [M, D], normalised. text_to_image[j] is the image of caption j
    (default: caption j belongs to image j). An image counts as found if any of its captions is in
    the top K.
    """
    owner = torch.as_tensor(list(text_to_image) if text_to_image is not None else range(len(text_emb)))
    sim = image_emb @ text_emb.T  # [N, M]
    out = {}
    for k in ks:
        kt = min(k, sim.shape[1])
        top_t = sim.topk(kt, dim=1).indices  # [N, k] captions per image
        out[f"image_to_text_R@{k}"] = float((owner[top_t] == torch.arange(len(sim))[:, None]).any(1).float().mean())
        ki = min(k, sim.shape[0])
        top_i = sim.T.topk(ki, dim=1).indices  # [M, k] images per caption
        out[f"text_to_image_R@{k}"] = float((top_i == owner[:, None]).any(1).float().mean())
    return out


def shapes_eval_set(n: int, seed: int = 1234, image_size: int = 64):
    """n single-object eval-split samples (all 64 colour×shape combinations can appear)."""
    return ShapesWorld(seed=seed, split="eval", image_size=image_size, min_objects=1, max_objects=1).take(n)


def evaluate_shapes(clip: Clip, n: int = 2000, seed: int = 1234, templates: Sequence[str] = ("a photo of a {}.",),
                    samples=None) -> dict:
    """Zero-shot accuracy on fresh single-object shapes-world images.

    Tasks: colour (8 classes), shape (8), combo (64 colour×shape classes), held_out (images of the
    held-out combinations, classified among all 64), and retrieval recall@K on their captions.
    """
    samples = samples if samples is not None else shapes_eval_set(n, seed, clip.image_size)
    pixels = arrays_to_pixels(np.stack([np.asarray(s.image) for s in samples]), clip.processor.image_mean, clip.processor.image_std)
    img = encode_images(clip, pixels)
    labels = [s.labels for s in samples]
    results = {}
    tasks = {"colour": (colour_classnames(), [list(colour_classnames()).index(f"{l['colour']} shape") for l in labels]),
             "shape": (shape_classnames(), [shape_classnames().index(l["shape"]) for l in labels]),
             "combo": (combo_classnames(), [combo_classnames().index(l["combo"]) for l in labels])}
    for task, (names, y) in tasks.items():
        probs = classify_embeddings(img, build_classifier(clip, names, templates), clip.logit_scale)
        results[task] = zero_shot_metrics(probs, y, len(names))
        if task == "combo":
            held = torch.tensor([l["held_out"] for l in labels])
            if held.any():
                results["held_out"] = zero_shot_metrics(probs[held], torch.as_tensor(y)[held].tolist(), len(names))
                results["held_out"]["combos"] = [f"{c} {s}" for c, s in HELD_OUT]
    txt = encode_texts(clip, [s.caption for s in samples])
    results["retrieval"] = retrieval_metrics(img, txt)
    return results


def format_table(results: dict) -> str:
    """A plain-text table of evaluate_shapes() / evaluate() results."""
    lines = [f"{'task':<12} {'top1':>7} {'top5':>7} {'mpcr':>7} {'n':>6}"]
    for task, m in results.items():
        if isinstance(m, dict) and "top1" in m:
            lines.append(f"{task:<12} {m['top1']:7.2%} {m['top5']:7.2%} {m['mean_per_class_recall']:7.2%} {m['n']:6d}")
    retrieval = results.get("retrieval")
    if retrieval:
        lines.append("retrieval    " + "  ".join(f"{k} {v:.2%}" for k, v in retrieval.items()))
    return "\n".join(lines)


def evaluate_dataset(clip: Clip, dataset, classnames: Sequence[str] | None = None, templates: Sequence[str] = ("a photo of a {}.",),
                     image_column: str = "image", label_column: str | None = "label", text_column: str | None = "text",
                     limit: int | None = None, batch_size: int = 64, progress=None) -> dict:
    """Zero-shot (if a label column exists) and retrieval (if a text column exists) on a datasets source.

    Class names come from `classnames`, else from the label column's ClassLabel names, else from
    the sorted distinct string labels.
    """
    from .data import DataError, to_rgb
    from .encode import pixel_values

    columns = list(getattr(dataset, "column_names", None) or [])
    if image_column not in columns:
        raise DataError(f"dataset has no image column {image_column!r}; columns are {', '.join(columns)}")
    has_labels = label_column in columns if label_column else False
    has_text = text_column in columns if text_column else False
    if not (has_labels or has_text):
        raise DataError(f"dataset has neither a label column ({label_column!r}) nor a text column ({text_column!r})")
    n = len(dataset) if limit is None else min(limit, len(dataset))
    embs, raw_labels, captions = [], [], []
    for start in range(0, n, batch_size):
        rows = dataset.select(range(start, min(n, start + batch_size)))
        embs.append(encode_images(clip, pixel_values(clip, [to_rgb(v) for v in rows[image_column]])))
        if has_labels:
            raw_labels += list(rows[label_column])
        if has_text:
            captions += [c[0] if isinstance(c, (list, tuple)) else str(c) for c in rows[text_column]]
        if progress is not None:
            progress(min(n, start + batch_size), n)
    img = torch.cat(embs)
    results: dict = {}
    if has_labels:
        feature = dataset.features.get(label_column)
        names = (list(classnames) if classnames else
                 list(feature.names) if hasattr(feature, "names") else sorted({str(l) for l in raw_labels}))
        if all(isinstance(l, (int, np.integer)) for l in raw_labels):
            y = [int(l) for l in raw_labels]
        else:
            missing = sorted({str(l) for l in raw_labels} - set(names))
            if missing:
                raise DataError(f"labels {missing[:3]} are not among the class names")
            y = [names.index(str(l)) for l in raw_labels]
        probs = classify_embeddings(img, build_classifier(clip, names, templates), clip.logit_scale)
        results["zero_shot"] = zero_shot_metrics(probs, y, len(names))
    if has_text:
        results["retrieval"] = retrieval_metrics(img, encode_texts(clip, captions))
    return results
