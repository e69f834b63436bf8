"""The paper's claims as experiments: a recipe file each, several seeds, intervals and a verdict.

A recipe (assets/experiments/NAME.yaml) names the claim, its source in the CLIP paper, the model,
the shapes-world task and sizes, and a smaller "quick" variant (what the app re-runs). Each seed
draws fresh eval images, encodes them once, and splits them into a selection half and a held-out
half (core.eval_study.split_halves); every number is a held-out accuracy. Across seeds, a number is
reported as its mean and a 95% t-interval, and a claim as reproduced (the interval of our effect
lies on the paper's side of 0), not reproduced at this scale (it contains 0), or reversed.

Kinds so far:
- "prompts": the bare class name, "a photo of a {}.", the mean single template, the ensemble of all
  templates and the forward-selected ensemble (chosen on the selection half).
- "probe": zero-shot (the ensemble) against logistic-regression probes on k images per class
  (C chosen on a validation split, core.probe), and the k where the probe catches up.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import UserInputError

EXPERIMENTS_DIR = Path(__file__).resolve().parents[1] / "assets" / "experiments"
RESULTS_DIR = EXPERIMENTS_DIR / "results"
KINDS = ("prompts", "probe")
BARE, PHOTO = "{}", "a photo of a {}."


@dataclass(frozen=True)
class Experiment:
    """One recipe (see the module docstring); `quick` overrides n, seeds and probe_draws for a short run."""

    name: str
    kind: str
    claim: str
    source: str
    model: str = "shapes-tiny"
    task: str = "shape"
    n: int = 2000
    seeds: tuple[int, ...] = (0, 1, 2)
    templates: str = "shapes_world"
    shots: tuple[int, ...] = (1, 2, 4, 8, 16)
    probe_draws: int = 3
    quick: dict = field(default_factory=dict)

    def scaled(self, quick: bool) -> "Experiment":
        """The recipe as run: itself, or with the quick variant's sizes."""
        if not quick:
            return self
        changes = {k: tuple(v) if k == "seeds" else v for k, v in self.quick.items()}
        return dataclasses.replace(self, **changes, quick={})


def experiment_names() -> list[str]:
    """The recipes in assets/experiments/, by name."""
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))


def load_experiment(name: str) -> Experiment:
    """The recipe called `name`; a UserInputError naming the known ones, or the field that is wrong."""
    import yaml

    path = EXPERIMENTS_DIR / f"{name}.yaml"
    if name not in experiment_names():
        raise UserInputError(f"no experiment {name!r}; the experiments are {', '.join(experiment_names())}")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    known = {f.name for f in dataclasses.fields(Experiment)}
    unknown = sorted(set(raw) - known) + sorted(set(raw.get("quick") or {}) - {"n", "seeds", "probe_draws"})
    if unknown:
        raise UserInputError(f"{path.name}: unknown field(s) {', '.join(unknown)}")
    if raw.get("kind") not in KINDS:
        raise UserInputError(f"{path.name}: kind must be one of {', '.join(KINDS)}")
    for key in ("seeds", "shots"):
        if key in raw:
            raw[key] = tuple(int(v) for v in raw[key])
    return Experiment(**raw)


def interval(values) -> dict:
    """Mean, 95% t-interval half-width (None for one value) and the values themselves."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else None
    return {"mean": float(v.mean()), "ci95": half, "values": [float(x) for x in v]}


def side(effect: dict) -> str:
    """'above', 'below' or 'zero': where an effect's interval lies with respect to 0."""
    if effect["ci95"] is None:
        return "above" if effect["mean"] > 0 else "below" if effect["mean"] < 0 else "zero"
    lo, hi = effect["mean"] - effect["ci95"], effect["mean"] + effect["ci95"]
    return "above" if lo > 0 else "below" if hi < 0 else "zero"


@dataclass
class SeedData:
    """One seed's encoded images and prompts: img [n, D], y [n], template_emb [T, C, D], and the split."""

    img: np.ndarray
    y: np.ndarray
    template_emb: np.ndarray
    templates: list[str]
    selection: np.ndarray
    held_out: np.ndarray


def templates_of(exp: Experiment) -> list[str]:
    """The recipe's template preset plus the bare class name and "a photo of a {}." (each once)."""
    from .zeroshot import template_presets

    return list(dict.fromkeys([*template_presets()[exp.templates], BARE, PHOTO]))


def encode_seed(clip, exp: Experiment, seed: int, template_emb: np.ndarray | None = None,
                check: Callable[[], None] | None = None) -> SeedData:
    """Fresh single-object eval images of the shapes world drawn with `seed`, encoded; the class prompts (encoded once
    per run: pass them back in); the seeded, class-stratified selection / held-out split."""
    from .encode import arrays_to_pixels, encode_images
    from .eval_study import shapes_task, split_halves
    from .evaluate import shapes_eval_set
    from .zeroshot import template_embeddings

    samples = shapes_eval_set(exp.n, seed, clip.image_size)  # single objects, as core.evaluate and the model card
    classes, labels = shapes_task(samples, exp.task)
    templates = templates_of(exp)
    if template_emb is None:
        template_emb = template_embeddings(clip, classes, templates).numpy()
    pixels = arrays_to_pixels(np.stack([np.asarray(s.image) for s in samples]), clip.processor.image_mean,
                              clip.processor.image_std)
    img = encode_images(clip, pixels, progress=None if check is None else lambda done, total: check()).numpy()
    y = np.asarray(labels, dtype=np.int64)
    sel, held = split_halves(y, seed)
    return SeedData(img, y, template_emb, templates, sel, held)


def prompts_seed(d: SeedData, seed: int) -> dict:
    """Held-out accuracies of one seed: bare name, "a photo of a {}.", mean single template, all, selected."""
    from .eval_study import accuracy, ensemble, forward_select_templates

    held = d.held_out
    singles = [accuracy(d.img[held], d.y[held], d.template_emb[t]) for t in range(len(d.templates))]
    chosen = forward_select_templates(d.img, d.y, d.template_emb, d.templates, seed,
                                      split=(d.selection, d.held_out))
    return {"bare": singles[d.templates.index(BARE)], "photo": singles[d.templates.index(PHOTO)],
            "mean_single": float(np.mean(singles)), "ensemble": accuracy(d.img[held], d.y[held], ensemble(d.template_emb)),
            "selected": chosen.chosen_heldout, "selected_templates": chosen.chosen_templates}


def probe_seed(d: SeedData, exp: Experiment, check: Callable[[], None] | None = None) -> dict:
    """Zero-shot and the probe at each k (mean over draws) on one seed's held-out half; the first k that catches up."""
    from .eval_study import ensemble
    from .probe import linear_probe_curve

    sel, held = d.selection, d.held_out
    curve = linear_probe_curve(d.img[sel], d.y[sel], d.img[held], d.y[held], ks=exp.shots, seeds=exp.probe_draws,
                               zero_shot_head=ensemble(d.template_emb), include_all=False,
                               progress=None if check is None else lambda done, total: check())
    probe = {str(p.k): p.mean for p in curve.points}
    catch = next((p.k for p in curve.points if p.mean >= curve.zero_shot), None)
    return {"zero_shot": curve.zero_shot, "probe": probe, "catch_up_k": catch}


def summarise(exp: Experiment, per_seed: list[dict]) -> dict:
    """Each number's mean and interval over the seeds, and the effects the claim is about."""
    if exp.kind == "prompts":
        keys = ("bare", "photo", "mean_single", "ensemble", "selected")
        out = {k: interval([s[k] for s in per_seed]) for k in keys}
        out["photo_minus_bare"] = interval([s["photo"] - s["bare"] for s in per_seed])
        out["ensemble_minus_photo"] = interval([s["ensemble"] - s["photo"] for s in per_seed])
        return out
    out = {"zero_shot": interval([s["zero_shot"] for s in per_seed])}
    for k in exp.shots:
        if all(str(k) in s["probe"] for s in per_seed):
            out[f"probe_{k}"] = interval([s["probe"][str(k)] for s in per_seed])
    if all("4" in s["probe"] for s in per_seed):
        out["zero_shot_minus_probe_4"] = interval([s["zero_shot"] - s["probe"]["4"] for s in per_seed])
    out["catch_up_k"] = [s["catch_up_k"] for s in per_seed]
    return out


def _points(effect: dict) -> str:
    half = f" ± {100 * effect['ci95']:.1f}" if effect["ci95"] is not None else ""
    return f"{100 * effect['mean']:+.1f}{half} points"


def _part(effect: dict, wins: str, loses: str) -> tuple[str, str]:
    where = side(effect)
    if where == "above":
        return "reproduced", f"{wins} by {_points(effect)}"
    if where == "below":
        return "reversed", f"{loses} by {_points(effect)}"
    return "not reproduced at this scale", f"no difference beyond the noise ({_points(effect)}: the interval holds 0)"


def verdict(exp: Experiment, summary: dict) -> tuple[str, list[str]]:
    """The verdict (reproduced, not reproduced at this scale, or reversed) and one sentence per part of the claim."""
    if exp.kind == "prompts":
        parts = [_part(summary["photo_minus_bare"], '"a photo of a {}." beats the bare class name',
                       'the bare class name beats "a photo of a {}."'),
                 _part(summary["ensemble_minus_photo"], 'the ensemble beats "a photo of a {}."',
                       '"a photo of a {}." alone beats the ensemble')]
    else:
        catch = sorted({k for k in summary["catch_up_k"] if k is not None})
        tried = [k for k in exp.shots if f"probe_{k}" in summary] or list(exp.shots)
        where = f"the probe catches up at k = {', '.join(map(str, catch))} per seed" if catch else \
            f"no probe up to k = {max(tried)} per class catches up"
        verdict_, text = _part(summary["zero_shot_minus_probe_4"], "zero-shot beats a 4-shot probe",
                               "a 4-shot probe beats zero-shot")
        matched = verdict_ == "not reproduced at this scale"  # the claim is a match: no difference is the paper's
        parts = [("reproduced" if matched else "not reproduced at this scale" if verdict_ == "reproduced" else "reversed",
                  ("zero-shot matches a 4-shot probe: " if matched else "") + text + f"; {where}")]
    names = [p[0] for p in parts]
    overall = "reversed" if "reversed" in names else "reproduced" if set(names) == {"reproduced"} else \
        "not reproduced at this scale"
    return overall, [f"{name}: {text}" for name, text in parts]


def run_experiment(exp: Experiment, quick: bool = False, progress: Callable[[int, int], None] | None = None,
                   check: Callable[[], None] | None = None) -> dict:
    """Run a recipe (or its quick variant) on this machine; the result as JSON-ready dict.

    progress(done, total) after each seed; check() between batches of images and probe fits. An
    exception either raises (a Stop) ends the run.
    """
    from .model import load

    run = exp.scaled(quick)
    start = time.perf_counter()
    clip = load(run.model)
    per_seed, emb = [], None
    for i, seed in enumerate(run.seeds):
        d = encode_seed(clip, run, seed, emb, check)
        emb = d.template_emb
        per_seed.append({"seed": seed, **(prompts_seed(d, seed) if run.kind == "prompts" else probe_seed(d, run, check))})
        if progress is not None:
            progress(i + 1, len(run.seeds))
    summary = summarise(run, per_seed)
    overall, findings = verdict(run, summary)
    import torch

    return {"experiment": exp.name, "claim": exp.claim, "source": exp.source, "quick": quick,
            "command": f"python scripts/experiment.py {exp.name}" + (" --quick" if quick else ""),
            "config": dataclasses.asdict(exp), "ran": dataclasses.asdict(run), "per_seed": per_seed,
            "summary": summary, "verdict": overall, "findings": findings,
            "machine": {"date": date.today().isoformat(), "processor": platform.processor() or platform.machine(),
                        "torch": torch.__version__, "threads": torch.get_num_threads()},
            "seconds": round(time.perf_counter() - start, 1)}


def bundled_result(name: str, quick: bool = False) -> dict | None:
    """The precomputed result shipped in assets/experiments/results/ (None when there is none)."""
    import json

    path = RESULTS_DIR / f"{name}{'.quick' if quick else ''}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
