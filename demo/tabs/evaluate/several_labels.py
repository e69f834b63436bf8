"""The Evaluate tab's several-labels study (no Gradio): shapes-world scenes of 2 or 3 objects, each labelled
with every shape (or colour) in it, scored by the session's model with the tab's prompt names and templates.

core.multilabel makes the numbers: mean average precision (threshold-free) and per-class F1 at the model's
own per-class decision (sigmoid models) or at per-class cosine thresholds chosen for F1 on a calibration
half (softmax models, stated as such). The record it returns lets the zero-shot tab list the labels present
in each of its images for the same model, classes and templates (demo.tabs.shared.prediction_sets).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from core.errors import UserInputError
from core.multilabel import encode_scenes, multilabel_study, targets_of

TASKS = {"shape": "shape", "colour": "colour"}  # the tab's label kinds that a scene has several of
COLUMNS = ["class", "prompt name", "images with it", "AP", "F1 at the decision", "threshold"]


def check_several_labels(source: str, kind: str) -> None:
    """A clear error when several labels are asked of a set that has one label per image."""
    if source != "shapes world" or kind not in TASKS:
        raise UserInputError("several labels per image are scored on shapes-world scenes labelled by shape or colour: "
                             "choose the shapes world and the label 'shape' or 'colour', or untick several labels")


def several_labels_report(clip, class_emb: np.ndarray, classnames: list[str], kind: str, n: int, seed: int,
                          progress=None) -> dict:
    """The study on n scenes drawn with `seed`; class_emb [C, D]: the ensemble head of the tab's prompts."""
    emb, scenes = encode_scenes(clip, n, seed, progress)
    targets = targets_of(scenes, kind, classnames)
    study = multilabel_study(emb @ class_emb.T, targets, clip.family.rule, clip.logit_scale, clip.logit_bias, seed)
    return {"task": kind, "n": n, "seed": seed, "classes": list(classnames), "images_with": targets.sum(0).tolist(),
            "rule": clip.family.rule, "logit_scale": float(clip.logit_scale), "logit_bias": float(clip.logit_bias),
            **study}


def several_labels_markdown(report: dict) -> str:
    """The numbers with how each was made."""
    return (f"**Several labels per image** ({report['n']:,} shapes-world scenes of 2 or 3 objects, seed {report['seed']}, "
            f"{report['labels_per_image']:.2f} {report['task']} labels per scene; scored on a held-out half of "
            f"{report['n_evaluation']:,}): mean average precision (scikit-learn's, over the classes present, no threshold) "
            f"**{100 * report['mAP']:.1f}%**; mean F1 **{100 * report['mean_f1']:.1f}%** at the decision: "
            f"{report['decision']}" + (f", {report['n_calibration']:,} images" if report["score"] == "cosine" else "")
            + ". *Use the calibrated scale* also gives the zero-shot tab these per-class decisions.")


def several_labels_frame(report: dict, prompt_names: list[str]) -> pd.DataFrame:
    """One row per class: how many scenes hold it, its AP, its F1 and its threshold."""
    pct = lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"  # noqa: E731
    unit = "p ≥ " if report["score"] != "cosine" else "cos ≥ "
    rows = [[c, p, k, pct(ap), pct(f1), "never" if not np.isfinite(t) else f"{unit}{t:.3f}"]
            for c, p, k, ap, f1, t in zip(report["classes"], prompt_names, report["images_with"], report["ap"],
                                          report["f1"], report["thresholds"])]
    return pd.DataFrame(rows, columns=COLUMNS)


def several_labels_record(report: dict) -> dict:
    """What the zero-shot tab needs to decide each class of its images the same way."""
    thresholds = [float(t) if np.isfinite(t) else None for t in report["thresholds"]]  # None: never present
    return {"rule": report["rule"], "score": report["score"], "thresholds": thresholds,
            "decision": report["decision"], "logit_scale": report["logit_scale"], "logit_bias": report["logit_bias"],
            "mAP": report["mAP"], "mean_f1": report["mean_f1"], "n": report["n"]}

