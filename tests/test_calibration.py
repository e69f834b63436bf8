"""What a zero-shot score means: ECE, NLL and Brier against hand computations, temperature scaling
recovers a known scale, conformal sets reach their stated coverage over many draws, and multi-label
mAP is scikit-learn's average precision over the classes present."""

import math

import numpy as np
import pytest

from core import calibration as cal


def test_ece_nll_and_brier_match_a_hand_computation():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.55, 0.45]])
    y = np.array([0, 1, 1, 0])
    # two bins: (0, 0.5] and (0.5, 1]; every top-1 confidence is above 0.5
    rel = cal.reliability(probs, y, bins=2)
    conf, correct = np.array([0.9, 0.6, 0.7, 0.55]), np.array([1, 0, 1, 1])
    assert rel.count.tolist() == [0, 4] and rel.ece == pytest.approx(abs(correct.mean() - conf.mean()))
    assert cal.nll(probs, y) == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.7, 0.55])))
    assert cal.brier(probs, y) == pytest.approx(np.mean([0.02, 0.72, 0.18, 0.405]))
    rel10 = cal.reliability(probs, y, bins=40)  # each image alone in its bin: ECE = mean |correct - conf|
    assert rel10.ece == pytest.approx(np.mean(np.abs(correct - conf)))
    assert math.isnan(rel10.accuracy[0]) and rel10.to_dict()["accuracy"][0] is None


def test_a_fitted_scale_recovers_the_scale_that_drew_the_labels():
    rng = np.random.default_rng(0)
    cos = rng.uniform(-0.1, 0.4, size=(20000, 10))
    true_scale = 30.0
    p = cal.softmax(true_scale * cos)
    y = np.array([rng.choice(10, p=row) for row in p])
    assert cal.fit_scale(cos, y) == pytest.approx(true_scale, rel=0.05)
    report = cal.calibrate(cos, y, model_scale=100.0)  # an over-confident model scale
    assert report["after"]["ece"] < report["before"]["ece"] and report["after"]["nll"] < report["before"]["nll"]
    assert report["after"]["accuracy"] == report["before"]["accuracy"]  # one scale never reorders the classes


def test_conformal_sets_reach_their_stated_coverage_over_many_draws():
    rng = np.random.default_rng(1)
    alpha, coverages = 0.1, []
    for _ in range(200):
        cos = rng.uniform(0, 0.3, size=(400, 8))
        y = np.array([rng.choice(8, p=row) for row in cal.softmax(20 * cos)])
        probs = cal.softmax(12 * cos)  # a mis-calibrated model: the guarantee does not need calibration
        q = cal.conformal_quantile(probs[:200], y[:200], alpha)
        coverages.append(cal.set_report(cal.prediction_sets(probs[200:], q), y[200:])["coverage"])
    mean = float(np.mean(coverages))
    # the guarantee: E[coverage] >= 1 - alpha, and at most 1 - alpha + 1/(n + 1) for continuous scores
    assert 1 - alpha - 3 * np.std(coverages) / math.sqrt(200) <= mean <= 1 - alpha + 1 / 201 + 0.01


def test_a_tiny_calibration_set_cannot_promise_the_level_and_keeps_every_class():
    probs = cal.softmax(np.zeros((5, 3)))
    assert cal.conformal_quantile(probs, np.zeros(5, dtype=int), alpha=0.05) == 1.0  # needs n >= 19 for 95%


def test_multilabel_map_is_sklearns_average_precision_over_the_classes_present():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(2)
    targets = (rng.random((50, 4)) < 0.3).astype(int)
    targets[:, 3] = 0  # a class no image has: left out of the mean
    s = targets + rng.normal(0, 0.7, targets.shape)
    out = cal.multilabel_scores(s, targets, np.full(4, 0.5))
    expected = np.mean([average_precision_score(targets[:, c], s[:, c]) for c in range(3)])
    assert out["mAP"] == pytest.approx(expected) and out["ap"][3] is None
    perfect = cal.multilabel_scores(targets[:, :3] * 2.0, targets[:, :3], np.ones(3))
    assert perfect["mAP"] == 1.0 and perfect["mean_f1"] == 1.0


def test_f1_thresholds_separate_a_separable_class_on_the_calibration_images():
    s = np.array([[0.1], [0.2], [0.8], [0.9]])
    t = np.array([[0], [0], [1], [1]])
    assert cal.f1_thresholds(s, t)[0] == 0.8
    assert cal.f1_thresholds(s, np.zeros_like(t))[0] == np.inf


def test_risk_coverage_answers_the_most_confident_first():
    out = cal.risk_coverage(np.array([0.9, 0.2, 0.8, 0.5]), np.array([1, 0, 0, 1]))
    assert out["coverage"] == [0.25, 0.5, 0.75, 1.0] and out["risk"] == pytest.approx([0, 0.5, 1 / 3, 0.5])


def test_abstention_refuses_unknown_classes_more_than_known_ones_and_keeps_its_coverage():
    rng = np.random.default_rng(3)
    n, c = 4000, 8
    y = rng.integers(0, c, n)
    cos = rng.normal(0.15, 0.03, (n, c))
    cos[np.arange(n), y] += 0.08  # each image is closer to its own class: a confident, mostly right classifier
    out = cal.abstention(cos, y, seed=0, alpha=0.1, unknown_share=0.25)
    assert len(out["unknown_classes"]) == 2 and out["n_unknown"] == int(np.isin(y, out["unknown_classes"]).sum())
    assert out["sets"]["coverage"] >= 0.9 - 3 * math.sqrt(0.09 / out["n_evaluation"])
    assert out["unknown"]["empty"] > out["sets"]["empty"]  # unknown images are refused more often
    assert out["auroc"]["max cosine"] > 0.9  # an unknown image is far from every known class


def test_multi_object_scenes_know_which_shapes_they_hold_and_the_study_decides_by_rule():
    from core.multilabel import multi_object_scenes, multilabel_study, targets_of

    scenes = multi_object_scenes(20, seed=1)
    t = targets_of(scenes, "shape")
    assert all(1 <= row.sum() <= 3 for row in t) and all(len(s.objects) in (2, 3) for s in scenes)
    assert all(t[i, ["circle", "square", "triangle", "star", "heart", "cross", "diamond", "hexagon"].index(o.shape)]
               for i, s in enumerate(scenes) for o in s.objects)
    rng = np.random.default_rng(4)
    targets = (rng.random((200, 5)) < 0.4).astype(int)
    cos = 0.2 + 0.1 * targets + rng.normal(0, 0.02, targets.shape)  # present classes sit clearly higher
    soft = multilabel_study(cos, targets, "softmax", 100.0)
    assert soft["mAP"] > 0.99 and soft["mean_f1"] > 0.95 and "calibration half" in soft["decision"]
    sig = multilabel_study(cos, targets, "sigmoid", 100.0, bias=-25.0)  # sigmoid(100 cos - 25) crosses 0.5 at 0.25
    assert sig["thresholds"] == [0.5] * 5 and sig["mean_f1"] > 0.95 and "sigmoid" in sig["decision"]


def test_the_evaluate_cli_scores_several_labels_per_image(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "multi.json"
    done = subprocess.run([sys.executable, "scripts/evaluate.py", "--n", "40", "--seed", "3", "--multilabel",
                           "--json", str(out)], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    multi = json.loads(out.read_text())["multilabel"]
    assert f"mAP {multi['mAP']:.1%}" in done.stdout and multi["n_evaluation"] == 20 and 2 <= multi["labels_per_image"] <= 3
    bad = subprocess.run([sys.executable, "scripts/evaluate.py", "--multilabel", "--task", "combo"], cwd=root,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and bad.stderr.strip().startswith("error:") and "--multilabel" in bad.stderr
