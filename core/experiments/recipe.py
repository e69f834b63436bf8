"""Recipe files of the paper's claims (assets/experiments/NAME.yaml) and their bundled results.

A recipe names the claim, its source, the kind of experiment (a module of this package), the model
and task, the seeds, the kind's own `settings` (checked against that kind's `Settings` dataclass)
and a smaller `quick` variant: what the app's "Run it yourself" runs.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserInputError

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "assets" / "experiments"
RESULTS_DIR = EXPERIMENTS_DIR / "results"
KINDS = ("prompts", "probe", "objectives", "shift", "temperature", "gap")
QUICK_KEYS = {"n", "seeds", "probe_draws", "settings"}
# The order the claims are listed in: the (and a learner's) path through the paper; others after, by name.
PAPER_ORDER = ("objectives", "prompt-ensembling", "zero-shot-vs-probe", "distribution-shift", "temperature-and-batch",
               "modality-gap")
DEFAULT_EXPERIMENT = "prompt-ensembling"  # what opens first: the quickest to re-run (seconds)


def kind_module(kind: str):
    """The module that runs one kind of experiment (core/experiments/<kind>.py)."""
    if kind not in KINDS:
        raise UserInputError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return importlib.import_module(f"{__package__}.{kind}")


@dataclass(frozen=True)
class Experiment:
    """One recipe; `quick` overrides n, seeds, probe_draws and settings for a short run."""

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
    settings: dict = field(default_factory=dict)
    quick: dict = field(default_factory=dict)

    def scaled(self, quick: bool) -> "Experiment":
        """The recipe as run: itself, or with the quick variant's sizes (settings merge key by key)."""
        if not quick:
            return self
        changes = {k: tuple(v) if k == "seeds" else v for k, v in self.quick.items()}
        if "settings" in changes:
            changes["settings"] = {**self.settings, **changes["settings"]}
        return dataclasses.replace(self, **changes, quick={})

    def kind_settings(self):
        """The kind's Settings dataclass filled from `settings` (its defaults for what is left out)."""
        return kind_module(self.kind).Settings(**self.settings)


def experiment_names() -> list[str]:
    """The recipes in assets/experiments/, in PAPER_ORDER, then any others by name."""
    rank = {name: i for i, name in enumerate(PAPER_ORDER)}
    return sorted((p.stem for p in EXPERIMENTS_DIR.glob("*.yaml")), key=lambda n: (rank.get(n, len(rank)), n))


def _check_settings(path: Path, kind: str, settings: dict) -> None:
    known = {f.name for f in dataclasses.fields(kind_module(kind).Settings)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise UserInputError(f"{path.name}: unknown setting(s) {', '.join(unknown)} for kind {kind}; "
                             f"known: {', '.join(sorted(known)) or 'none'}")


def load_experiment(name: str) -> Experiment:
    """The recipe called `name`; a UserInputError naming the known ones, or the field that is wrong."""
    import yaml

    path = EXPERIMENTS_DIR / f"{name}.yaml"
    if name not in experiment_names():
        raise UserInputError(f"no experiment {name!r}; the experiments are {', '.join(experiment_names())}")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    known = {f.name for f in dataclasses.fields(Experiment)}
    unknown = sorted(set(raw) - known) + sorted(set(raw.get("quick") or {}) - QUICK_KEYS)
    if unknown:
        raise UserInputError(f"{path.name}: unknown field(s) {', '.join(unknown)}")
    if raw.get("kind") not in KINDS:
        raise UserInputError(f"{path.name}: kind must be one of {', '.join(KINDS)}")
    for settings in (raw.get("settings") or {}, (raw.get("quick") or {}).get("settings") or {}):
        _check_settings(path, raw["kind"], settings)
    for key in ("seeds", "shots"):
        if key in raw:
            raw[key] = tuple(int(v) for v in raw[key])
    return Experiment(**raw)


def bundled_result(name: str, quick: bool = False) -> dict | None:
    """The precomputed result shipped in assets/experiments/results/ (None when there is none)."""
    path = RESULTS_DIR / f"{name}{'.quick' if quick else ''}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
