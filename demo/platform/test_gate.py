"""A server-side gate for tests only (CLIP_LAB_TEST_GATE=1): jobs that hold a queue slot until released.

`/test_hold` runs in its own concurrency group of one and waits until `/test_release` lets it go
(or 120 s pass), so a test can fill the queue exactly, with no real work and no race against
how fast that work happens to be. Never enabled unless the setting is on; never documented.
"""

from __future__ import annotations

import threading

import gradio as gr


def add_test_gate(max_hold_s: float = 120.0) -> None:
    """Register the hidden /test_hold and /test_release endpoints in the Blocks being built."""
    gate = threading.Semaphore(0)

    def test_hold() -> str:
        return "released" if gate.acquire(timeout=max_hold_s) else "timed out"

    def test_release(count: float = 1) -> str:
        gate.release(int(count))
        return "ok"

    gr.api(test_hold, api_name="test_hold", concurrency_limit=1, concurrency_id="test_gate", api_visibility="undocumented")
    gr.api(test_release, api_name="test_release", queue=False, api_visibility="undocumented")
