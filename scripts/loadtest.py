"""Load-test the app on loopback with gradio_client: many clients at once, across the tabs.

    python scripts/loadtest.py                       # 16 clients x 25 requests
    python scripts/loadtest.py --clients 32 --requests 10 --json runs/loadtest.json

Starts `python app.py` on a free 127.0.0.1 port (offline, on the bundled model, with a second
random `tiny` model in an allowlisted temp folder), then:
1. two sessions pick different models and ask the same zero-shot question at the same time; each
   must get exactly the answer its own model gives when asked alone;
2. N clients each send M requests in a fixed mix (zero-shot, similarity matrix, PCA map), all at
   once, while the app's RSS is sampled every 0.25 s.
Reports errors, p50/p95 latency per endpoint, and RSS growth from the second quarter of the run to
the last. Exits 1 if any request failed, the sessions crossed, or RSS grew by 10% or more. Bounded:
--timeout seconds for the whole load phase. Stops the app by its PID.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.app_process import start_app_or_none, stop_app  # noqa: E402

STAR = str(ROOT / "assets/examples/shapes_purple_star.png")


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _requests(client, handle_file):
    """The mix one client sends, as (endpoint name, callable) pairs, cycled."""
    return [
        ("zero_shot", lambda: client.predict(image=handle_file(STAR), classnames="circle\nstar\nsquare\nheart",
                                             templates="a photo of a {}.\na {}.", top_k=3, api_name="/zero_shot")),
        ("similarity_matrix", lambda: client.predict(n=8, seed=0, api_name="/build_batch")),
        ("zero_shot", lambda: client.predict(image=handle_file(STAR), classnames="red\nblue\nbrown", templates="a {} shape.",
                                             top_k=2, api_name="/zero_shot")),
        ("embedding_map", lambda: client.predict(n=200, method="PCA", dims="2", n_neighbors=10, api_name="/embedding_map")),
    ]


def _confidences(result) -> dict:
    label = result[0]
    return {c["label"]: round(float(c["confidence"]), 6) for c in label["confidences"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=25, help="requests per client")
    p.add_argument("--timeout", type=float, default=900.0, help="limit for the load phase (s)")
    p.add_argument("--json", default="", help="write the results here")
    a = p.parse_args(argv)
    from gradio_client import Client, handle_file

    from core.model import create

    tmp = Path(tempfile.mkdtemp(prefix="clip-lab-loadtest-"))
    other = tmp / "random-tiny"
    create("tiny", seed=1).save(other)  # a second model, so sessions can differ
    started = start_app_or_none(tmp / "app.log", {"CLIP_LAB_WARMUP": "0", "CLIP_LAB_MODEL_DIRS": str(tmp)})
    if started is None:
        return 1
    proc, url = started
    try:
        # 1. two sessions, two models, one question at the same time
        alone_a, alone_b = Client(url, verbose=False), Client(url, verbose=False)
        alone_b.predict(str(other), api_name="/load_model")
        ask = lambda c: _confidences(c.predict(image=handle_file(STAR), classnames="circle\nstar\nsquare", templates="a {}.",
                                               top_k=3, api_name="/zero_shot"))
        ref_a, ref_b = ask(alone_a), ask(alone_b)
        with ThreadPoolExecutor(2) as pool:
            got_a, got_b = pool.map(ask, [alone_a, alone_b])
        sessions_ok = got_a == ref_a and got_b == ref_b and ref_a != ref_b
        print(f"two sessions on two models at once: {'each got its own answers' if sessions_ok else 'CROSSED'}")

        # 2. the load
        clients = [Client(url, verbose=False) for _ in range(a.clients)]
        latencies: dict[str, list[float]] = {}
        errors: list[str] = []
        rss: list[tuple[float, float]] = []
        lock, done = threading.Lock(), threading.Event()

        def sample() -> None:
            while not done.is_set():
                rss.append((time.perf_counter(), _rss_mb(proc.pid)))
                time.sleep(0.25)

        def run(i: int) -> None:
            mix = _requests(clients[i], handle_file)
            for k in range(a.requests):
                name, call = mix[(i + k) % len(mix)]
                t = time.perf_counter()
                try:
                    call()
                except Exception as e:  # any failure is counted, never hidden
                    with lock:
                        errors.append(f"{name}: {e.__class__.__name__}: {str(e)[:120]}")
                    continue
                with lock:
                    latencies.setdefault(name, []).append(time.perf_counter() - t)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(a.clients) as pool:
            futures = [pool.submit(run, i) for i in range(a.clients)]
            _, pending = wait(futures, timeout=a.timeout)
        wall = time.perf_counter() - t0
        done.set()
        if pending:
            errors.append(f"{len(pending)} clients still running after {a.timeout:.0f} s")
        q = len(rss) // 4
        second = statistics.mean(v for _, v in rss[q:2 * q]) if q else float("nan")
        last = statistics.mean(v for _, v in rss[3 * q:]) if q else float("nan")
        growth = (last - second) / second
        all_lat = sorted(x for v in latencies.values() for x in v)
        pct = lambda xs, f: xs[min(len(xs) - 1, int(f * len(xs)))] if xs else float("nan")
        result = {"clients": a.clients, "requests_per_client": a.requests, "requests_done": len(all_lat),
                  "errors": len(errors), "error_samples": errors[:5], "wall_s": round(wall, 1),
                  "p50_s": round(pct(all_lat, 0.5), 3), "p95_s": round(pct(all_lat, 0.95), 3),
                  "per_endpoint": {k: {"n": len(v), "p50_s": round(pct(sorted(v), 0.5), 3), "p95_s": round(pct(sorted(v), 0.95), 3)}
                                   for k, v in latencies.items()},
                  "rss_mb_second_quarter": round(second, 1), "rss_mb_last_quarter": round(last, 1),
                  "rss_growth": round(growth, 4), "sessions_kept_apart": sessions_ok}
        print(json.dumps(result, indent=2))
        if a.json:
            Path(a.json).parent.mkdir(parents=True, exist_ok=True)
            Path(a.json).write_text(json.dumps(result, indent=2))
        ok = not errors and sessions_ok and growth < 0.10
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        stop_app(proc)


if __name__ == "__main__":
    raise SystemExit(main())
