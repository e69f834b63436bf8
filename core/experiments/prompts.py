"""Kind "prompts": the bare class name, "a photo of a {}.", the mean single template, the ensemble of
all templates and the forward-selected ensemble (chosen on the selection half), on the held-out half."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .stats import interval, overall, part
from .zeroshot_data import BARE, PHOTO, SeedData, encode_seed


@dataclass(frozen=True)
class Settings:
    """No settings of its own: the recipe's n, seeds, task and templates say it all."""


def run_seed(run, seed: int, ctx) -> dict:
    """Held-out accuracies of one seed: bare name, "a photo of a {}.", mean single template, all, selected."""
    from ..eval_study import accuracy, ensemble, forward_select_templates

    d: SeedData = encode_seed(ctx.model(run.model), run, seed, ctx)
    held = d.held_out
    singles = [accuracy(d.img[held], d.y[held], d.template_emb[t]) for t in range(len(d.templates))]
    chosen = forward_select_templates(d.img, d.y, d.template_emb, d.templates, seed,
                                      split=(d.selection, d.held_out))
    return {"bare": singles[d.templates.index(BARE)], "photo": singles[d.templates.index(PHOTO)],
            "mean_single": float(np.mean(singles)), "ensemble": accuracy(d.img[held], d.y[held], ensemble(d.template_emb)),
            "selected": chosen.chosen_heldout, "selected_templates": chosen.chosen_templates}


def summarise(run, per_seed: list[dict]) -> dict:
    """Each number's mean and interval over the seeds, and the two effects the claim is about."""
    keys = ("bare", "photo", "mean_single", "ensemble", "selected")
    out = {k: interval([s[k] for s in per_seed]) for k in keys}
    out["photo_minus_bare"] = interval([s["photo"] - s["bare"] for s in per_seed])
    out["ensemble_minus_photo"] = interval([s["ensemble"] - s["photo"] for s in per_seed])
    return out


def verdict(run, summary: dict) -> tuple[str, list[str]]:
    """Both parts must hold: the photo template beats the bare name, the ensemble beats the photo template."""
    return overall([part(summary["photo_minus_bare"], '"a photo of a {}." beats the bare class name',
                         'the bare class name beats "a photo of a {}."'),
                    part(summary["ensemble_minus_photo"], 'the ensemble beats "a photo of a {}."',
                         '"a photo of a {}." alone beats the ensemble')])
