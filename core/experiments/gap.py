"""Kind "gap" (Liang et al. 2022, "Mind the Gap"): where the modality gap comes from. A freshly initialised
network already maps each modality into a narrow cone, so images and texts start apart (the cone
effect); contrastive training at a low temperature keeps them apart. From scratch on one seed's
pool: the gap over training for two initialisation scales and several fixed temperatures; then what
centring (each modality minus its centroid, renormalised) does to zero-shot and caption retrieval,
on the trained models and on the bundled model."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .pool import eval_pool
from .scratch import Condition, embed_eval, retrieval_r1, train_conditions
from .stats import NOT_AT_THIS_SCALE, REPRODUCED, interval, overall, part, points, side


@dataclass(frozen=True)
class Settings:
    """Pool, images per run, batch, fixed logit scales (1/temperature), initialisation scales, evals, and the
    trained model whose gap is centred beside ours (with its task)."""

    pool: int = 4096
    images: int = 19200
    batch_size: int = 64
    scales: tuple = (100.0, 30.0, 10.0)
    init_factors: tuple = (1.0, 4.0)
    lr: float = 1e-3
    evals: int = 8
    eval_n: int = 500
    centre_model: str = "shapes-tiny"
    centre_task: str = "shape"


def conditions(s: Settings) -> list[Condition]:
    return [Condition(f"init x{f:g}, scale {g:g}", s.batch_size, g, learn_scale=False, init_factor=f, lr=s.lr)
            for f in s.init_factors for g in s.scales]


def units(run) -> int:
    """Pieces of work per seed, each reported as it ends (the progress bar's unit)."""
    return len(conditions(run.kind_settings())) + 1


def centring(e: dict) -> dict:
    """Zero-shot accuracy and caption retrieval R@1 before and after centring both modalities (class prompts
    are moved by the caption centroid: core.projection.centre_modalities)."""
    from ..projection import centre_modalities

    img, txt, head = centre_modalities(e["img"], e["txt"], e["head"])
    acc = lambda i, h: float(((i @ h.T).argmax(1) == e["y"]).mean())  # noqa: E731
    return {"zero_shot": acc(e["img"], e["head"]), "zero_shot_centred": acc(img, head),
            "retrieval_r1": retrieval_r1(e["img"], e["txt"]), "retrieval_r1_centred": retrieval_r1(img, txt)}


def run_seed(run, seed: int, ctx) -> dict:
    """Each (initialisation, temperature) run's gap curve and its centring, and the bundled model's centring."""
    s = run.kind_settings()
    out = {}
    for cond, t in train_conditions(run, seed, ctx, conditions(s),
                                    ("images", "accuracy", "gap", "image_cone", "text_cone", "paired_cosine")):
        out[cond.label] = {"curve": t.curve, "gap_start": t.curve[0]["gap"], "gap_end": t.curve[-1]["gap"],
                           "centring": centring(embed_eval(t.clip, t.eval_set, run.task, t.templates))}
    from ..projection import modality_gap
    from ..zeroshot import template_presets

    bundled = ctx.model(s.centre_model)
    big = eval_pool(s.eval_n, seed, image_size=bundled.image_size)
    e = embed_eval(bundled, big, s.centre_task, template_presets()[run.templates])
    ctx.unit_done()
    return {"conditions": out, "bundled": {"gap": modality_gap(e["img"], e["txt"]).gap, **centring(e)}}


def summarise(run, per_seed: list[dict]) -> dict:
    """Gaps at the start and end of each run, the temperature's effect, the initialisation's, and centring's."""
    s = run.kind_settings()
    labels = [c.label for c in conditions(s)]
    out = {}
    for label in labels:
        for key in ("gap_start", "gap_end"):
            out[f"{key}: {label}"] = interval([p["conditions"][label][key] for p in per_seed], unit="")
    out["gap_at_init"] = interval([np.mean([p["conditions"][lab]["gap_start"] for lab in labels]) for p in per_seed],
                                  unit="")
    low, high = max(s.scales), min(s.scales)  # the highest logit scale is the lowest temperature
    out["temperature_effect"] = interval([np.mean([p["conditions"][f"init x{f:g}, scale {low:g}"]["gap_end"] -
                                                   p["conditions"][f"init x{f:g}, scale {high:g}"]["gap_end"]
                                                   for f in s.init_factors]) for p in per_seed], unit="")
    for key in ("zero_shot", "retrieval_r1"):  # one number per seed: ours averaged over the runs of that seed
        change = lambda r: r[f"{key}_centred"] - r[key]  # noqa: E731
        out[f"centring {key}: ours"] = interval([np.mean([change(p["conditions"][lab]["centring"]) for lab in labels])
                                                 for p in per_seed])
        out[f"centring {key}: {s.centre_model}"] = interval([change(p["bundled"]) for p in per_seed])
    out["bundled_gap"] = interval([p["bundled"]["gap"] for p in per_seed], unit="")
    return out


def verdict(run, summary: dict) -> tuple[str, list[str]]:
    """Part 1: the modalities start apart (the gap at step 0 beyond what isotropic embeddings give). Part 2: a
    lower temperature keeps a larger gap. Centring's effects are reported, not judged (the paper finds both signs)."""
    s = run.kind_settings()
    chance = 3 * math.sqrt(2 / s.eval_n)  # centroids of isotropic unit vectors lie about sqrt(2/n) apart
    init = summary["gap_at_init"]
    apart = side(init, chance)
    parts = [(REPRODUCED if apart == "above" else NOT_AT_THIS_SCALE,
              f"the cone effect: before any training the centroids of images and captions lie {points(init, '', 1.0, False)}"
              f" apart (isotropic embeddings: under {chance:.2f})"),
             part(summary["temperature_effect"], f"the lowest temperature (scale {max(s.scales):g}) keeps a larger "
                  f"gap than the highest (scale {min(s.scales):g})", "the highest temperature keeps the larger gap",
                  scale=1.0, unit="")]
    verdict_, findings = overall(parts)
    low = max(s.scales)
    for f in s.init_factors:
        start, end = summary[f"gap_start: init x{f:g}, scale {low:g}"], summary[f"gap_end: init x{f:g}, scale {low:g}"]
        findings.append(f"initialisation x{f:g} at scale {low:g}: the gap starts at {points(start, '', 1.0, False)} and "
                        f"ends at {points(end, '', 1.0, False)}")
    for key, label in (("zero_shot", "zero-shot accuracy"), ("retrieval_r1", "caption retrieval R@1")):
        for who in ("ours", s.centre_model):
            e = summary[f"centring {key}: {who}"]
            findings.append(f"centring changes {label} of {'the trained small models' if who == 'ours' else who} "
                            f"by {100 * e['mean']:+.1f}" + (f" ± {100 * e['ci95']:.1f}" if e["ci95"] else "") + " points")
    return verdict_, findings
