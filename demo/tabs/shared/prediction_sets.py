"""Prediction sets ("none of these") and several labels per image on the zero-shot view, from a calibration
made in the Evaluate tab.

The record (demo.tabs.evaluate.calibration.zero_shot_record) holds the fitted scale and the conformal q
of one model, class list and template list, and its several-labels decision (the sigmoid rule, or a cosine
threshold per class); they apply only to that same model, classes and templates. The sets are drawn at the
fitted scale whatever the slider shows (q was found there).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from core.calibration import prediction_sets, softmax


def applies(record: dict, s) -> str | None:
    """None when the calibration fits these scores; otherwise what differs, for the notice."""
    if record["model"] != s.model_name:
        return f"it was made for the model `{record['model']}`"
    if list(record["classnames"]) != list(s.classnames):
        return f"it was made for {len(record['classnames'])} other class names"
    if list(record["templates"]) != list(s.templates):
        return "it was made with other templates"
    return None


def labels_present(decision: dict, cosines: np.ndarray) -> np.ndarray:
    """[N, C] bool: the classes decided present in each image of cosines [N, C], by the record's decision."""
    cos = np.asarray(cosines, dtype=np.float64)
    if decision["score"] == "cosine":
        scores_ = cos
    else:
        scores_ = 1.0 / (1.0 + np.exp(-(decision["logit_scale"] * cos + decision["logit_bias"])))
    return scores_ >= np.asarray([np.inf if t is None else t for t in decision["thresholds"]])[None, :]


def with_prediction_sets(view, s, record: dict | None):
    """The view with each image's set and labels present (info, batch table, JSON) when the record applies; a
    notice when it does not."""
    if record is None:
        return view
    why = applies(record, s)
    coverage = f"{record['target_coverage']:.0%}" if record.get("target_coverage") else "?"
    if why is not None:
        note = (f"ℹ️ No prediction sets or several labels: the calibration from the Evaluate tab ({record['source']}) "
                f"does not match what is shown: {why}. Calibrate these classes and templates there to get them here.")
        return dataclasses.replace(view, info=f"{view.info}  \n{note}")
    cos = np.asarray(s.cosines, dtype=np.float64)  # [N, C]
    batch, data, info = view.batch.copy(), dict(view.data), [view.info]
    if record.get("q") is not None:
        sets = prediction_sets(softmax(record["fitted_scale"] * cos), record["q"])
        named = [[s.classnames[j] for j in np.flatnonzero(row)] for row in sets]
        info.append(f"**Prediction set at {coverage} coverage** for {s.names[0]}: **{braced(named[0])}** (split "
                    f"conformal prediction calibrated in the Evaluate tab on {record['source']}, "
                    f"{record['n_calibration']:,} images, at its fitted scale {record['fitted_scale']:.2f}: a class is in "
                    f"the set when its probability there is at least {1 - record['q']:.3f}; on that set's held-out half "
                    f"the sets held the true class {record['coverage']:.1%} of the time. An empty set says none of these "
                    "classes.)")
        batch[f"set ({coverage})"] = [braced(n) for n in named]
        data["prediction_sets"] = {
            "target_coverage": record["target_coverage"], "q": record["q"], "fitted_scale": record["fitted_scale"],
            "calibrated_on": record["source"], "images": [{"image": name, "set": n} for name, n in zip(s.names, named)]}
    decision = record.get("several_labels")
    if decision:
        present = [[s.classnames[j] for j in np.flatnonzero(row)] for row in labels_present(decision, cos)]
        info.append(f"**Labels present** in {s.names[0]}: **{braced(present[0])}** (several labels per image: "
                    f"{decision['decision']}, from the Evaluate tab's scenes of 2 or 3 objects, where this decision had "
                    f"mAP {100 * decision['mAP']:.1f}% and mean F1 {100 * decision['mean_f1']:.1f}%; thresholds chosen there may "
                    "call more classes present in an image of one object, whose cosines run higher.)")
        batch["labels present"] = [braced(n) for n in present]
        data["several_labels"] = {"decision": decision["decision"], "score": decision["score"],
                                  "thresholds": decision["thresholds"], "calibrated_on": record["source"],
                                  "images": [{"image": name, "labels": n} for name, n in zip(s.names, present)]}
    return dataclasses.replace(view, info="  \n".join(info), batch=batch, data=data)


def braced(names: list[str]) -> str:
    """{a, b} for a set of class names, "none of these" for an empty one."""
    return "{" + ", ".join(names) + "}" if names else "none of these"
