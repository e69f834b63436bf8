"""Measure the app's user-facing latencies through gradio_client, on loopback.

    python scripts/measure_app.py

Starts `python app.py` on a free 127.0.0.1 port (offline), then times: start until the page answers,
cold start to the first zero-shot answer, the first embedding map of 500 pairs (1,000 points,
UMAP), and a 16x16 similarity matrix (twice). Stops the app by its PID.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.app_process import start_app, stop_app, wait_until_up  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--log", default="app_timing.log", help="where the app's own output goes")
    p.add_argument("--timeout", type=float, default=180.0, help="give up if the app is not up by then (s)")
    a = p.parse_args(argv)
    from gradio_client import Client, handle_file

    t0 = time.perf_counter()
    app, url = start_app(a.log)
    try:
        try:
            wait_until_up(url, app, a.timeout, a.log)
        except (RuntimeError, TimeoutError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        out = {"app_up_s": time.perf_counter() - t0}
        client = Client(url, verbose=False)
        client.predict(handle_file(str(ROOT / "assets/examples/shapes_brown_star.png")), [], "circle\nstar\nsquare",
                       "a photo of a {}.", 3, api_name="/zero_shot")
        out["cold_start_to_first_zero_shot_s"] = time.perf_counter() - t0
        t = time.perf_counter()
        client.predict("shapes world", 500, 0, "eval", [], "", "train", "image", "text", False, "UMAP", 2, 15, 0.1,
                       "modality", False, True, "", "", api_name="/embedding_map")
        out["first_map_1000_points_s"] = time.perf_counter() - t
        out["first_map_1000_points_after_start_s"] = time.perf_counter() - t0
        empty = {"headers": ["image", "caption"], "data": []}
        for i in range(2):
            t = time.perf_counter()
            client.predict("shapes world", 16, i, "eval", [], "", "train", "image", "text", empty, "", "cosine",
                           api_name="/similarity_matrix")
            out[f"matrix_16x16_s_{i + 1}"] = time.perf_counter() - t
    finally:
        stop_app(app)
    print(json.dumps({k: round(v, 2) for k, v in out.items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
