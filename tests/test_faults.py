"""Training survives `kill -9`: a loadable checkpoint always exists and --resume reproduces the losses."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.model import load
from core.train import latest_checkpoint

ROOT = Path(__file__).resolve().parents[1]
STEPS = 12


def _command(micro_dir, out: Path, resume: bool = False) -> list[str]:
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "--model", str(micro_dir), "--steps", str(STEPS),
           "--batch-size", "8", "--lr", "1e-3", "--warmup-steps", "2", "--eval-every", "0", "--save-every", "1",
           "--keep-checkpoints", "2", "--log-every", "1", "--num-workers", "0", "--threads", "1", "--no-progress",
           "--out", str(out)]
    return cmd + (["--resume-or-start"] if resume else [])  # a kill may come before the first checkpoint


def _losses_by_step(run: Path) -> dict[int, float]:
    out: dict[int, float] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec:
            out[rec["step"]] = rec["loss"]  # a step run again after a resume: the later line wins
    return out


def test_kill_9_at_random_points_then_resume_matches_an_uninterrupted_run(tmp_path, micro_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    clean = tmp_path / "clean"
    subprocess.run(_command(micro_dir, clean), check=True, capture_output=True, env=env, timeout=300)
    expected = _losses_by_step(clean)

    run = tmp_path / "killed"
    rng = random.Random(1)
    kills = 0
    for attempt in range(6):
        proc = subprocess.Popen(_command(micro_dir, run, resume=attempt > 0), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # wait until it trains (a checkpoint or a log line appears), then kill at a random moment
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and not (run / "metrics.jsonl").exists():
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is not None:
            break  # finished before we got to it
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        ckpt = latest_checkpoint(run)
        if ckpt is not None:  # whatever moment the kill hit, the newest complete checkpoint loads
            load(str(ckpt))
            json.loads((ckpt / "trainer_state.json").read_text())
        if kills == 3:
            break
    assert kills >= 1
    final = subprocess.run(_command(micro_dir, run, resume=True), capture_output=True, text=True, env=env, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    got = _losses_by_step(run)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, abs=1e-5), step
    assert latest_checkpoint(run).name == f"step-{STEPS:07d}"
