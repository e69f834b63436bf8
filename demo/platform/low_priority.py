"""Heavy work on threads the operating system runs only when quick work leaves a core free.

The fair scheduler (demo/platform/fair.py) decides who may run; once several requests run, the
kernel decides who gets the cores, and a heavy request (an evaluation of 5,000 images, a map,
a search index, a 20,000-prompt head) would take its share of them beside a visitor's one-second
zero-shot, on a 2-core Space making it several times slower. Heavy work therefore runs on the
threads of a `LowPriority` pool, whose nice value is raised once when each thread starts
(Linux applies nice per thread; a thread may raise its own but not lower it again, which is why
these threads are kept for heavy work only). The threads that torch's OpenMP runtime and numba
start from such a thread inherit its nice value, so the whole computation yields to quick
requests while the cores are busy, and takes them all when they are idle.

The request's context travels with the work: Gradio's context variables (progress, request) and
the fair scheduler's turn of the calling thread.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from demo.platform import fair

log = logging.getLogger(__name__)
T = TypeVar("T")
_local = threading.local()


def lower_this_thread(nice: int) -> None:
    """Raise this thread's nice value to at least `nice` (Linux: per thread); a no-op where unsupported."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, tid) < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError:  # a platform or sandbox that refuses: the work runs at the normal priority
        log.warning("could not lower a heavy-work thread's priority", exc_info=True)


def thread_nice() -> int:
    """This thread's nice value (0 where the platform cannot say)."""
    try:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    except (AttributeError, OSError):
        return 0


class LowPriority:
    """A pool of `workers` threads at nice value `nice` that runs heavy work for the calling thread."""

    def __init__(self, workers: int, nice: int = 10):
        self.nice = int(nice)
        self._pool = ThreadPoolExecutor(max_workers=max(1, int(workers)), thread_name_prefix="heavy",
                                        initializer=self._start_thread)

    def _start_thread(self) -> None:
        _local.inside = True
        lower_this_thread(self.nice)

    def run(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """fn(*args, **kwargs) on a low-priority thread, waiting for it; its result or its exception.
        Called from a low-priority thread (heavy work that meets more heavy work), it runs right there."""
        if getattr(_local, "inside", False):
            return fn(*args, **kwargs)
        context, turn = contextvars.copy_context(), fair.current_turn()

        def work():
            with fair.holding(turn):
                return context.run(fn, *args, **kwargs)

        return self._pool.submit(work).result()

    def close(self) -> None:
        """Let the threads end once their work is done (for tests that make many contexts)."""
        self._pool.shutdown(wait=False)
