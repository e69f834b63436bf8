"""A full queue refuses the extra request at once with a clear message, and the app keeps serving."""

from __future__ import annotations

import time

import pytest
from conftest_app import CHROMIUM, CHROMIUM_ARGS, ROOT, running_app

pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402


def _pca_map_job(client: Client, n: int = 600):
    # a few seconds of work; the map endpoint runs one request at a time
    return client.submit("shapes world", n, 0, "eval", [], "", "train", "image", "text", False, "PCA", 2, 10, 0.1,
                         "modality", False, True, "", "", api_name="/embedding_map")


def test_a_full_queue_says_so_and_the_app_keeps_serving():
    with running_app({"CLIP_LAB_QUEUE_SIZE": "1"}) as url:
        clients = [Client(url, verbose=False) for _ in range(4)]
        for _ in range(3):  # one runs, one waits; retry if the first finished before the second queued
            jobs = _fill_the_queue(clients)
            if jobs is not None:
                break
        assert jobs is not None, "could not get one map job running and one waiting"
        jobs += [_pca_map_job(c) for c in clients[2:]]  # these two find the queue full
        served, refused = 0, []
        for job in jobs:
            try:
                assert "Modality gap" in job.result(timeout=300)[1]
                served += 1
            except Exception as e:  # gradio_client's QueueError
                refused.append(str(e))
        assert served == 2 and len(refused) == 2, (served, refused)
        assert all("queue is full" in m.lower() for m in refused), refused
        # a refused user tries again once the queue has room, and is served
        label = clients[-1].predict(handle_file(str(ROOT / "assets/examples/shapes_purple_star.png")), [],
                                    "circle\nstar\nsquare", "a photo of a {}.", 3, api_name="/zero_shot")[0]
        assert label["label"] == "star"
        _browser_user_sees_busy(url, clients)


def _wait_for(job, wanted: tuple, seconds: float = 60):
    """Poll a job's status until it reaches one of `wanted` (True) or a state past them (False)."""
    from gradio_client.utils import Status

    order = [Status.STARTING, Status.JOINING_QUEUE, Status.IN_QUEUE, Status.SENDING_DATA, Status.PROCESSING,
             Status.ITERATING, Status.PROGRESS, Status.FINISHED]
    last = max(order.index(w) for w in wanted)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        code = job.status().code
        if code in wanted:
            return True
        if code in (Status.QUEUE_FULL, Status.CANCELLED) or (code in order and order.index(code) > last):
            return False
        time.sleep(0.02)
    return False


def _fill_the_queue(clients: list):
    """Two long map jobs, returned once the first runs and the second waits behind it (the queue of 1
    is full). They are submitted one after the other, so which one runs is not left to chance.
    None if the state was not reached (the first job finished before the second queued): the caller
    tries again."""
    from gradio_client.utils import Status

    first = _pca_map_job(clients[0], 2500)
    jobs = [first]
    if _wait_for(first, (Status.PROCESSING, Status.PROGRESS)):
        jobs.append(_pca_map_job(clients[1], 2500))
        if _wait_for(jobs[1], (Status.IN_QUEUE,)) and first.status().code != Status.FINISHED:
            return jobs
    for job in jobs:
        try:
            job.result(timeout=300)
        except Exception:  # gradio_client's QueueError: this job found the queue full
            pass
    return None


def _browser_user_sees_busy(url: str, clients: list) -> None:
    """In the browser, a click while the queue is full shows a one-line 'busy' notice, not a trace."""
    from playwright.sync_api import sync_playwright

    seen = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.set_default_timeout(120_000)
            for _ in range(3):  # the queue must still be full when the click lands; retry a lost race
                page.goto(url)
                page.wait_for_selector("#zs-run")
                jobs = _fill_the_queue(clients)
                if jobs is None:
                    continue
                page.click("#zs-run")
                seen.append(page.wait_for_selector("[data-testid='toast-body']").inner_text())
                assert "Traceback" not in page.content()
                for job in jobs:
                    job.result(timeout=300)
                if "busy" in seen[-1].lower():
                    return
        finally:
            browser.close()
    pytest.fail(f"no 'busy' notice in 3 tries; the toasts said {seen}")


def test_queue_settings_from_the_environment():
    from demo.context import AppConfig

    cfg = AppConfig.from_env({"CLIP_LAB_QUEUE_SIZE": "5", "CLIP_LAB_CONCURRENCY": "3"})
    assert (cfg.queue_size, cfg.concurrency) == (5, 3)
    assert AppConfig.from_env({}).queue_size == 32
    for bad in ("0", "many"):
        with pytest.raises(ValueError, match="CLIP_LAB_QUEUE_SIZE"):
            AppConfig.from_env({"CLIP_LAB_QUEUE_SIZE": bad})
