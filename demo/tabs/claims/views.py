"""What the paper's-claims tab shows for one experiment result (no Gradio) besides its figure
(figures.py): the statement beside our verdict with how it was made, and every number in a table."""

from __future__ import annotations

import pandas as pd

from core.experiments.stats import cells
from demo.tabs.claims.figures import claim_figure

SUMMARY_COLUMNS = ["number", "mean", "95% interval", "per seed"]
__all__ = ["SUMMARY_COLUMNS", "claim_figure", "summary_frame", "verdict_markdown"]


def summary_frame(result: dict) -> pd.DataFrame:
    """Each number of the summary: mean, interval and the per-seed values (accuracies in %, ratios as "2.3x")."""
    return pd.DataFrame([[key, *cells(value)] for key, value in result["summary"].items()], columns=SUMMARY_COLUMNS)


def _how_made(ran: dict) -> str:
    seeds = ", ".join(map(str, ran["seeds"]))
    if ran["kind"] in ("prompts", "probe"):
        return (f"`{ran['model']}`, task {ran['task']}, {ran['n']:,} fresh shapes-world images per seed, seeds {seeds}; "
                "every accuracy on the held-out half of each seed's images.")
    settings = ", ".join(f"{k} {v}" for k, v in ran["settings"].items())
    return f"`{ran['model']}`, task {ran['task']}, seeds {seeds}; {settings or 'the recipe defaults'}."


def verdict_markdown(result: dict, whose: str) -> str:
    """The claim, its source, our verdict with its findings, and how the numbers were made."""
    mark = {"reproduced": "✓", "reversed": "✗"}.get(result["verdict"], "≈")
    findings = "\n".join(f"- {f}." for f in result["findings"])
    return (f"**The paper** ({result['source']}): {result['claim']}  \n"
            f"**{whose}: {mark} {result['verdict']}.**\n\n{findings}\n\n{_how_made(result['ran'])} "
            f"Made by `{result['command']}` in {result['seconds']} s ({result['machine']['date']}, "
            f"{result['machine']['threads']} threads).")
