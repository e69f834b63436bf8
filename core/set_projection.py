"""The map of an embedding set (core/embedding_set.py): its 2-D projection, cached in the set's folder, and
exact nearest-neighbour queries over it.

Points are the set's images (rows 0..N-1) and then its captions (one per row that has one), projected
together, so the modality gap shows. UMAP (cosine) runs on the embeddings, after PCA to `pca_dims` where
the embedding is wider; above `EXACT_KNN_POINTS` points umap-learn finds the neighbour graph itself
(NN-descent, approximate) instead of core.projection's exact search, whose cost grows with N squared.
A projection is stored as projections/<key>.parquet (x, y float32) with the settings in its key, so it is
made once per set and settings, and a Space can ship it.

A query (a text, an image, a point, a selection's centroid) ranks the set's images by cosine exactly (one
matrix product); it is drawn at the mean position of its nearest images, weighted by their cosines (the
way UMAP places new points before optimising them; here not optimised further: stated on screen).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .embedding_set import EmbeddingSet
from .errors import UserInputError
from .projection import ProjectionConfig, pca

EXACT_KNN_POINTS = 20_000


@dataclass(frozen=True)
class SetProjection:
    """How a set is projected: UMAP (after PCA to pca_dims, 0: none) or PCA alone."""

    method: str = "umap"
    n_neighbors: int = 15
    min_dist: float = 0.1
    pca_dims: int = 50
    n_epochs: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        ProjectionConfig(self.method, 2, self.n_neighbors, self.min_dist)  # the same checks as every other map

    def key(self) -> str:
        if self.method == "pca":
            return "pca"
        return f"umap-nn{self.n_neighbors}-md{self.min_dist:g}-pca{self.pca_dims}-ep{self.n_epochs}-s{self.seed}"


def points_of(es: EmbeddingSet) -> np.ndarray:
    """[N + captions, D]: the images, then the captions of the rows that have one."""
    return np.concatenate([es.image_emb, es.text_emb[es.has_caption]])


def cached_projection(es: EmbeddingSet, settings: SetProjection) -> np.ndarray | None:
    """The stored [points, 2] projection of these settings, or None."""
    path = es.folder / "projections" / f"{settings.key()}.parquet"
    if not path.is_file():
        return None
    t = pq.read_table(path)
    xy = np.stack([t.column("x").to_numpy(), t.column("y").to_numpy()], axis=1).astype(np.float32)
    return xy if len(xy) == len(es) + int(es.has_caption.sum()) else None


def project_set(es: EmbeddingSet, settings: SetProjection = SetProjection(),
                progress: Callable[[float, str], None] | None = None) -> tuple[np.ndarray, bool]:
    """([points, 2] float32 coordinates, whether they came from the cache). progress(fraction, what) is called
    as the work goes; an exception it raises stops a UMAP fit between epochs (NN-descent runs to its end)."""
    cached = cached_projection(es, settings)
    if cached is not None:
        return cached, True
    x = points_of(es)
    say = progress if progress is not None else (lambda f, what: None)
    if settings.method == "pca":
        xy = pca(x, 2)
    else:
        xy = _umap(x, settings, say)
    store(es.folder, settings, xy)
    return xy, False


def _umap(x: np.ndarray, s: SetProjection, say: Callable[[float, str], None]) -> np.ndarray:
    from .projection import import_umap, umap_project

    if s.pca_dims and x.shape[1] > s.pca_dims and len(x) > s.pca_dims:
        say(0.0, f"PCA to {s.pca_dims} dimensions")
        x = pca(x, s.pca_dims)
    epochs = [0]

    def check() -> None:
        epochs[0] += 1
        say(0.2 + 0.8 * epochs[0] / s.n_epochs, f"UMAP layout, epoch {epochs[0]} of {s.n_epochs}")

    if len(x) <= EXACT_KNN_POINTS:
        say(0.02, f"exact neighbours of {len(x):,} points")
        return umap_project(x, 2, s.n_neighbors, s.min_dist, s.seed, s.n_epochs, check)
    umap = import_umap()
    import warnings

    from . import projection

    say(0.02, f"approximate neighbours of {len(x):,} points (NN-descent, no Stop until it ends)")
    reducer = umap.UMAP(n_components=2, n_neighbors=s.n_neighbors, min_dist=s.min_dist, metric="cosine",
                        random_state=s.seed, n_epochs=s.n_epochs, low_memory=True)
    projection._epoch_check.check = check
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            xy = reducer.fit_transform(x)
    finally:
        projection._epoch_check.check = None
    if not np.isfinite(xy).all():
        raise UserInputError("UMAP produced NaN coordinates; try PCA")
    return xy.astype(np.float32)


def store(folder: Path, settings: SetProjection, xy: np.ndarray) -> None:
    """Write a projection beside the set, whole or not at all."""
    path = Path(folder) / "projections" / f"{settings.key()}.parquet"
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    pq.write_table(pa.table({"x": xy[:, 0].astype(np.float32), "y": xy[:, 1].astype(np.float32)}), tmp)
    os.replace(tmp, path)


def nearest_images(es: EmbeddingSet, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(row indices [k], cosines [k]) of the k images nearest to a unit query [D], best first (ties: lower row)."""
    cos = es.image_emb @ np.asarray(query, dtype=np.float32)
    k = max(1, min(int(k), len(cos)))
    part = np.argpartition(-cos, k - 1)[:k]
    order = np.lexsort((part, -cos[part]))
    return part[order], cos[part[order]]


def place_query(xy: np.ndarray, rows: np.ndarray, cosines: np.ndarray) -> tuple[float, float]:
    """Where a query lands on the map: its nearest images' mean position, weighted by their (positive) cosines."""
    w = np.clip(np.asarray(cosines, dtype=np.float64), 1e-6, None)
    p = (xy[rows] * w[:, None]).sum(0) / w.sum()
    return float(p[0]), float(p[1])
