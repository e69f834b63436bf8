"""Run folders that cannot be mixed up, and hooks: a reused folder is refused, a resume may not change
the data order or the schedule, hooks see every step and can stop a run, snapshots match the model."""

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core.encode import encode_images, encode_texts
from core.model import load
from core.train import Hook, RunFolderError, StopAfter, TrainConfig, latest_checkpoint, train
from core.train.shapes_source import ShapesPairs

ROOT = Path(__file__).resolve().parents[1]


def _cfg(out, model, **kw) -> TrainConfig:
    base = dict(output_dir=str(out), model=str(model), steps=6, batch_size=8, lr=1e-3, warmup_steps=2,
                eval_every=0, save_every=3, log_every=1, num_workers=0, progress=False, seed=0)
    return TrainConfig.from_flat({**base, **kw})


def _losses(run_dir) -> list[float]:
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


class Recorder(Hook):
    def __init__(self):
        self.steps, self.checkpoints, self.snapshots, self.ended = [], [], [], None

    def on_step(self, state, record):
        self.steps.append(record["step"])

    def on_checkpoint(self, path):
        self.checkpoints.append(path.name)

    def on_snapshot(self, state, snapshot):
        self.snapshots.append(snapshot)

    def on_end(self, state, finished):
        self.ended = finished


def test_a_reused_folder_is_refused_and_overwrite_replaces_the_run(tmp_path, micro_dir):
    run = tmp_path / "X"
    train(_cfg(run, micro_dir, steps=3, save_every=0))
    first = load(str(run / "model")).model.state_dict()
    with pytest.raises(RunFolderError, match=r"not empty \(a run with a checkpoint at step 3\).*--resume.*--overwrite"):
        train(_cfg(run, micro_dir, steps=3, save_every=0, lr=5e-3))
    assert len(_losses(run)) == 3  # the first run's log is untouched
    train(_cfg(run, micro_dir, steps=3, save_every=0, lr=5e-3), start="overwrite")
    second = load(str(run / "model")).model.state_dict()
    assert json.loads((run / "train_config.json").read_text())["lr"] == 5e-3 and len(_losses(run)) == 3
    assert any(not torch.equal(first[k], second[k]) for k in first)
    (run / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="not a run's"):
        train(_cfg(run, micro_dir, steps=3), start="overwrite")


def test_the_issues_mixup_cannot_happen(tmp_path, micro_dir):
    """A finished run, a second run with another lr cut before its first checkpoint, then resume:
    before, it 'resumed' the old run at its last step and exported the old weights."""
    run = tmp_path / "X"
    train(_cfg(run, micro_dir, steps=3, save_every=0))
    with pytest.raises(RunFolderError):
        train(_cfg(run, micro_dir, steps=3, lr=5e-3))  # refused before a step is taken
    with pytest.raises(RunFolderError, match="lr=0.005.*started with lr=0.001"):
        train(_cfg(run, micro_dir, steps=3, lr=5e-3), start="resume")


def test_resume_refuses_a_changed_batch_size_and_allows_cadence_changes(tmp_path, micro_dir, capsys):
    run = tmp_path / "run"
    train(_cfg(run, micro_dir, stop_at=3))
    assert latest_checkpoint(run).name == "step-0000003" and not (run / "model").exists()
    for key, value in (("batch_size", 16), ("seed", 1), ("steps", 8), ("warmup_steps", 1), ("data", "./other")):
        with pytest.raises(RunFolderError, match=f"{key}="):
            train(_cfg(run, micro_dir, **{key: value}), start="resume")
    capsys.readouterr()
    train(_cfg(run, micro_dir, log_every=2, keep_checkpoints=3), start="resume")
    out = capsys.readouterr().out
    assert "resumed from" in out and "log_every changed from 1 to 2 (allowed on resume)" in out
    assert latest_checkpoint(run).name == "step-0000006" and (run / "model" / "model.safetensors").is_file()


def test_resume_without_a_checkpoint_says_so_and_resume_or_start_starts(tmp_path, micro_dir):
    with pytest.raises(RunFolderError, match="nothing to resume"):
        train(_cfg(tmp_path / "empty", micro_dir), start="resume")
    assert not (tmp_path / "empty").exists()
    train(_cfg(tmp_path / "empty", micro_dir, steps=2, save_every=0), start="resume_or_start")
    assert len(_losses(tmp_path / "empty")) == 2


def test_hooks_see_every_step_and_a_stop_keeps_a_checkpoint_that_resumes_exactly(tmp_path, micro_dir):
    train(_cfg(tmp_path / "full", micro_dir))
    rec = Recorder()
    train(_cfg(tmp_path / "cut", micro_dir), hooks=[rec, StopAfter(4)])
    assert rec.steps == [1, 2, 3, 4] and rec.checkpoints == ["step-0000003", "step-0000004"] and rec.ended is False
    assert not (tmp_path / "cut" / "model").exists()  # a stopped run exports nothing
    rec2 = Recorder()
    train(_cfg(tmp_path / "cut", micro_dir), hooks=[rec2], start="resume")
    assert rec2.steps == [5, 6] and rec2.ended is True
    assert _losses(tmp_path / "cut") == pytest.approx(_losses(tmp_path / "full"), abs=1e-5)


def test_snapshots_are_the_models_own_embeddings_of_the_probe_set(tmp_path, micro_dir):
    rec = Recorder()
    clip = train(_cfg(tmp_path / "run", micro_dir, steps=4, save_every=0), hooks=[rec], snapshot_every=2)
    assert [s.step for s in rec.snapshots] == [2, 4]
    last = rec.snapshots[-1]
    probe = ShapesPairs(seed=0, image_size=32).probe(32)
    assert last.captions == probe.captions and len(last.labels) == 32 and "shape" in last.labels[0]
    assert last.image_emb.shape == (32, clip.embed_dim) and last.matrix.cosine.shape == (8, 8)
    torch.testing.assert_close(last.image_emb, encode_images(clip, probe.pixel_values), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(last.text_emb, encode_texts(clip, probe.captions), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(last.matrix.cosine, last.image_emb[:8] @ last.text_emb[:8].T, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(rec.snapshots[0].image_emb, last.image_emb)  # it follows training


def test_outputs_have_ordinary_modes_and_no_leftovers(tmp_path, micro_dir):
    run = tmp_path / "run"
    train(_cfg(run, micro_dir, steps=4, save_every=2))
    mask = os.umask(0)
    os.umask(mask)
    for d in [run / "model", run / "checkpoints", *sorted((run / "checkpoints").iterdir())]:
        assert stat.S_IMODE(d.stat().st_mode) == 0o777 & ~mask, d
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "latest", "metrics.jsonl", "model", "train_config.json"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000002", "step-0000004"]
    assert not list(run.rglob("*.tmp"))


def test_ctrl_c_stops_with_a_checkpoint_and_prints_the_resume_command(tmp_path, micro_dir):
    out = tmp_path / "run"
    cmd = [sys.executable, "scripts/train.py", "--model", str(micro_dir), "--steps", "400", "--batch-size", "8",
           "--save-every", "0", "--eval-every", "0", "--log-every", "1", "--num-workers", "0", "--threads", "1",
           "--no-progress", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "metrics.jsonl").exists() and _losses(out)):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr[-2000:]
    ckpt = latest_checkpoint(out)
    step = int(ckpt.name.split("-")[1])
    assert 1 <= step < 400 and f"stopped at step {step} of 400" in stderr
    resume = stderr.strip().splitlines()[-1].strip()
    assert resume.endswith("--resume") and "--out " + str(out) in resume and "done:" not in stdout
    again = subprocess.run(cmd + ["--steps", "400"], cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 1 and again.stderr.count("\n") == 1 and "--resume" in again.stderr


def _damage(ckpt: Path, how: str) -> None:
    """Leave a checkpoint as a crash or a full disk can: a file missing or cut short."""
    name, _, action = how.partition(":")
    f = ckpt / name
    if action == "missing":
        f.unlink()
    else:
        with f.open("r+b") as fh:
            fh.truncate(f.stat().st_size // 2)


@pytest.mark.parametrize("how", ["optimizer.safetensors:cut", "model.safetensors:cut", "rng.safetensors:missing",
                                 "trainer_state.json:cut"])
def test_a_damaged_newest_checkpoint_without_latest_resumes_from_the_one_before(tmp_path, micro_dir, capsys, how):
    """Issue 17: a half-written newest checkpoint and no `latest` pointer crashed --resume."""
    train(_cfg(tmp_path / "full", micro_dir))
    cut = tmp_path / "cut"
    train(_cfg(cut, micro_dir, save_every=1, keep_checkpoints=3), hooks=[StopAfter(4)])
    ckpts = cut / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-0000002", "step-0000003", "step-0000004"]
    _damage(ckpts / "step-0000004", how)
    (cut / "latest").unlink()
    (ckpts / ".step-0000005.tmp-x1y2").mkdir()  # a save cut short leaves its temporary folder
    (ckpts / ".step-0000005.tmp-x1y2" / "config.json").write_text("{")
    capsys.readouterr()
    rec = Recorder()
    train(_cfg(cut, micro_dir, save_every=1, keep_checkpoints=3), hooks=[rec], start="resume")  # crashed before
    out = capsys.readouterr().out
    assert "resumed from" in out and "step-0000003 at step 3" in out
    skipped = [line for line in out.splitlines() if line.startswith("skipped")]
    file = how.split(":")[0]
    assert len(skipped) == 1 and skipped[0].startswith(f"skipped damaged checkpoint step-0000004: {file} is ")
    assert "removed 1 temporary folder(s) of a save cut short (.step-0000005.tmp-x1y2)" in out
    assert rec.steps == [4, 5, 6]
    assert _losses(cut) == pytest.approx(_losses(tmp_path / "full"), abs=1e-5)  # as if never interrupted
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-0000004", "step-0000005", "step-0000006"]
    assert (cut / "latest").read_text() == "step-0000006" and latest_checkpoint(cut).name == "step-0000006"
    load(str(ckpts / "step-0000004"))  # written anew, whole
    _damage(ckpts / "step-0000006", how)
    damaged: list[str] = []
    assert latest_checkpoint(cut, damaged).name == "step-0000005"
    assert len(damaged) == 1 and damaged[0].startswith(f"step-0000006: {file} is ")


def test_a_damaged_checkpoint_newer_than_the_resumed_step_is_not_kept_in_its_place(tmp_path, micro_dir):
    """keep_checkpoints counts checkpoints of this run: a damaged later one is dropped, not the fresh one."""
    run = tmp_path / "run"
    train(_cfg(run, micro_dir, save_every=2, keep_checkpoints=1), hooks=[StopAfter(4)])
    ckpts = run / "checkpoints"
    (ckpts / "step-0000004").rename(ckpts / "step-0000005")  # a later step, made unusable:
    _damage(ckpts / "step-0000005", "optimizer.safetensors:cut")
    train(_cfg(run, micro_dir, save_every=2, keep_checkpoints=1, stop_at=3), start="resume_or_start")
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-0000003"]  # the run started afresh, kept its own


def test_resume_with_only_a_damaged_checkpoint_says_so(tmp_path, micro_dir):
    run = tmp_path / "run"
    train(_cfg(run, micro_dir, steps=3, save_every=0), hooks=[StopAfter(2)])
    (run / "latest").unlink()
    _damage(run / "checkpoints" / "step-0000002", "optimizer.safetensors:cut")
    assert latest_checkpoint(run) is None
    with pytest.raises(RunFolderError, match=r"nothing to resume .*only checkpoint is damaged \(step-0000002: "
                                             r"optimizer.safetensors is unreadable .*--overwrite"):
        train(_cfg(run, micro_dir, steps=3), start="resume")
    cmd = [sys.executable, "scripts/train.py", "--model", str(micro_dir), "--steps", "3", "--batch-size", "8",
           "--eval-every", "0", "--num-workers", "0", "--threads", "1", "--no-progress", "--out", str(run), "--resume"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.startswith("error: nothing to resume") and done.stderr.count("\n") == 1
    assert "step-0000002: optimizer.safetensors is unreadable" in done.stderr
