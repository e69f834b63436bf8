"""Kind "probe": zero-shot (the template ensemble) against logistic-regression probes on k images per
class (C chosen on a validation split, core.probe), on the held-out half; the k where the probe catches up."""

from __future__ import annotations

from dataclasses import dataclass

from .stats import NOT_AT_THIS_SCALE, REPRODUCED, REVERSED, interval, part
from .zeroshot_data import encode_seed


@dataclass(frozen=True)
class Settings:
    """No settings of its own: the recipe's shots and probe_draws say it all."""


def run_seed(run, seed: int, ctx) -> dict:
    """Zero-shot and the probe at each k (mean over draws) on one seed's held-out half; the first k that catches up."""
    from ..eval_study import ensemble
    from ..probe import linear_probe_curve

    d = encode_seed(ctx.model(run.model), run, seed, ctx)
    sel, held = d.selection, d.held_out
    curve = linear_probe_curve(d.img[sel], d.y[sel], d.img[held], d.y[held], ks=run.shots, seeds=run.probe_draws,
                               zero_shot_head=ensemble(d.template_emb), include_all=False,
                               progress=lambda done, total: ctx.check())
    probe = {str(p.k): p.mean for p in curve.points}
    catch = next((p.k for p in curve.points if p.mean >= curve.zero_shot), None)
    return {"zero_shot": curve.zero_shot, "probe": probe, "catch_up_k": catch}


def summarise(run, per_seed: list[dict]) -> dict:
    """Zero-shot and each k's probe over the seeds, zero-shot minus the 4-shot probe, and each seed's catch-up k."""
    out = {"zero_shot": interval([s["zero_shot"] for s in per_seed])}
    for k in run.shots:
        if all(str(k) in s["probe"] for s in per_seed):
            out[f"probe_{k}"] = interval([s["probe"][str(k)] for s in per_seed])
    if all("4" in s["probe"] for s in per_seed):
        out["zero_shot_minus_probe_4"] = interval([s["zero_shot"] - s["probe"]["4"] for s in per_seed])
    out["catch_up_k"] = [s["catch_up_k"] for s in per_seed]
    return out


def verdict(run, summary: dict) -> tuple[str, list[str]]:
    """The claim is a match: no difference from a 4-shot probe is the paper's result."""
    catch = sorted({k for k in summary["catch_up_k"] if k is not None})
    tried = [k for k in run.shots if f"probe_{k}" in summary] or list(run.shots)
    where = f"the probe catches up at k = {', '.join(map(str, catch))} per seed" if catch else \
        f"no probe up to k = {max(tried)} per class catches up"
    found, text = part(summary["zero_shot_minus_probe_4"], "zero-shot beats a 4-shot probe",
                       "a 4-shot probe beats zero-shot")
    matched = found == NOT_AT_THIS_SCALE
    name = REPRODUCED if matched else NOT_AT_THIS_SCALE if found == REPRODUCED else REVERSED
    return name, [f"{name}: " + ("zero-shot matches a 4-shot probe: " if matched else "") + text + f"; {where}"]
