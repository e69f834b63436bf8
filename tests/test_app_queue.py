"""A full queue refuses the extra request at once with a clear message, and the app keeps serving.

The queue is filled with the test-only gate (CLIP_LAB_TEST_GATE=1, demo/platform/test_gate.py): jobs that hold
their slot until the test releases them, so which job runs and which waits is never left to chance.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request

import pytest
from conftest_app import ROOT, launch_chromium, running_app, wait_for_status

pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.utils import Status  # noqa: E402

STAR = str(ROOT / "assets/examples/shapes_purple_star.png")


def _zero_shot(client: Client):
    return client.submit(image=handle_file(STAR), classnames="circle\nstar\nsquare", templates="a photo of a {}.",
                         api_name="/zero_shot")


def _fill(clients: list) -> list:
    """One held job running and one waiting behind it: the queue of one is full, and stays so."""
    running = clients[0].submit(api_name="/test_hold")
    wait_for_status(running, (Status.PROCESSING,))
    waiting = clients[1].submit(api_name="/test_hold")
    wait_for_status(waiting, (Status.IN_QUEUE,))
    return [running, waiting]


def _release(url: str, held: list) -> None:
    """Open the gate for the held jobs: a direct POST, since the queue they fill is full."""
    body = json.dumps({"data": [len(held)]}).encode()
    request = urllib.request.Request(url + "gradio_api/run/test_release", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        assert json.load(r)["data"] == ["ok"]
    assert [job.result(timeout=60) for job in held] == ["released"] * len(held)


def test_a_full_queue_says_so_and_the_app_keeps_serving():
    with running_app({"CLIP_LAB_QUEUE_SIZE": "1", "CLIP_LAB_TEST_GATE": "1"}) as url:
        clients = [Client(url, verbose=False) for _ in range(4)]
        held = _fill(clients)
        refused = []
        for c in clients[2:]:
            with pytest.raises(Exception) as err:  # gradio_client's QueueError
                _zero_shot(c).result(timeout=60)
            refused.append(str(err.value))
        assert all("queue is full" in m.lower() for m in refused), refused
        _browser_user_sees_busy(url)
        _release(url, held)
        # a refused user tries again once the queue has room, and is served
        assert _zero_shot(clients[-1]).result(timeout=120)[0]["label"] == "star"


def _browser_user_sees_busy(url: str) -> None:
    """In the browser, a click while the queue is full shows a one-line 'busy' notice, not a trace."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.set_default_timeout(120_000)
            page.goto(url)
            page.wait_for_selector("#zs-run")
            page.click("#zs-run")
            toast = page.wait_for_selector("[data-testid='toast-body']").inner_text()
            assert "busy" in toast.lower(), toast
            assert "Traceback" not in page.content()
        finally:
            browser.close()


def test_queue_settings_from_the_environment():
    from demo.platform.config import AppConfig

    cfg = AppConfig.from_env({"CLIP_LAB_QUEUE_SIZE": "5", "CLIP_LAB_CONCURRENCY": "3"})
    assert (cfg.queue_size, cfg.concurrency) == (5, 3)
    assert AppConfig.from_env({}).queue_size == 128
    for bad in ("0", "many"):
        with pytest.raises(ValueError, match="CLIP_LAB_QUEUE_SIZE"):
            AppConfig.from_env({"CLIP_LAB_QUEUE_SIZE": bad})


def test_ctrl_c_stops_the_app_cleanly_while_it_warms_up(tmp_path):
    """Ctrl-C during the start-up warm-up (a daemon thread inside numba or torch) ends the process with
    status 0; finalising the interpreter under that thread used to abort it."""
    import signal
    import subprocess

    from conftest_app import model_source
    from scripts.app_process import free_port, wait_until_up

    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), CLIP_LAB_MODEL=model_source(), CLIP_LAB_WARMUP="1",
               CLIP_LAB_WARMUP_DELAY="0", CLIP_LAB_CACHE_DIR=str(tmp_path / "cache"), HF_HUB_OFFLINE="1")
    log = tmp_path / "app.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_until_up(f"http://127.0.0.1:{port}/", proc, 180, log)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
