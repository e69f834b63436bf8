"""The app's user-facing latencies through `gradio_client`, against the targets of the app issue.

    python benchmarks/app_latency.py [--json benchmarks/results/app_latency.json] [--cold-numba] [--quick]

Starts `python app.py` as users get it (start-up warm-up on, offline, loopback; scripts/app_process.py)
and measures, in this order:

| row | how | target |
|---|---|---|
| cold start to the first zero-shot answer | process launch -> first /zero_shot answer (client included) | <= 12 s |
| first map, N = 1,000 | /embedding_map of the default set (seed 0), sent right after that answer; seconds after launch | <= 15 s |
| zero-shot round trip, p50 (p95 shown) | >= 30 warm /zero_shot calls, image uploaded each time | <= 150 ms |
| a 16x16 matrix | /similarity_matrix, a new seed each time, median of >= 5 | <= 1 s |
| warm map, N = 1,000 | a new seed each time (new images: drawn, encoded, projected), median of >= 3 | <= 5 s |
| warm map, N = 5,000 | a new seed, once | measured |

N counts the points on the map: N = 1,000 is 500 image-caption pairs. All maps are UMAP 2D
(n_neighbors 15, min_dist 0.1), coloured by modality, with links. A "warm" map reuses only what
outlives a request: the loaded model, umap's imported and compiled kernels, the thread pools. The
app keeps the embeddings of the 4 most recent sets (model, source, N, seed, split), so a new seed
defeats that cache; a re-projection of the last set (new min_dist, embeddings reused) is reported
as an extra row.

numba's disk cache (core.projection.numba_cache_dir) decides whether UMAP compiles (20-70 s) or
loads its kernels: the JSON records whether it existed before the run. `--cold-numba` points the
app at a fresh empty cache (a temporary NUMBA_CACHE_DIR) to measure the first start on a new machine.
Also recorded: the app's own CPU seconds at each milestone (Linux /proc), and the 1-minute load
average before the start: timings taken beside other work are not comparable.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.app_process import start_app, stop_app, wait_until_up  # noqa: E402

EXAMPLES = sorted((ROOT / "assets" / "examples").glob("shapes_*.png"))
CLASSES, TEMPLATE = "circle\nstar\nsquare\ntriangle\nheart", "a photo of a {}."
RESULTS = ROOT / "benchmarks" / "results" / "app_latency.json"


def numba_cache_path() -> Path:
    """The numba cache the app will use, computed as core.projection does, without creating it."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clip-lab" / "numba"


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process and all its threads so far (Linux), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def zero_shot(client, handle_file, i: int = 0):
    """One /zero_shot call on a bundled shapes-world example (rotating through them)."""
    image = handle_file(str(EXAMPLES[i % len(EXAMPLES)]))
    return client.predict(image=image, classnames=CLASSES, templates=TEMPLATE, top_k=3, api_name="/zero_shot")


def embedding_map(client, points: int, seed: int, min_dist: float = 0.1):
    """One /embedding_map call: `points` // 2 shapes-world pairs, UMAP 2D."""
    return client.predict(n=points // 2, seed=seed, method="UMAP", dims="2", n_neighbors=15, min_dist=min_dist,
                          api_name="/embedding_map")


def matrix(client, n: int, seed: int):
    """One /similarity_matrix call on n shapes-world pairs (a new batch for each seed)."""
    return client.predict(n=n, seed=seed, api_name="/build_batch")


def timed(fn) -> float:
    """Seconds that fn() takes."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def row(name: str, value: float | None, target: float | None, unit: str = "s", note: str = "") -> dict:
    """One result row; `met` is None where there is no target."""
    met = None if target is None or value is None else value <= target
    return {"row": name, "value": value, "target": target, "unit": unit, "met": met, "note": note}


def measure(a: argparse.Namespace, extra_env: dict) -> tuple[list[dict], dict]:
    """Start the app, run every measurement, stop the app; returns (rows, raw samples and milestones)."""
    from gradio_client import Client, handle_file

    raw: dict = {"app_cpu_s": {}}
    t0 = time.perf_counter()
    app, url = start_app(a.log, extra_env)
    cpu = lambda key: raw["app_cpu_s"].__setitem__(key, process_cpu_s(app.pid))  # noqa: E731
    try:
        wait_until_up(url, app, a.timeout, a.log)
        raw["app_up_s"] = time.perf_counter() - t0
        cpu("up")
        client = Client(url, verbose=False)
        raw["client_connected_s"] = time.perf_counter() - t0
        zero_shot(client, handle_file)
        raw["cold_start_s"] = time.perf_counter() - t0
        cpu("first_zero_shot")
        raw["first_map_request_s"] = timed(lambda: embedding_map(client, a.map_points, 0))
        raw["first_map_after_start_s"] = time.perf_counter() - t0
        cpu("first_map")
        for i in range(a.warmup_requests):  # not counted: first calls of a new client and code path
            zero_shot(client, handle_file, i)
        raw["zero_shot_s"] = [timed(lambda i=i: zero_shot(client, handle_file, i)) for i in range(a.zero_shot_requests)]
        raw["matrix_s"] = [timed(lambda s=s: matrix(client, a.matrix_n, 100 + s)) for s in range(a.matrix_repeats)]
        raw["warm_map_s"] = [timed(lambda s=s: embedding_map(client, a.map_points, 1 + s)) for s in range(a.map_repeats)]
        raw["reprojection_s"] = timed(lambda: embedding_map(client, a.map_points, a.map_repeats, min_dist=0.2))
        if a.large_map_points:
            raw["large_map_s"] = timed(lambda: embedding_map(client, a.large_map_points, 1000))
        cpu("end")
    finally:
        stop_app(app)
    zs = sorted(raw["zero_shot_s"])
    p95 = zs[min(len(zs) - 1, round(0.95 * (len(zs) - 1)))]
    n_pairs = a.map_points // 2
    rows = [
        row("cold start to the first zero-shot answer", raw["cold_start_s"], 12.0,
            note=f"page up at {raw['app_up_s']:.2f} s, client connected at {raw['client_connected_s']:.2f} s"),
        row(f"zero-shot round trip, p50 of {len(zs)}", statistics.median(zs), 0.150, note=f"p95 {p95 * 1000:.0f} ms"),
        row(f"{a.matrix_n}x{a.matrix_n} matrix, median of {len(raw['matrix_s'])}", statistics.median(raw["matrix_s"]), 1.0),
        row(f"first map, N = {a.map_points:,}: seconds after start", raw["first_map_after_start_s"], 15.0,
            note=f"request alone {raw['first_map_request_s']:.2f} s; {n_pairs} pairs, default set"),
        row(f"warm map, N = {a.map_points:,}, median of {len(raw['warm_map_s'])}", statistics.median(raw["warm_map_s"]), 5.0,
            note="a new seed each time"),
        row(f"re-projection, N = {a.map_points:,} (embeddings cached)", raw["reprojection_s"], None, note="new min_dist"),
    ]
    if a.large_map_points:
        rows.append(row(f"warm map, N = {a.large_map_points:,}", raw["large_map_s"], None,
                        note=f"{a.large_map_points // 2} pairs, a new seed"))
    return rows, raw


def print_table(rows: list[dict]) -> None:
    """The results as a Markdown table: row, measured, target, met?"""
    def fmt(v, unit):
        return "-" if v is None else (f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} {unit}")

    print("| row | measured | target | met? | note |\n|---|---|---|---|---|")
    for r in rows:
        met = {True: "yes", False: "**no**", None: "-"}[r["met"]]
        target = "measured" if r["target"] is None else "<= " + fmt(r["target"], r["unit"])
        print(f"| {r['row']} | {fmt(r['value'], r['unit'])} | {target} | {met} | {r['note']} |")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; --quick shrinks every count for a smoke test."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path, default=None,
                   help="default benchmarks/results/app_latency.json (--quick: a temporary file)")
    p.add_argument("--log", default=str(Path(tempfile.gettempdir()) / "clip_lab_app_latency.log"),
                   help="where the app's own output goes")
    p.add_argument("--timeout", type=float, default=180.0, help="give up if the page is not up by then (s)")
    p.add_argument("--cold-numba", action="store_true", help="give the app an empty numba cache (UMAP compiles)")
    p.add_argument("--zero-shot-requests", type=int, default=30)
    p.add_argument("--warmup-requests", type=int, default=3, help="warm zero-shot calls before the timed ones")
    p.add_argument("--matrix-n", type=int, default=16)
    p.add_argument("--matrix-repeats", type=int, default=5)
    p.add_argument("--map-points", type=int, default=1000, help="N, points on the map (2 per pair)")
    p.add_argument("--map-repeats", type=int, default=3)
    p.add_argument("--large-map-points", type=int, default=5000, help="0 skips the large map")
    p.add_argument("--quick", action="store_true", help="smoke test: 3 zero-shot calls, N = 400, no large map")
    a = p.parse_args(argv)
    if a.quick:
        a.zero_shot_requests, a.warmup_requests, a.matrix_repeats, a.map_repeats = 3, 1, 2, 1
        a.map_points, a.large_map_points = 400, 0
    if a.json is None:
        a.json = Path(tempfile.gettempdir()) / "app_latency_quick.json" if a.quick else RESULTS
    return a


def main(argv: list[str] | None = None) -> int:
    """Run the measurements, print the table, write the JSON; 1 if the app did not start."""
    a = parse_args(argv)
    cache = numba_cache_path()
    cache_existed = cache.is_dir() and any(cache.iterdir())
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="clip-lab-numba-") as cold_dir:
        extra_env = {"NUMBA_CACHE_DIR": cold_dir} if a.cold_numba else {}
        try:
            rows, raw = measure(a, extra_env)
        except (RuntimeError, TimeoutError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    print_table(rows)
    print(f"\nnumba cache {cache}: {'existed' if cache_existed else 'was empty or missing'} before the run; "
          f"app ran with {'an empty temporary cache (--cold-numba)' if a.cold_numba else 'that cache'}. "
          f"CPUs: {os.cpu_count()}; 1-min load before the start: {load_before}.")
    if load_before is not None and load_before > 0.5 * (os.cpu_count() or 1):
        print("warning: the machine was busy before the start; these timings are not comparable", file=sys.stderr)
    out = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": platform.platform(), "cpus": os.cpu_count(),
           "python": platform.python_version(), "load_1min_before": load_before, "numba_cache": str(cache),
           "numba_cache_existed_before": cache_existed, "cold_numba": a.cold_numba, "quick": a.quick,
           "n_means": "points on the map; 2 per image-caption pair", "rows": rows, "raw": raw,
           "settings": {k: v for k, v in vars(a).items() if k not in ("json", "log")}}
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
