"""The paper's claims as experiments: a recipe file each, several seeds, intervals and a verdict.

A recipe (assets/experiments/NAME.yaml, `recipe.py`) names the claim, its source in the CLIP paper,
its kind, the model, the task and sizes, and a smaller "quick" variant (what the app re-runs). Each
kind is one module with the same four names: `Settings` (its recipe settings), `run_seed`,
`summarise` and `verdict` (and `units`, its pieces of work per seed, where it has several); `runner.py`
runs any of them seed by seed. Across seeds a number is its
mean and a 95% t-interval (`stats.py`), and a claim is reproduced (the interval of our effect lies on
the paper's side), not reproduced at this scale (it holds no difference), or reversed.

Kinds on a trained model: "prompts" (templates and ensembles), "probe" (zero-shot against few-shot
probes), "shift" (zero-shot, probes and fine-tuning under distribution shift). Kinds that train small
models from scratch (`pool.py`, `scratch.py`): "objectives" (contrastive, bag-of-words and caption
prediction), "temperature" (learned and fixed temperatures, batch sizes), "gap" (the modality gap's
origin: initialisation and temperature, and what centring does).
"""

from .recipe import (DEFAULT_EXPERIMENT, EXPERIMENTS_DIR, KINDS, RESULTS_DIR, Experiment, bundled_result,
                     experiment_names, kind_module, load_experiment)
from .runner import RunContext, run_experiment
from .stats import interval, side


def verdict(exp: Experiment, summary: dict) -> tuple[str, list[str]]:
    """The verdict of a recipe's summary (its kind's rule) and one sentence per part of the claim."""
    return kind_module(exp.kind).verdict(exp, summary)


__all__ = ["DEFAULT_EXPERIMENT", "EXPERIMENTS_DIR", "KINDS", "RESULTS_DIR", "Experiment", "RunContext", "bundled_result",
           "experiment_names", "interval", "kind_module", "load_experiment", "run_experiment", "side", "verdict"]
