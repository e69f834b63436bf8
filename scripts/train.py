"""Train or fine-tune a CLIP model with core's trainer. Every flag is a field of TrainConfig.

The bundled model's recipe (assets/recipes/shapes-tiny.yaml), and a quick one that learns colour
on a 2-core CPU in a few minutes:
    python scripts/train.py --recipe shapes-tiny --out runs/shapes-tiny
    python scripts/train.py --recipe quick-demo --out runs/demo

Any recipe, changed: --set key=value (or the field's own flag; both win over the recipe):
    python scripts/train.py --recipe small --set lr=3e-4 --steps 2000 --out runs/small

Fine-tune a Hub or local model on an image folder with a caption column:
    python scripts/train.py --recipe finetune-lit --model openai/clip-vit-base-patch32 --data ./my_images \\
        --text-column caption --out runs/finetune

An output folder holds one run. Continue it after a crash or Ctrl-C with the same command plus
--resume (a changed batch size, seed, step count, ... is refused); --overwrite replaces it.

Several GPUs (or CPU processes with gloo): torchrun --nproc_per_node 4 scripts/train.py ... ;
--batch-size is the global batch, split evenly over the processes.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.errors import UserFacingError  # noqa: E402
from core.train import (Hook, NonFiniteLossError, RunFolderError, TrainConfig, flat_fields, latest_checkpoint,  # noqa: E402
                        read_recipe, recipe_names, train)
from core.train.hooks import eval_top1  # noqa: E402

START_FLAGS = {"resume": "resume", "resume_or_start": "resume_or_start", "overwrite": "overwrite"}


def build_parser() -> argparse.ArgumentParser:
    """The CLI, generated from TrainConfig's fields: --<key> for each, with its help and default."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=f"recipes (assets/recipes/): {', '.join(recipe_names())}")
    run = p.add_argument_group("the run")
    run.add_argument("--out", required=True, help="run folder: train_config.json, metrics.jsonl, checkpoints/, model/")
    run.add_argument("--recipe", help="a recipe name from assets/recipes/ or a YAML file (default: the defaults below)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="change one field (repeatable)")
    start = run.add_mutually_exclusive_group()
    start.add_argument("--resume", dest="start", action="store_const", const="resume",
                       help="continue the run in --out from its latest checkpoint (refused if there is none)")
    start.add_argument("--resume-or-start", dest="start", action="store_const", const="resume_or_start",
                       help="resume if --out has a checkpoint, else start afresh (for scripts)")
    start.add_argument("--overwrite", dest="start", action="store_const", const="overwrite",
                       help="delete the run in --out and start again")
    groups = {}
    for key, spec in flat_fields().items():
        g = groups.setdefault(spec.section, p.add_argument_group(f"{spec.section} (TrainConfig.{spec.section})"))
        flag = "--" + key.replace("_", "-")
        shown = spec.default if spec.default != "" else "''"
        kw = dict(dest=key, default=argparse.SUPPRESS, help=f"{spec.help} (default: {shown})")
        if spec.type is bool:
            g.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif key == "compile":
            g.add_argument(flag, nargs="?", const="inductor", metavar="BACKEND", **kw)
        else:
            names = [flag, "--export"] if key == "export_dir" else [flag]
            metavar = None if spec.choices else {int: "N", float: "X", str: "S"}[spec.type]
            g.add_argument(*names, type=spec.type, choices=spec.choices or None, metavar=metavar, **kw)
    return p


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, str]:
    """(config, start mode) from a command line: defaults < recipe < flags < --set. Resuming without
    --recipe starts from the run's own train_config.json (a run the app's Train tab started, too)."""
    p = build_parser()
    a = vars(p.parse_args(argv))
    values: dict = {}
    saved = Path(a["out"]) / "train_config.json"
    try:
        if a.get("recipe"):
            values.update(read_recipe(a["recipe"]))
        elif a.get("start") in ("resume", "resume_or_start") and saved.is_file():
            # not its stop_at: that run stopped there on purpose, and this one goes on
            values.update({k: v for k, v in json.loads(saved.read_text()).items() if k not in ("output_dir", "stop_at")})
        values.update({k: v for k, v in a.items() if k in flat_fields()})
        for item in a["set"]:
            key, sep, value = item.partition("=")
            if not sep:
                p.error(f"--set takes KEY=VALUE, got {item!r}")
            values[key.strip().replace("-", "_")] = value.strip()
        cfg = TrainConfig.from_flat(values, output_dir=a["out"])
    except (UserFacingError, ValueError) as e:
        p.error(str(e))
    return cfg, a.get("start") or "new"


def resume_command(argv: list[str]) -> str:
    """The command that resumes this run: the one given, with --resume instead of any start flag."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return "the same torchrun command with --resume"
    kept, skip = [], False
    for x in argv:  # drop the start flags, and a --stop-at that would stop the resumed run again
        if skip or x in ("--resume", "--resume-or-start", "--overwrite") or x.startswith("--stop-at="):
            skip = False
            continue
        skip = x == "--stop-at"
        if not skip:
            kept.append(x)
    return shlex.join(["python", sys.argv[0], *kept, "--resume"])


class PrintEvals(Hook):
    """The in-run evals on screen, above the progress bar, with chance levels and a hint for short runs."""

    def __init__(self):
        self.hinted = False

    def on_eval(self, state, results):
        from tqdm.auto import tqdm

        top1 = eval_top1(results)
        chance = {k: v["chance"] for k, v in results.items() if isinstance(v, dict) and "chance" in v}
        line = "  ".join(f"{k} {v:.1%}" for k, v in top1.items())
        tqdm.write(f"step {state.step}: zero-shot {line}", file=sys.stdout)
        if chance and not self.hinted and all(top1[k] < 2 * c for k, c in chance.items() if k in top1):
            self.hinted = True
            tqdm.write("  (near chance, " + ", ".join(f"{k} {c:.1%}" for k, c in chance.items()) + "): expected early "
                       "on. Colour comes first, within a few hundred steps (recipe quick-demo); shape needs thousands "
                       "(recipe shapes-tiny, about an hour on 2 CPU cores).", file=sys.stdout)
        sys.stdout.flush()  # a log file sees each eval as it happens


class CtrlC(Hook):
    """The first Ctrl-C (or SIGTERM) stops after the current step with a checkpoint; a second one quits at once."""

    def __init__(self, argv: list[str]):
        self.argv, self.stop, self.ckpt = argv, False, None

    def _handler(self, signum, frame):
        if self.stop:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.stop = True
        print("\nstopping after this step, with a checkpoint (Ctrl-C again to quit at once)", file=sys.stderr)

    def on_start(self, state):
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handler)

    def should_stop(self):
        return self.stop

    def on_checkpoint(self, path):
        self.ckpt = path

    def on_end(self, state, finished):
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if not finished and self.ckpt is not None:
            print(f"stopped at step {state.step} of {state.cfg.optim.steps}; checkpoint {self.ckpt}\n"
                  f"resume with:\n  {resume_command(self.argv)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg, start = parse_args(argv)
    main_rank = os.environ.get("RANK", "0") == "0"
    if not main_rank:  # rank 0 hears Ctrl-C and tells the others to stop after the same step
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
    try:
        train(cfg, hooks=[PrintEvals(), CtrlC(argv)] if main_rank else [], start=start)
    except (UserFacingError, NonFiniteLossError, RunFolderError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        ckpt = latest_checkpoint(cfg.output_dir)
        where = f"the last checkpoint is {ckpt}" if ckpt else "no checkpoint was written yet"
        print(f"\ninterrupted; {where}\nresume with:\n  {resume_command(argv)}", file=sys.stderr)
        return 130
    final = latest_checkpoint(cfg.output_dir)
    if main_rank and final is not None and final.name == f"step-{cfg.optim.steps:07d}":
        print(f"done: model saved to {cfg.runtime.export_dir or Path(cfg.output_dir) / 'model'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
