"""The contrastive loss against a direct NumPy computation of the seed pseudo-code."""

import math

import numpy as np
import pytest
import torch

from core.loss import MAX_LOGIT_SCALE, contrastive_loss, group_contrastive_loss, similarity


def numpy_clip_loss(I_f, T_f, t):
    """The seed's pseudo-code, literally: normalise, scaled cosines, CE over both axes, average."""
    I_e = I_f / np.linalg.norm(I_f, axis=1, keepdims=True)
    T_e = T_f / np.linalg.norm(T_f, axis=1, keepdims=True)
    logits = I_e @ T_e.T * min(np.exp(t), MAX_LOGIT_SCALE)
    n = len(logits)

    def ce(l, axis):
        # cross-entropy of the correct pair when softmax runs along `axis`
        logp = l - np.log(np.exp(l - l.max(axis=axis, keepdims=True)).sum(axis=axis, keepdims=True)) - l.max(axis=axis, keepdims=True)
        return -np.mean([logp[i, i] for i in range(n)]), -np.array([logp[i, i] for i in range(n)])

    loss_t, per_col = ce(logits, axis=0)  # each caption picks its image (columns)
    loss_i, per_row = ce(logits, axis=1)  # each image picks its caption (rows)
    return (loss_i + loss_t) / 2, loss_i, loss_t, per_row, per_col, logits


@pytest.mark.parametrize("n,d,t", [(2, 4, 0.0), (8, 16, math.log(1 / 0.07)), (16, 32, 3.0), (5, 8, 6.0)])
def test_loss_matches_numpy_pseudo_code(n, d, t):
    rng = np.random.default_rng(n * 31 + d)
    I_f, T_f = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    expected, loss_i, loss_t, per_row, per_col, logits = numpy_clip_loss(I_f, T_f, t)
    got = contrastive_loss(torch.tensor(I_f), torch.tensor(T_f), torch.tensor(t))
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(expected, rel=1e-5, abs=1e-5)

    view = similarity(torch.tensor(I_f), torch.tensor(T_f), math.exp(t))
    np.testing.assert_allclose(view.logits.numpy(), logits, rtol=1e-5, atol=1e-5)
    assert float(view.loss_i) == pytest.approx(loss_i, abs=1e-5)
    assert float(view.loss_t) == pytest.approx(loss_t, abs=1e-5)
    np.testing.assert_allclose(view.loss_rows.numpy(), per_row, atol=1e-5)
    np.testing.assert_allclose(view.loss_cols.numpy(), per_col, atol=1e-5)
    np.testing.assert_allclose(view.probs_rows.sum(1).numpy(), 1, atol=1e-6)
    np.testing.assert_allclose(view.probs_cols.sum(0).numpy(), 1, atol=1e-6)


def test_directions_differ_and_are_not_swapped():
    # an asymmetric batch: image 0 matches caption 0 strongly, caption 1 is close to every image
    I_f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    T_f = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    v = similarity(I_f, T_f, 10.0)
    _, loss_i, loss_t, *_ = numpy_clip_loss(I_f.numpy(), T_f.numpy(), math.log(10.0))
    assert float(v.loss_i) == pytest.approx(loss_i, abs=1e-5)
    assert float(v.loss_t) == pytest.approx(loss_t, abs=1e-5)
    assert abs(loss_i - loss_t) > 1e-3


def test_logit_scale_is_clamped_at_100():
    I_f = torch.randn(4, 8)
    big = contrastive_loss(I_f, I_f.clone(), torch.tensor(10.0))  # exp(10) >> 100
    capped = contrastive_loss(I_f, I_f.clone(), torch.tensor(math.log(100.0)))
    assert float(big) == pytest.approx(float(capped), abs=1e-6)
    assert similarity(I_f, I_f, 1e6).scale == 100.0


def test_loss_is_fp32_under_bf16_inputs_and_has_gradients():
    I_f = torch.randn(6, 8, dtype=torch.bfloat16, requires_grad=True)
    T_f = torch.randn(6, 8, dtype=torch.bfloat16, requires_grad=True)
    t = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    loss = contrastive_loss(I_f, T_f, t)
    assert loss.dtype == torch.float32
    loss.backward()
    assert I_f.grad is not None and t.grad is not None and torch.isfinite(t.grad)


def test_gather_hook_gives_global_batch_loss():
    """The distributed drop-in: two 'ranks' with a gather that concatenates give the global loss."""
    torch.manual_seed(0)
    I_f, T_f = torch.randn(8, 16), torch.randn(8, 16)
    t = torch.tensor(2.0)
    full = contrastive_loss(I_f, T_f, t)
    halves = [(I_f[:4], T_f[:4]), (I_f[4:], T_f[4:])]
    norm = torch.nn.functional.normalize
    all_img = torch.cat([norm(i, dim=-1) for i, _ in halves])
    all_txt = torch.cat([norm(x, dim=-1) for _, x in halves])
    per_rank = []
    for rank, (i, x) in enumerate(halves):
        gather = lambda f, r=rank: all_img if f.shape == i.shape and torch.allclose(f, norm(i, dim=-1)) else all_txt  # noqa: E731
        per_rank.append(contrastive_loss(i, x, t, gather=gather, label_offset=4 * rank))
    assert float(sum(per_rank) / 2) == pytest.approx(float(full), abs=1e-5)


def test_non_square_batch_has_matrix_but_no_loss():
    v = similarity(torch.randn(3, 8), torch.randn(5, 8))
    assert v.cosine.shape == (3, 5) and v.loss is None and v.accuracy_i2t is None


@pytest.mark.parametrize("n_groups,group_size,extra", [(1, 7, 0), (3, 7, 5), (2, 3, 4)])
def test_group_loss_is_the_mean_of_per_group_clip_losses(n_groups, group_size, extra):
    """The hard-negative term equals the seed loss run on each group's own square block, averaged;
    rows after the groups are ignored."""
    rng = np.random.default_rng(n_groups * 10 + group_size)
    n = n_groups * group_size + extra
    I_f, T_f, t = rng.normal(size=(n, 16)), rng.normal(size=(n, 16)), 3.5
    expected = np.mean([numpy_clip_loss(I_f[g * group_size:(g + 1) * group_size], T_f[g * group_size:(g + 1) * group_size], t)[0]
                        for g in range(n_groups)])
    got = group_contrastive_loss(torch.tensor(I_f), torch.tensor(T_f), torch.tensor(t), n_groups, group_size)
    assert float(got) == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert float(group_contrastive_loss(torch.tensor(I_f), torch.tensor(T_f), torch.tensor(t), 0, group_size)) == 0.0


def test_group_loss_gives_gradients_to_both_towers_and_the_temperature():
    img = torch.randn(14, 8, requires_grad=True)
    txt = torch.randn(14, 8, requires_grad=True)
    t = torch.tensor(2.0, requires_grad=True)
    group_contrastive_loss(img, txt, t, 2, 7).backward()
    assert img.grad.abs().sum() > 0 and txt.grad.abs().sum() > 0 and t.grad.abs() > 0
