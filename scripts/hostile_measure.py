"""What the hostile load test measures and how it sorts answers: the app's process tree (RSS,
CPU, threads), bytes on disk, distinct test images, and a tally of outcomes by request kind."""

from __future__ import annotations

import os
import re
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

def process_tree(pid: int) -> list[int]:
    """pid and its descendants (from /proc/*/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return out


def rss_mb(pid: int) -> float:
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of pid and its descendants."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError):
            pass
    return total / tick


def thread_count(pid: int) -> int:
    try:
        return len(list(Path(f"/proc/{pid}/task").iterdir()))
    except OSError:
        return 0


def disk_usage(folders: list[Path]) -> tuple[int, int]:
    """(bytes, files) under the folders."""
    size = files = 0
    for folder in folders:
        for dirpath, _, names in os.walk(folder):
            for name in names:
                try:
                    size += os.lstat(os.path.join(dirpath, name)).st_size
                    files += 1
                except OSError:
                    pass
    return size, files


def distinct_pngs(folder: Path, count: int) -> list[str]:
    """count distinct ~3 KB PNGs (random noise, so no two share a hash)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"noise_{i:04d}.png"
        Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def percentile(xs: list[float], f: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(f * len(xs)))] if xs else float("nan")


class Tally:
    """Outcomes by (attack, kind): ok, refused (expected), error (unexpected), accepted (should have been refused)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts: dict[str, Counter] = defaultdict(Counter)
        self.samples: dict[str, list[str]] = defaultdict(list)
        self.latency: dict[str, list[float]] = defaultdict(list)

    def add(self, kind: str, outcome: str, seconds: float | None = None, detail: str = "") -> None:
        with self.lock:
            self.counts[kind][outcome] += 1
            if seconds is not None and outcome in ("ok", "refused"):
                self.latency[kind].append(seconds)
            key = f"{kind}/{outcome}"  # the first few texts of each kind and outcome
            if detail and outcome in ("error", "accepted", "queue_full") and len(self.samples[key]) < 3:
                self.samples[key].append(detail[:200])


def outcome(text: str, expected: bool) -> str:
    """refused (the expected refusal), queue_full (the app's whole queue was full), or error."""
    if expected:
        return "refused"
    return "queue_full" if "Queue is full" in text else "error"


def call(tally: Tally, kind: str, fn, must_refuse: bool, pattern: str = "") -> None:
    """Run one request; classify it. An error matching `pattern` is 'refused' (for a request that may
    succeed, `pattern` names the refusals that are fair under load, e.g. "the server is busy")."""
    t = time.perf_counter()
    try:
        fn()
    except Exception as e:  # every failure is classified, none hidden
        text = f"{e.__class__.__name__}: {e}"
        ok = bool(pattern) and re.search(pattern, text, re.I)
        tally.add(kind, outcome(text, bool(ok)), time.perf_counter() - t, text)
        return
    tally.add(kind, "accepted" if must_refuse else "ok", time.perf_counter() - t,
              "accepted although it should have been refused" if must_refuse else "")
