"""The fair scheduler: a bounded number running, least-served visitor first, heavy work stepping aside."""

from __future__ import annotations

import threading
import time

import pytest

from demo.platform.fair import FairScheduler, visitor_of


def wait_until(condition, timeout: float = 10.0) -> None:
    """Wait for a condition that another thread makes true (fails the test after `timeout`)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.005)


def hold(scheduler, visitor, release: threading.Event, order: list, started: threading.Event | None = None):
    with scheduler.turn(visitor, poll_s=0.01):
        order.append(visitor)
        if started is not None:
            started.set()
        release.wait(10)


def test_never_more_than_the_slots_run_at_once():
    scheduler, release, order = FairScheduler(slots=3), threading.Event(), []
    threads = [threading.Thread(target=hold, args=(scheduler, f"v{i % 5}", release, order)) for i in range(12)]
    [t.start() for t in threads]
    wait_until(lambda: scheduler.running() == 3 and scheduler.waiting() == 9)
    release.set()
    [t.join(10) for t in threads]
    assert scheduler.peak_running == 3 and len(order) == 12 and scheduler.running() == 0


def test_a_free_slot_goes_to_the_visitor_who_has_had_least_service():
    """A keeps the only slot and queues three more; B asks once, last. B is served before A's backlog."""
    scheduler, order = FairScheduler(slots=1), []
    first, first_started = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold, args=(scheduler, "A", first, order, first_started))
    holder.start()
    first_started.wait(10)
    go = threading.Event()
    go.set()  # the queued ones finish at once when they run
    backlog = [threading.Thread(target=hold, args=(scheduler, "A", go, order)) for _ in range(3)]
    [t.start() for t in backlog]
    wait_until(lambda: scheduler.waiting() == 3)
    late = threading.Thread(target=hold, args=(scheduler, "B", go, order))
    late.start()
    wait_until(lambda: scheduler.waiting() == 4)
    first.set()
    [t.join(10) for t in [holder, late, *backlog]]
    assert order == ["A", "B", "A", "A", "A"]


def test_heavy_requests_take_only_the_heavy_slots_and_never_block_a_quick_one():
    """4 slots, 2 heavy: attackers' heavy requests (evaluate, maps, indexes) fill the heavy slots and wait
    behind them; a quick request that comes later runs at once in a free slot, whatever the line holds.
    A quick turn that meets big work is upgraded only while a heavy slot is free."""
    scheduler, release, order = FairScheduler(slots=4, heavy_slots=2), threading.Event(), []

    def heavy(visitor):
        with scheduler.turn(visitor, poll_s=0.01, heavy=True):
            order.append(visitor)
            release.wait(10)

    attackers = [threading.Thread(target=heavy, args=(f"attacker{i}",)) for i in range(6)]
    [t.start() for t in attackers]
    wait_until(lambda: scheduler.heavy_running() == 2 and scheduler.waiting() == 4)
    with scheduler.turn("victim", poll_s=0.01) as turn:  # would wait forever if a heavy ticket blocked the line
        assert scheduler.running() == 3 and not turn.heavy
        assert not scheduler.upgrade(turn, timeout_s=0.05)  # both heavy slots taken: the caller says "busy"
    release.set()
    [t.join(10) for t in attackers]
    assert scheduler.peak_running == 3 and len(order) == 6 and scheduler.heavy_running() == 0
    with scheduler.turn("victim") as turn:
        assert scheduler.upgrade(turn, timeout_s=0.05) and turn.heavy
        scheduler.downgrade(turn)
        assert scheduler.heavy_running() == 0


def test_every_handler_that_encodes_a_set_or_a_study_is_heavy():
    """Evaluate, the search index and the map declare cost="heavy" (and so run in the heavy slots);
    the zero-shot, matrix and saliency handlers are quick."""
    from demo.tabs.evaluate import tab as evaluate
    from demo.tabs.map import tab as embedding_map
    from demo.tabs.matrix import tab as matrix
    from demo.tabs.search import tab as search
    from demo.tabs.zero_shot import tab as zero_shot

    heavy = [evaluate.evaluate, search.search_index, search.search_images, embedding_map.embedding_map, embedding_map.centre]
    assert all(fn.contract.cost == "heavy" for fn in heavy)
    assert all(fn.contract.cost == "quick" for fn in (zero_shot.zero_shot, matrix.build_batch, search.search))


def test_a_stop_while_waiting_leaves_the_line_without_running():
    scheduler, release, order = FairScheduler(slots=1), threading.Event(), []
    started = threading.Event()
    holder = threading.Thread(target=hold, args=(scheduler, "A", release, order, started))
    holder.start()
    started.wait(10)
    stop = threading.Event()

    def check():
        if stop.is_set():
            raise RuntimeError("stopped")

    errors = []

    def waiter():
        try:
            with scheduler.turn("B", check, poll_s=0.01):
                order.append("B")
        except RuntimeError as e:
            errors.append(str(e))

    t = threading.Thread(target=waiter)
    t.start()
    wait_until(lambda: scheduler.waiting() == 1)
    stop.set()
    t.join(10)
    release.set()
    holder.join(10)
    assert errors == ["stopped"] and order == ["A"] and scheduler.waiting() == 0


def test_a_quick_request_meeting_big_work_never_jumps_the_line_of_heavy_requests():
    """A quick turn that meets big work (a huge head) asks for a heavy slot: it gets a free one only if
    no waiting heavy request has had less service; else it is told the server is busy."""
    from demo.platform.fair import _Ticket

    scheduler = FairScheduler(slots=4, heavy_slots=1)
    with scheduler.turn("head builder") as quick:
        scheduler._usage["head builder"] = (5.0, time.monotonic())  # it has had 5 s of service lately
        with scheduler._cv:  # an evaluation waits for the free heavy slot (its thread not yet woken)
            scheduler._waiting.append(_Ticket(99, "evaluator", heavy=True))
        assert scheduler.upgrade(quick, timeout_s=0.2) is False and not quick.heavy
        with scheduler._cv:
            scheduler._waiting.clear()
        assert scheduler.upgrade(quick, timeout_s=0.2) is True and scheduler.heavy_running() == 1
        scheduler.downgrade(quick)
    assert scheduler.heavy_running() == 0


class _Request:
    def __init__(self, headers=None, host="127.0.0.1", session="s1"):
        self.headers, self.session_hash = headers or {}, session
        self.client = type("Client", (), {"host": host})()


@pytest.mark.parametrize("request_, visitor", [
    (_Request({"x-forwarded-for": "6.6.6.6, 10.0.0.1"}), "ip:10.0.0.1"),
    (_Request(host="8.8.8.8"), "ip:8.8.8.8"),
    (_Request(), "session:s1"),
])
def test_a_visitor_is_the_proxy_hop_else_the_address_else_the_session(request_, visitor):
    assert visitor_of(request_) == visitor


def test_the_guard_counts_a_visitors_requests_from_join_to_completion():
    """In flight from the moment a join is let through (a burst cannot slip past the cap) until Gradio's
    event stream reports it completed, or it is cancelled, or it expires."""
    from demo.platform.in_flight import InFlight

    ledger = InFlight(expire_s=60)
    tokens = [ledger.joined("s1", "") for _ in range(3)]
    assert ledger.count("s1") == 3 and ledger.count("s2") == 0
    ledger.named(tokens[0], "e1")
    ledger.named(tokens[1], "e2")
    ledger.named(tokens[2], None)  # Gradio refused that join: it never counted
    assert ledger.count("s1") == 2
    chunk = ('data: {"msg": "process_starts", "event_id": "e1"}\n\n'
             'data: {"msg": "process_completed", "event_id": "e1", "output": {}, "success": true}\n\n')
    for event_id in ledger.completed_in(chunk):
        ledger.done(event_id)
    assert ledger.count("s1") == 1
    ledger.done("e2")  # a cancel
    assert ledger.count("s1") == 0
    by_address = InFlight(expire_s=0)
    by_address.joined("s3", "203.0.113.7")
    assert by_address.count("other session", "203.0.113.7") == 0  # expired at once (expire_s=0)
