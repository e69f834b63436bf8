"""Run one of the paper's claims as an experiment (assets/experiments/NAME.yaml) and print its verdict.

    python scripts/experiment.py --list
    python scripts/experiment.py prompt-ensembling            # the recipe as bundled (a minute on 2 cores)
    python scripts/experiment.py zero-shot-vs-probe --quick   # the app's "run it yourself" size
    python scripts/experiment.py objectives                   # trains small models from scratch (minutes)
    python scripts/experiment.py prompt-ensembling --bundle   # write assets/experiments/results/NAME.json

Each number is a held-out accuracy, reported as its mean ± a 95% t-interval over the recipe's seeds
(core/experiments/); the verdict says whether the paper's claim holds at this scale.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.errors import UserInputError  # noqa: E402
from core.experiments import RESULTS_DIR, experiment_names, load_experiment, run_experiment  # noqa: E402
from core.experiments.stats import cells  # noqa: E402


def table(result: dict) -> str:
    """The summary as a Markdown table: each number's mean and 95% interval (accuracies in %, ratios as "2.3x")."""
    rows = ["| number | mean | 95% interval | per seed |", "|---|---|---|---|"]
    rows += [f"| {key} | " + " | ".join(cells(value)) + " |" for key, value in result["summary"].items()]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", help="the experiment (see --list)")
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument("--quick", action="store_true", help="the recipe's quick variant (fewer images and seeds)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--bundle", action="store_true", help="write the result into assets/experiments/results/")
    a = parser.parse_args(argv)
    if a.list or not a.name:
        for name in experiment_names():
            print(f"{name}: {load_experiment(name).claim}")
        return 0 if a.list else 2
    try:
        exp = load_experiment(a.name)
        result = run_experiment(exp, a.quick, lambda done, total: print(f"{done} of {total} runs done", file=sys.stderr))
    except UserInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"**{exp.name}** ({exp.source}): {exp.claim}\n")
    print(table(result))
    print(f"\n**Verdict: {result['verdict']}.**\n" + "\n".join(f"- {f}." for f in result["findings"]))
    print(f"\n{result['seconds']} s; reproduce with `{result['command']}`")
    text = json.dumps(result, indent=1) + "\n"
    if a.json:
        a.json.write_text(text, encoding="utf-8")
    if a.bundle:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        (RESULTS_DIR / f"{exp.name}{'.quick' if a.quick else ''}.json").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
