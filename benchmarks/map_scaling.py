"""How the cost of an embedding map grows with N, the number of points on it (2 per image-caption pair).

    python benchmarks/map_scaling.py [--points 250 500 1000 2000 5000 10000] [--repeats 3] \
        [--json benchmarks/results/map_scaling.json] [--plot docs/map_scaling.png] [--cold-numba] [--quick]

In one process, on the app's default model and the app's source (shapes world, eval split), for
each N: drawing N/2 pairs, encoding the images and the captions (core.encode), projecting the N
embeddings with UMAP as the app does (core.projection.umap_project: exact cosine kNN handed to
umap-learn), with umap-learn finding the neighbours itself (the app's method before: a numba
cosine called from Python per pair below 4,096 points, NN-descent above), and with PCA, then
drawing the figure and the gap report (demo.tabs.map.tab). Each time is the median of --repeats
runs (drawing: one run, it is deterministic).

numba compiles umap's kernels on first use, or loads them from its disk cache. That cost is kept
out of the table: importing umap and one small fit of each UMAP variant come first, and are
reported apart (with whether the cache existed; --cold-numba measures a compile into an empty
temporary cache). Writes JSON and a log-log PNG plot (benchmarks/plotting.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LABELS = {"draw_s": "draw pairs", "encode_images_s": "encode images", "encode_texts_s": "encode captions",
          "umap_s": "UMAP (core: exact kNN)", "umap_own_knn_s": "UMAP (umap-learn's own kNN)", "pca_s": "PCA",
          "figure_s": "figure + gap report", "embed_s": "embedding (images + captions)",
          "map_umap_s": "whole map, UMAP", "map_pca_s": "whole map, PCA"}


def median_time(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls of fn()."""
    return timed_result(fn, repeats)[0]


def timed_result(fn, repeats: int):
    """(median seconds of `repeats` calls of fn(), the last call's result)."""
    times, result = [], None
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def umap_own_knn(x, seed: int = 0, n_neighbors: int = 15):
    """UMAP as core.projection ran it before: umap-learn finds the cosine neighbours itself."""
    from core.projection import import_umap

    umap = import_umap()
    reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, min_dist=0.1, metric="cosine", init="spectral",
                        random_state=seed, n_epochs=200, low_memory=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return reducer.fit_transform(x)


def warm_up(own_knn: bool, nn_descent: bool) -> dict:
    """Import umap and run one small fit of each variant, so compiling stays out of the table.

    nn_descent: also fit 4,200 points with umap-learn's own search, which compiles NN-descent.
    """
    import numpy as np

    from core.projection import import_umap, numba_cache_dir, umap_project

    cache = numba_cache_dir()
    out = {"numba_cache": str(cache), "numba_cache_existed": any(cache.iterdir())}
    t = time.perf_counter()
    import_umap()
    out["import_umap_s"] = time.perf_counter() - t
    x = np.random.default_rng(0).normal(size=(300, 32)).astype(np.float32)
    t = time.perf_counter()
    umap_project(x, n_epochs=20)
    out["first_fit_core_s"] = time.perf_counter() - t
    if own_knn:  # both of umap-learn's own paths: all pairs below 4,096 points, NN-descent above
        t = time.perf_counter()
        umap_own_knn(x)
        if nn_descent:
            umap_own_knn(np.random.default_rng(1).normal(size=(4200, 32)).astype(np.float32))
        out["first_fits_own_knn_s"] = time.perf_counter() - t
    return out


def measure_n(clip, points: int, repeats: int, own_knn: bool) -> dict:
    """Every stage's time for a map of `points` points (points // 2 pairs)."""
    import numpy as np

    from core.encode import encode_images, encode_texts
    from core.projection import ProjectionConfig, pca, project
    from demo.inputs.pairs import shapes_pairs
    from demo.tabs.map.maps import gap_figures, gap_markdown
    from demo.tabs.shared.map_figure import map_figure, thumbnail_atlas

    n_pairs = points // 2
    t = time.perf_counter()
    pairs = shapes_pairs(n_pairs, seed=0, split="eval")
    r = {"points": 2 * n_pairs, "pairs": n_pairs, "draw_s": time.perf_counter() - t}
    r["encode_images_s"], img = timed_result(lambda: encode_images(clip, pairs.images).numpy(), repeats)
    r["encode_texts_s"], txt = timed_result(lambda: encode_texts(clip, pairs.captions).numpy(), repeats)
    x = np.concatenate([img, txt])
    r["umap_s"] = median_time(lambda: project(x, ProjectionConfig()), repeats)  # the app's defaults
    r["umap_own_knn_s"] = median_time(lambda: umap_own_knn(x), repeats) if own_knn else None
    r["pca_s"] = median_time(lambda: pca(x, 2), repeats)
    coords = pca(x, 2)
    r["figure_s"] = median_time(lambda: (map_figure(coords, n_pairs, pairs.captions, pairs.names, None, "modality", [],
                                                    thumbnail_atlas(pairs.images)).to_json(),
                                         gap_markdown(gap_figures(img, txt), False)), repeats)
    r["embed_s"] = r["encode_images_s"] + r["encode_texts_s"]
    r["map_umap_s"] = r["draw_s"] + r["embed_s"] + r["umap_s"] + r["figure_s"]
    r["map_pca_s"] = r["draw_s"] + r["embed_s"] + r["pca_s"] + r["figure_s"]
    return r


def print_table(rows: list[dict], warm: dict) -> None:
    """The results as a Markdown table, seconds per stage, one row per N."""
    cols = ["draw_s", "encode_images_s", "encode_texts_s", "umap_s", "umap_own_knn_s", "pca_s", "figure_s", "map_umap_s"]
    print("| N points | pairs | " + " | ".join(LABELS[c] for c in cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for r in rows:
        cells = ["-" if r[c] is None else f"{r[c]:.3f}" for c in cols]
        print(f"| {r['points']:,} | {r['pairs']:,} | " + " | ".join(cells) + " |")
    print(f"\nseconds; umap import {warm['import_umap_s']:.2f} s, first core fit {warm['first_fit_core_s']:.2f} s"
          + (f", first fits with umap-learn's own kNN {warm['first_fits_own_knn_s']:.2f} s" if "first_fits_own_knn_s" in warm else "")
          + f" (numba cache {warm['numba_cache']} {'existed' if warm['numba_cache_existed'] else 'was empty'}).")


def plot(rows: list[dict], path: Path) -> Path:
    """A log-log plot of each stage's seconds against N (benchmarks/plotting.py)."""
    from benchmarks.plotting import save_line_plot

    keys = ["embed_s", "umap_s", "umap_own_knn_s", "pca_s", "draw_s", "figure_s", "map_umap_s"]
    series = {LABELS[k]: ([r["points"] for r in rows if r[k] is not None], [r[k] for r in rows if r[k] is not None])
              for k in keys if any(r[k] is not None for r in rows)}
    return save_line_plot(path, series, title="Cost of an embedding map vs N (2-core CPU, bundled model)",
                          x_label="N, points on the map (2 per image-caption pair)", y_label="seconds",
                          log_x=True, log_y=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; --quick: N = 200 and 400, one repeat, nothing written to the repository."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=int, nargs="+", default=[250, 500, 1000, 2000, 5000, 10000])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", default=None, help="model to encode with (default: the app's default model)")
    p.add_argument("--no-own-knn", action="store_true", help="skip UMAP with umap-learn's own neighbour search")
    p.add_argument("--cold-numba", action="store_true", help="compile into an empty temporary numba cache")
    p.add_argument("--json", type=Path, default=None, help="default benchmarks/results/map_scaling.json")
    p.add_argument("--plot", type=Path, default=None, help="default docs/map_scaling.png")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args(argv)
    tmp = Path(tempfile.gettempdir())
    if a.quick:
        a.points, a.repeats = [200, 400], 1
    a.json = a.json or (tmp / "map_scaling_quick.json" if a.quick else ROOT / "benchmarks" / "results" / "map_scaling.json")
    a.plot = a.plot or (tmp / "map_scaling_quick.png" if a.quick else ROOT / "docs" / "map_scaling.png")
    return a


def main(argv: list[str] | None = None) -> int:
    """Measure every N, print the table, write the JSON and the plot."""
    a = parse_args(argv)
    cold = tempfile.TemporaryDirectory(prefix="clip-lab-numba-") if a.cold_numba else None
    if cold:
        os.environ["NUMBA_CACHE_DIR"] = cold.name  # before numba is imported
    import torch

    import core

    clip = core.load(a.model) if a.model else core.load()
    warm = warm_up(not a.no_own_knn, nn_descent=max(a.points) >= 4096)
    rows = [measure_n(clip, n, a.repeats, not a.no_own_knn) for n in sorted(a.points)]
    print_table(rows, warm)
    out = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": platform.platform(), "cpus": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "model": clip.source, "repeats": a.repeats, "quick": a.quick,
           "load_1min_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
           "n_means": "points on the map; 2 per image-caption pair", "warm_up": warm, "rows": rows,
           "columns": dict(LABELS)}
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {a.json}")
    if not a.no_plot:
        print(f"wrote {plot(rows, a.plot)}")
    if cold:
        cold.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
