"""What the Train tab draws from a run's `LiveView` (pure: no Gradio, no model).

- curves: loss, logit scale and learning rate against the step;
- accuracy: in-run zero-shot top-1 per task, with each task's chance level;
- the probe matrix of one frame: cosine and row softmax of 16 fixed pairs, its loss and accuracy;
- the moving map of one frame: 300 fixed pairs, images coloured by their colour, captions as
  crosses, in axes fixed over all frames so that points move and the frame does not;
- the modality gap over the frames.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.train.shapes_source import CHANCE
from demo.tabs.shared.map_figure import rgb
from demo.tabs.train.live import Frame, LiveView

TASK_NAMES = {"colour": "colour", "shape": "shape", "combo": "colour × shape", "held_out": "held-out combinations"}


def curves_figure(view: LiveView) -> go.Figure:
    """Loss, logit scale and learning rate [3 panels] against the step."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=("loss", "logit scale (1 / temperature)", "learning rate"))
    for col, (values, colour) in enumerate(((view.loss, "#4e79a7"), (view.logit_scale, "#e15759"), (view.lr, "#59a14f")), 1):
        fig.add_trace(go.Scatter(x=view.steps, y=values, mode="lines", line={"color": colour}, showlegend=False), 1, col)
        fig.update_xaxes(title_text="step", range=[0, view.total_steps], row=1, col=col)
    fig.update_layout(height=260, margin={"l": 40, "r": 10, "t": 40, "b": 40})
    return fig


def accuracy_figure(view: LiveView) -> go.Figure:
    """Zero-shot top-1 per task at each in-run eval, with dashed chance lines."""
    fig = go.Figure()
    tasks = [t for t in TASK_NAMES if any(t in e for _, e in view.evals)]
    for task in tasks:
        points = [(s, e[task]) for s, e in view.evals if task in e]
        fig.add_trace(go.Scatter(x=[s for s, _ in points], y=[100 * a for _, a in points], mode="lines+markers",
                                 name=TASK_NAMES[task]))
        if task in CHANCE:
            fig.add_hline(y=100 * CHANCE[task], line_dash="dot", line_color="#bbbbbb")
    fig.update_layout(height=280, yaxis={"title": "zero-shot top-1 (%)", "range": [0, 100]},
                      xaxis={"title": "step", "range": [0, view.total_steps]},
                      margin={"l": 50, "r": 10, "t": 30, "b": 40},
                      title={"text": "zero-shot accuracy on a fixed eval sample (dotted: chance)" if tasks
                             else "zero-shot accuracy: the first eval comes after eval_every steps", "font": {"size": 13}})
    return fig


def probe_figure(frame: Frame | None) -> go.Figure:
    """Cosine and row softmax [k, k] of the probe pairs at one frame (rows: images, columns: captions)."""
    sigmoid = frame is not None and getattr(frame.probe, "sigmoid", False)
    right = "sigmoid(logit + bias) per cell (SigLIP)" if sigmoid else "softmax over each row (image → caption)"
    fig = make_subplots(rows=1, cols=2, subplot_titles=("cosine", right), horizontal_spacing=0.22)
    if frame is None:
        fig.update_layout(height=380, title={"text": "the first frame comes after the first step", "font": {"size": 13}})
        return fig
    p = frame.probe
    k = len(p.cosine)
    ticks = [str(i + 1) for i in range(k)]
    fig.add_trace(go.Heatmap(z=p.cosine, x=ticks, y=ticks, zmin=-1, zmax=1, colorscale="RdBu", reversescale=True,
                             colorbar={"x": 0.39, "len": 0.9, "thickness": 12},
                             hovertemplate="image %{y}, caption %{x}: %{z:.3f}<extra></extra>"),
                  1, 1)
    fig.add_trace(go.Heatmap(z=p.probs_rows, x=ticks, y=ticks, zmin=0, zmax=1, colorscale="Viridis",
                             colorbar={"thickness": 12}, hovertemplate="image %{y} → caption %{x}: %{z:.3f}<extra></extra>"), 1, 2)
    for col in (1, 2):
        fig.update_yaxes(autorange="reversed", title_text="image" if col == 1 else None, row=1, col=col)
        fig.update_xaxes(title_text="caption", row=1, col=col)
    fig.update_layout(height=380, margin={"l": 50, "r": 10, "t": 60, "b": 40},
                      title={"text": f"step {frame.step}: {'sigmoid loss' if sigmoid else 'loss'} {p.loss:.3f}, "
                                     "each image's top caption is its own in "
                                     f"{p.accuracy:.0%} of rows (logit scale {p.scale:.1f})", "font": {"size": 13}})
    return fig


def map_range(frames: list[Frame]) -> tuple[list[float], list[float]]:
    """x and y ranges that hold every frame's points (so the axes stay put while points move)."""
    coords = [f.map.coords for f in frames if len(f.map.coords)]
    if not coords:
        return [-1.0, 1.0], [-1.0, 1.0]
    allc = np.concatenate(coords)
    lo, hi = allc.min(0), allc.max(0)
    pad = 0.08 * np.maximum(hi - lo, 1e-3)
    return [float(lo[0] - pad[0]), float(hi[0] + pad[0])], [float(lo[1] - pad[1]), float(hi[1] + pad[1])]


def map_frame_figure(view: LiveView, frame: Frame | None) -> go.Figure:
    """The fixed set at one frame: images (dots in their colour) and captions (crosses), joined pairs."""
    fig = go.Figure()
    xr, yr = map_range(view.frames)
    if frame is not None:
        c = frame.map.coords
        n = len(c) // 2
        labels = view.labels or [{}] * n
        colours = [rgb(l["colour"]) if l.get("colour") else "#4e79a7" for l in labels[:n]]
        names = [f"{l.get('colour', '')} {l.get('shape', '')}".strip() for l in labels[:n]]
        fig.add_trace(go.Scatter(x=c[:n, 0], y=c[:n, 1], mode="markers", name="images",
                                 marker={"color": colours, "size": 7, "line": {"width": 0.5, "color": "#333"}},
                                 text=names, hovertemplate="image: %{text}<extra></extra>"))
        fig.add_trace(go.Scatter(x=c[n:, 0], y=c[n:, 1], mode="markers", name="captions",
                                 marker={"color": colours, "size": 7, "symbol": "x-thin", "line": {"width": 1.5, "color": colours}},
                                 text=view.captions[:n], hovertemplate="caption: %{text}<extra></extra>"))
    fig.update_layout(height=420, xaxis={"range": xr, "title": "PC 1 (aligned across frames)"},
                      yaxis={"range": yr, "title": "PC 2", "scaleanchor": "x"}, margin={"l": 50, "r": 10, "t": 40, "b": 40},
                      title={"text": f"{len(view.captions)} fixed pairs at step {frame.map.step}: modality gap {frame.map.gap:.3f}"
                             if frame else "the map comes with the first frame", "font": {"size": 13}},
                      legend={"orientation": "h", "y": -0.15})
    return fig


def gap_figure(view: LiveView) -> go.Figure:
    """The modality gap (|mean image − mean caption| of the fixed set) at each map (full frame)."""
    maps = {f.map.step: f.map.gap for f in view.frames}
    fig = go.Figure(go.Scatter(x=list(maps), y=list(maps.values()), mode="lines+markers"))
    fig.update_layout(height=220, xaxis={"title": "step", "range": [0, view.total_steps]},
                      yaxis={"title": "modality gap", "rangemode": "tozero"},
                      margin={"l": 50, "r": 10, "t": 30, "b": 40}, title={"text": "modality gap", "font": {"size": 13}})
    return fig


def frame_at(view: LiveView, step: float | None) -> Frame | None:
    """The last frame at or before `step` (the latest when step is None)."""
    if not view.frames:
        return None
    if step is None:
        return view.frames[-1]
    earlier = [f for f in view.frames if f.step <= step]
    return earlier[-1] if earlier else view.frames[0]


def status_line(status: str, place: int, view: LiveView, reason: str = "", error: str = "", gpu_calls: int = 0,
                call_seconds: float | None = None) -> str:
    """One Markdown line: where the run stands, its step, speed and ETA, and on ZeroGPU its GPU calls."""
    if status == "queued":
        return f"**Waiting:** place {place} in line (the app trains one run at a time); it starts by itself."
    parts = [f"**{status.capitalize()}**", f"step {view.last_step:,} of {view.total_steps:,}"]
    if view.samples_per_s:
        parts.append(f"{view.samples_per_s:,.0f} samples/s")
    if status == "running" and view.eta_s is not None:
        parts.append(f"about {view.eta_s / 60:.1f} min left" if view.eta_s >= 60 else f"about {view.eta_s:.0f} s left")
    if view.frames:
        parts.append(f"{len(view.frames)} frames (live views took {view.snapshot_share:.0%} of the time)")
    if gpu_calls:
        parts.append(f"GPU call {gpu_calls:,} ({call_seconds:g} s each, resuming from a checkpoint)")
    line = " · ".join(parts)
    if reason:
        line += f" — {reason}"
    if error:
        line += f" — **error:** {error}"
    return line
