"""Properties of the matrix, loss and zero-shot math, checked by hypothesis on random batches."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from core.loss import contrastive_loss, similarity, siglip_loss
from core.zeroshot import classify_embeddings

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def batches(draw, square: bool = True):
    n = draw(st.integers(1, 12))
    m = n if square else draw(st.integers(1, 12))
    d = draw(st.integers(2, 16))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(n, d, generator=g, dtype=torch.float64)
    txt = torch.randn(m, d, generator=g, dtype=torch.float64)
    scale = draw(st.floats(0.5, 100.0))
    return img, txt, scale, seed


@SETTINGS
@given(batches(square=False))
def test_softmax_rows_and_columns_sum_to_one(batch):
    img, txt, scale, _ = batch
    view = similarity(img, txt, scale)
    torch.testing.assert_close(view.probs_rows.sum(1), torch.ones(len(img)), atol=1e-5, rtol=0)
    torch.testing.assert_close(view.probs_cols.sum(0), torch.ones(len(txt)), atol=1e-5, rtol=0)
    assert view.cosine.abs().max() <= 1 + 1e-5


@SETTINGS
@given(batches())
def test_permuting_the_pairs_permutes_the_matrix_and_keeps_the_loss(batch):
    img, txt, scale, seed = batch
    perm = torch.randperm(len(img), generator=torch.Generator().manual_seed(seed))
    a, b = similarity(img, txt, scale), similarity(img[perm], txt[perm], scale)
    torch.testing.assert_close(b.logits, a.logits[perm][:, perm], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(b.loss_rows, a.loss_rows[perm], atol=1e-4, rtol=1e-5)
    t = torch.tensor(math.log(scale))
    assert abs(float(contrastive_loss(img[perm], txt[perm], t)) - float(contrastive_loss(img, txt, t))) < 1e-4


@SETTINGS
@given(batches(), st.floats(1e-3, 1e3), st.floats(1e-3, 1e3))
def test_the_scale_of_the_features_does_not_matter(batch, a, b):
    img, txt, scale, _ = batch
    t = torch.tensor(math.log(scale))
    base = float(contrastive_loss(img, txt, t))
    assert abs(float(contrastive_loss(a * img, b * txt, t)) - base) < 1e-4
    assert abs(float(siglip_loss(a * img, b * txt, t, -2.0)) - float(siglip_loss(img, txt, t, -2.0))) < 1e-3


@SETTINGS
@given(batches())
def test_losses_are_never_negative(batch):
    img, txt, scale, _ = batch
    t = torch.tensor(math.log(scale))
    assert float(contrastive_loss(img, txt, t)) >= 0.0
    assert float(siglip_loss(img, txt, t, 0.0)) >= 0.0
    view = similarity(img, txt, scale)
    assert (view.loss_rows >= -1e-6).all() and (view.loss_cols >= -1e-6).all()


@SETTINGS
@given(st.integers(2, 16), st.integers(0, 1000))
def test_a_perfectly_aligned_batch_has_a_loss_falling_to_zero_as_the_scale_grows(n, seed):
    q, _ = torch.linalg.qr(torch.randn(32, 32, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    feats = q[:n]  # orthonormal rows: every pair aligned, every other pair orthogonal
    losses = [float(contrastive_loss(feats, feats.clone(), torch.tensor(math.log(s)))) for s in (1.0, 3.0, 10.0)]
    assert all(x > y for x, y in zip(losses, losses[1:]))  # strictly falling while float32 can still see it
    assert float(contrastive_loss(feats, feats.clone(), torch.tensor(math.log(100.0)))) < 1e-6


@SETTINGS
@given(batches(square=False))
def test_zero_shot_probabilities_are_a_distribution_and_follow_the_classes(batch):
    img, heads, scale, seed = batch
    img, heads = F.normalize(img, dim=-1), F.normalize(heads, dim=-1)
    probs = classify_embeddings(img, heads, scale)
    torch.testing.assert_close(probs.sum(1), torch.ones(len(img), dtype=probs.dtype), atol=1e-6, rtol=0)
    perm = torch.randperm(len(heads), generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(classify_embeddings(img, heads[perm], scale), probs[:, perm], atol=1e-6, rtol=1e-6)
    assert np.all(probs.argmax(1).numpy() == (img @ heads.T).argmax(1).numpy())
