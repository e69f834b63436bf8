"""What the paper's-claims tab shows for one experiment result (no Gradio): the statement beside our
numbers, a figure with the intervals, and the verdict with the command that made it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

PROMPT_BARS = (("bare", "bare class name {}"), ("photo", '"a photo of a {}."'), ("mean_single", "mean single template"),
               ("ensemble", "ensemble of all"), ("selected", "forward-selected ensemble"))
SUMMARY_COLUMNS = ["number", "mean %", "95% interval (points)", "per seed %"]


def _pct(value: dict) -> tuple[float, float]:
    return 100 * value["mean"], 100 * (value["ci95"] or 0.0)


def claim_figure(result: dict) -> go.Figure:
    """Prompts: a bar per way of prompting with its interval; probe: accuracy against k with zero-shot's band."""
    s = result["summary"]
    fig = go.Figure()
    if result["ran"]["kind"] == "prompts":
        means, halves = zip(*(_pct(s[k]) for k, _ in PROMPT_BARS))
        fig.add_trace(go.Bar(x=[label for _, label in PROMPT_BARS], y=means, error_y=dict(type="data", array=halves),
                             marker_color="#4f46e5", text=[f"{m:.1f}%" for m in means], textposition="inside",
                             insidetextanchor="start", textfont=dict(color="white")))
        low = max(0.0, min(means) - 3 * max(max(halves), 1.0))
        fig.update_yaxes(title="held-out accuracy %", range=[low, min(100.0, max(means) + 3 * max(max(halves), 1.0))])
    else:
        ks = [k for k in result["ran"]["shots"] if f"probe_{k}" in s]
        means, halves = zip(*(_pct(s[f"probe_{k}"]) for k in ks))
        fig.add_trace(go.Scatter(x=ks, y=means, error_y=dict(type="data", array=halves), mode="lines+markers",
                                 name="linear probe, k per class"))
        zs, zs_half = _pct(s["zero_shot"])
        fig.add_hline(y=zs, line_color="#d97706", annotation_text=f"zero-shot {zs:.1f}%", annotation_position="top left")
        if zs_half:
            fig.add_hrect(y0=zs - zs_half, y1=zs + zs_half, fillcolor="#d97706", opacity=0.15, line_width=0)
        fig.add_vline(x=4, line_dash="dot", line_color="#999999", annotation_text="the paper: zero-shot = 4 shots",
                      annotation_position="bottom right")
        fig.update_xaxes(type="log", title="training images per class (k)", tickvals=ks,
                         range=[np.log10(min(ks) / 1.3), np.log10(max(ks) * 1.3)])
        fig.update_yaxes(title="held-out accuracy %")
    fig.update_layout(height=380, margin=dict(l=50, r=10, t=40, b=60), showlegend=False,
                      title=dict(text=f"{result['experiment']}: mean and 95% interval over {len(result['per_seed'])} "
                                      f"seed(s)", x=0.01))
    return fig


def summary_frame(result: dict) -> pd.DataFrame:
    """Each number of the summary: mean, interval and the per-seed values, in percent (points for differences)."""
    rows = []
    for key, value in result["summary"].items():
        if isinstance(value, dict):
            half = "" if value["ci95"] is None else f"± {100 * value['ci95']:.1f}"
            rows.append([key, round(100 * value["mean"], 2), half, ", ".join(f"{100 * v:.1f}" for v in value["values"])])
        else:
            rows.append([key, "", "", ", ".join("none" if v is None else str(v) for v in value)])
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def verdict_markdown(result: dict, whose: str) -> str:
    """The claim, its source, our verdict with its findings, and how the numbers were made."""
    ran = result["ran"]
    mark = {"reproduced": "✓", "reversed": "✗"}.get(result["verdict"], "≈")
    findings = "\n".join(f"- {f}." for f in result["findings"])
    return (f"**The paper** ({result['source']}): {result['claim']}  \n"
            f"**{whose}: {mark} {result['verdict']}.**\n\n{findings}\n\n"
            f"`{ran['model']}`, task {ran['task']}, {ran['n']:,} fresh shapes-world images per seed, seeds "
            f"{', '.join(map(str, ran['seeds']))}; every accuracy on the held-out half of each seed's images. "
            f"Made by `{result['command']}` in {result['seconds']} s ({result['machine']['date']}, "
            f"{result['machine']['threads']} threads).")
