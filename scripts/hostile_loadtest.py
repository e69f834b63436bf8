"""Hostile-load test on loopback: well-behaved visitors beside floods, cancels, huge inputs and bad numbers.

    python scripts/hostile_loadtest.py                    # 32 clients, 120 s of attack (about 4 min in all)
    python scripts/hostile_loadtest.py --quick            # 20 s smoke run
    python scripts/hostile_loadtest.py --only cancel      # one attack beside the well-behaved visitors
    python scripts/hostile_loadtest.py --tabs             # attackers on every tab instead (scripts/hostile_tabs.py)
    python scripts/hostile_loadtest.py --json benchmarks/results/hostile_loadtest.json

Starts `python app.py` itself on a free 127.0.0.1 port (offline, bundled model, no warm-up, a temp
CLIP_LAB_CACHE_DIR and GRADIO_TEMP_DIR, OMP_NUM_THREADS=2), then runs 32 gradio_client sessions
at once, each with its own X-Forwarded-For address (so the per-visitor cap sees 32 visitors). The 30
attackers' client threads run at nice 19 (`--attackers-share-cpu`: at normal priority), since on a
Space their clients run on their own machines; here they would take about half of the 2 cores:
- `good`: small zero-shot questions at a person's pace (one every GOOD_PAUSE_S = 3 s, inside the
  app's per-address rate of 30 a minute); their latency is what the targets judge;
- `upload`: 65 distinct 3 KB PNGs to /zero_shot (over the cap of 64: must be refused), 40 to
  /embedding_map as "uploaded images", and raw POSTs to /gradio_api/upload that never join the queue;
- `cancel`: a 20,000-prompt head (ImageNet-1k x 20 templates, a new template each time so no cache
  helps) submitted, then `job.cancel()` a moment later; the Stop button is not in the API
  (api_visibility="private"), so cancel is all an API client has;
- `prompts`: 20,000 prompts (the cap; new each time) and 21,000 (must be refused);
- `queue`: one visitor submitting 8 at once (the cap of 4 in flight must refuse the rest);
- `body`: a 5 MB class-name box (must be refused by the body limit, 413) and a 200 KB one (over the
  text limit, under the body limit: a one-line error);
- `numbers`: NaN, infinity and out-of-range top_k / n / min_dist / n_neighbors.
Samples the app's RSS (children included), CPU and the bytes under its temp and cache folders every
0.25 s. Reports the good visitors' p50/p95, peak RSS, disk at the start, peak and after the run,
outcomes by attack (expected refusals, unexpected errors, unexpected successes) and whether the app
survived. Exits 1 when a target is missed: p95 <= 3 s, peak RSS <= 6 GB, no crash, the uploads and
temp files back to their baseline (within 1 MB) once the app's cleaner has run (uploads live
UPLOAD_TTL_S = 10 s here, an hour by default), and the disk cache of zero-shot heads within its cap
(the attack builds new 20,000-prompt heads on purpose; the cache keeps them, least recently used
first out, up to AppConfig.disk_cache_mb). Stops the app by its PID.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.app_process import start_app_or_none, stop_app  # noqa: E402
from scripts.hostile_tabs import TAB_ROLES, tab_attacks  # noqa: E402
from scripts.hostile_measure import Tally, call, cpu_seconds, disk_usage, distinct_pngs, outcome, percentile, rss_mb, thread_count  # noqa: E402

STAR = str(ROOT / "assets/examples/shapes_purple_star.png")
ATTACKS = ("upload", "cancel", "prompts", "queue", "body", "numbers")
GOOD_PAUSE_S = 3.0  # a person reads the answer before asking again
UPLOAD_TTL_S = 10  # the app deletes uploads this long after they arrive (CLIP_LAB_UPLOAD_TTL_S; an hour by default)
CACHE_CAP_MB = 2048  # the app's disk cache of zero-shot heads (AppConfig.disk_cache_mb)
# roles of the 32 clients: 2 good visitors, then the attackers
ROLES = ["good"] * 2 + ["upload"] * 5 + ["cancel"] * 6 + ["prompts"] * 4 + ["queue"] * 4 + ["body"] * 5 + ["numbers"] * 6
# what an expected refusal says (matched case-insensitively against the error's text)
REFUSED = {
    "upload_over_cap": r"64",
    "prompts_over_cap": r"20,000|prompts",
    "queue_over_cap": r"429|in flight|waiting or running|limit is 4",
    "body_5mb": r"413|limit",
    "body_200kb": r"100,000|characters",
    # NaN or Infinity sent raw is not JSON: Gradio's queue refuses the join with 400 Bad Request
    "numbers": r"must be|number|finite|between|less than|greater than|400 Bad Request|422|nan|json|invalid",
    # a cancelled job: gradio_client raises CancelledError, or KeyError "Could not find 'data' key"
    # (gradio_client's "Did not expect 2 tasks to be done": its own race of a cancel with the answer)
    "cancel": r"cancel|Could not find 'data' key|server is busy|Did not expect 2 tasks",
    # a 20,000-prompt head while two others are being built: "the server is busy" (AppConfig.concurrency)
    "prompts_at_cap": r"server is busy",
}


def good_visitors(url: str, until: float, count: int) -> None:
    """The well-behaved visitors, in a process of their own (so that the attackers' 30 client threads,
    in the main process, do not hold up their client's GIL): `count` of them ask a small zero-shot
    question, read the answer for GOOD_PAUSE_S and ask again until time.time() passes `until`.
    Prints one JSON line per answer: {"outcome", "seconds", "detail"}."""
    from gradio_client import Client, handle_file

    lock = threading.Lock()

    def visitor(i: int) -> None:
        c = Client(url, verbose=False, download_files=False, headers={"X-Forwarded-For": f"198.51.100.{200 + i}"})
        while time.time() < until:
            t = time.perf_counter()
            try:
                c.predict(image=handle_file(STAR), classnames="circle\nstar\nsquare", templates="a photo of a {}.",
                          api_name="/zero_shot")
                line = {"outcome": "ok", "seconds": time.perf_counter() - t, "detail": ""}
            except Exception as e:
                text = f"{e.__class__.__name__}: {e}"
                line = {"outcome": outcome(text, False), "seconds": time.perf_counter() - t, "detail": text[:200]}
            with lock:
                print(json.dumps(line), flush=True)
            time.sleep(GOOD_PAUSE_S)

    threads = [threading.Thread(target=visitor, args=(i,)) for i in range(count)]
    [t.start() for t in threads]
    [t.join() for t in threads]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=120.0, help="seconds of attack (default 120)")
    p.add_argument("--quick", action="store_true", help="a 20 s smoke run")
    p.add_argument("--only", choices=ATTACKS, help="run only this attack beside the good visitors")
    p.add_argument("--tabs", action="store_true", help="attackers on every tab (evaluate, search, map, heads, train, /call/)")
    p.add_argument("--drain", type=float, default=30.0, help="seconds to wait for requests in flight after the attack")
    p.add_argument("--settle", type=float, default=60.0, help="at most this long for the app to go idle before the last disk reading")
    p.add_argument("--json", default="", help="write the results here")
    p.add_argument("--attackers-share-cpu", action="store_true",
                   help="run the attackers' client threads at normal priority (by default nice 19: on a Space they run on "
                        "the attackers' own machines, not beside the server)")
    p.add_argument("--good-visitors", nargs=3, metavar=("URL", "UNTIL", "COUNT"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.good_visitors:  # the child process of the well-behaved visitors
        good_visitors(a.good_visitors[0], float(a.good_visitors[1]), int(a.good_visitors[2]))
        return 0
    duration = 20.0 if a.quick else a.duration
    roles = list(TAB_ROLES) if a.tabs else [r for r in ROLES if r == "good" or a.only in (None, r)]

    import httpx
    from gradio_client import Client, handle_file

    from demo.inputs.presets import preset_text

    tmp = Path(tempfile.mkdtemp(prefix="clip-lab-hostile-"))
    gtmp, cache = tmp / "gradio-tmp", tmp / "cache"
    gtmp.mkdir()
    pngs = distinct_pngs(tmp / "pngs", 400)
    imagenet = preset_text("classnames", "ImageNet-1k")
    openai = preset_text("templates", "OpenAI's 80").splitlines()
    env = {"CLIP_LAB_WARMUP": "0", "CLIP_LAB_CACHE_DIR": str(cache), "GRADIO_TEMP_DIR": str(gtmp), "OMP_NUM_THREADS": "2",
           "CLIP_LAB_UPLOAD_TTL_S": str(UPLOAD_TTL_S), "CLIP_LAB_RUNS_DIR": str(tmp / "runs")}
    t_start = time.perf_counter()
    started = start_app_or_none(tmp / "app.log", env)
    if started is None:
        return 1
    proc, url = started
    watched = [gtmp, cache, tmp / "runs"]  # uploads and temp files, the heads' disk cache, the Train tab's runs
    samples: list[dict] = []
    stop_sampling = threading.Event()
    try:
        mk = lambda i: Client(url, verbose=False, download_files=False, headers={"X-Forwarded-For": f"198.51.100.{i}"})
        good_q = dict(image=handle_file(STAR), classnames="circle\nstar\nsquare", templates="a photo of a {}.",
                      api_name="/zero_shot")
        floor_client = mk(250)
        floor_client.predict(**good_q)  # loads the model: not part of any measurement
        floor = []
        for _ in range(5):
            t = time.perf_counter()
            floor_client.predict(**good_q)
            floor.append(time.perf_counter() - t)
        t = time.perf_counter()
        floor_client.predict(image=handle_file(STAR), classnames=imagenet, templates="\n".join(openai[:20]),
                             api_name="/zero_shot")
        big_alone = time.perf_counter() - t  # one 20,000-prompt head with nothing else running
        disk_start = (*disk_usage(watched), disk_usage([gtmp])[0])  # (bytes, files, bytes of uploads and temp files)
        rss_start = rss_mb(proc.pid)
        clients = [None] * len(roles)  # attackers make theirs in their thread; the good visitors live in a child process
        print(f"app up; {len(roles)} clients; floor p50 {statistics.median(floor):.3f} s; "
              f"one 20,000-prompt head alone {big_alone:.1f} s; RSS {rss_start:.0f} MB; "
              f"disk {disk_start[0] / 1e6:.2f} MB in {disk_start[1]} files", flush=True)

        def sample() -> None:
            last_cpu, last_t = cpu_seconds(proc.pid), time.perf_counter()
            while not stop_sampling.is_set():
                time.sleep(0.25)
                now, cpu = time.perf_counter(), cpu_seconds(proc.pid)
                size, files = disk_usage(watched)
                samples.append({"t": now - t_attack, "rss_mb": rss_mb(proc.pid), "cores": (cpu - last_cpu) / (now - last_t),
                                "disk_bytes": size, "disk_files": files, "threads": thread_count(proc.pid)})
                last_cpu, last_t = cpu, now

        tally = Tally()
        counter = iter(range(10**9))
        counter_lock = threading.Lock()

        def nonce() -> int:
            with counter_lock:
                return next(counter)

        def big_templates(extra: int = 0) -> str:
            k = nonce()
            return "\n".join([f"a photo of a {{}}, take {k}."] + openai[1:20 + extra])

        deadline_box = {}

        def live() -> bool:
            return time.perf_counter() < deadline_box["t"]

        def good(c, i):  # the good visitors' child process, started by the first of them
            if i != roles.index("good"):
                return
            child = subprocess.Popen([sys.executable, __file__, "--good-visitors", url, str(time.time() + duration),
                                      str(roles.count("good"))], stdout=subprocess.PIPE, text=True, cwd=ROOT)
            for line in child.stdout:
                r = json.loads(line)
                tally.add("good", r["outcome"], r["seconds"], r["detail"])
            child.wait()

        def upload(c, i):
            rng = random.Random(i)
            step = 0
            while live():
                step += 1
                if step % 3 == 1:
                    files = [handle_file(f) for f in rng.sample(pngs, 65)]
                    call(tally, "upload_over_cap", lambda: c.predict(image=handle_file(STAR), images=files,
                          classnames="circle\nstar", templates="a {}.", api_name="/zero_shot"), True, REFUSED["upload_over_cap"])
                elif step % 3 == 2:
                    files = [handle_file(f) for f in rng.sample(pngs, 40)]
                    call(tally, "upload_map", lambda: c.predict(source="uploaded images", files=files, method="PCA",
                          api_name="/embedding_map"), False)
                else:  # files posted to the upload route, never used by a request
                    def post():
                        chosen = rng.sample(pngs, 20)
                        handles = [("files", (Path(f).name, open(f, "rb"), "image/png")) for f in chosen]
                        try:
                            r = httpx.post(f"{url}gradio_api/upload", files=handles, timeout=30,
                                           headers={"X-Forwarded-For": f"198.51.100.{i}"})
                            r.raise_for_status()
                        finally:
                            for _, (_, fh, _) in handles:
                                fh.close()
                    call(tally, "upload_raw", post, False)
                time.sleep(0.3)

        def cancel(c, i):
            while live():
                t = time.perf_counter()
                job = c.submit(image=handle_file(STAR), classnames=imagenet, templates=big_templates(), api_name="/zero_shot")
                time.sleep(1.0 + random.random())
                job.cancel()
                try:
                    job.result(timeout=10)
                    tally.add("cancel", "ok", time.perf_counter() - t)  # finished before the cancel
                except Exception as e:
                    text = f"{e.__class__.__name__}: {e}"
                    expected = re.search(REFUSED["cancel"], text, re.I) or isinstance(e, TimeoutError)
                    tally.add("cancel", outcome(text, bool(expected)), time.perf_counter() - t, text)
                time.sleep(0.5)

        def prompts(c, i):
            step = 0
            while live():
                step += 1
                if step % 2:
                    call(tally, "prompts_at_cap", lambda: c.predict(image=handle_file(STAR), classnames=imagenet,
                          templates=big_templates(), api_name="/zero_shot"), False, REFUSED["prompts_at_cap"])
                else:
                    call(tally, "prompts_over_cap", lambda: c.predict(image=handle_file(STAR), classnames=imagenet,
                          templates=big_templates(1), api_name="/zero_shot"), True, REFUSED["prompts_over_cap"])
                    time.sleep(0.5)

        def queue(c, i):
            while live():
                t = time.perf_counter()
                jobs = [c.submit(image=handle_file(STAR), classnames=preset_text("classnames", "CIFAR-100"),
                                 templates="\n".join(openai[:10]), top_k=3, api_name="/zero_shot") for _ in range(8)]
                for job in jobs:
                    try:
                        job.result(timeout=max(5.0, deadline_box["t"] + a.drain - time.perf_counter()))
                        tally.add("queue_accepted", "ok", time.perf_counter() - t)
                    except Exception as e:
                        text = f"{e.__class__.__name__}: {e}"
                        if isinstance(e, TimeoutError):
                            tally.add("queue_accepted", "unfinished", time.perf_counter() - t, text)
                            continue
                        refused = re.search(REFUSED["queue_over_cap"], text, re.I)
                        tally.add("queue_over_cap", outcome(text, bool(refused)), time.perf_counter() - t, text)
                time.sleep(0.5)

        huge, long_ = "x" * (5 << 20), ("cat\n" * 50_000)
        def body(c, i):
            step = 0
            while live():
                step += 1
                if step % 2:
                    call(tally, "body_5mb", lambda: c.predict(image=handle_file(STAR), classnames=huge, api_name="/zero_shot"),
                          True, REFUSED["body_5mb"])
                else:
                    call(tally, "body_200kb", lambda: c.predict(image=handle_file(STAR), classnames=long_, api_name="/zero_shot"),
                          True, REFUSED["body_200kb"])
                time.sleep(0.5)

        bad = [("top_k", math.nan), ("top_k", math.inf), ("top_k", -1), ("top_k", 1e9), ("logit_scale", math.nan)]
        bad_map = [("n", math.nan), ("n", math.inf), ("min_dist", math.inf), ("min_dist", math.nan), ("n_neighbors", -5),
                   ("n", 10**9)]
        def numbers(c, i):
            step = i
            while live():
                step += 1
                if step % 2:
                    name, value = bad[step // 2 % len(bad)]
                    call(tally, "numbers", lambda: c.predict(image=handle_file(STAR), classnames="a\nb",
                          api_name="/zero_shot", **{name: value}), True, REFUSED["numbers"])
                else:
                    name, value = bad_map[step // 2 % len(bad_map)]
                    call(tally, "numbers", lambda: c.predict(method="PCA", api_name="/embedding_map", **{name: value}),
                          True, REFUSED["numbers"])
                time.sleep(0.5)

        work = {"good": good, "upload": upload, "cancel": cancel, "prompts": prompts, "queue": queue, "body": body,
                "numbers": numbers}
        work.update(tab_attacks(url, live, tally, call, STAR, handle_file, imagenet, big_templates,
                                lambda i: f"198.51.100.{i}"))

        def guarded(role, c, i):
            try:
                if role != "good":
                    if not a.attackers_share_cpu:  # threads made from here on (the client's) inherit it
                        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
                    c = mk(i)
                work[role](c, i)
            except Exception as e:  # a bug in this script, not in the app: counted and shown
                tally.add(f"harness_{role}", "error", None, f"{e.__class__.__name__}: {e}")

        self_cpu0 = time.process_time()
        t_attack = time.perf_counter()
        deadline_box["t"] = t_attack + duration
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        threads = [threading.Thread(target=guarded, args=(r, clients[i], i), daemon=True) for i, r in enumerate(roles)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=max(0.0, deadline_box["t"] + a.drain - time.perf_counter()))
        still = sum(th.is_alive() for th in threads)
        cancelled = work["cancel_all"]()  # the tab attackers' requests still in flight: their tabs close
        attack_wall = time.perf_counter() - t_attack
        harness_cpu = time.process_time() - self_cpu0
        # let the app go idle (below 0.2 cores for 2 s), then read the disk once more
        idle_since, t_settle = None, time.perf_counter()
        while time.perf_counter() - t_settle < a.settle and proc.poll() is None:
            time.sleep(0.25)
            recent = samples[-8:]
            if recent and all(s["cores"] < 0.2 for s in recent):
                idle_since = idle_since or time.perf_counter()
                if time.perf_counter() - idle_since >= 2:
                    break
            else:
                idle_since = None
        # then give the app's upload cleaner (every TTL/6 s, at least 5 s) the time to delete the last uploads
        temp_start, t_clean = disk_start[2], time.perf_counter()
        while disk_usage([gtmp])[0] - temp_start > 1 << 20 and time.perf_counter() - t_clean < UPLOAD_TTL_S + 15 and proc.poll() is None:
            time.sleep(0.5)
        stop_sampling.set()
        sampler.join(timeout=5)
        alive = proc.poll() is None
        disk_after = disk_usage(watched)
        rss_after = rss_mb(proc.pid) if alive else float("nan")
        log = (tmp / "app.log").read_text(errors="replace")
        good_lat = tally.latency.get("good", [])
        attack_samples = [s for s in samples if s["t"] <= duration]
        peak_rss = max([s["rss_mb"] for s in samples] + [rss_start])
        peak_disk = max([s["disk_bytes"] for s in samples] + [disk_start[0]])
        mean_cores = statistics.mean(s["cores"] for s in attack_samples) if attack_samples else float("nan")
        outcomes = {k: dict(v) for k, v in sorted(tally.counts.items())}
        unexpected = sum(v.get("error", 0) + v.get("accepted", 0) for k, v in tally.counts.items())
        targets = {
            "good_p95_le_3s": percentile(good_lat, 0.95) <= 3.0,
            "good_never_refused": sum(v for k, v in tally.counts["good"].items() if k != "ok") == 0,
            "peak_rss_le_6gb": peak_rss <= 6 * 1024,
            "rss_after_within_1gb_of_start": rss_after <= rss_start + 1024,
            "no_crash": alive,
            "uploads_back_to_baseline": disk_usage([gtmp])[0] - disk_start[2] <= 1 << 20,
            "head_cache_within_cap": disk_usage([cache])[0] <= CACHE_CAP_MB << 20,
        }
        result = {
            "date": time.strftime("%Y-%m-%d %H:%M"), "command": "python scripts/hostile_loadtest.py" + (" --quick" if a.quick else "")
            + (f" --only {a.only}" if a.only else "") + (" --tabs" if a.tabs else ""), "clients": len(roles), "roles": dict(Counter(roles)),
            "attack_s": duration, "attack_wall_s": round(attack_wall, 1), "clients_still_running": still, "cancelled_at_end": cancelled,
            "total_runtime_s": round(time.perf_counter() - t_start, 1),
            "floor_good_p50_s": round(statistics.median(floor), 3), "big_head_alone_s": round(big_alone, 1),
            "heads_on_disk_after": len(list((cache / "heads").glob("*"))) if (cache / "heads").exists() else 0,
            "good": {"n": len(good_lat), "p50_s": round(percentile(good_lat, 0.5), 3), "p95_s": round(percentile(good_lat, 0.95), 3),
                     "max_s": round(max(good_lat), 3) if good_lat else None,
                     "failed": sum(v for k, v in tally.counts["good"].items() if k != "ok")},
            "latency_by_kind": {k: {"n": len(v), "p50_s": round(percentile(v, 0.5), 3), "p95_s": round(percentile(v, 0.95), 3)}
                                for k, v in sorted(tally.latency.items())},
            "rss_mb": {"start": round(rss_start), "peak": round(peak_rss), "after": round(rss_after)},
            "app_cores_mean_during_attack": round(mean_cores, 2), "app_threads_peak": max([s["threads"] for s in samples] + [0]),
            "harness_cpu_s": round(harness_cpu, 1),
            "disk": {"start_bytes": disk_start[0], "start_files": disk_start[1], "peak_bytes": peak_disk,
                     "peak_files": max([s["disk_files"] for s in samples] + [disk_start[1]]),
                     "after_bytes": disk_after[0], "after_files": disk_after[1],
                     "temp_start_bytes": disk_start[2], "temp_after_bytes": disk_usage([gtmp])[0],
                     "cache_after_bytes": disk_usage([cache])[0], "cache_cap_bytes": CACHE_CAP_MB << 20},
            "outcomes": outcomes, "unexpected": unexpected,
            "unexpected_samples": {k: v for k, v in sorted(tally.samples.items())},
            "timeline": [{k: round(v, 2) for k, v in s.items()} for s in samples[::4]],
            "app_alive": alive, "app_log_tracebacks": log.count("Traceback"),
            "targets": targets, "pass": all(targets.values()),
        }
        _table(result)
        if a.json:
            Path(a.json).parent.mkdir(parents=True, exist_ok=True)
            Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
        print("PASS" if result["pass"] else "FAIL: " + ", ".join(k for k, v in targets.items() if not v))
        print(f"app log: {tmp / 'app.log'}")
        return 0 if result["pass"] else 1
    finally:
        stop_sampling.set()
        if proc.poll() is None:
            stop_app(proc)


def _table(r: dict) -> None:
    d, mb = r["disk"], lambda b: f"{b / 1e6:.2f} MB"
    rows = [
        ("good visitor p50 / p95", f"{r['good']['p50_s']:.2f} s / {r['good']['p95_s']:.2f} s (n={r['good']['n']}, "
         f"idle floor p50 {r['floor_good_p50_s']:.2f} s)", "p95 <= 3 s", r["targets"]["good_p95_le_3s"]),
        ("good visitor requests failed", f"{r['good']['failed']}", "0", r["targets"]["good_never_refused"]),
        ("peak RSS (app + children)", f"{r['rss_mb']['peak']:,} MB (start {r['rss_mb']['start']:,} MB)", "<= 6 GB",
         r["targets"]["peak_rss_le_6gb"]),
        ("app survived", f"{'yes' if r['app_alive'] else 'NO'} ({r['app_log_tracebacks']} tracebacks in its log)", "0 crashes",
         r["targets"]["no_crash"]),
        ("disk start / peak / after", f"{mb(d['start_bytes'])} / {mb(d['peak_bytes'])} / {mb(d['after_bytes'])} "
         f"({d['after_files']} files)", "", True),
        ("uploads and temp files start / after", f"{mb(d['temp_start_bytes'])} / {mb(d['temp_after_bytes'])}",
         "back to start", r["targets"]["uploads_back_to_baseline"]),
        ("head cache after", f"{mb(d['cache_after_bytes'])} ({r['heads_on_disk_after']} heads)",
         f"<= its cap ({CACHE_CAP_MB:,} MB)", r["targets"]["head_cache_within_cap"]),
    ]
    print("\n| measure | value | target | met |\n|---|---|---|---|")
    for name, value, target, met in rows:
        print(f"| {name} | {value} | {target} | {'yes' if met else 'NO'} |")
    print("\n| request kind | ok | refused (expected) | queue full | unexpected error | accepted (should be refused) "
          "| p50 / p95 |\n|---|---|---|---|---|---|---|")
    for kind, c in r["outcomes"].items():
        lat = r["latency_by_kind"].get(kind, {})
        print(f"| {kind} | {c.get('ok', 0)} | {c.get('refused', 0)} | {c.get('queue_full', 0)} | {c.get('error', 0)} "
              f"| {c.get('accepted', 0)} | {lat.get('p50_s', float('nan')):.1f} s / {lat.get('p95_s', float('nan')):.1f} s |")
    for kind, s in r["unexpected_samples"].items():
        print(f"  {kind}: {s[0]}")
    print(f"\napp cores (mean during attack) {r['app_cores_mean_during_attack']}, threads peak {r['app_threads_peak']}, "
          f"harness CPU {r['harness_cpu_s']} s, attack wall {r['attack_wall_s']} s, total {r['total_runtime_s']} s")


if __name__ == "__main__":
    raise SystemExit(main())
