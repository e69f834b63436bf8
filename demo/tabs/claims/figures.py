"""The figure of each kind of experiment (no Gradio): our numbers with their intervals, drawn the way the
paper draws its claim where it has a figure (Figure 2's curves, Figure 14's effective robustness)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

PROMPT_BARS = (("bare", "bare class name {}"), ("photo", '"a photo of a {}."'), ("mean_single", "mean single template"),
               ("ensemble", "ensemble of all"), ("selected", "forward-selected ensemble"))
COLOURS = ("#4f46e5", "#d97706", "#059669", "#dc2626", "#7c3aed", "#0891b2", "#65a30d")


def _pct(value: dict) -> tuple[float, float]:
    return 100 * value["mean"], 100 * (value["ci95"] or 0.0)


def _mean_curve(curves: list[list[dict]], key: str) -> tuple[list[float], np.ndarray, np.ndarray]:
    """Images seen, the mean over seeds and its spread (min, max) of one recorded quantity."""
    values = np.array([[p[key] for p in c] for c in curves], dtype=float)  # [seeds, points]
    return [p["images"] for p in curves[0]], values.mean(0), values.std(0)


def _curves(fig, per_seed_curves: dict[str, list], key: str, scale: float = 1.0, row=None, col=None, legend=True):
    for i, (label, curves) in enumerate(per_seed_curves.items()):
        x, mean, spread = _mean_curve(curves, key)
        colour = COLOURS[i % len(COLOURS)]
        where = dict(row=row, col=col) if row else {}
        fig.add_trace(go.Scatter(x=x, y=scale * mean, mode="lines+markers", name=label, line=dict(color=colour),
                                 legendgroup=label, showlegend=legend,
                                 error_y=dict(type="data", array=scale * spread, visible=len(curves) > 1)), **where)


def prompts_figure(result: dict) -> go.Figure:
    s = result["summary"]
    fig = go.Figure()
    means, halves = zip(*(_pct(s[k]) for k, _ in PROMPT_BARS))
    # each mean under its bar (inside it, the interval's line would cross the number; its foot is off the axis)
    fig.add_trace(go.Bar(x=[f"{label}<br><b>{m:.1f}%</b>" for (_, label), m in zip(PROMPT_BARS, means)], y=means,
                         error_y=dict(type="data", array=halves), marker_color=COLOURS[0],
                         hovertemplate="%{x}: %{y:.1f}%<extra></extra>"))
    low = max(0.0, min(means) - 3 * max(max(halves), 1.0))
    fig.update_yaxes(title="held-out accuracy %", range=[low, min(100.0, max(means) + 3 * max(max(halves), 1.0))])
    return fig


def probe_figure(result: dict) -> go.Figure:
    s = result["summary"]
    ks = [k for k in result["ran"]["shots"] if f"probe_{k}" in s]
    means, halves = zip(*(_pct(s[f"probe_{k}"]) for k in ks))
    fig = go.Figure(go.Scatter(x=ks, y=means, error_y=dict(type="data", array=halves), mode="lines+markers",
                               name="linear probe, k per class"))
    zs, zs_half = _pct(s["zero_shot"])
    fig.add_hline(y=zs, line_color=COLOURS[1], annotation_text=f"zero-shot {zs:.1f}%", annotation_position="top left")
    if zs_half:
        fig.add_hrect(y0=zs - zs_half, y1=zs + zs_half, fillcolor=COLOURS[1], opacity=0.15, line_width=0)
    fig.add_vline(x=4, line_dash="dot", line_color="#999999", annotation_text="the paper: zero-shot = 4 shots",
                  annotation_position="bottom right")
    fig.update_xaxes(type="log", title="training images per class (k)", tickvals=ks,
                     range=[np.log10(min(ks) / 1.3), np.log10(max(ks) * 1.3)])
    fig.update_yaxes(title="held-out accuracy %")
    return fig


def objectives_figure(result: dict) -> go.Figure:
    """Figure 2's view: zero-shot accuracy against images seen for each objective, with the threshold."""
    fig = go.Figure()
    curves = {k.replace("_", " "): [p["curves"][k] for p in result["per_seed"]] for k in result["per_seed"][0]["curves"]}
    _curves(fig, curves, "accuracy", 100.0)
    threshold = 100 * result["ran"]["settings"].get("threshold", 0.9)
    fig.add_hline(y=threshold, line_dash="dot", line_color="#999999", annotation_text=f"threshold {threshold:.0f}%")
    fig.update_xaxes(title="images seen")
    fig.update_yaxes(title=f"zero-shot {result['ran']['task']} accuracy %", range=[0, 102])
    return fig


def temperature_figure(result: dict) -> go.Figure:
    """Left: accuracy against images seen for every condition. Right: the learned temperature's path."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("zero-shot accuracy %", "logit scale (1 / temperature)"))
    labels = list(result["per_seed"][0]["conditions"])
    curves = {lab: [p["conditions"][lab]["curve"] for p in result["per_seed"]] for lab in labels}
    _curves(fig, curves, "accuracy", 100.0, row=1, col=1)
    _curves(fig, curves, "logit_scale", 1.0, row=1, col=2, legend=False)
    fig.update_xaxes(title="images seen")
    fig.update_yaxes(type="log", row=1, col=2)
    return fig


def gap_figure(result: dict) -> go.Figure:
    """Left: the gap over training per (initialisation, temperature). Right: centring's effect, with intervals."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38],
                        subplot_titles=("modality gap ||mean image - mean caption||", "centring: change in points (95% interval)"))
    labels = list(result["per_seed"][0]["conditions"])
    _curves(fig, {lab: [p["conditions"][lab]["curve"] for p in result["per_seed"]] for lab in labels}, "gap",
            row=1, col=1)
    keys = [k for k in result["summary"] if k.startswith("centring ")]
    means, halves = zip(*(_pct(result["summary"][k]) for k in keys))
    fig.add_trace(go.Bar(x=[k.removeprefix("centring ").replace("_", " ") for k in keys], y=means, showlegend=False,
                         error_y=dict(type="data", array=halves), marker_color=COLOURS[2]), row=1, col=2)
    fig.update_xaxes(title="images seen", row=1, col=1)
    return fig


def shift_figure(result: dict) -> go.Figure:
    """The paper's effective-robustness plot: accuracy under shift against accuracy in distribution, y = x dashed."""
    s = result["summary"]
    fig = go.Figure()
    methods = [k.removesuffix(" in") for k in s if k.endswith(" in") and f"{k.removesuffix(' in')} shifted" in s
               and "minus" not in k]
    for i, m in enumerate(methods):
        (x, xh), (y, yh) = _pct(s[f"{m} in"]), _pct(s[f"{m} shifted"])
        fig.add_trace(go.Scatter(x=[x], y=[y], mode="markers", name=m.replace("_", " "),
                                 marker=dict(size=12, color=COLOURS[i % len(COLOURS)]),
                                 error_x=dict(type="data", array=[xh]), error_y=dict(type="data", array=[yh])))
    lo = min(min(_pct(s[f"{m} shifted"])[0] for m in methods), min(_pct(s[f"{m} in"])[0] for m in methods)) - 5
    fig.add_trace(go.Scatter(x=[lo, 100], y=[lo, 100], mode="lines", line=dict(dash="dash", color="#999999"),
                             name="y = x: no loss under shift"))
    fig.update_xaxes(title="accuracy in distribution % (filled, plain background)", range=[lo, 100.5])
    fig.update_yaxes(title="accuracy under shift % (other styles and backgrounds)", range=[lo, 100.5])
    return fig


FIGURES = {"prompts": prompts_figure, "probe": probe_figure, "objectives": objectives_figure,
           "temperature": temperature_figure, "gap": gap_figure, "shift": shift_figure}


def claim_figure(result: dict) -> go.Figure:
    """The figure of a result's kind, titled with the number of seeds behind it."""
    fig = FIGURES[result["ran"]["kind"]](result)
    fig.update_layout(height=420, margin=dict(l=50, r=10, t=60, b=60),
                      showlegend=result["ran"]["kind"] not in ("prompts", "probe"),
                      title=dict(text=f"{result['experiment']}: mean over {len(result['per_seed'])} seed(s)"
                                      + (", bars and bands: 95% interval" if result["ran"]["kind"] in ("prompts", "probe", "shift")
                                         else ", error bars: spread over seeds"), x=0.01))
    return fig
