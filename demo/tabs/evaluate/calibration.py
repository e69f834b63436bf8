"""The Evaluate tab's calibration and "none of these" (no Gradio): what a zero-shot probability means on
this labelled set (core.calibration), drawn and written with the method beside each number."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core import calibration as cal

COVERAGES = {"80%": 0.2, "90%": 0.1, "95%": 0.05}  # stated coverage of the conformal sets -> alpha
DEFAULT_COVERAGE = "90%"
UNKNOWN_SHARE = 0.25  # of the classes, removed from the list to play "unknown" images


def calibration_report(cosines: np.ndarray, y: np.ndarray, model_scale: float, model_probs: np.ndarray, seed: int,
                       coverage: str = DEFAULT_COVERAGE) -> dict:
    """Calibration before and after one fitted scale, and conformal "none of these" at a stated coverage."""
    if coverage not in COVERAGES:
        from core.errors import UserInputError

        raise UserInputError(f"coverage must be one of {', '.join(COVERAGES)}, got {coverage!r}")
    report = {"calibration": cal.calibrate(cosines, y, model_scale, seed, model_probs=model_probs)}
    c, alpha = report["calibration"], COVERAGES[coverage]
    fitted = cal.softmax(c["fitted_scale"] * cosines)
    half, held = c["calibration_half"], c["evaluation_half"]
    if len(half) and len(held):  # every class, at the fitted scale: what the zero-shot tab's sets use
        q = cal.conformal_quantile(fitted[half], y[half], alpha)
        report["sets"] = {"alpha": alpha, "target_coverage": 1 - alpha, "q": q,
                          **cal.set_report(cal.prediction_sets(fitted[held], q), y[held])}
    if cosines.shape[1] >= 3 and len(y) >= 20:  # two known classes at least, and enough images for the halves
        report["abstention"] = cal.abstention(cosines, y, seed, COVERAGES[coverage], UNKNOWN_SHARE)
    return report


def calibration_markdown(report: dict, classnames: list[str]) -> str:
    """The numbers with how each was made."""
    c = report["calibration"]
    b, a = c["before"], c["after"]
    lines = [f"**Calibration** (the model's rule at its scale {c['model_scale']:.2f} → one logit scale fitted by maximum "
             f"likelihood on a calibration half of {c['n_calibration']:,} images: **{c['fitted_scale']:.2f}**; scored on the "
             f"other {c['n_evaluation']:,}): ECE over {c['bins']} equal-width bins of the top-1 probability "
             f"**{b['ece']:.3f} → {a['ece']:.3f}**, NLL {b['nll']:.3f} → {a['nll']:.3f}, Brier {b['brier']:.3f} → "
             f"{a['brier']:.3f}; accuracy {b['accuracy']:.1%} → {a['accuracy']:.1%} (one scale never reorders the classes)."]
    sets = report.get("sets")
    if sets:
        lines.append(f"**Prediction sets, every class** (split conformal prediction at the fitted scale, stated coverage "
                     f"{sets['target_coverage']:.0%}, q = {sets['q']:.3f}): they held the true class for "
                     f"**{sets['coverage']:.1%}** of the evaluation half, {sets['mean_size']:.2f} classes on average. "
                     "*Use the calibrated scale* also gives the zero-shot tab these sets, for these classes and templates.")
    ab = report.get("abstention")
    if ab:
        s, names = ab["sets"], ", ".join(classnames[i] for i in ab["unknown_classes"])
        lines.append(f"**None of these** (split conformal prediction at a stated coverage of {ab['target_coverage']:.0%}, "
                     f"on the {len(ab['known_classes'])} known classes; q = {ab['q']:.3f}, a class is in an image's set "
                     f"when its probability is at least {1 - ab['q']:.3f}): the sets held the true class for "
                     f"**{s['coverage']:.1%}** of {ab['n_evaluation']:,} held-out images, {s['mean_size']:.2f} classes on "
                     f"average, {s['single']:.1%} a single class, {s['empty']:.1%} empty (\"none of these\").")
        if "unknown" in ab:
            lines.append(f"**Unknown images** (the classes {names} removed from the list; {ab['n_unknown']:,} images): "
                         f"refused (empty set) **{ab['unknown']['empty']:.1%}** of the time; AUROC of telling them from "
                         "known images: " + ", ".join(f"{k} {v:.3f}" for k, v in ab["auroc"].items()) + ".")
    return "  \n".join(lines)


def reliability_figure(report: dict) -> go.Figure:
    """Accuracy against confidence per bin, before and after the fitted scale, with the diagonal of perfect calibration."""
    c = report["calibration"]
    fig = make_subplots(rows=1, cols=2, subplot_titles=(f"the model's scale {c['model_scale']:.2f}: ECE {c['before']['ece']:.3f}",
                                                        f"fitted scale {c['fitted_scale']:.2f}: ECE {c['after']['ece']:.3f}"))
    for col, key in ((1, "before"), (2, "after")):
        rel = c[key]["reliability"]
        edges = np.array(rel["edges"])
        mids, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
        acc = [None if v is None else 100 * v for v in rel["accuracy"]]
        fig.add_trace(go.Bar(x=100 * mids, y=acc, width=100 * width * 0.95, marker_color="#4f46e5", name="accuracy",
                             customdata=rel["count"], showlegend=col == 1,
                             hovertemplate="confidence bin %{x:.0f}%: accuracy %{y:.1f}% of %{customdata} images<extra></extra>"),
                      row=1, col=col)
        fig.add_trace(go.Scatter(x=[0, 100], y=[0, 100], mode="lines", line=dict(dash="dash", color="#999999"),
                                 name="perfect calibration", showlegend=col == 1), row=1, col=col)
    fig.update_xaxes(title="top-1 probability (confidence) %", range=[0, 100])
    fig.update_yaxes(title="accuracy %", range=[0, 100], row=1, col=1)
    fig.update_layout(height=380, margin=dict(l=50, r=10, t=50, b=50), legend=dict(orientation="h", y=-0.25))
    return fig


def risk_figure(report: dict) -> go.Figure | None:
    """Risk (error among the answered) against coverage (share answered) for each confidence score."""
    ab = report.get("abstention")
    if not ab:
        return None
    fig = go.Figure()
    for name, rc in ab["risk_coverage"].items():
        step = max(1, len(rc["coverage"]) // 300)
        fig.add_trace(go.Scatter(x=[100 * v for v in rc["coverage"][::step]], y=[100 * v for v in rc["risk"][::step]],
                                 mode="lines", name=f"{name} (area {100 * rc['area']:.1f})"))
    fig.update_layout(height=360, margin=dict(l=50, r=10, t=40, b=50), xaxis_title="images answered (coverage) %",
                      yaxis_title="error among them (risk) %", legend=dict(orientation="h", y=-0.3),
                      title=dict(text="risk against coverage (held-out known images)", x=0.01))
    return fig


def zero_shot_record(report: dict | None, model: str, classnames: list[str], templates: list[str], source: str,
                     several_labels: dict | None = None) -> dict | None:
    """What the zero-shot tab needs to draw prediction sets (from a calibration `report`) and to decide several
    labels per image (from `several_labels`), and to know whether they apply to what it shows."""
    if report is None and not several_labels:
        return None
    c, sets = (report or {}).get("calibration", {}), (report or {}).get("sets") or {}
    return {"model": model, "classnames": list(classnames), "templates": list(templates), "source": source,
            "fitted_scale": c.get("fitted_scale"), "q": sets.get("q"), "target_coverage": sets.get("target_coverage"),
            "coverage": sets.get("coverage"), "n_calibration": c.get("n_calibration"), "several_labels": several_labels}


def prediction_columns(report: dict, n: int, cosines: np.ndarray) -> tuple[list[str], list[list]]:
    """Per-image CSV columns: which half the image is in, and its top-1 probability at the fitted scale."""
    c = report["calibration"]
    half = np.full(n, "calibration", dtype=object)
    half[c["evaluation_half"]] = "evaluation"
    fitted = cal.softmax(c["fitted_scale"] * cosines).max(axis=1)
    return ["half", "p(predicted) at the fitted scale"], [[h, f"{p:.6f}"] for h, p in zip(half, fitted)]
