"""The evaluation study against hand-worked cases and plain NumPy: confusion matrix, per-class table,
confusion order, greedy template selection, and the linear probe on a toy problem with a known answer."""

import json
import math

import numpy as np
import pytest
import torch

from core.errors import UserInputError
from core.eval_study import (confusion_matrix, confusion_order, ensemble, forward_select_templates, per_class_table,
                             row_normalise, run_study, split_halves, template_accuracies)
from core.probe import linear_probe_curve


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_confusion_matrix_and_per_class_table_worked_by_hand():
    y_true = [0, 0, 0, 0, 1, 1, 2, 2, 2]
    y_pred = [0, 0, 1, 2, 1, 0, 1, 1, 2]
    conf = confusion_matrix(y_true, y_pred, 4)
    assert conf.tolist() == [[2, 1, 1, 0], [1, 1, 0, 0], [0, 2, 1, 0], [0, 0, 0, 0]]
    assert row_normalise(conf)[0].tolist() == [0.5, 0.25, 0.25, 0.0]
    assert row_normalise(conf)[3].tolist() == [0.0] * 4  # no images: an empty row, not NaN
    rows = per_class_table(conf, ["a", "b", "c", "d"])
    assert [r.n for r in rows] == [4, 2, 3, 0]
    assert [r.recall for r in rows[:3]] == pytest.approx([2 / 4, 1 / 2, 1 / 3])
    assert [r.precision for r in rows[:3]] == pytest.approx([2 / 3, 1 / 4, 1 / 2])
    assert math.isnan(rows[3].recall) and math.isnan(rows[3].precision)
    # class a: one b and one c (a tie, the lower index wins); class c: two b out of three
    assert (rows[0].top_confusion, rows[0].top_confusion_share) == ("b", pytest.approx(0.25))
    assert (rows[2].top_confusion, rows[2].top_confusion_index, rows[2].top_confusion_share) == ("b", 1, pytest.approx(2 / 3))
    assert rows[3].top_confusion is None
    with pytest.raises(UserInputError, match="outside"):
        confusion_matrix([0, 5], [0, 1], 4)


def test_confusion_matrix_and_recall_match_numpy_loops():
    rng = np.random.default_rng(0)
    c, n = 7, 500
    y, p = rng.integers(0, c, n), rng.integers(0, c, n)
    right = rng.random(n) < 0.5
    p[right] = y[right]  # about half the predictions right
    conf = confusion_matrix(torch.as_tensor(y), p, c)
    expect = np.zeros((c, c), dtype=int)
    for t, q in zip(y, p):
        expect[t, q] += 1
    assert (conf == expect).all()
    rows = per_class_table(conf)
    for k in range(c):
        assert rows[k].recall == pytest.approx(np.mean(p[y == k] == k))
        assert rows[k].precision == pytest.approx(np.mean(y[p == k] == k))


def test_confusion_order_puts_mutually_confused_classes_side_by_side():
    # six classes; 0 <-> 4 and 1 <-> 5 confuse each other heavily, the rest a little at random
    rng = np.random.default_rng(1)
    conf = np.diag([50] * 6) + rng.integers(0, 3, (6, 6))
    conf[0, 4], conf[4, 0], conf[1, 5], conf[5, 1] = 30, 25, 20, 28
    order = confusion_order(conf)
    assert sorted(order) == list(range(6))
    pos = {c: i for i, c in enumerate(order)}
    assert abs(pos[0] - pos[4]) == 1 and abs(pos[1] - pos[5]) == 1
    assert confusion_order(conf) == order  # deterministic


def test_split_halves_is_stratified_disjoint_and_seeded():
    y = np.repeat(np.arange(4), [10, 7, 1, 6])
    a, b = split_halves(y, seed=3)
    assert np.intersect1d(a, b).size == 0 and len(a) + len(b) == len(y)
    assert np.bincount(y[a], minlength=4).tolist() == [5, 4, 1, 3]  # floor(n / 2 + 0.5) per class
    assert all((x == z).all() for x, z in zip((a, b), split_halves(y, seed=3)))
    assert not (split_halves(y, seed=4)[0] == a).all()


def _toy_templates(rng, n=200, c=5, d=16, t=4, good=2, noise=(1.5, 1.5, 0.05, 1.5)):
    """Images near class directions; template t's class embeddings are the directions plus noise[t]."""
    means = _unit(rng.normal(size=(c, d)))
    y = rng.integers(0, c, n)
    img = _unit(means[y] + 0.35 * rng.normal(size=(n, d)))
    emb = _unit(means[None] + np.array(noise)[:t, None, None] * rng.normal(size=(t, c, d)))  # [T, C, D]
    return img.astype(np.float32), y, emb.astype(np.float32)


def _numpy_greedy(img, y, emb, max_count):
    """The notebook's loop, written plainly: try every unused template, keep the best if it improves."""
    chosen, best = [], -1.0
    while len(chosen) < max_count:
        scores = []
        for t in range(len(emb)):
            if t in chosen:
                scores.append(-1.0)
                continue
            w = emb[chosen + [t]].mean(0)
            w /= np.linalg.norm(w, axis=1, keepdims=True)
            scores.append(np.mean((img @ w.T).argmax(1) == y))
        t = int(np.argmax(scores))
        if scores[t] <= best:
            break
        chosen.append(t)
        best = scores[t]
    return chosen, best


def test_forward_selection_picks_the_one_good_template():
    img, y, emb = _toy_templates(np.random.default_rng(2))
    sel = forward_select_templates(img, y, emb, ["n0", "n1", "good", "n3"], seed=0)
    assert sel.chosen[0] == 2 and sel.best_single == 2 and sel.chosen_templates[0] == "good"
    assert sel.n_selection + sel.n_heldout == len(y)
    assert sel.chosen_selection >= sel.full_selection and sel.chosen_selection >= sel.single_selection
    assert sel.single_heldout == pytest.approx(sel.per_template_heldout[2])
    assert sel.gain_over_full == pytest.approx(sel.chosen_heldout - sel.full_heldout)
    json.dumps(sel.to_dict())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forward_selection_matches_a_plain_numpy_greedy(seed):
    rng = np.random.default_rng(10 + seed)
    img, y, emb = _toy_templates(rng, n=240, c=6, t=7, noise=tuple(rng.uniform(0.6, 1.6, 7)))
    a, b = split_halves(y, seed)
    steps = []
    sel = forward_select_templates(torch.as_tensor(img), y, torch.as_tensor(emb), seed=seed, max_templates=5,
                                   progress=lambda done, total: steps.append((done, total)))
    chosen, best = _numpy_greedy(img[a], y[a], emb, 5)
    assert sel.chosen == chosen and sel.chosen_selection == pytest.approx(best)
    assert sel.steps[-1] == pytest.approx(best) and sel.steps == sorted(sel.steps)
    w = ensemble(emb, chosen)
    assert sel.chosen_heldout == pytest.approx(np.mean((img[b] @ w.T).argmax(1) == y[b]))
    full = _unit(emb.mean(0))
    assert sel.full_heldout == pytest.approx(np.mean((img[b] @ full.T).argmax(1) == y[b]))
    assert np.allclose(template_accuracies(img[b], y[b], emb), sel.per_template_heldout)
    assert steps[-1] == (5, 5) and [d for d, _ in steps] == sorted(d for d, _ in steps)


def _separable(rng, c=4, d=12, per_class=30):
    axes = np.eye(d)[:c]  # class k lives near axis k
    y = np.repeat(np.arange(c), per_class)
    x = _unit(axes[y] + 0.15 * rng.normal(size=(len(y), d)))
    return x.astype(np.float32), y, axes


def test_linear_probe_on_a_separable_problem_reaches_full_accuracy():
    rng = np.random.default_rng(3)
    x, y, axes = _separable(rng)
    xt, yt, _ = _separable(rng, per_class=20)
    calls = []
    curve = linear_probe_curve(x, y, xt, yt, ks=(1, 4, 8, 64), seeds=2, zero_shot_head=axes,
                               progress=lambda done, total: calls.append((done, total)))
    by = {p.label: p for p in curve.points}
    assert list(by) == ["1", "4", "8", "all"] and curve.skipped_ks == [64]
    assert by["8"].mean == 1.0 and by["all"].mean == 1.0 and by["all"].n_train == len(y)
    assert by["4"].n_train == 16 and len(by["4"].accuracies) == 2
    assert by["1"].cs == [1.0, 1.0]  # k = 1: the fixed C
    assert curve.zero_shot == 1.0 and curve.num_classes == 4
    assert calls == [(i, 7) for i in range(1, 8)]
    json.dumps(curve.to_dict())


def test_progress_that_raises_stops_the_work():
    rng = np.random.default_rng(4)
    x, y, _ = _separable(rng)

    class Stop(Exception):
        pass

    def stop(done, total):
        raise Stop

    with pytest.raises(Stop):
        linear_probe_curve(x, y, x, y, ks=(2,), seeds=1, progress=stop)
    img, yy, emb = _toy_templates(rng)
    with pytest.raises(Stop):
        forward_select_templates(img, yy, emb, progress=stop)


def test_run_study_end_to_end_is_json_ready():
    rng = np.random.default_rng(5)
    img, y, emb = _toy_templates(rng, n=160, c=4, t=3, noise=(1.0, 0.1, 1.0))
    seen = []
    study = run_study(img, y, emb, ["a {}", "b {}", "c {}"], list("wxyz"), ks=(1, 2), seeds=1,
                      progress=lambda done, total: seen.append((done, total)))
    assert study.selection.chosen[0] == 1 and study.probe.points[-1].label == "all"
    assert sum(r.n for r in study.per_class) == 160 and sorted(study.order) == [0, 1, 2, 3]
    assert seen[-1] == (2000, 2000) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    json.dumps(study.to_dict())


def test_cli_refuses_bad_study_input_with_one_line(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "evaluate.py"
    spec = importlib.util.spec_from_file_location("evaluate_cli", path)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    for args, expect in ((["--data", "./elsewhere", "--linear-probe"], "--data shapes only"),
                         (["--linear-probe", "--shots", "1,x"], "--shots"),
                         (["--select-templates", "--probe-seeds", "0"], "--probe-seeds")):
        assert cli.main(args) == 1  # refused before any model is loaded
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expect in err and len(err.strip().splitlines()) == 1


def test_finite_makes_a_study_dict_standard_json():
    import json

    from core.eval_study import finite

    raw = {"recall": [float("nan"), np.float32(0.5), (1, np.inf)], "n": np.int64(3), "name": "cat"}
    out = finite(raw)
    assert out == {"recall": [None, 0.5, [1, None]], "n": 3, "name": "cat"}
    json.dumps(out, allow_nan=False)  # raises on NaN or infinity
