"""The floors under the app's latencies on this machine: what no app built on these libraries can beat.

    python benchmarks/app_floors.py [--repeats 5] [--calls 30] [--json benchmarks/results/app_floors.json]

1. Import floor: a fresh Python process that only imports torch, transformers' CLIPModel and
   gradio (what `app.py` needs before it can answer anything), timed from launch to exit, median
   of `--repeats` processes.
2. Round-trip floor: a minimal Gradio app with one queued endpoint (image in, a fixed label out,
   no model) driven through `gradio_client` exactly as `benchmarks/app_latency.py` drives the
   zero-shot tab (same image uploaded with handle_file each call): p50 and p95 of `--calls` calls.

Compare with `benchmarks/app_latency.py`: cold start to the first answer, and zero-shot p50.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.app_process import free_port  # noqa: E402

IMPORTS = "import sys; sys.modules['IPython'] = None; import torch; from transformers import CLIPModel; import gradio"  # as app.py: no IPython
IMAGE = ROOT / "assets/examples/shapes_purple_star.png"

ECHO_APP = """
import sys, gradio as gr
def answer(image):
    return {"star": 0.9, "circle": 0.1}
with gr.Blocks() as demo:
    image = gr.Image(type="pil")
    label = gr.Label()
    gr.Button("go").click(answer, image, label, api_name="echo")
demo.queue(max_size=32, default_concurrency_limit=2).launch(server_name="127.0.0.1", server_port=int(sys.argv[1]))
"""


def import_floor(repeats: int) -> list[float]:
    """Seconds from launch to exit of `python -c IMPORTS`, one fresh process per repeat."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", IMPORTS], check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return times


def round_trip_floor(calls: int) -> list[float]:
    """Round trips of a model-free Gradio endpoint through gradio_client, after 3 untimed calls."""
    from gradio_client import Client, handle_file

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", ECHO_APP, str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.time() + 120
        client = None
        while client is None:
            try:
                client = Client(url, verbose=False)
            except Exception:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("the echo app did not start") from None
                time.sleep(0.5)
        for _ in range(3):
            client.predict(handle_file(str(IMAGE)), api_name="/echo")
        times = []
        for _ in range(calls):
            t = time.perf_counter()
            client.predict(handle_file(str(IMAGE)), api_name="/echo")
            times.append(time.perf_counter() - t)
        return times
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--calls", type=int, default=30)
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/app_floors.json")
    a = p.parse_args(argv)
    imports = import_floor(a.repeats)
    trips = sorted(round_trip_floor(a.calls))
    out = {"imports_s": imports, "imports_median_s": statistics.median(imports),
           "round_trip_s": trips, "round_trip_p50_s": statistics.median(trips),
           "round_trip_p95_s": trips[int(0.95 * (len(trips) - 1))]}
    print("| floor | measured |\n|---|---|")
    print(f"| import torch + transformers.CLIPModel + gradio, fresh process, median of {a.repeats} | "
          f"{out['imports_median_s']:.2f} s |")
    print(f"| model-free Gradio endpoint round trip, p50 of {a.calls} (p95) | {1000 * out['round_trip_p50_s']:.0f} ms "
          f"({1000 * out['round_trip_p95_s']:.0f} ms) |")
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
