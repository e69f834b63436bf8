"""Training at scale, on CPU: the gathered loss under 2 gloo processes equals one process on the
global batch; two-pass accumulation, gradient checkpointing, patch dropout, SigLIP, compile, torchrun."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as tmp
from safetensors.torch import load_file, save_file

from core.train.config import ConfigError
from core.train.distributed import DistInfo, add_patch_dropout, init_from_env
from core.train.shapes_source import ShapesPairs
from core.loss import siglip_loss
from core.model import load
from core.train import (Batch, TextTokens, Towers, TrainConfig, TrainState, enable_checkpointing, latest_checkpoint,
                        make_optimizer, train, train_step, wrap_towers)
from scripts.app_process import free_port

ROOT = Path(__file__).resolve().parents[1]
LOCAL = 6  # pairs per rank


def _cfg(**kw) -> TrainConfig:
    base = dict(output_dir="", grad_clip=1e9, weight_decay=0.0, hard_negatives=0.0)  # clipping would rescale grads
    base.update(kw)
    return TrainConfig.from_flat(base)


def _batches(world: int):
    src = ShapesPairs(seed=3, hard_negatives=0.0, image_size=32)
    return [src.batch(0, LOCAL, rank, world) for rank in range(world)]


def _grads(model_dir: str, cfg: TrainConfig, pixels, captions, info=DistInfo()) -> dict[str, torch.Tensor]:
    """Gradients of one step (lr 0: the weights stay put, .grad keeps the step's gradient)."""
    torch.manual_seed(0)
    clip = load(model_dir)
    clip.model.train()
    towers = Towers(clip.model, cfg.loss.kind)
    state = TrainState(clip, towers, make_optimizer(towers, cfg), cfg, info, runner=wrap_towers(towers, cfg, info))
    train_step(state, Batch(pixels, captions).tokenized(TextTokens.of(clip)), 0.0)
    return {n: p.grad.detach().clone() for n, p in towers.named_parameters() if p.grad is not None}


def _worker(rank: int, world: int, port: int, model_dir: str, cfg: TrainConfig, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info, _ = init_from_env("cpu")
    b = _batches(world)[rank]
    grads = _grads(model_dir, cfg, b.pixel_values, b.captions, info)
    if rank == 0:
        save_file({k: v.contiguous() for k, v in grads.items()}, out)
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("loss,local", [("clip", False), ("clip", True), ("siglip", True)])
def test_two_gloo_processes_give_the_global_batch_gradients(tmp_path, micro_dir, loss, local):
    cfg = _cfg(loss=loss, local_loss=local)
    out = tmp_path / "rank0.safetensors"
    tmp.spawn(_worker, args=(2, free_port(), str(micro_dir), cfg, str(out)), nprocs=2, join=True)
    distributed = load_file(str(out))
    shards = _batches(2)
    single = _grads(str(micro_dir), cfg, torch.cat([b.pixel_values for b in shards]), shards[0].captions + shards[1].captions)
    assert set(distributed) == set(single) and len(single) > 10
    for name, g in single.items():
        torch.testing.assert_close(distributed[name], g, atol=1e-5, rtol=1e-4, msg=name)
    # and the global batch is more than one rank's batch: the gathered negatives matter
    alone = _grads(str(micro_dir), cfg, shards[0].pixel_values, shards[0].captions)
    assert any((alone[n] - single[n]).abs().max() > 1e-4 for n in single)


def _nan_worker(rank: int, world: int, port: int, model_dir: str, out_dir: str, report: str) -> None:
    """Trains under gloo; rank 1's third loss is NaN. Writes what this rank raised and its weights."""
    import core.train.step as step_mod

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    real, calls = step_mod.contrastive_loss, {"n": 0}

    def poisoned(*a, **k):
        calls["n"] += 1
        loss = real(*a, **k)
        return loss * float("nan") if rank == 1 and calls["n"] == 3 else loss
    step_mod.contrastive_loss = poisoned
    cfg = TrainConfig.from_flat(model=model_dir, batch_size=8, steps=6, save_every=2, log_every=1, eval_every=0,
                                num_workers=0, progress=False, lr=1e-3, output_dir=out_dir, seed=0)
    try:
        train(cfg)
        raised = ""
    except Exception as e:  # noqa: BLE001 - the test reads what was raised
        raised = f"{type(e).__name__}: {e}"
    Path(f"{report}.{rank}").write_text(raised)


def test_a_nan_on_one_rank_stops_every_rank_at_that_step(tmp_path, micro_dir):
    report = str(tmp_path / "raised")
    ctx = tmp.spawn(_nan_worker, args=(2, free_port(), str(micro_dir), str(tmp_path / "run"), report), nprocs=2,
                    join=False)
    deadline = time.monotonic() + 240
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:  # a rank left waiting for the other at a collective
            for proc in ctx.processes:
                proc.kill()
            pytest.fail("the ranks did not stop together: one was left waiting")
    raised = [Path(f"{report}.{r}").read_text() for r in range(2)]
    assert all(r.startswith("NonFiniteLossError") and "at step 3" in r for r in raised), raised
    assert latest_checkpoint(tmp_path / "run").name == "step-0000002"


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_two_pass_accumulation_keeps_the_full_batch_gradients(micro_dir, loss):
    b = _batches(1)[0]
    full = _grads(str(micro_dir), _cfg(loss=loss), b.pixel_values, b.captions)
    chunked = _grads(str(micro_dir), _cfg(loss=loss, accum_freq=3), b.pixel_values, b.captions)
    for name, g in full.items():
        torch.testing.assert_close(chunked[name], g, atol=1e-5, rtol=1e-4, msg=name)


def test_gradient_checkpointing_changes_memory_not_gradients(micro_dir):
    b = _batches(1)[0]
    plain = _grads(str(micro_dir), _cfg(), b.pixel_values, b.captions)
    clip = load(str(micro_dir))
    enable_checkpointing(clip.model)
    clip.model.train()
    assert clip.model.vision_model.encoder.gradient_checkpointing
    towers = Towers(clip.model)
    cfg = _cfg()
    train_step(TrainState(clip, towers, make_optimizer(towers, cfg), cfg), b.tokenized(TextTokens.of(clip)), 0.0)
    for name, p in towers.named_parameters():
        torch.testing.assert_close(p.grad, plain[name], atol=1e-6, rtol=1e-5, msg=name)


def test_patch_dropout_drops_patches_while_training_only(micro):
    pixels = _batches(1)[0].pixel_values  # 32 px, 8-px patches: 16 patches + CLS
    handle = add_patch_dropout(micro.model.vision_model, 0.5)
    micro.model.train()
    assert micro.model.vision_model(pixel_values=pixels).last_hidden_state.shape[1] == 1 + 8
    micro.model.eval()
    assert micro.model.vision_model(pixel_values=pixels).last_hidden_state.shape[1] == 1 + 16
    handle.remove()
    with pytest.raises(ValueError, match="patch dropout"):
        add_patch_dropout(micro.model.vision_model, 1.0)


def _numpy_siglip(img, txt, t, b):
    img = img / np.linalg.norm(img, axis=1, keepdims=True)
    txt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    logits = min(math.exp(t), 100.0) * img @ txt.T + b
    z = 2 * np.eye(len(img)) - 1
    return float(np.sum(np.log1p(np.exp(-z * logits))) / len(img))


@pytest.mark.parametrize("t,b", [(math.log(10), -10.0), (2.0, 0.5), (6.0, -3.0)])
def test_siglip_loss_matches_a_direct_computation(t, b):
    rng = np.random.default_rng(7)
    img, txt = rng.normal(size=(9, 12)), rng.normal(size=(9, 12))
    got = siglip_loss(torch.tensor(img), torch.tensor(txt), torch.tensor(t), torch.tensor(b))
    assert float(got) == pytest.approx(_numpy_siglip(img, txt, t, b), rel=1e-5)


def test_siglip_and_options_train_end_to_end(tmp_path, micro_dir):
    """SigLIP from a checkpoint with its bias saved and resumed, accumulation, patch dropout, grad
    checkpointing and an (eager-backend) torch.compile, all in one short run."""
    cfg = TrainConfig.from_flat(output_dir=str(tmp_path / "run"), model=str(micro_dir), steps=4, batch_size=8, lr=1e-3,
                                warmup_steps=1, eval_every=0, save_every=2, log_every=1, num_workers=0, progress=False,
                                loss="siglip", accum_freq=2, patch_dropout=0.25, grad_checkpointing=True, compile="eager")
    train(cfg.replace(stop_at=2))
    assert "siglip_bias" in load_file(str(latest_checkpoint(tmp_path / "run") / "loss.safetensors"))
    assert not (tmp_path / "run" / "model").exists()  # a stopped run exports nothing
    train(cfg, start="resume")
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(math.isfinite(r["loss"]) for r in rows)
    with pytest.raises(ConfigError, match="divide evenly"):
        train(cfg.replace(batch_size=9, output_dir=str(tmp_path / "bad")))


def test_torchrun_two_cpu_processes_train_and_resume(tmp_path, micro_dir):
    out = tmp_path / "run"
    base = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
            str(ROOT / "scripts" / "train.py"), "--model", str(micro_dir), "--batch-size", "8", "--lr", "1e-3",
            "--warmup-steps", "1", "--eval-every", "0", "--save-every", "2", "--log-every", "1", "--num-workers", "0",
            "--no-progress", "--threads", "1", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    first = subprocess.run(base + ["--steps", "4", "--stop-at", "2"], capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    second = subprocess.run(base + ["--steps", "4", "--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resumed from" in second.stdout and second.stdout.count("done: model saved") == 1  # rank 0 speaks
    steps = [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # rank 0 alone logs
    assert latest_checkpoint(out).name == "step-0000004" and (out / "model" / "model.safetensors").is_file()


def test_two_torchrun_processes_share_the_chunks_and_rank_0_merges(tmp_path, micro_dir, micro):
    """scripts/embed.py under torchrun: each process embeds every other chunk and rank 0 merges; the set equals
    one made by a single process. (Here, not in test_embedding_set.py: the torchrun tests of this file run one
    after another on one test worker.)"""
    from core.embedding_set import EmbedSource, embed_chunks, merge_parts, open_set

    base = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
            "scripts/embed.py", "--model", str(micro_dir), "--rows", "100", "--chunk-rows", "16", "--out"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(base + [str(tmp_path / "two")], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    embed_chunks(micro, EmbedSource("shapes", n=100), tmp_path / "one", chunk_rows=16)
    merge_parts(tmp_path / "one")
    two, one = open_set(tmp_path / "two"), open_set(tmp_path / "one")
    assert two.ids == one.ids and two.captions == one.captions
    np.testing.assert_allclose(two.image_emb, one.image_emb, atol=1e-6)
    np.testing.assert_allclose(two.text_emb, one.text_emb, atol=1e-6)
