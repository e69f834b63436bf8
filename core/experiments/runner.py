"""Run a recipe: seed by seed through its kind's module, then the summary, the verdict and how it was made."""

from __future__ import annotations

import dataclasses
import platform
import time
from dataclasses import dataclass, field
from datetime import date
from typing import Callable

from .recipe import Experiment, kind_module


@dataclass
class RunContext:
    """What a kind's run_seed gets besides the recipe: check() (raises to stop: the app's Stop), unit_done()
    after each of its `units` (a training run), and a cache kept for the whole run (models, prompt embeddings)."""

    check: Callable[[], None] = lambda: None
    unit_done: Callable[[], None] = lambda: None
    cache: dict = field(default_factory=dict)

    def model(self, source: str):
        """A loaded model (core.load), once per run."""
        from ..model import load

        if ("model", source) not in self.cache:
            self.cache[("model", source)] = load(source)
        return self.cache[("model", source)]


def run_experiment(exp: Experiment, quick: bool = False, progress: Callable[[int, int], None] | None = None,
                   check: Callable[[], None] | None = None) -> dict:
    """Run a recipe (or its quick variant) on this machine; the result as a JSON-ready dict.

    progress(done, total) counts units of work (seeds, or seeds x conditions for training kinds);
    check() runs between batches and steps, and an exception it raises (a Stop) ends the run.
    """
    import torch

    run = exp.scaled(quick)
    module = kind_module(run.kind)
    start = time.perf_counter()
    units = getattr(module, "units", lambda r: 1)(run)
    total, done = units * len(run.seeds), [0]

    def step_done() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    ctx = RunContext(check=check or (lambda: None), unit_done=step_done)
    per_seed = []
    for seed in run.seeds:
        per_seed.append({"seed": seed, **module.run_seed(run, seed, ctx)})
        if units == 1:
            step_done()
    summary = module.summarise(run, per_seed)
    verdict, findings = module.verdict(run, summary)
    if len(run.seeds) == 1:
        findings.append("one seed, so no interval: read this verdict as a hint; the bundled run's seeds decide")
    return {"experiment": exp.name, "claim": exp.claim, "source": exp.source, "quick": quick,
            "command": f"python scripts/experiment.py {exp.name}" + (" --quick" if quick else ""),
            "config": dataclasses.asdict(exp), "ran": dataclasses.asdict(run), "per_seed": per_seed,
            "summary": summary, "verdict": verdict, "findings": findings,
            "machine": {"date": date.today().isoformat(), "processor": platform.processor() or platform.machine(),
                        "torch": torch.__version__, "threads": torch.get_num_threads()},
            "seconds": round(time.perf_counter() - start, 1)}
