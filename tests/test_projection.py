"""core.projection: PCA, UMAP (one small run), the modality gap and centring."""

from __future__ import annotations

import io

import numpy as np
import pytest

from core.errors import UserInputError
from core.projection import (ProjectionConfig, centre_modalities, cosine_knn, modality_gap, numba_cache_dir, pca,
                             project, umap_project)


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _paired(n=80, d=16, shift=2.0, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, d))
    offset = np.zeros(d)
    offset[0] = shift
    return _unit(base + offset).astype(np.float32), _unit(base + 0.3 * rng.normal(size=(n, d)) - offset).astype(np.float32)


def test_pca_shapes_order_and_determinism():
    x = np.random.default_rng(0).normal(size=(50, 10)) * np.arange(10, 0, -1)
    a, b = pca(x, 2), pca(x, 2)
    assert a.shape == (50, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert a[:, 0].var() > a[:, 1].var()
    assert pca(x, 3).shape == (50, 3)
    assert pca(x[:1], 2).shape == (1, 2)
    assert pca(x[:, :2], 3).shape == (50, 3)  # fewer components than asked: padded


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="2-D"):
        pca(np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        pca(np.array([[np.nan, 1.0], [0.0, 1.0]]))
    with pytest.raises(UserInputError, match="method"):
        ProjectionConfig(method="tsne")
    with pytest.raises(UserInputError, match="2 or 3"):
        ProjectionConfig(dims=4)
    with pytest.raises(UserInputError, match="n_neighbors"):
        ProjectionConfig(n_neighbors=1)
    with pytest.raises(ValueError, match="paired"):
        modality_gap(np.ones((3, 4)), np.ones((2, 4)))


def test_modality_gap_and_centring():
    img, txt = _paired()
    g = modality_gap(img, txt)
    assert g.gap > 0.5
    assert g.paired_cosine > g.unpaired_cosine
    assert 0 < g.image_spread <= 1 and 0 < g.text_spread <= 1
    ci, ct, extra = centre_modalities(img, txt, txt[:3])
    g2 = modality_gap(ci, ct)
    assert g2.gap < 0.25 * g.gap
    assert g2.paired_cosine > g2.unpaired_cosine
    np.testing.assert_allclose(np.linalg.norm(ci, axis=1), 1, atol=1e-5)
    assert extra.shape == (3, img.shape[1])
    assert centre_modalities(img, txt)[2] is None


def test_project_dispatch_pca_and_tiny_umap_fallback():
    x = np.random.default_rng(1).normal(size=(30, 8))
    assert project(x, ProjectionConfig("pca", 3)).shape == (30, 3)
    assert umap_project(x[:3], 2).shape == (3, 2)  # too few points for UMAP: PCA


def test_cosine_knn_is_exact_self_first_and_blockwise():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(57, 6)).astype(np.float32)
    x[9] = 3 * x[4]  # same direction: distance 0 to each other
    idx, dist = cosine_knn(x, 5, block=8)
    unit = _unit(x.astype(np.float64))
    full = np.clip(1 - unit @ unit.T, 0, 2)
    np.fill_diagonal(full, 0)
    np.testing.assert_allclose(dist, np.sort(full, axis=1)[:, :5], atol=1e-5)
    assert (idx[:, 0] == np.arange(57)).all() and (np.diff(dist, axis=1) >= 0).all()
    assert idx[4, 1] == 9 and idx[9, 1] == 4
    np.testing.assert_array_equal(cosine_knn(x, 5, block=1000)[0], idx)
    assert cosine_knn(x[:3], 3)[0].shape == (3, 3)
    with pytest.raises(ValueError, match="k must be"):
        cosine_knn(x, 58)


def test_numba_cache_dir_is_writable():
    path = numba_cache_dir()
    assert path.is_dir()


def test_umap_small_run_is_finite_and_caps_neighbors():
    """The one real UMAP run of the suite (numba compiles once per machine, then hits the cache)."""
    img, txt = _paired(n=40)
    coords = umap_project(np.concatenate([img, txt]), dims=2, n_neighbors=500, n_epochs=30)
    assert coords.shape == (80, 2) and np.isfinite(coords).all()

    class Stop(Exception):
        pass

    epochs = []

    def check():  # a Stop pressed during the 5th epoch of 30
        epochs.append(1)
        if len(epochs) == 5:
            raise Stop

    with pytest.raises(Stop):
        umap_project(np.concatenate([img, txt]), dims=2, n_neighbors=10, n_epochs=30, check=check)
    assert len(epochs) == 5  # the fit ended between epochs, not after all 30
    from tqdm import tqdm

    with tqdm(range(2), disable=False, file=io.StringIO()) as bar:  # a stop left no progress bar of the process stuck
        assert list(bar) == [0, 1]
