"""Data-loader workers end with the trainer: after a `kill -9` of the process that owns them, no
worker runs on as an orphan (issue 17). Processes are found in /proc (Linux)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GONE_WITHIN_S = 5.0

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a process, or None when there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the name may hold spaces and brackets
    return int(fields[1]), fields[0], int(fields[19])


def _children(pid: int) -> dict[int, int]:
    """The live children of pid: {child pid: start time}."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None and st[0] == pid and st[1] not in "ZX":
                out[int(entry.name)] = st[2]
    return out


def _alive(procs: dict[int, int]) -> list[int]:
    """Those of procs (pid: start time) still running: not gone, not a zombie, not a reused pid."""
    alive = []
    for pid, started in procs.items():
        st = _stat(pid)
        if st is not None and st[1] not in "ZX" and st[2] == started:
            alive.append(pid)
    return alive


def _wait_for(condition, timeout: float, what: str, proc: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"the process ended (rc {proc.returncode}) before {what}: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def _kill_and_check(proc: subprocess.Popen, workers: dict[int, int]) -> None:
    """kill -9 proc, then every one of its workers must be gone within GONE_WITHIN_S."""
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + GONE_WITHIN_S
        while _alive(workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = _alive(workers)
        assert not left, f"workers {left} outlived the killed trainer by {GONE_WITHIN_S} s"
    finally:
        for pid in _alive(workers):  # only the processes this test started, by pid
            os.kill(pid, signal.SIGKILL)


def test_the_trainers_workers_end_when_it_is_killed(tmp_path, micro_dir):
    out = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "--model", str(micro_dir), "--steps", "2000",
           "--batch-size", "8", "--save-every", "0", "--eval-every", "0", "--log-every", "1", "--num-workers", "2",
           "--threads", "1", "--no-progress", "--out", str(out)]
    log = tmp_path / "stderr.txt"
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        def training() -> bool:  # a logged step: the workers are serving batches
            metrics = out / "metrics.jsonl"
            return metrics.exists() and any(line.startswith("{") and line.endswith("}") and "loss" in json.loads(line)
                                            for line in metrics.read_text().splitlines())

        _wait_for(training, 180, "a logged step", proc, log)
        workers = _wait_for(lambda: _children(proc.pid) if len(_children(proc.pid)) >= 2 else None, 30,
                            "two data workers", proc, log)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    _kill_and_check(proc, workers)


# A process that owns a DataLoader whose workers are busy in a long batch: the case that leaves
# orphans without the fix, since a worker only looks for its parent between batches.
DRIVER = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    sys.path.insert(0, {root!r})
    import core.train.data as data

    class Busy:
        def batch(self, step, batch_size, rank=0, world=1):
            import os
            Path({flags!r}, f"busy-{{os.getpid()}}").write_text("")
            threading.Event().wait(600)  # a very slow batch

    if {mode!r} == "watchdog":  # no prctl here: the parent-watchdog thread must do it
        def no_libc(*a, **k):
            raise OSError("no libc")
        data.ctypes.CDLL = no_libc
    for batch in data.batch_stream(Busy(), 4, 0, 100, num_workers=2):
        pass
""")


@pytest.mark.parametrize("mode", ["prctl", "watchdog"])
def test_workers_busy_in_a_batch_end_when_their_parent_is_killed(tmp_path, mode):
    if mode == "prctl" and not sys.platform.startswith("linux"):
        pytest.skip("prctl is Linux's")
    flags = tmp_path / "flags"
    flags.mkdir()
    log = tmp_path / "stderr.txt"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-c", DRIVER.format(root=str(ROOT), flags=str(flags), mode=mode)],
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        def busy() -> dict[int, int] | None:
            pids = [int(p.name.split("-")[1]) for p in flags.iterdir()]
            if len(pids) < 2:
                return None
            kids = _children(proc.pid)
            assert set(pids) <= set(kids), (pids, kids)  # the flags come from the driver's own workers
            return {pid: kids[pid] for pid in pids}

        workers = _wait_for(busy, 120, "two busy workers", proc, log)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    _kill_and_check(proc, workers)
