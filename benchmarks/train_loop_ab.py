"""The training loop at two commits, side by side: is a change to the training path slower on this machine?

    python benchmarks/train_loop_ab.py --base e98d068                       # tiny, batch 64, 20 timed steps
    python benchmarks/train_loop_ab.py --base e98d068 --preset small --batch 32 --json benchmarks/results/x.json

`--base` is checked out in a temporary git worktree; the working tree is the other side. Each repeat runs
core.train.train (the real loop: data workers, hooks, metrics.jsonl) in a fresh process for each side, the
order alternating, and times steps `--warmup`+1 .. `--warmup`+`--steps` from inside the run (start-up,
the first steps and the export left out). The table gives each side's median seconds per step and the
median of the per-repeat ratios (base / working tree: above 1 means the working tree is faster), and each
side's loss at the last step (the two sides train the same preset from the same seed on the same batches).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RUN = r"""
import json, sys, tempfile, time
sys.path.insert(0, ".")
import torch
from core.train import Hook, TrainConfig, train

preset, batch, warmup, steps, threads, workers = sys.argv[1], *map(int, sys.argv[2:7])
torch.set_num_threads(threads)


class Clock(Hook):
    def __init__(self):
        self.marks, self.loss = {}, None

    def on_step(self, state, record):
        if record["step"] in (warmup, warmup + steps):
            self.marks[record["step"]] = time.perf_counter()
        if record["step"] == warmup + steps:
            self.loss = float(record["loss"])


clock = Clock()
with tempfile.TemporaryDirectory() as out:
    cfg = TrainConfig.from_flat(model=preset, batch_size=batch, steps=warmup + steps, output_dir=out, device="cpu",
                                num_workers=workers, progress=False, eval_every=0, save_every=0, log_every=10, seed=0)
    train(cfg, hooks=[clock])
print(json.dumps({"seconds_per_step": (clock.marks[warmup + steps] - clock.marks[warmup]) / steps, "loss": clock.loss}))
"""


def run_side(tree: Path, args) -> dict:
    """One training run in `tree`, in a fresh process: {"seconds_per_step", "loss"}."""
    cmd = [sys.executable, "-c", RUN, args.preset, str(args.batch), str(args.warmup), str(args.steps),
           str(args.threads), str(args.workers)]
    done = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"error: the run in {tree} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="the commit to compare the working tree with")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1, help="data workers of each run")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        base_tree = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base_tree), args.base], cwd=ROOT, check=True)
        try:
            base_rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=base_tree, capture_output=True,
                                      text=True, check=True).stdout.strip()
            rows = {"base": [], "work": []}
            for r in range(args.repeats):
                order = ("base", "work") if r % 2 == 0 else ("work", "base")
                for side in order:
                    rows[side].append(run_side(base_tree if side == "base" else ROOT, args))
                print(f"repeat {r + 1}: base {rows['base'][-1]['seconds_per_step']:.3f} s/step, "
                      f"work {rows['work'][-1]['seconds_per_step']:.3f} s/step", file=sys.stderr)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, check=False)
    ratios = [b["seconds_per_step"] / w["seconds_per_step"] for b, w in zip(rows["base"], rows["work"])]
    out = {"base": base_rev, "preset": args.preset, "batch": args.batch, "steps": args.steps, "repeats": args.repeats,
           "threads": args.threads, "workers": args.workers,
           "base_seconds_per_step": statistics.median(x["seconds_per_step"] for x in rows["base"]),
           "work_seconds_per_step": statistics.median(x["seconds_per_step"] for x in rows["work"]),
           "median_ratio_base_over_work": statistics.median(ratios), "ratios": ratios,
           "base_last_loss": rows["base"][-1]["loss"], "work_last_loss": rows["work"][-1]["loss"]}
    print(f"| preset | batch | base {base_rev} s/step | working tree s/step | median ratio base/work | last loss base / work |")
    print("|---|---|---|---|---|---|")
    print(f"| {args.preset} | {args.batch} | {out['base_seconds_per_step']:.3f} | {out['work_seconds_per_step']:.3f} | "
          f"{out['median_ratio_base_over_work']:.3f} | {out['base_last_loss']:.4f} / {out['work_last_loss']:.4f} |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
