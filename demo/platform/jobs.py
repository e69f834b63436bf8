"""Stop buttons that stop the work: per-session cancel flags that long jobs check between batches.

Gradio's `cancels=` only cancels the browser's side of an event; a plain function keeps running on
the server. So every long handler registers itself here (`Jobs.start`), and its progress
callback raises `Stopped` once the session's Stop button (or the closing of its tab) has set
the flag: encoding stops after the current batch, and nothing half-done is cached (the caches
keep only values whose computation returned).
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from demo.platform.errors import Stopped, TimedOut


class Job:
    """One running request: a flag to stop it, a deadline, and a progress reporter that checks both."""

    def __init__(self, time_limit_s: float | None = None):
        self.stopped = threading.Event()
        self.time_limit_s = time_limit_s
        self.deadline = None if time_limit_s is None else time.monotonic() + time_limit_s

    def check(self) -> None:
        """Raise Stopped if Stop was pressed for this job, TimedOut past its deadline."""
        if self.stopped.is_set():
            raise Stopped("stopped")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TimedOut(f"this request ran past the time limit of {self.time_limit_s:g} s and was stopped: "
                              "ask for less at once (fewer classes, templates or pairs)")

    def reporter(self, progress, desc: str, unit: str = "steps") -> Callable[[int, int], None]:
        """A (done, total) callback: checks the flag, then shows this step on a gr.Progress bar (if any):
        its own count ("encoding prompts: 1,024 of 20,000 prompts"), its fraction and Gradio's ETA."""
        def report(done: int, total: int) -> None:
            self.check()
            if progress is not None and total:
                progress((done, total), desc=f"{desc}: {done:,} of {total:,} {unit}", unit=unit)
        return report


class Jobs:
    """The running jobs of every session, by (session, tab); a session may run several on one tab."""

    def __init__(self):
        self._jobs: dict[tuple[str, str], list[Job]] = {}
        self._lock = threading.Lock()

    def start(self, session: str | None, tab: str, time_limit_s: float | None = None) -> Job:
        """Register a new job for this session's tab (a later Stop there stops it)."""
        job = Job(time_limit_s)
        with self._lock:
            self._jobs.setdefault((session or "", tab), []).append(job)
        return job

    def stop(self, session: str | None, tab: str | None = None) -> int:
        """Stop this session's jobs on `tab` (every tab when None); returns how many were stopped."""
        with self._lock:
            keys = [k for k in self._jobs if k[0] == (session or "") and (tab is None or k[1] == tab)]
            jobs = [job for key in keys for job in self._jobs.pop(key)]
        for job in jobs:
            job.stopped.set()
        return len(jobs)

    def finish(self, session: str | None, tab: str, job: Job) -> None:
        """Forget a job that ended."""
        key = (session or "", tab)
        with self._lock:
            if job in self._jobs.get(key, []):
                self._jobs[key].remove(job)
                if not self._jobs[key]:
                    del self._jobs[key]

    def running(self, session: str | None) -> int:
        """How many jobs this session has running."""
        with self._lock:
            return sum(len(v) for k, v in self._jobs.items() if k[0] == (session or ""))

    def __len__(self) -> int:
        return sum(len(v) for v in self._jobs.values())
