"""Prediction sets ("none of these") on the zero-shot view, from a calibration made in the Evaluate tab.

The record (demo.tabs.evaluate.calibration.zero_shot_record) holds the fitted scale and the conformal q
of one model, class list and template list; the sets apply only to that same model, classes and
templates, and are drawn at the fitted scale whatever the slider shows (q was found there).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from core.calibration import prediction_sets, softmax


def applies(record: dict, s) -> str | None:
    """None when the calibration fits these scores; otherwise what differs, for the notice."""
    if record.get("q") is None:
        return "it has no prediction sets"
    if record["model"] != s.model_name:
        return f"it was made for the model `{record['model']}`"
    if list(record["classnames"]) != list(s.classnames):
        return f"it was made for {len(record['classnames'])} other class names"
    if list(record["templates"]) != list(s.templates):
        return "it was made with other templates"
    return None


def with_prediction_sets(view, s, record: dict | None):
    """The view with each image's set (info, batch table, JSON) when the record applies; a notice when it does not."""
    if record is None:
        return view
    why = applies(record, s)
    coverage = f"{record['target_coverage']:.0%}" if record.get("target_coverage") else "?"
    if why is not None:
        note = (f"ℹ️ No prediction sets: the calibration from the Evaluate tab ({record['source']}) does not match what "
                f"is shown: {why}. Calibrate these classes and templates there to get {coverage} sets here.")
        return dataclasses.replace(view, info=f"{view.info}  \n{note}")
    cos = np.asarray(s.cosines, dtype=np.float64)  # [N, C]
    sets = prediction_sets(softmax(record["fitted_scale"] * cos), record["q"])
    named = [[s.classnames[j] for j in np.flatnonzero(row)] for row in sets]
    text = lambda names: "{" + ", ".join(names) + "}" if names else "none of these"  # noqa: E731
    info = (f"**Prediction set at {coverage} coverage** for {s.names[0]}: **{text(named[0])}** (split conformal "
            f"prediction calibrated in the Evaluate tab on {record['source']}, {record['n_calibration']:,} images, at its "
            f"fitted scale {record['fitted_scale']:.2f}: a class is in the set when its probability there is at least "
            f"{1 - record['q']:.3f}; on that set's held-out half the sets held the true class {record['coverage']:.1%} "
            "of the time. An empty set says none of these classes.)")
    batch = view.batch.copy()
    batch[f"set ({coverage})"] = [text(n) for n in named]
    data = {**view.data, "prediction_sets": {
        "target_coverage": record["target_coverage"], "q": record["q"], "fitted_scale": record["fitted_scale"],
        "calibrated_on": record["source"], "images": [{"image": name, "set": n} for name, n in zip(s.names, named)]}}
    return dataclasses.replace(view, info=f"{view.info}  \n{info}", batch=batch, data=data)
