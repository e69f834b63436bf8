"""A real browser on the running app: Playwright driving Debian's Chromium.

Loads the page, classifies a shapes-world example, renders the similarity matrix and the
embedding map, and saves a screenshot of each tab. Screenshots go to a temp folder, or to
docs/screenshots/ when CLIP_LAB_UPDATE_SCREENSHOTS=1. The map uses PCA unless
CLIP_LAB_BROWSER_MAP_METHOD=UMAP (the docs screenshot uses UMAP).
Needs /usr/bin/chromium (`apt-get install -y chromium`); never `playwright install`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest_app import CHROMIUM, CHROMIUM_ARGS as ARGS, ROOT, running_app


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: run `apt-get install -y chromium` (see DEVELOPERS.md)")
    from playwright.sync_api import sync_playwright

    with running_app() as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 1360, "height": 1000})
        pg.set_default_timeout(120_000)
        pg.goto(url)
        pg.wait_for_selector("#zs-run")
        yield pg
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    if os.environ.get("CLIP_LAB_UPDATE_SCREENSHOTS") == "1":
        out = ROOT / "docs" / "screenshots"
        out.mkdir(parents=True, exist_ok=True)
        return out
    return tmp_path_factory.mktemp("screenshots")


def _settle(pg) -> None:
    pg.wait_for_timeout(800)  # let plotly finish its transitions before the screenshot


def test_zero_shot_example(page, shots):
    page.locator("#zs-examples td, #zs-examples button").first.click()
    page.wait_for_function("() => { const i = document.querySelector('#zs-image img'); return i && i.src; }")
    page.click("#zs-run")
    page.wait_for_selector("#zs-label .output-class, #zs-label h2, #zs-label [data-testid='label-output-value']")
    page.wait_for_selector("#zs-plot .js-plotly-plot")
    page.wait_for_selector("#zs-info :text('Logit scale')")
    assert "ENSEMBLE" in page.locator("#zs-templates-table").inner_text()
    _settle(page)
    page.screenshot(path=str(shots / "zero_shot.png"), full_page=True)


def test_similarity_matrix(page, shots):
    page.get_by_role("tab", name="Similarity matrix").click()
    page.click("#mx-build")
    page.wait_for_selector("#mx-plot .js-plotly-plot")
    page.wait_for_selector("#mx-figures :text('loss_i')")
    assert page.locator("#mx-plot .layer-above image").count() == 8  # one thumbnail per row
    _settle(page)
    page.screenshot(path=str(shots / "similarity_matrix.png"), full_page=True)

