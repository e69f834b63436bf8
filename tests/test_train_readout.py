"""A training step that never makes the host wait for the device, and still never lets a NaN into the
weights: its numbers are read when wanted; a non-finite loss is skipped on the device by the fused
optimizer and stops the run where the host next reads; CLIP's text tower runs without its mask."""

from __future__ import annotations

import collections

import pytest
import torch

import core.train.step as step_mod
from core.encode import text_features, tokenize
from core.model import load
from core.train import (NonFiniteLossError, ShapesPairs, TextTokens, Towers, TrainConfig, TrainState, make_optimizer,
                        train_step)

HOST_READS = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist", "numpy")


def _state(micro_dir, optimizer=None) -> tuple[TrainState, object]:
    cfg = TrainConfig.from_flat(model=str(micro_dir), batch_size=8, device="cpu", output_dir="", lr=1e-3)
    clip = load(str(micro_dir))
    clip.model.train()
    towers = Towers(clip.model)
    opt = optimizer(towers) if optimizer else make_optimizer(towers, cfg)
    source = ShapesPairs(seed=1, hard_negatives=0.0, image_size=32, tokens=TextTokens.of(clip))
    return TrainState(clip, towers, opt, cfg), source


@pytest.fixture()
def host_reads(monkeypatch):
    """Counts every Python-level read of a tensor's value (each one a wait for the device on a GPU)."""
    counts = collections.Counter()
    for name in HOST_READS:
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, _name=name, **k):
            counts[_name] += 1
            return _real(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counted)
    return counts


def test_a_step_reads_nothing_from_the_device_until_its_record_is_read(micro_dir, host_reads):
    state, source = _state(micro_dir)
    records = [train_step(state, source.batch(i, 8), 1e-3) for i in range(3)]
    assert sum(host_reads.values()) == 0, host_reads
    first = dict(records[0])
    assert set(first) == {"loss", "logit_scale", "grad_norm"} and all(isinstance(v, float) for v in first.values())
    assert host_reads["item"] >= 1  # the finite guard, read once before the numbers
    assert 0 < first["loss"] < 10 and first["grad_norm"] > 0 and records[2]["loss"] != first["loss"]


def _poison_call(monkeypatch, bad_call: int) -> None:
    real = step_mod.contrastive_loss
    calls = {"n": 0}

    def poisoned(*a, **k):
        calls["n"] += 1
        loss = real(*a, **k)
        return loss * float("nan") if calls["n"] == bad_call else loss
    monkeypatch.setattr(step_mod, "contrastive_loss", poisoned)


def test_a_nan_step_and_every_later_one_leave_the_weights_alone_until_the_run_stops(micro_dir, monkeypatch):
    state, source = _state(micro_dir)
    assert all(g["fused"] for g in state.optimizer.param_groups)
    for i in range(2):
        train_step(state, source.batch(i, 8), 1e-3)
    good = {k: v.clone() for k, v in state.towers.state_dict().items()}
    _poison_call(monkeypatch, 1)  # the third step's loss is NaN; the fourth's is finite again
    records = [train_step(state, source.batch(i, 8), 1e-3) for i in (2, 3)]
    after = state.towers.state_dict()
    assert all(torch.equal(after[k], good[k]) for k in good)  # neither the bad step nor the later one moved a weight
    assert all(float(s["step"]) == 2 for s in state.optimizer.state.values())  # Adam's step count: two updates
    with pytest.raises(NonFiniteLossError, match="nan at step 3"):
        records[1]["loss"]
    with pytest.raises(NonFiniteLossError, match="step 3"):
        state.guard.raise_if_bad()


def test_an_optimizer_that_cannot_skip_on_the_device_stops_inside_the_step(micro_dir, monkeypatch):
    state, source = _state(micro_dir, lambda towers: torch.optim.AdamW(towers.parameters(), lr=1e-3))
    train_step(state, source.batch(0, 8), 1e-3)
    before = {k: v.clone() for k, v in state.towers.state_dict().items()}
    _poison_call(monkeypatch, 1)
    with pytest.raises(NonFiniteLossError, match="nan at step 2"):
        train_step(state, source.batch(1, 8), 1e-3)
    assert all(torch.equal(state.towers.state_dict()[k], v) for k, v in before.items())


def test_clip_towers_leave_out_the_mask_and_get_the_masked_features(micro):
    tokens = tokenize(micro, ["a red circle", "a big blue square left of a small green triangle on grey"])
    assert (tokens["attention_mask"] == 0).any()  # the short caption is padded
    towers = Towers(micro.model)
    pixels = torch.zeros(2, 3, 32, 32)
    with torch.no_grad():
        _, txt = towers(pixels, tokens["input_ids"], tokens["attention_mask"])
        masked = text_features(micro.model, tokens["input_ids"], tokens["attention_mask"])
    assert towers.causal_text
    torch.testing.assert_close(txt, masked, atol=1e-6, rtol=1e-5)


def test_a_finite_loss_with_infinite_gradients_leaves_the_weights_alone(micro_dir):
    state, source = _state(micro_dir)
    train_step(state, source.batch(0, 8), 1e-3)
    good = {k: v.clone() for k, v in state.towers.state_dict().items()}
    weight = state.model.visual_projection.weight
    handle = weight.register_hook(lambda g: g * float("inf"))  # backward overflows; the loss stays finite
    record = train_step(state, source.batch(1, 8), 1e-3)
    handle.remove()
    assert all(torch.equal(state.towers.state_dict()[k], v) for k, v in good.items())
    with pytest.raises(NonFiniteLossError, match="gradient norm is .* at step 2"):
        record["loss"]


def test_a_resume_keeps_the_fused_optimizer_of_this_run(micro_dir):
    """A checkpoint written by an unfused AdamW (before it was fused on the CPU) resumes fused."""
    from core.train.checkpoint import _optimizer_state, _restore_optimizer

    cfg = TrainConfig.from_flat(model=str(micro_dir), batch_size=8, device="cpu", output_dir="")

    def unfused(towers):  # make_optimizer's groups, as an unfused AdamW made them
        groups = [{k: v for k, v in g.items() if k != "fused"} for g in make_optimizer(towers, cfg).param_groups]
        return torch.optim.AdamW(groups, lr=1e-3)

    old, source = _state(micro_dir, unfused)
    train_step(old, source.batch(0, 8), 1e-3)
    tensors, meta = _optimizer_state(old.optimizer)
    assert meta["param_groups"][0]["fused"] is None
    new, _ = _state(micro_dir)
    _restore_optimizer(new.optimizer, tensors, meta)
    assert all(g["fused"] for g in new.optimizer.param_groups)
    assert new.optimizer.param_groups[0]["lr"] == meta["param_groups"][0]["lr"]  # what it learned still comes back
    train_step(new, source.batch(1, 8), 1e-3)["loss"]  # the fused step runs on the restored state
