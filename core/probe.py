"""Few-shot linear probes on frozen embeddings: accuracy against shots per class, beside zero-shot.

As in the CLIP paper's linear-probe evaluation, a multinomial logistic regression (scikit-learn,
L-BFGS) is fitted on the embeddings, with its L2 strength chosen on a validation split carved out
of the training examples: a log sweep of C over 1e-6..1e6 (one value per decade), then a refinement
at a quarter and half a decade around the best. The validation examples then join the fit again,
with C scaled by (fit examples / all examples) so that the penalty per example stays the same.

k = 1 leaves nothing to validate on (leave-one-out would remove the class), so it uses a fixed C,
`one_shot_C` (scikit-learn's default, 1.0).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

from .errors import UserInputError

COARSE_CS = tuple(10.0 ** e for e in range(-6, 7))  # 13 values
REFINE = (-0.5, -0.25, 0.25, 0.5)  # decades around the best coarse C


def _np(x, dtype=np.float32) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def fit_probe(x: np.ndarray, y: np.ndarray, c: float, max_iter: int = 1000):
    """A fitted LogisticRegression(C=c, solver='lbfgs') on features [N, D] and labels [N].

    Convergence warnings are silenced: at very large C on separable data L-BFGS stops at max_iter,
    which is the point of trying such a C, not a fault.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=c, solver="lbfgs", max_iter=max_iter).fit(x, y)


def _val_score(model, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(accuracy, -log loss) on the validation examples: higher is better, compared in that order."""
    proba = model.predict_proba(x)  # [N, C'] over model.classes_
    col = np.searchsorted(model.classes_, y)
    acc = float((model.classes_[proba.argmax(axis=1)] == y).mean())
    return acc, float(np.log(np.maximum(proba[np.arange(len(y)), col], 1e-12)).mean())


def choose_c(x_fit: np.ndarray, y_fit: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
             coarse: Sequence[float] = COARSE_CS) -> float:
    """The C with the best validation accuracy (ties: lower log loss, then the smaller C), coarse then refined."""
    def best_of(cs):
        scored = [(_val_score(fit_probe(x_fit, y_fit, c), x_val, y_val), c) for c in cs]
        return max(scored, key=lambda s: s[0])  # max keeps the first of equals: the smaller C

    (score, c0) = best_of(coarse)
    lo, hi = min(coarse), max(coarse)
    refined = [c for c in (c0 * 10.0 ** d for d in REFINE) if lo <= c <= hi]
    if refined:
        (score2, c1) = best_of(refined)
        if score2 > score:
            return c1
    return c0


def _carve(y: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(fit, val) indices: per class, max(1, floor(n * fraction)) images go to val, at least one stays."""
    fit, val = [], []
    for k in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == k))
        m = min(max(1, int(len(idx) * fraction)), len(idx) - 1)
        val.append(idx[:m])
        fit.append(idx[m:])
    return np.concatenate(fit), np.concatenate(val)


def probe_accuracy(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, rng: np.random.Generator,
                   val_fraction: float = 0.25, one_shot_c: float = 1.0) -> tuple[float, float]:
    """(test accuracy, C used) of a probe trained on (x, y): C chosen on a carved validation split,
    or `one_shot_c` when some class has a single example."""
    counts = np.bincount(y)
    if counts[counts > 0].min() < 2:
        c = one_shot_c
    else:
        fit, val = _carve(y, val_fraction, rng)
        c = choose_c(x[fit], y[fit], x[val], y[val]) * len(fit) / len(y)
    model = fit_probe(x, y, c)
    return float((model.predict(x_test) == y_test).mean()), float(c)


@dataclass
class ProbePoint:
    """Probe accuracy at k examples per class (k None: all the training examples), one run per seed."""

    k: int | None
    n_train: int  # examples per fit
    accuracies: list[float]  # per seed
    cs: list[float]  # the C each run used

    @property
    def label(self) -> str:
        return "all" if self.k is None else str(self.k)

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracies))


@dataclass
class ProbeCurve:
    """Linear-probe accuracy against shots per class, and the zero-shot accuracy on the same test images."""

    points: list[ProbePoint]
    zero_shot: float | None
    skipped_ks: list[int]  # k larger than some class's number of training examples
    num_classes: int  # classes present in the training pool
    n_train_pool: int
    n_test: int
    seeds: int

    def to_dict(self) -> dict:
        out = asdict(self)
        out["points"] = [{**asdict(p), "label": p.label, "mean": p.mean, "std": p.std} for p in self.points]
        return out


def linear_probe_curve(train_emb, train_y, test_emb, test_y, ks: Sequence[int] = (1, 2, 4, 8, 16), seeds: int = 3,
                       zero_shot_head=None, val_fraction: float = 0.25, one_shot_c: float = 1.0,
                       include_all: bool = True, progress: Callable[[int, int], None] | None = None) -> ProbeCurve:
    """Probe accuracy on (test_emb [M, D], test_y [M]) after training on k examples per class drawn
    from (train_emb [N, D], train_y [N]), for each k in ks and `seeds` draws (seed s draws with
    default_rng([s, k])), plus one run on all the training examples ("all").

    A k above some class's count is skipped (listed in skipped_ks). zero_shot_head [C, D] (rows
    indexed by the label ids) gives the zero-shot accuracy on the same test images.
    progress(done, total) is called after each fit-and-score.
    """
    x, y = _np(train_emb), _np(train_y, np.int64).ravel()
    xt, yt = _np(test_emb), _np(test_y, np.int64).ravel()
    if len(x) != len(y) or len(xt) != len(yt):
        raise ValueError("embeddings and labels differ in length")
    if len(xt) == 0 or len(np.unique(y)) < 2:
        raise UserInputError("a linear probe needs test images and training images of at least two classes")
    classes = np.unique(y)
    smallest = min(int((y == k).sum()) for k in classes)
    feasible = [int(k) for k in ks if 1 <= k <= smallest]
    skipped = [int(k) for k in ks if k not in feasible]
    total = len(feasible) * seeds + int(include_all)
    points: list[ProbePoint] = []
    done = 0
    for k in feasible:
        accs, cs = [], []
        for s in range(seeds):
            rng = np.random.default_rng([s, k])
            idx = np.concatenate([rng.choice(np.flatnonzero(y == c), k, replace=False) for c in classes])
            acc, c = probe_accuracy(x[idx], y[idx], xt, yt, rng, val_fraction, one_shot_c)
            accs.append(acc)
            cs.append(c)
            done += 1
            if progress is not None:
                progress(done, total)
        points.append(ProbePoint(k, k * len(classes), accs, cs))
    if include_all:
        acc, c = probe_accuracy(x, y, xt, yt, np.random.default_rng(0), val_fraction, one_shot_c)
        points.append(ProbePoint(None, len(y), [acc], [c]))
        if progress is not None:
            progress(total, total)
    zs = None
    if zero_shot_head is not None:
        zs = float(((xt @ _np(zero_shot_head).T).argmax(axis=1) == yt).mean())
    return ProbeCurve(points, zs, skipped, len(classes), len(y), len(yt), seeds)
