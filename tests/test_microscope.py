"""The loss microscope: each cell's gradient is autograd's, false negatives are named and priced, and one
step on a copy lowers the batch's loss without touching the model."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import core
from core.microscope import (false_negative_loss, one_step, same_meaning, sigmoid_logit_gradients,
                             softmax_logit_gradients)
from core.shapes import ShapesWorld


def _autograd(loss_of, logits):
    z = logits.clone().requires_grad_(True)
    return torch.autograd.grad(loss_of(z), z)[0]


@pytest.mark.parametrize("n", [2, 5, 9])
def test_each_cells_gradient_is_autograds_for_both_losses(n):
    z = torch.randn(n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n)) * 4
    target = torch.arange(n)
    symmetric = lambda x: (F.cross_entropy(x, target) + F.cross_entropy(x.T, target)) / 2  # noqa: E731
    torch.testing.assert_close(softmax_logit_gradients(z), _autograd(symmetric, z))
    signs = 2 * torch.eye(n, dtype=torch.float64) - 1
    sigmoid = lambda x: -F.logsigmoid(signs * (x - 3.0)).sum() / n  # noqa: E731
    torch.testing.assert_close(sigmoid_logit_gradients(z, -3.0), _autograd(sigmoid, z))
    g = softmax_logit_gradients(z)
    assert (g.diagonal() <= 0).all() and (g - torch.diag(g.diagonal()) >= 0).all()  # pull on pairs, push elsewhere


def test_false_negatives_are_the_same_words_and_cost_what_counting_them_right_would_save():
    assert same_meaning(["A star that is red.", "a blue circle", "a star that is  red"]) == [(0, 2)]
    assert same_meaning(["a red star", "a star that is red"]) == []  # other words: not claimed
    z = torch.full((4, 4), 0.0)
    z[0, 0] = z[0, 1] = z[1, 0] = z[1, 1] = z[2, 2] = z[3, 3] = 10.0  # pairs 0 and 1 are twins
    fn = false_negative_loss(z, [(0, 1)])
    p = math.exp(10) / (2 * math.exp(10) + 2)  # each twin row: its own and the twin's cells share the mass
    by_hand = 4 * (math.log(2 * p) - math.log(p)) / (2 * 4)  # 2 rows + 2 columns, each ln 2, over 2n
    assert fn.loss == pytest.approx(by_hand, rel=1e-6) and 0.9 < fn.share <= 1.0


def test_one_step_lowers_the_loss_on_a_copy_and_leaves_the_model_untouched():
    clip = core.load()
    samples = ShapesWorld(seed=3, split="eval").take(6)
    captions = [s.caption for s in samples]
    captions[1] = captions[0]  # a false negative: the loss is no longer near 0
    before = {k: v.clone() for k, v in clip.model.state_dict().items()}
    step = one_step(clip, [s.image for s in samples], captions, lr=1e-5)
    assert step.loss_after < step.loss_before
    assert all(torch.equal(before[k], v) for k, v in clip.model.state_dict().items())
    assert step.before.shape == step.after.shape == (6, 6) and not torch.equal(step.before, step.after)
    with pytest.raises(ValueError, match="square batch"):
        one_step(clip, [samples[0].image], captions[:1])
    assert np.isfinite(step.after.numpy()).all()
