"""Kind "temperature" (the paper, §2.5: the temperature is learned, starting at 0.07, the logit scale
clipped at 100; and contrastive learning is said to need large batches). From scratch on one seed's
pool: the learned temperature against fixed ones at the same batch, and batch sizes at equal images
seen (so a small batch takes more, smaller steps; the learning rate is the same). Speed is the mean
zero-shot accuracy over the run's eval points (the area under the curve); we also keep the final one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scratch import Condition, train_conditions
from .stats import NOT_AT_THIS_SCALE, interval, match, overall, part, points


@dataclass(frozen=True)
class Settings:
    """Pool, images per condition, the base batch, fixed logit scales (1/temperature), other batch sizes, evals."""

    pool: int = 4096
    images: int = 19200
    batch_size: int = 64
    fixed_scales: tuple = (100.0, 30.0, 5.0)
    batch_sizes: tuple = (16, 256)
    lr: float = 1e-3
    evals: int = 8
    eval_n: int = 500


def conditions(s: Settings) -> list[Condition]:
    """Learned at the base batch, each fixed scale at the base batch, the learned one at each other batch size."""
    out = [Condition(f"learned, batch {s.batch_size}", s.batch_size, lr=s.lr)]
    out += [Condition(f"fixed scale {g:g}, batch {s.batch_size}", s.batch_size, g, learn_scale=False, lr=s.lr)
            for g in s.fixed_scales]
    out += [Condition(f"learned, batch {b}", int(b), lr=s.lr) for b in s.batch_sizes]
    return out


def units(run) -> int:
    """Pieces of work per seed, each reported as it ends (the progress bar's unit)."""
    return len(conditions(run.kind_settings()))


def run_seed(run, seed: int, ctx) -> dict:
    """Every condition on one seed's pool: its curve (accuracy, logit scale) and its speed and final accuracy."""
    out = {}
    for cond, t in train_conditions(run, seed, ctx, conditions(run.kind_settings()),
                                    ("images", "accuracy", "logit_scale", "loss")):
        out[cond.label] = {"curve": t.curve, "speed": float(np.mean([p["accuracy"] for p in t.curve])),
                           "final": t.curve[-1]["accuracy"], "steps": t.steps}
    return {"conditions": out}


def summarise(run, per_seed: list[dict]) -> dict:
    """Each condition's speed and final accuracy over seeds, the learned minus the best fixed, the largest minus the smallest batch."""
    s = run.kind_settings()
    labels = [c.label for c in conditions(s)]
    out = {}
    for label in labels:
        out[f"speed: {label}"] = interval([p["conditions"][label]["speed"] for p in per_seed])
        out[f"final: {label}"] = interval([p["conditions"][label]["final"] for p in per_seed])
    learned, fixed = labels[0], labels[1:1 + len(s.fixed_scales)]
    out["learned_scale_start"] = interval([p["conditions"][learned]["curve"][0]["logit_scale"] for p in per_seed], unit="")
    out["learned_scale_end"] = interval([p["conditions"][learned]["curve"][-1]["logit_scale"] for p in per_seed], unit="")
    best = max(fixed, key=lambda lab: out[f"speed: {lab}"]["mean"]) if fixed else None
    if best:
        out["learned_minus_best_fixed"] = interval([p["conditions"][learned]["speed"] - p["conditions"][best]["speed"]
                                                    for p in per_seed])
        out["best_fixed"] = [best]
    by_batch = sorted([(s.batch_size, learned)] + [(int(b), f"learned, batch {b}") for b in s.batch_sizes])
    if len(by_batch) > 1:
        (small, lo), (large, hi) = by_batch[0], by_batch[-1]
        out["largest_minus_smallest_batch"] = interval([p["conditions"][hi]["speed"] - p["conditions"][lo]["speed"]
                                                        for p in per_seed])
        out["batches_compared"] = [small, large]
    return out


def verdict(run, summary: dict) -> tuple[str, list[str]]:
    """Part 1 (a match): a learned temperature is at least as fast as the best fixed one. Part 2: the largest batch
    is faster than the smallest at equal images."""
    parts = []
    if "learned_minus_best_fixed" in summary:
        parts.append(match(summary["learned_minus_best_fixed"], "the learned temperature against the best fixed one "
                           f"({summary['best_fixed'][0]}), in mean accuracy over the run"))
    if "largest_minus_smallest_batch" in summary:
        small, large = summary["batches_compared"]
        found, text = part(summary["largest_minus_smallest_batch"], f"batch {large} learns faster than batch {small}",
                           f"batch {small} learns faster than batch {large}")
        s = run.kind_settings()
        steps = f" at equal images seen ({s.images:,}: {s.images // small:,} steps of {small} against {s.images // large:,} of {large})"
        parts.append((found, text + steps + ("" if found != NOT_AT_THIS_SCALE else "; at this scale the batch size hardly matters")))
    verdict_, findings = overall(parts)
    start, end = summary["learned_scale_start"], summary["learned_scale_end"]
    findings.append(f"the learned logit scale went from {start['mean']:.1f} to {points(end, '', 1.0, False)} over the run "
                    "(the paper starts it at 1/0.07 = 14.3; OpenAI's released models end at the clip, 100)")
    return verdict_, findings
