"""Progress and Stop in a real browser: a long zero-shot head shows a progress bar, and Stop ends the
server's work (the app's process falls back to idle within 2 s), and the next request is served."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest
from conftest_app import ROOT, launch_chromium, model_source, start_app, stop_app, wait_for_status, wait_until_up


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cores_used(pid: int, seconds: float = 0.5) -> float:
    """Average cores a process used over the next `seconds`."""
    start, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)  # a measurement window, not a wait for an event
    return (cpu_seconds(pid) - start) / (time.monotonic() - t0)


@pytest.fixture(scope="module")
def app():
    log = Path(tempfile.gettempdir()) / f"clip-lab-stop-{os.getpid()}.log"
    proc, url = start_app(log, dict(CLIP_LAB_MODEL=model_source(), CLIP_LAB_WARMUP="0", OMP_NUM_THREADS="2",
                                    PYTHONPATH=str(ROOT), CLIP_LAB_CACHE_DIR=tempfile.mkdtemp(prefix="clip-lab-cache-")))
    try:
        wait_until_up(url, proc, 180, log)
        yield proc, url
    finally:
        stop_app(proc)


def test_a_long_head_shows_progress_and_stop_ends_the_work(app, tmp_path):
    from playwright.sync_api import sync_playwright

    proc, url = app
    shots = ROOT / "docs" / "screenshots" if os.environ.get("CLIP_LAB_UPDATE_SCREENSHOTS") == "1" else tmp_path
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(url)
            page.wait_for_selector("#model-status :text('loaded')")
            # ImageNet-1k x 20 templates: 20,000 prompts, the most one head may have
            templates = "\n".join(f"a photo number {i} of a {{}}." for i in range(20))
            page.locator("#zs-templates textarea").fill(templates)
            page.get_by_label("Class-name preset").click()
            page.get_by_role("option", name="ImageNet-1k").click()
            page.wait_for_function("() => document.querySelector('#zs-classnames textarea').value.includes('tench')")
            page.click("#zs-run")
            page.wait_for_selector(":text('encoding prompts')")  # the bar names the step and counts prompts
            page.wait_for_function("() => /[1-9][0-9,]* of 20,000 prompts/.test(document.body.innerText)")
            page.screenshot(path=str(shots / "progress_and_stop.png"))
            assert cores_used(proc.pid) > 0.1  # it is working (an idle app uses ~0.01; less than 2 cores when others share them)
            page.click("#zs-stop")
            stopped = time.monotonic()
            while cores_used(proc.pid, 0.25) >= 0.2:
                assert time.monotonic() - stopped < 2.0, "the server kept working after Stop"
            page.screenshot(path=str(tmp_path / "after_stop.png"))
            # the app keeps serving, and a head cut short was not cached as complete
            page.get_by_label("Class-name preset").click()
            page.get_by_role("option", name="shapes world: shapes").click()
            page.wait_for_function("() => document.querySelector('#zs-classnames textarea').value.startsWith('circle')")
            page.click("#zs-run")
            page.wait_for_selector("#zs-info :text('Logit scale')")
            assert "Traceback" not in page.content()
        finally:
            browser.close()


def test_an_api_client_stops_its_own_job(app):
    """gradio_client's job.cancel() only stops waiting; /stop_zero_shot stops the session's work."""
    from gradio_client import Client
    from gradio_client.utils import Status

    proc, url = app
    from demo.inputs.presets import preset_text

    client, other = Client(url, verbose=False), Client(url, verbose=False)
    templates = "\n".join(f"an api photo number {i} of a {{}}." for i in range(20))
    job = client.submit(classnames=preset_text("classnames", "ImageNet-1k"), templates=templates, api_name="/zero_shot")
    wait_for_status(job, (Status.PROCESSING, Status.PROGRESS))
    assert other.predict(api_name="/stop_zero_shot") == "stopped 0 job(s)"  # another session's Stop touches nothing
    assert cores_used(proc.pid) > 0.1  # it is working (an idle app uses ~0.01; less than 2 cores when others share them)
    assert client.predict(api_name="/stop_zero_shot") == "stopped 1 job(s)"
    stopped = time.monotonic()
    while cores_used(proc.pid, 0.25) >= 0.2:
        assert time.monotonic() - stopped < 2.0, "the server kept working after /stop_zero_shot"
    job.result(timeout=30)  # the job ends (its outputs unchanged), and the app keeps serving
