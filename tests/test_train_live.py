"""Live views of a run: the aligned map, the probe frames, bounded memory, snapshots by time budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.loss import similarity
from core.train import TrainConfig, train
from core.train.hooks import Snapshot
from core.projection import pca
from demo.tabs.train.live import LiveRecorder, align_to, map_frame, thin


def test_a_rotated_and_reflected_map_is_aligned_back_exactly():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(50, 2))
    theta = 1.1
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) @ np.diag([1, -1])
    np.testing.assert_allclose(align_to(ref @ rot, ref), ref, atol=1e-10)


def test_the_map_is_pca_of_both_modalities_and_the_gap_is_the_centroid_distance():
    rng = np.random.default_rng(1)
    img = rng.normal(size=(30, 16)) + 2.0
    txt = rng.normal(size=(30, 16)) - 1.0
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    frame = map_frame(img, txt)
    joint = np.concatenate([img, txt])
    centred = joint - joint.mean(0)
    # the two coordinates carry the top-2 variances of the joint set (an oracle from NumPy's eigh)
    top2 = np.sort(np.linalg.eigvalsh(centred.T @ centred))[-2:]
    np.testing.assert_allclose(np.sort((frame.coords.astype(np.float64) ** 2).sum(0)), top2, rtol=1e-4)
    assert frame.coords.shape == (60, 2)
    assert frame.gap == pytest.approx(np.linalg.norm(img.mean(0) - txt.mean(0)), rel=1e-6)
    # aligned to an earlier frame of the same points, it does not flip
    flipped = map_frame(img, txt, previous=-pca(joint, 2))
    np.testing.assert_allclose(flipped.coords, -pca(joint, 2), atol=1e-4)


def test_thinning_keeps_the_first_and_last_and_stays_bounded():
    items = list(range(1000))
    kept = thin(items, 100)
    assert kept[0] == 0 and kept[-1] == 999 and len(kept) <= 100 and kept == sorted(kept)


def _snapshot(step: int, n: int = 20, k: int = 16, seconds: float = 0.1) -> Snapshot:
    g = torch.Generator().manual_seed(step)
    img = torch.nn.functional.normalize(torch.randn(n, 8, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(img + 0.1 * torch.randn(n, 8, generator=g), dim=-1)
    return Snapshot(step, [f"c{i}" for i in range(n)], None, img, txt, similarity(img[:k], txt[:k], 10.0), seconds)


def test_frames_keep_the_probe_matrix_and_are_bounded():
    rec = LiveRecorder(total_steps=1000, max_frames=10)
    for step in range(1, 40):
        rec.on_step(None, {"step": step, "loss": 1.0 / step, "logit_scale": 14.3, "lr": 1e-3, "samples_per_s": 50.0})
        rec.on_snapshot(None, _snapshot(step))
    view = rec.view()
    assert len(view.frames) <= 10 and view.frames[0].step == 1 and view.frames[-1].step == 39
    last = view.frames[-1].probe
    s = _snapshot(39)
    np.testing.assert_allclose(last.cosine, s.matrix.cosine.numpy(), atol=1e-6)
    np.testing.assert_allclose(last.probs_rows.sum(1), 1.0, atol=1e-5)
    assert last.accuracy == pytest.approx(float((s.matrix.logits.argmax(1) == torch.arange(16)).float().mean()))
    assert view.last_step == 39 and view.steps[-1] == 39 and len(view.loss) == 39


def test_snapshots_are_asked_for_within_their_time_budgets():
    rec = LiveRecorder(total_steps=100, probe_budget=0.1, map_budget=0.05)
    assert rec.wants_snapshot(1) == "full"  # the first frame at once
    rec.on_snapshot(None, _snapshot(1, seconds=0.5))
    assert rec.wants_snapshot(2) == "probe"  # the first probe-only one at once: it measures its cost
    probe_only = _snapshot(11, n=16, seconds=0.05)
    probe_only.full = False
    rec.pacer.since = {"probe": 5.0, "full": 5.0}
    rec.on_snapshot(None, probe_only)
    assert rec.pacer.since == {"probe": 0.0, "full": 5.0}
    last = rec.view().frames[-1]
    assert last.step == 11 and last.map.step == 1  # the matrix is new, the map is the last full one's
    rec.pacer.since = {"probe": 0.4, "full": 6.0}
    assert rec.wants_snapshot(12) is False  # 0.04 s of probe budget < 0.05 s, 0.3 s of map budget < 0.5 s
    rec.pacer.since = {"probe": 0.6, "full": 6.0}
    assert rec.wants_snapshot(12) == "probe"  # 0.06 s of probe budget >= 0.05 s
    rec.pacer.since = {"probe": 0.0, "full": 10.0}
    assert rec.wants_snapshot(13) == "full"  # 0.5 s of map budget >= 0.5 s
    assert rec.wants_snapshot(100) == "full"  # the last step always


def test_a_run_sends_frames_of_its_probe_to_the_recorder(tmp_path, micro_dir):
    cfg = TrainConfig.from_flat(dict(output_dir=str(tmp_path / "run"), model=str(micro_dir), steps=4, batch_size=8,
                                     warmup_steps=1, eval_every=0, save_every=0, num_workers=0, progress=False))
    rec = LiveRecorder(total_steps=4, map_budget=1e9)  # a full frame at every step
    train(cfg, hooks=[rec], probe_pairs=24, matrix_size=16)
    view = rec.view()
    assert [f.step for f in view.frames] == [1, 2, 3, 4]
    assert view.frames[0].probe.cosine.shape == (16, 16) and view.frames[0].map.coords.shape == (48, 2)
    assert len(view.captions) == 24 and view.labels is not None and view.eta_s == 0
    assert not np.allclose(view.frames[0].probe.cosine, view.frames[-1].probe.cosine)  # it trained


def test_a_fixed_temperature_stays_at_its_start(tmp_path, micro_dir):
    cfg = TrainConfig.from_flat(dict(output_dir=str(tmp_path / "run"), model="tiny", init_logit_scale=20.0,
                                     learn_logit_scale=False, steps=3, batch_size=8, warmup_steps=1, eval_every=0,
                                     save_every=0, num_workers=0, progress=False))
    clip = train(cfg)
    assert clip.model.logit_scale.exp().item() == pytest.approx(20.0, rel=1e-6)
