"""Training: save/load round trip, exact resume, tower locking, non-finite loss, the CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import core.train.step as step_mod
from core.errors import UserInputError
from core.encode import encode_images, encode_texts
from core.evaluate import evaluate_shapes
from core.model import load
from core.shapes import ShapesWorld
from core.train import Hook, NonFiniteLossError, TrainConfig, latest_checkpoint, lr_at, train
from core.zeroshot import template_presets

ROOT = Path(__file__).resolve().parents[1]


def _cfg(out, model, **kw) -> TrainConfig:
    base = dict(output_dir=str(out), model=str(model), steps=6, batch_size=8, lr=1e-3, warmup_steps=2,
                eval_every=0, save_every=3, log_every=1, num_workers=0, progress=False, seed=0)
    base.update(kw)
    return TrainConfig.from_flat(base)


def _losses(run_dir) -> list[float]:
    rows = [json.loads(l) for l in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def test_two_steps_save_load_same_embeddings(tmp_path, micro_dir):
    clip = train(_cfg(tmp_path / "run", micro_dir, steps=2, save_every=0))
    reloaded = load(str(tmp_path / "run" / "model"))
    images = [s.image for s in ShapesWorld(seed=5).take(4)]
    texts = ["a red star", "two shapes: a blue circle and a green square"]
    torch.testing.assert_close(encode_images(reloaded, images), encode_images(clip, images), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(encode_texts(reloaded, texts), encode_texts(clip, texts), atol=1e-6, rtol=1e-5)
    before = load(str(micro_dir))
    assert not torch.allclose(encode_texts(before, texts), encode_texts(clip, texts))  # it did train


def test_resume_reproduces_uninterrupted_losses(tmp_path, micro_dir):
    train(_cfg(tmp_path / "full", micro_dir))
    full = _losses(tmp_path / "full")

    class Crash(Exception):
        pass

    class CrashAfterStep4(Hook):
        def on_step(self, state, record):
            if record["step"] == 4:
                raise Crash  # dies after the step-3 checkpoint, mid-way to the next one

    with pytest.raises(Crash):
        train(_cfg(tmp_path / "cut", micro_dir), hooks=[CrashAfterStep4()])
    assert latest_checkpoint(tmp_path / "cut").name == "step-0000003"
    train(_cfg(tmp_path / "cut", micro_dir), start="resume")
    resumed = _losses(tmp_path / "cut")
    # the log keeps steps 1-3 from the first attempt (step 4 is redone, so its first line goes), then 4-6
    assert len(full) == 6 and len(resumed) == 6 and resumed[:3] == full[:3]
    assert resumed[3:] == pytest.approx(full[3:], abs=1e-5)
    rows = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    elapsed = [r["elapsed_s"] for r in rows if "elapsed_s" in r]
    stored = json.loads((tmp_path / "cut" / "checkpoints" / "step-0000003" / "trainer_state.json").read_text())["elapsed_s"]
    assert elapsed == sorted(elapsed) and elapsed[3] >= stored > 0  # the resume goes on counting, it does not restart


def test_group_loss_adds_the_in_group_term_and_init_scale_is_for_presets(tmp_path, micro_dir):
    train(_cfg(tmp_path / "plain", micro_dir, steps=1, batch_size=16, save_every=0))
    train(_cfg(tmp_path / "grouped", micro_dir, steps=1, batch_size=16, save_every=0, group_loss=1.0))
    train(_cfg(tmp_path / "no_groups", micro_dir, steps=1, batch_size=16, save_every=0, group_loss=1.0, hard_negatives=0.0))
    plain, grouped, no_groups = (_losses(tmp_path / n)[0] for n in ("plain", "grouped", "no_groups"))
    # batch 16 holds one group of 7: the grouped loss is the plain one plus a positive in-group term
    # (the same first step, so the whole-batch term is identical), at least log(7) / 2 for a model
    # that cannot yet tell the shapes apart; with no groups in the batch the weight adds nothing
    assert 0.5 * np.log(7) < grouped - plain < 2 * np.log(7)
    train(_cfg(tmp_path / "np", micro_dir, steps=1, batch_size=16, save_every=0, hard_negatives=0.0))
    assert no_groups == pytest.approx(_losses(tmp_path / "np")[0], abs=1e-6)
    with pytest.raises(UserInputError, match="from scratch"):
        train(_cfg(tmp_path / "bad", micro_dir, steps=1, init_logit_scale=50.0))


@pytest.mark.parametrize("layers_before_stop", [1, 5])  # 4 layers: inside step 3's forward pass; inside its backward
def test_stop_now_ends_a_step_midway_and_keeps_the_last_whole_step(tmp_path, micro_dir, layers_before_stop):
    """A Stop inside a long step (stop_now, asked at each encoder layer) drops that step whole: the run
    ends at once with a checkpoint of step 2, whose weights are those after step 2 of an uninterrupted run."""
    train(_cfg(tmp_path / "full", micro_dir, steps=2, save_every=0))
    after_two = load(str(tmp_path / "full" / "model")).model.state_dict()

    class StopInStep3(Hook):
        steps, asked = 0, 0

        def on_step(self, state, record):
            self.steps = record["step"]

        def stop_now(self):
            if self.steps == 2:
                self.asked += 1
            return self.asked > layers_before_stop

    hook = StopInStep3()
    train(_cfg(tmp_path / "cut", micro_dir, save_every=0), hooks=[hook])
    assert hook.steps == 2 and latest_checkpoint(tmp_path / "cut").name == "step-0000002"
    assert len(_losses(tmp_path / "cut")) == 2 and not (tmp_path / "cut" / "model").exists()
    kept = load(str(latest_checkpoint(tmp_path / "cut"))).model.state_dict()
    assert all(torch.allclose(kept[k], after_two[k], atol=1e-6) for k in after_two)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, micro_dir, monkeypatch):
    real = step_mod.contrastive_loss
    calls = {"n": 0}

    def poisoned(*a, **k):
        calls["n"] += 1
        loss = real(*a, **k)
        return loss * float("nan") if calls["n"] == 5 else loss

    monkeypatch.setattr(step_mod, "contrastive_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match="nan"):
        train(_cfg(tmp_path / "run", micro_dir))
    ckpt = latest_checkpoint(tmp_path / "run")
    assert ckpt.name == "step-0000003"
    state = load(str(ckpt)).model.state_dict()
    assert all(torch.isfinite(v).all() for v in state.values())


def test_lock_image_freezes_the_image_tower(tmp_path, micro_dir):
    before = load(str(micro_dir)).model.state_dict()
    clip = train(_cfg(tmp_path / "run", micro_dir, steps=2, save_every=0, lock_image=True))
    after = clip.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(("vision_model", "visual_projection")))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("text_model"))


def test_logit_scale_never_exceeds_100(tmp_path, micro_dir):
    clip = train(_cfg(tmp_path / "run", micro_dir, steps=3, save_every=0, lr=5.0, warmup_steps=1, grad_clip=1e9))
    assert clip.model.logit_scale.detach().exp().item() <= 100.0 + 1e-4


def test_in_run_eval_is_the_evaluate_scripts_measure(tmp_path, micro_dir):
    """Each eval line in metrics.jsonl is what evaluate_shapes reports for the weights of that step,
    with the shapes-world templates by default (scripts/evaluate.py --templates shapes_world)."""
    cfg = _cfg(tmp_path / "run", micro_dir, steps=2, save_every=0, eval_every=1, eval_samples=40)
    train(cfg)
    logged = [json.loads(l)["eval"] for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"eval"' in l]
    reloaded = load(str(tmp_path / "run" / "model"))  # a new object: no zero-shot heads cached from step 1
    direct = evaluate_shapes(reloaded, n=40, seed=cfg.data.seed + 10_000, templates=template_presets()["shapes_world"])
    assert len(logged) == 2 and logged[-1] == {k: v["top1"] for k, v in direct.items() if "top1" in v}
    with pytest.raises(UserInputError, match="unknown eval template preset 'nope'"):
        train(_cfg(tmp_path / "bad", micro_dir, eval_every=2, eval_templates="nope"))


def test_schedule_warms_up_then_decays_to_zero():
    cfg = TrainConfig.from_flat(steps=100, warmup_steps=10, lr=1.0)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(55, cfg) == pytest.approx(0.5) and lr_at(100, cfg) == pytest.approx(0.0, abs=1e-9)


def test_train_cli_on_an_image_folder(tmp_path, micro_dir):
    folder = tmp_path / "pairs"
    folder.mkdir()
    rows = ["file_name,text"]
    for s in ShapesWorld(seed=9).take(12):
        s.image.save(folder / f"{s.index}.png")
        rows.append(f"{s.index}.png,\"{s.caption}\"")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    out = subprocess.run([sys.executable, "scripts/train.py", "--model", str(micro_dir), "--data", str(folder),
                          "--steps", "2", "--batch-size", "4", "--num-workers", "0", "--eval-every", "0", "--log-every", "1",
                          "--no-progress", "--out", str(tmp_path / "run")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(_losses(tmp_path / "run")) == 2
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    bad = subprocess.run([sys.executable, "scripts/train.py", "--data", str(folder), "--text-column", "caption",
                          "--steps", "1", "--out", str(tmp_path / "bad")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 1 and bad.stderr.strip().startswith("error:") and "caption" in bad.stderr
