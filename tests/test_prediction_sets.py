"""The zero-shot tab's prediction sets from an Evaluate calibration: the classes whose probability at the
fitted scale reaches 1 - q (NumPy), "none of these" for an empty set, and a notice instead of sets when the
calibration was made for another model, other classes or other templates."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from demo.tabs.shared.prediction_sets import with_prediction_sets
from demo.tabs.shared.zero_shot_scores import ZeroShotView

CLASSES, TEMPLATES = ["circle", "star", "heart"], ["a photo of a {}."]


def _scores(cosines):
    return SimpleNamespace(model_name="m", classnames=CLASSES, templates=TEMPLATES, names=["a.png", "b.png"],
                           cosines=torch.tensor(cosines))


def _view():
    return ZeroShotView({}, None, None, pd.DataFrame(), pd.DataFrame({"image": ["a.png", "b.png"]}), "info", {"model": "m"})


def _record(**changes):
    return {"model": "m", "classnames": CLASSES, "templates": TEMPLATES, "source": "shapes world", "fitted_scale": 50.0,
            "q": 0.6, "target_coverage": 0.9, "coverage": 0.91, "n_calibration": 500, **changes}


def test_a_set_holds_the_classes_whose_probability_at_the_fitted_scale_reaches_1_minus_q():
    cos = [[0.30, 0.295, 0.10], [0.20, 0.20, 0.20]]  # two close classes; three equal ones (p = 1/3 each < 0.4)
    v = with_prediction_sets(_view(), _scores(cos), _record())
    z = 50.0 * np.array(cos)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    expected = [[c for c, pc in zip(CLASSES, row) if pc >= 1 - 0.6] for row in p]
    assert [img["set"] for img in v.data["prediction_sets"]["images"]] == expected == [["circle", "star"], []]
    assert list(v.batch["set (90%)"]) == ["{circle, star}", "none of these"]
    assert "Prediction set at 90% coverage" in v.info and "{circle, star}" in v.info and "50.00" in v.info


@pytest.mark.parametrize("changes, why", [(dict(model="other"), "model"), (dict(classnames=["x", "y", "z"]), "class names"),
                                          (dict(templates=["{}"]), "templates")])
def test_a_calibration_of_something_else_gives_a_notice_and_no_sets(changes, why):
    v = with_prediction_sets(_view(), _scores([[0.3, 0.2, 0.1], [0.1, 0.2, 0.3]]), _record(**changes))
    assert "prediction_sets" not in v.data and "set (90%)" not in v.batch and "No prediction sets" in v.info
    assert why in v.info


def test_several_labels_are_the_classes_past_their_own_cosine_threshold():
    """A softmax model's decision: class c is present when its cosine reaches the threshold chosen for it (None:
    never); the sets and the labels are independent columns."""
    decision = {"rule": "softmax", "score": "cosine", "thresholds": [0.25, 0.29, None], "decision": "per-class cosine "
                "thresholds chosen for F1", "logit_scale": 50.0, "logit_bias": 0.0, "mAP": 0.6, "mean_f1": 0.5, "n": 100}
    cos = [[0.30, 0.295, 0.9], [0.20, 0.20, 0.20]]
    v = with_prediction_sets(_view(), _scores(cos), _record(several_labels=decision))
    assert [img["labels"] for img in v.data["several_labels"]["images"]] == [["circle", "star"], []]
    assert list(v.batch["labels present"]) == ["{circle, star}", "none of these"] and "set (90%)" in v.batch
    assert "Labels present" in v.info and "mAP 60.0%" in v.info


def test_several_labels_of_a_sigmoid_model_use_its_own_rule_and_need_no_sets():
    """sigmoid(scale · cos + bias) >= 0.5 (NumPy), with a record that has no conformal sets."""
    decision = {"rule": "sigmoid", "score": "sigmoid probability", "thresholds": [0.5] * 3, "decision": "the model's "
                "sigmoid", "logit_scale": 100.0, "logit_bias": -25.0, "mAP": 0.7, "mean_f1": 0.6, "n": 100}
    cos = np.array([[0.30, 0.24, 0.26], [0.10, 0.251, 0.20]])
    v = with_prediction_sets(_view(), _scores(cos.tolist()), _record(q=None, fitted_scale=None, several_labels=decision))
    expected = [[c for c, p in zip(CLASSES, row) if p >= 0.5] for row in 1 / (1 + np.exp(-(100 * cos - 25)))]
    assert [img["labels"] for img in v.data["several_labels"]["images"]] == expected == [["circle", "heart"], ["star"]]
    assert "prediction_sets" not in v.data and "set (90%)" not in v.batch
