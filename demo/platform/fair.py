"""Fair shares of the CPU between visitors: who runs next, and how much of it may be heavy.

Gradio's queue is first in, first out within a concurrency group, so a visitor who keeps four
requests in flight (the per-visitor cap) gets four times the service of one who asks a question,
reads the answer and asks again, and every quick question waits behind everyone's backlog. Here
the group's requests pass Gradio's queue at once (its limit is `AppConfig.inference_threads`)
and wait in a `FairScheduler` instead:

- at most `slots` requests run at once (the number a test counts);
- when a slot frees, it goes to the waiting visitor who has used the least service lately
  (seconds of running, halved every `half_life_s`), first come first served among equals;
- at most `heavy_slots` of them are heavy (an evaluation, a map, a search index, a big head build):
  a heavy request waits only for a heavy slot and never blocks a quick one, and a quick request
  that meets big work (`Services.heavy_slot`) takes a heavy slot only when no heavy request that
  is owed it more waits. Heavy work yields the cores to quick work through the kernel, not here:
  it runs on low-priority threads (demo/platform/low_priority.py). (Pausing heavy work between
  its batches while quick work ran, as this module once did, left a third of the cores idle under
  load and finished almost none of it.)

A visitor is an address where a proxy gives one (the last X-Forwarded-For hop, as in
demo/platform/guard.py), else a browser session.
"""

from __future__ import annotations

import itertools
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

from demo.platform.guard import LOOPBACK


def address_of(request) -> str:
    """A gr.Request's address as demo.platform.guard.client_ip sees it: the last X-Forwarded-For hop, else a
    peer that is not loopback, else "" (this machine's own clients)."""
    headers = getattr(request, "headers", None) or {}
    forwarded = headers.get("x-forwarded-for") if hasattr(headers, "get") else None
    if forwarded:
        return forwarded.split(",")[-1].strip()
    host = getattr(getattr(request, "client", None), "host", "") or ""
    return host if host and host not in LOOPBACK and host != "testclient" else ""


def visitor_of(request) -> str:
    """Who a gr.Request comes from: 'ip:ADDRESS' behind a proxy or from another host, else 'session:HASH'."""
    address = address_of(request)
    return f"ip:{address}" if address else "session:" + str(getattr(request, "session_hash", "") or "")


@dataclass
class _Ticket:
    seq: int
    visitor: str
    heavy: bool = False


_current = threading.local()


def current_turn() -> "Turn | None":
    """The Turn this thread's request holds, if any (Services.heavy_slot marks it heavy)."""
    return getattr(_current, "turn", None)


@contextmanager
def holding(turn: "Turn | None"):
    """Make `turn` this thread's current turn for the block (work handed to another thread keeps its turn)."""
    outer, _current.turn = current_turn(), turn
    try:
        yield turn
    finally:
        _current.turn = outer


class Turn:
    """A running request's hold on a slot: whether it is heavy, and when it started."""

    def __init__(self, scheduler: "FairScheduler", visitor: str):
        self.scheduler, self.visitor = scheduler, visitor
        self.started = time.monotonic()
        self.heavy = False


class FairScheduler:
    """At most `slots` requests running, at most `heavy_slots` of them heavy; free slots go to the
    least-served visitor waiting whose request may take one (a heavy request never blocks a quick one)."""

    def __init__(self, slots: int, half_life_s: float = 60.0, heavy_slots: int | None = None):
        self.slots, self.half_life_s = int(slots), float(half_life_s)
        self.heavy_slots = self.slots if heavy_slots is None else int(heavy_slots)
        self._cv = threading.Condition()
        self._running: list[Turn] = []
        self._waiting: list[_Ticket] = []
        self._usage: dict[str, tuple[float, float]] = {}  # visitor -> (seconds used, as of time)
        self._seq = itertools.count()
        self.peak_running = 0

    def usage(self, visitor: str, now: float | None = None) -> float:
        """Seconds of service this visitor has had, decayed with the half-life."""
        now = time.monotonic() if now is None else now
        used, at = self._usage.get(visitor, (0.0, now))
        return used * 0.5 ** ((now - at) / self.half_life_s)

    def running(self) -> int:
        """How many requests hold a slot now."""
        with self._cv:
            return len(self._running)

    def waiting(self) -> int:
        """How many requests wait for a slot."""
        with self._cv:
            return len(self._waiting)

    def heavy_running(self) -> int:
        """How many heavy requests hold a slot now."""
        with self._cv:
            return sum(t.heavy for t in self._running)

    @contextmanager
    def turn(self, visitor: str, check: Callable[[], None] | None = None, poll_s: float = 0.25, heavy: bool = False):
        """Hold a slot for the block; waits in fair order. `check()` runs while waiting and may raise
        (a Stop, a deadline): the request then leaves the line without having run. A heavy turn waits
        for one of the `heavy_slots`."""
        ticket = _Ticket(next(self._seq), visitor, heavy)
        with self._cv:
            self._waiting.append(ticket)
            try:
                while not (len(self._running) < self.slots and self._next() is ticket):
                    self._cv.wait(poll_s)
                    if check is not None:
                        check()
            except BaseException:
                self._waiting.remove(ticket)
                self._cv.notify_all()
                raise
            self._waiting.remove(ticket)
            turn = Turn(self, visitor)
            turn.heavy = heavy
            self._running.append(turn)
            self.peak_running = max(self.peak_running, len(self._running))
        try:
            with holding(turn):
                yield turn
        finally:
            with self._cv:
                self._running.remove(turn)
                now = time.monotonic()
                self._usage[visitor] = (self.usage(visitor, now) + now - turn.started, now)
                if len(self._usage) > 10_000:  # forget the visitor seen longest ago
                    self._usage.pop(min(self._usage, key=lambda v: self._usage[v][1]))
                self._cv.notify_all()

    def _next(self) -> _Ticket | None:
        """The waiting ticket to serve first among those that may run now (a heavy one only while a heavy
        slot is free): its visitor's usage now, then its arrival."""
        now = time.monotonic()
        heavy_free = sum(t.heavy for t in self._running) < self.heavy_slots
        ready = [t for t in self._waiting if heavy_free or not t.heavy]
        return min(ready, key=lambda t: (self.usage(t.visitor, now), t.seq)) if ready else None

    def upgrade(self, turn: "Turn", timeout_s: float) -> bool:
        """Make a running quick turn heavy (it met big work) once a heavy slot is free, waiting at most
        `timeout_s`; False when none freed up. An already heavy turn stays so."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while not turn.heavy:
                if sum(t.heavy for t in self._running) < self.heavy_slots and not self._owed_more(turn):
                    turn.heavy = True
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
            return True

    def _owed_more(self, turn: "Turn") -> bool:
        """Whether a waiting heavy request is owed a heavy slot before this turn's upgrade (it has had
        less service): an upgrade never jumps the line of heavy work."""
        now = time.monotonic()
        mine = self.usage(turn.visitor, now)
        return any(t.heavy and t.visitor != turn.visitor and self.usage(t.visitor, now) <= mine for t in self._waiting)

    def downgrade(self, turn: "Turn") -> None:
        """A turn made heavy by `upgrade` is quick again: its heavy slot is free for others."""
        with self._cv:
            turn.heavy = False
            self._cv.notify_all()
