"""Numbers over seeds and the verdict words: a mean with its 95% t-interval, which side of 0 (or of a
reference) an effect's interval lies, and how the parts of a claim add up to one verdict."""

from __future__ import annotations

import math
import re

import numpy as np

REPRODUCED, NOT_AT_THIS_SCALE, REVERSED = "reproduced", "not reproduced at this scale", "reversed"


def interval(values, unit: str = "%") -> dict:
    """Mean, 95% t-interval half-width (None for one value), the values, and their unit: "%" for accuracies
    (fractions shown in percent), "" for plain numbers, "log-x" for logs of ratios (shown as ratios)."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else None
    out = {"mean": float(v.mean()), "ci95": half, "values": [float(x) for x in v]}
    return out if unit == "%" else {**out, "unit": unit}


def side(effect: dict, reference: float = 0.0) -> str:
    """'above', 'below' or 'zero': where an effect's interval lies with respect to `reference` (0)."""
    mean = effect["mean"] - reference
    if effect["ci95"] is None:
        return "above" if mean > 0 else "below" if mean < 0 else "zero"
    lo, hi = mean - effect["ci95"], mean + effect["ci95"]
    return "above" if lo > 0 else "below" if hi < 0 else "zero"


def points(effect: dict, unit: str = "points", scale: float = 100.0, signed: bool = True) -> str:
    """'+1.0 ± 1.2 points': an effect's mean and interval, scaled (accuracies are fractions)."""
    half = f" ± {scale * effect['ci95']:.{1 if scale == 100 else 2}f}" if effect["ci95"] is not None else ""
    value = f"{scale * effect['mean']:{'+' if signed else ''}.{1 if scale == 100 else 2}f}"
    return f"{value}{half} {unit}".rstrip()


def part(effect: dict, wins: str, loses: str, reference: float = 0.0, **fmt) -> tuple[str, str]:
    """One part of a claim that says the effect is above `reference`: (verdict, sentence)."""
    where = side(effect, reference)
    if where == "above":
        return REPRODUCED, f"{wins} by {points(effect, **fmt)}"
    if where == "below":  # read the other way round: the sentence's number is positive
        flipped = {**effect, "mean": reference - (effect["mean"] - reference)}
        return REVERSED, f"{loses} by {points({**flipped, 'mean': flipped['mean'] - reference}, **fmt)}"
    quoted = re.sub(r'"([^"]*)"', r"‘\1’", wins)  # a quote inside the claim's quotes: single quotes
    return NOT_AT_THIS_SCALE, f"“{quoted}”: no difference beyond the noise ({points(effect, **fmt)}: the interval holds " \
        f"{'0' if not reference else f'{reference:.2f}'})"


def match(effect: dict, claim: str, unit_text: str = "points", **fmt) -> tuple[str, str]:
    """A claim that two things are equal, or the first no worse: reproduced unless the effect's interval lies below 0."""
    where = side(effect)
    name = REVERSED if where == "below" else REPRODUCED
    return name, f"{claim}: {points(effect, unit_text, **fmt)}" + (" (the interval holds 0)" if where == "zero" else "")


def overall(parts: list[tuple[str, str]]) -> tuple[str, list[str]]:
    """The claim's verdict from its parts: reversed if one part turns, reproduced if all hold."""
    names = [p[0] for p in parts]
    verdict = REVERSED if REVERSED in names else REPRODUCED if set(names) == {REPRODUCED} else NOT_AT_THIS_SCALE
    return verdict, [f"{name}: {text}" for name, text in parts]


def is_interval(value) -> bool:
    return isinstance(value, dict) and "mean" in value and "ci95" in value


def cells(value) -> tuple[str, str, str]:
    """(mean, 95% interval, per seed) as text for a table: accuracies in %, ratios as "2.3x", plain numbers as
    they are; anything else (a list per seed) goes to the per-seed cell."""
    if not is_interval(value):
        if isinstance(value, dict):
            return "", "", "; ".join(f"{k}: {', '.join(_plain(v) for v in vs)}" for k, vs in value.items())
        return "", "", ", ".join(_plain(v) for v in value)
    unit, mean, half = value.get("unit", "%"), value["mean"], value["ci95"]
    if mean is None:
        return "none", "", ""
    if unit == "log-x":
        ci = "" if half is None else f"{math.exp(mean - half):.2f}x to {math.exp(mean + half):.2f}x"
        return f"{math.exp(mean):.2f}x", ci, ", ".join(f"{math.exp(v):.2f}x" for v in value["values"])
    k, fmt = (100.0, ".1f") if unit == "%" else (1.0, ".3f")
    return (f"{k * mean:{fmt}}{'%' if unit == '%' else ''}", "" if half is None else f"± {k * half:{fmt}}",
            ", ".join(f"{k * v:{fmt}}" for v in value["values"]))


def _plain(v) -> str:
    return "none" if v is None else f"{v:,.0f}" if isinstance(v, float) else str(v)
