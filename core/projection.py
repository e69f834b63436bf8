"""Projections of joint image–text embeddings to 2D/3D, and the modality gap.

- `pca(x, dims)`: exact, deterministic, milliseconds; the fast alternative.
- `umap_project(x, dims, ...)`: umap-learn with the cosine metric, on exact nearest neighbours
  that `cosine_knn` finds with one matrix product per block of rows (umap-learn would otherwise
  call its numba cosine once per pair from Python below 4,096 points, and run NN-descent above).
  umap's numba kernels compile on first use (20–70 s on a small CPU). `import_umap()` imports umap
  with numba's on-disk cache switched on for every kernel, so only the very first process on a
  machine pays the compile; an app hides the rest by running a tiny fit in a thread of its own
  (app.py's warm-up): nothing here starts a thread.
- `modality_gap(img, txt)`: the distance between the image and the text centroids (Liang et al.
  2022, "Mind the Gap"), and `centre_modalities` removes it by centring each modality.

No UI code here: this module is used by the app and by notebooks alike.
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import UserInputError

METHODS = ("umap", "pca")
_umap_module = None
_umap_lock = threading.Lock()


@dataclass(frozen=True)
class ProjectionConfig:
    """How to project: method 'umap' or 'pca', into dims 2 or 3; UMAP's knobs."""

    method: str = "umap"
    dims: int = 2
    n_neighbors: int = 15
    min_dist: float = 0.1
    seed: int | None = 0
    n_epochs: int | None = 200

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UserInputError(f"projection method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.dims not in (2, 3):
            raise UserInputError(f"a map has 2 or 3 dimensions, got {self.dims}")
        if not 2 <= int(self.n_neighbors) <= 200:
            raise UserInputError(f"n_neighbors must be between 2 and 200, got {self.n_neighbors}")
        if not 0.0 <= float(self.min_dist) <= 1.0:
            raise UserInputError(f"min_dist must be between 0 and 1, got {self.min_dist}")


def _as_array(x) -> np.ndarray:
    arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D array of embeddings [N, D], got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("embeddings contain NaN or infinite values")
    return arr


def pca(x, dims: int = 2) -> np.ndarray:
    """Principal-component coordinates [N, dims] of x [N, D], with signs fixed for stable plots."""
    arr = _as_array(x).astype(np.float64)
    if len(arr) < 2:
        return np.zeros((len(arr), dims), np.float32)
    centred = arr - arr.mean(axis=0, keepdims=True)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    coords = u[:, :dims] * s[:dims]
    signs = np.sign(vt[:dims, np.abs(vt[:dims]).argmax(axis=1)].diagonal())  # largest loading positive
    coords = coords * np.where(signs == 0, 1.0, signs)
    if coords.shape[1] < dims:  # fewer components than asked (tiny N or D): pad with zeros
        coords = np.pad(coords, ((0, 0), (0, dims - coords.shape[1])))
    return coords.astype(np.float32)


def numba_cache_dir() -> Path:
    """Where numba keeps compiled kernels: $NUMBA_CACHE_DIR, else ~/.cache/clip-lab/numba."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clip-lab" / "numba"
    path = Path(os.environ.setdefault("NUMBA_CACHE_DIR", str(default)))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:  # read-only home (some hosts): fall back to a temp dir
        path = Path("/tmp/clip-lab-numba")
        path.mkdir(parents=True, exist_ok=True)
        os.environ["NUMBA_CACHE_DIR"] = str(path)
    return path


def import_umap():
    """Import umap-learn with numba's on-disk cache on for every kernel it defines.

    umap itself marks few kernels `cache=True`, so each new process recompiles. While umap (and
    pynndescent) are imported, `numba.njit` defaults to `cache=True`; it is restored afterwards.
    """
    global _umap_module
    with _umap_lock:
        if _umap_module is not None:
            return _umap_module
        numba_cache_dir()
        import numba

        original = numba.njit

        def njit_cached(*args, **kwargs):
            if args and callable(args[0]) and not kwargs:  # bare @njit
                return original(cache=True)(args[0])
            kwargs.setdefault("cache", True)
            return original(*args, **kwargs)

        numba.njit = njit_cached
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import umap
        finally:
            numba.njit = original
        import umap.layouts

        umap.layouts.tqdm = _epochs  # each layout loop runs the caller's check per epoch (`umap_project`)
        _umap_module = umap
        return umap


def cosine_knn(x, k: int, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of every row of x [N, D] under the cosine distance 1 - cos.

    Returns (indices [N, k] int64, distances [N, k] float32), nearest first; each point is its own
    first neighbour at distance 0, as in umap-learn's exact search. Ties go to the lower index.
    Rows are compared a block at a time, so memory stays at block x N floats. A zero row is at
    distance 1 from every other point.
    """
    arr = _as_array(x)
    n = len(arr)
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of points ({n}), got {k}")
    unit = arr / np.maximum(np.linalg.norm(arr, axis=1, keepdims=True), 1e-12)
    indices = np.empty((n, k), np.int64)
    dists = np.empty((n, k), np.float32)
    for start in range(0, n, block):
        rows = np.arange(start, min(start + block, n))
        d = np.clip(1.0 - unit[rows] @ unit.T, 0.0, 2.0)
        d[np.arange(len(rows)), rows] = -1.0  # self first, whatever its rounding
        part = np.argpartition(d, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (len(rows), 1))
        part.sort(axis=1)  # index order, so that the stable sort below breaks ties by index
        order = np.argsort(np.take_along_axis(d, part, axis=1), axis=1, kind="stable")
        indices[rows] = np.take_along_axis(part, order, axis=1)
        dists[rows] = np.maximum(np.take_along_axis(d, indices[rows], axis=1), 0.0)
    return indices, dists


_epoch_check = threading.local()  # the check of the UMAP fit running on this thread, if any


def _epochs(iterable, *args, **kwargs):
    """What umap-learn's layout loops iterate their epochs with, in place of its tqdm bar (which this
    module never shows): it runs the current thread's check before each epoch. A check that raises
    (a Stop) ends the fit between two epochs, outside any lock: raising inside tqdm's own output
    would leave tqdm's process-wide write lock held, and every later progress bar would wait forever."""
    for item in iterable:
        check = getattr(_epoch_check, "check", None)
        if check is not None:
            check()
        yield item


def umap_project(x, dims: int = 2, n_neighbors: int = 15, min_dist: float = 0.1, seed: int | None = 0,
                 n_epochs: int | None = 200, check: Callable[[], None] | None = None) -> np.ndarray:
    """UMAP coordinates [N, dims] of x [N, D] under the cosine metric.

    The neighbour graph is built from `cosine_knn` (exact, vectorised). n_neighbors is capped at
    N - 1 (umap breaks when it exceeds N). Spectral initialisation falls back to a random one for
    tiny or degenerate sets, and the result is checked for NaN. `check()`, if given, runs between
    layout epochs and may raise to stop the fit (a Stop button).
    """
    arr = _as_array(x)
    n = len(arr)
    if n < 4:
        return pca(arr, dims)
    umap = import_umap()
    k = max(2, min(int(n_neighbors), n - 1))
    knn = cosine_knn(arr, k)
    init = "spectral" if n > dims + 8 else "random"
    for attempt in (init, "random"):
        reducer = umap.UMAP(n_components=dims, n_neighbors=k, min_dist=float(min_dist), metric="cosine",
                            init=attempt, random_state=seed, n_epochs=n_epochs, low_memory=True,
                            precomputed_knn=(knn[0].copy(), knn[1].copy(), None))
        _epoch_check.check = check
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # n_jobs vs random_state; no search index (no transform); spectral fallbacks
                coords = reducer.fit_transform(arr)
        finally:
            _epoch_check.check = None
        _umap_runs[0] += 1
        if np.isfinite(coords).all():
            return coords.astype(np.float32)
    raise UserInputError("UMAP produced NaN coordinates; try PCA or more points")


def project(x, config: ProjectionConfig = ProjectionConfig(), check: Callable[[], None] | None = None) -> np.ndarray:
    """Project x [N, D] with the method and settings in `config`; `check()` may stop a UMAP fit between epochs."""
    if config.method == "pca":
        return pca(x, config.dims)
    return umap_project(x, config.dims, config.n_neighbors, config.min_dist, config.seed, config.n_epochs, check)


@dataclass(frozen=True)
class ModalityGap:
    """The modality gap of paired embeddings (all on the unit sphere).

    gap: ||mean(images) - mean(texts)||, the distance between the centroids (the paper's measure).
    paired_cosine: mean cosine of each image with its own caption; unpaired_cosine: with the others.
    image_spread / text_spread: mean cosine of each modality to its own centroid direction (a cone).
    """

    gap: float
    paired_cosine: float
    unpaired_cosine: float
    image_spread: float
    text_spread: float


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def modality_gap(image_emb, text_emb) -> ModalityGap:
    """Measure the gap between image embeddings [N, D] and their captions' embeddings [N, D]."""
    img, txt = _normalise(_as_array(image_emb)), _normalise(_as_array(text_emb))
    if img.shape != txt.shape or len(img) == 0:
        raise ValueError(f"need paired embeddings of equal shape, got {img.shape} and {txt.shape}")
    ci, ct = img.mean(0), txt.mean(0)
    cos = img @ txt.T
    n = len(img)
    paired = float(np.trace(cos) / n)
    unpaired = float((cos.sum() - np.trace(cos)) / (n * n - n)) if n > 1 else float("nan")
    spread_i = float((img @ (ci / max(np.linalg.norm(ci), 1e-12))).mean())
    spread_t = float((txt @ (ct / max(np.linalg.norm(ct), 1e-12))).mean())
    return ModalityGap(float(np.linalg.norm(ci - ct)), paired, unpaired, spread_i, spread_t)


def centre_modalities(image_emb, text_emb, extra_text=None):
    """Subtract each modality's centroid and renormalise: the gap closes, the structure stays.

    extra_text (e.g. class-prompt embeddings) is shifted by the text centroid too. Returns
    (images, texts, extra_text or None) as float32 arrays.
    """
    img, txt = _as_array(image_emb), _as_array(text_emb)
    ci, ct = img.mean(0, keepdims=True), txt.mean(0, keepdims=True)
    extra = None if extra_text is None or len(extra_text) == 0 else _normalise(_as_array(extra_text) - ct)
    return _normalise(img - ci), _normalise(txt - ct), extra


_umap_runs = [0]  # UMAP fits finished in this process (the app's warm-up is one)


def umap_compiled() -> bool:
    """Whether UMAP has run in this process (so its kernels are compiled or loaded from the disk cache)."""
    return _umap_runs[0] > 0
