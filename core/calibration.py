"""What a zero-shot score means: calibration, "none of these", and several labels per image.

On precomputed cosines [N, C] between images and class heads (no model here), with labels [N]:
- calibration: expected calibration error over equal-width confidence bins (the bins are stated with
  the number), negative log-likelihood and Brier score; one logit scale fitted by maximum likelihood on
  a calibration half and judged on the other half (`calibrate`);
- abstention: prediction sets by split conformal prediction (Vovk et al.; the "least ambiguous" sets of
  Sadinle et al. 2019): the classes whose probability is at least 1 - q, with q the calibration half's
  quantile of 1 - p(true class). Over exchangeable data a set holds the true class with probability at
  least 1 - alpha; an empty set is "none of these". Risk against coverage for a confidence score;
- several labels: per-class average precision (scikit-learn's) and F1 at per-class thresholds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_BINS = 15  # equal-width confidence bins of the ECE (Guo et al. 2017 use 15)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of [N, C]."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class Reliability:
    """Per equal-width bin of the top-1 confidence: its edges [B + 1], count [B], mean confidence [B] and
    accuracy [B] (NaN in empty bins), and the ECE: sum over bins of count / N x |accuracy - confidence|."""

    edges: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    ece: float

    def to_dict(self) -> dict:
        nan_none = lambda a: [None if math.isnan(v) else float(v) for v in a]  # noqa: E731
        return {"bins": f"{len(self.count)} equal-width bins of the top-1 probability", "edges": self.edges.tolist(),
                "count": self.count.tolist(), "confidence": nan_none(self.confidence),
                "accuracy": nan_none(self.accuracy), "ece": self.ece}


def reliability(probs: np.ndarray, y: np.ndarray, bins: int = DEFAULT_BINS) -> Reliability:
    """The reliability diagram's bins and the expected calibration error of probs [N, C] for labels y [N]."""
    conf, correct = probs.max(axis=1), (probs.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)  # bin b holds (edge_b, edge_b+1]
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, conf, bins) / count
        acc = np.bincount(which, correct, bins) / count
    gaps = np.where(count > 0, np.abs(acc - mean_conf), 0.0)
    return Reliability(edges, count, mean_conf, acc, float((count / max(len(y), 1) * gaps).sum()))


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (probabilities floored at 1e-12)."""
    return float(-np.log(np.maximum(probs[np.arange(len(y)), y], 1e-12)).mean())


def brier(probs: np.ndarray, y: np.ndarray) -> float:
    """Multi-class Brier score: mean over images of the squared distance to the one-hot label (0 to 2)."""
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(y)), y] = 1.0
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def fit_scale(cosines: np.ndarray, y: np.ndarray, low: float = 0.1, high: float = 1000.0) -> float:
    """The logit scale s minimising the NLL of softmax(s x cosines) [N, C] on labels y (temperature scaling:
    one parameter, so the ranking of classes, and the accuracy, never change)."""
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(lambda log_s: nll(softmax(math.exp(log_s) * cosines), y),
                          bounds=(math.log(low), math.log(high)), method="bounded", options={"xatol": 1e-5})
    return float(math.exp(res.x))


def scores(probs: np.ndarray, y: np.ndarray, bins: int = DEFAULT_BINS) -> dict:
    """Accuracy, ECE (with its bins), NLL and Brier of probs [N, C]."""
    rel = reliability(probs, y, bins)
    return {"accuracy": float((probs.argmax(1) == y).mean()), "ece": rel.ece, "nll": nll(probs, y),
            "brier": brier(probs, y), "reliability": rel.to_dict()}


def calibrate(cosines: np.ndarray, y: np.ndarray, model_scale: float, seed: int = 0, bins: int = DEFAULT_BINS,
              model_probs: np.ndarray | None = None) -> dict:
    """Fit one logit scale on a class-stratified calibration half; the other half's scores under the model's own
    rule (model_probs [N, C]; default: a softmax at model_scale) and under a softmax at the fitted scale.
    Also the halves themselves (`calibration_half`, `evaluation_half`: indices)."""
    from .eval_study import split_halves

    cal, held = split_halves(y, seed)
    fitted = fit_scale(cosines[cal], y[cal])
    before = model_probs if model_probs is not None else softmax(model_scale * cosines)
    return {"model_scale": float(model_scale), "fitted_scale": fitted, "n_calibration": int(len(cal)),
            "n_evaluation": int(len(held)), "seed": seed, "bins": bins,
            "before": scores(before[held], y[held], bins), "after": scores(softmax(fitted * cosines[held]), y[held], bins),
            "calibration_half": cal.tolist(), "evaluation_half": held.tolist()}


# ---- abstention: conformal prediction sets -----------------------------------------------------------

def conformal_quantile(probs_cal: np.ndarray, y_cal: np.ndarray, alpha: float) -> float:
    """q: the ceil((n + 1)(1 - alpha)) / n empirical quantile of 1 - p(true class) on the calibration set
    (1.0, every class in every set, when n is too small for the level)."""
    n = len(y_cal)
    level = math.ceil((n + 1) * (1 - alpha)) / n
    if level > 1:
        return 1.0
    return float(np.quantile(1.0 - probs_cal[np.arange(n), y_cal], level, method="higher"))


def prediction_sets(probs: np.ndarray, q: float) -> np.ndarray:
    """[N, C] booleans: class c is in image i's set when 1 - p_ic <= q. An empty row is "none of these"."""
    return (1.0 - probs) <= q


def set_report(sets: np.ndarray, y: np.ndarray | None = None) -> dict:
    """Mean set size, the share of empty sets ("none of these"), of single-class sets, and coverage (the share
    of sets holding the true class) when labels are given."""
    size = sets.sum(axis=1)
    out = {"mean_size": float(size.mean()), "empty": float((size == 0).mean()), "single": float((size == 1).mean())}
    if y is not None:
        out["coverage"] = float(sets[np.arange(len(y)), y].mean())
    return out


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> dict:
    """Answer only the most confident images: for each share answered (coverage), the error among them (risk).
    Sorted from the most confident; the area under the curve is the mean risk over coverages."""
    order = np.argsort(-confidence, kind="stable")
    wrong = 1.0 - correct[order].astype(float)
    answered = np.arange(1, len(order) + 1)
    risk = np.cumsum(wrong) / answered
    return {"coverage": (answered / len(order)).tolist(), "risk": risk.tolist(),
            "threshold": confidence[order].tolist(), "area": float(risk.mean())}


def confidence_scores(probs: np.ndarray, cosines: np.ndarray) -> dict[str, np.ndarray]:
    """The usual confidence scores of a zero-shot answer: the top probability, the margin between the top two
    probabilities, the top cosine."""
    top2 = np.sort(probs, axis=1)[:, -2:]
    return {"max probability": top2[:, 1], "margin": top2[:, 1] - top2[:, 0], "max cosine": cosines.max(axis=1)}


# ---- several labels per image ------------------------------------------------------------------------

def multilabel_scores(scores_: np.ndarray, targets: np.ndarray, thresholds: np.ndarray) -> dict:
    """scores [N, C] and 0/1 targets [N, C]: mean average precision (scikit-learn's, over the classes with a
    positive), and per-class F1 at `thresholds` [C] with their mean."""
    from sklearn.metrics import average_precision_score, f1_score

    present = targets.sum(axis=0) > 0
    ap = np.full(targets.shape[1], np.nan)
    for c in np.flatnonzero(present):
        ap[c] = average_precision_score(targets[:, c], scores_[:, c])
    decided = scores_ >= thresholds[None, :]
    f1 = np.array([f1_score(targets[:, c], decided[:, c], zero_division=0.0) for c in range(targets.shape[1])])
    return {"mAP": float(np.nanmean(ap)), "ap": [None if math.isnan(v) else float(v) for v in ap],
            "f1": f1.tolist(), "mean_f1": float(f1[present].mean()) if present.any() else float("nan")}


def f1_thresholds(scores_: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per class, the score threshold with the best F1 on these (calibration) images: [C] (inf for a class
    with no positive, so it is never predicted)."""
    out = np.full(targets.shape[1], np.inf)
    for c in range(targets.shape[1]):
        pos = targets[:, c].astype(bool)
        if not pos.any():
            continue
        cand = np.unique(scores_[:, c])
        tp = np.array([(scores_[pos, c] >= t).sum() for t in cand])
        fp = np.array([(scores_[~pos, c] >= t).sum() for t in cand])
        f1 = 2 * tp / np.maximum(2 * tp + fp + (pos.sum() - tp), 1)
        out[c] = cand[int(np.argmax(f1))]
    return out


# ---- one study on a labelled set -----------------------------------------------------------------------

def unknown_classes(num_classes: int, share: float, seed: int) -> np.ndarray:
    """The classes held out of the class list to play "unknown" images (a seeded choice, at least one,
    leaving at least two known)."""
    k = min(max(1, round(share * num_classes)), num_classes - 2)
    return np.sort(np.random.default_rng([seed, 27]).choice(num_classes, k, replace=False)) if k > 0 else np.array([], int)


def abstention(cosines: np.ndarray, y: np.ndarray, seed: int = 0, alpha: float = 0.1, unknown_share: float = 0.25) -> dict:
    """ "None of these" on a labelled set, with a share of the classes removed from the list (their images are
    unknown to the classifier). On the known classes: a scale fitted and the conformal q found on a calibration
    half; on the other half, the sets' coverage and size, and risk against coverage of each confidence score;
    on the unknown images, how often their set is empty (refused) and each score's AUROC at telling known
    from unknown (scikit-learn's roc_auc_score)."""
    from sklearn.metrics import roc_auc_score

    from .eval_study import split_halves

    unknown = unknown_classes(cosines.shape[1], unknown_share, seed)
    known = np.setdiff1d(np.arange(cosines.shape[1]), unknown)
    is_known = np.isin(y, known)
    remap = {c: i for i, c in enumerate(known)}
    yk = np.array([remap[c] for c in y[is_known]])
    cos_k, cos_u = cosines[is_known][:, known], cosines[~is_known][:, known]
    cal, held = split_halves(yk, seed)
    scale = fit_scale(cos_k[cal], yk[cal])
    probs_cal, probs_held = softmax(scale * cos_k[cal]), softmax(scale * cos_k[held])
    q = conformal_quantile(probs_cal, yk[cal], alpha)
    out = {"alpha": alpha, "target_coverage": 1 - alpha, "q": q, "fitted_scale": scale, "seed": seed,
           "known_classes": known.tolist(), "unknown_classes": unknown.tolist(),
           "n_calibration": int(len(cal)), "n_evaluation": int(len(held)), "n_unknown": int(len(cos_u)),
           "sets": set_report(prediction_sets(probs_held, q), yk[held])}
    conf_held = confidence_scores(probs_held, cos_k[held])
    correct = probs_held.argmax(1) == yk[held]
    out["risk_coverage"] = {name: risk_coverage(c, correct) for name, c in conf_held.items()}
    if len(cos_u):
        probs_u = softmax(scale * cos_u)
        out["unknown"] = set_report(prediction_sets(probs_u, q))
        conf_u = confidence_scores(probs_u, cos_u)
        out["auroc"] = {name: float(roc_auc_score(np.r_[np.ones(len(c)), np.zeros(len(conf_u[name]))],
                                                  np.r_[c, conf_u[name]])) for name, c in conf_held.items()}
    return out
