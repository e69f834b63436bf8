"""The Train tab in a real browser: Start, watch the probe matrix change between two frames, replay
an earlier frame, reload the page and find the run again, Stop. Screenshots: train_*.png."""

from __future__ import annotations

import json
import tempfile

import pytest
from conftest_app import launch_chromium, running_app, screenshot_dir


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with running_app({"CLIP_LAB_RUNS_DIR": tempfile.mkdtemp(prefix="clip-lab-runs-")}) as url, sync_playwright() as p:
        b = launch_chromium(p)
        b.app_url = url
        yield b
        b.close()


def probe_title(page) -> str:
    """The probe figure's title (it names the frame's step, loss and accuracy)."""
    return page.locator("#tr-probe .gtitle").first.text_content() or ""


def probe_cosines(page) -> str:
    """The probe heatmap's cosine values as drawn (from the plotly figure's data)."""
    return page.evaluate("() => JSON.stringify(document.querySelector('#tr-probe .js-plotly-plot').data[0].z)")


def test_the_diagonal_emerges_live_and_a_reload_finds_the_run(browser, tmp_path_factory):
    shots = screenshot_dir(tmp_path_factory)
    page = browser.new_page(viewport={"width": 1360, "height": 1600})
    page.set_default_timeout(120_000)
    page.goto(browser.app_url)
    page.get_by_role("tab", name="Train").click()
    page.wait_for_selector("#tr-start")
    page.locator("#tr-steps input").fill("300")
    page.locator("#tr-start").click()
    page.wait_for_function("() => document.querySelector('#tr-probe .gtitle')?.textContent.startsWith('step')")
    first_title, first_z = probe_title(page), probe_cosines(page)
    first_step = int(first_title.split()[1].rstrip(":"))
    page.screenshot(path=str(shots / "train_first_frame.png"), full_page=True)
    # a later frame: the timer redraws the matrix from a later step, with other cosines
    page.wait_for_function(f"() => parseInt(document.querySelector('#tr-probe .gtitle').textContent.split(' ')[1]) > {first_step + 30}")
    later_title, later_z = probe_title(page), probe_cosines(page)
    assert later_title != first_title and later_z != first_z
    z = json.loads(later_z)  # plotly's typed-array form: {"dtype", "bdata", "shape"}
    assert (z.get("shape") if isinstance(z, dict) else f"{len(z)}, {len(z[0])}").replace(" ", "") == "16,16"
    page.screenshot(path=str(shots / "train_later_frame.png"), full_page=True)
    status = page.locator("#tr-status").text_content()
    assert "Running" in status and "samples/s" in status
    # a reload: the same run comes back (its id and key are kept in the browser)
    page.reload()
    page.get_by_role("tab", name="Train").click()
    page.wait_for_function(f"() => parseInt(document.querySelector('#tr-probe .gtitle')?.textContent.split(' ')[1]) > {first_step + 30}")
    assert page.locator("#tr-steps input").input_value() == "300"  # the run's knobs, not the recipe's
    page.locator("#tr-stop").click()
    page.wait_for_function("() => document.querySelector('#tr-status').textContent.includes('Stopped')")
    page.screenshot(path=str(shots / "train_stopped.png"), full_page=True)
    page.close()
