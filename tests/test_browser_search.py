"""The Search tab and the zero-shot saliency accordion in a real browser (Playwright driving Debian's Chromium).

Index the shapes world, search by text, click a hit and see its saliency overlay and caption rank
(and the opacity slider redraw it without the model); on the zero-shot tab, classify an example and
open "Where does the model look?". Screenshots (search.png, search_saliency.png, zero_shot_saliency.png)
go to a temp folder, or to docs/screenshots/ when CLIP_LAB_UPDATE_SCREENSHOTS=1.
Needs /usr/bin/chromium (`apt-get install -y chromium`); never `playwright install`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest_app import app_page, screenshot_dir

LOADED_IMG = ("(sel) => { const i = document.querySelector(sel + ' img'); "
              "return i && i.complete && i.naturalWidth > 0 ? i.src : null; }")


@pytest.fixture(scope="module")
def page():
    with app_page() as pg:
        pg.wait_for_function("() => document.querySelector('#zs-classnames textarea').value.includes('circle')")
        yield pg


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return screenshot_dir(tmp_path_factory)


def _image_src(page, selector: str) -> str | None:
    return page.evaluate(LOADED_IMG, selector)


def test_index_and_text_query_fill_the_gallery_and_histogram(page, shots):
    page.get_by_role("tab", name="Search").click()
    page.click("#search-index")
    page.wait_for_selector("#search-status :text('Indexed 500 images')")
    page.wait_for_selector("#search-retrieval :text('R@10')")
    page.fill("#search-text textarea", "a red circle")
    before = len(page.joins)
    page.click("#search-run")
    page.wait_for_selector("#search-info :text('Top 12 of 500')")
    assert len(page.joins) - before == 1  # one queued request; the status refresh after it skips the queue
    thumbs = page.locator("#search-gallery button.thumbnail-item")
    assert thumbs.count() == 12
    assert thumbs.nth(0).inner_text().startswith("#1 · 0.")
    page.wait_for_selector("#search-histogram .js-plotly-plot")
    traces = page.evaluate("() => document.querySelector('#search-histogram .js-plotly-plot')._fullData"
                           ".map(t => ({type: t.type, n: t.x.length}))")
    assert traces[0]["type"] == "bar" and traces[1] == {"type": "scatter", "n": 12}
    page.wait_for_function("() => [...document.querySelectorAll('#search-gallery img')].every(i => i.complete && i.naturalWidth)")
    page.screenshot(path=str(shots / "search.png"), full_page=True)


def test_clicking_a_hit_shows_its_saliency_and_caption_rank(page, shots):
    page.locator("#search-gallery button.thumbnail-item").nth(2).click()
    page.wait_for_selector("#search-hit :text('Hit #3')")
    page.wait_for_selector("#search-hit :text('of 500 captions')")
    page.wait_for_function(LOADED_IMG, arg="#search-saliency")
    first = _image_src(page, "#search-saliency")
    before = len(page.joins)
    track = page.locator("#search-opacity input[type='range']").bounding_box()
    page.mouse.click(track["x"] + 0.95 * track["width"], track["y"] + track["height"] / 2)  # a release at ~0.95
    page.wait_for_function(f"(old) => ({LOADED_IMG})('#search-saliency') && ({LOADED_IMG})('#search-saliency') !== old",
                           arg=first)
    assert len(page.joins) == before  # re-blending runs no model and skips the queue
    top = page.locator("#search-info").bounding_box()
    bottom = page.locator("#search-hit").bounding_box()
    scroll = page.evaluate("() => window.scrollY")  # boxes are in the viewport; a full-page clip is in the page
    page.screenshot(path=str(shots / "search_saliency.png"), full_page=True,
                    clip={"x": 0, "y": top["y"] + scroll - 10, "width": 1360, "height": bottom["y"] + bottom["height"] - top["y"] + 20})


def test_zero_shot_accordion_shows_where_the_model_looks(page, shots):
    page.get_by_role("tab", name="Zero-shot").click()
    page.locator("#zs-examples button", has_text="red diamond").click()
    page.wait_for_selector("#zs-info :text('Logit scale')")
    label = [line for line in page.locator("#zs-label").inner_text().splitlines() if line.strip()]
    top = label[1]  # under the component's own label, the winning class
    page.locator("#zs-saliency button", has_text="Where does the model look?").first.click()
    page.wait_for_function(LOADED_IMG, arg="#zs-sal-image")
    page.wait_for_selector("#zs-sal-note :text('relevance')")
    chosen = page.locator("#zs-sal-class input").input_value()
    assert chosen.split(" · ")[0] == top, (chosen, top)
    assert "template ensemble" in page.locator("#zs-sal-note").inner_text()
    page.locator("#zs-saliency").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "zero_shot_saliency.png"))
    # with the accordion open, the next classification redraws it for its own top class
    old = _image_src(page, "#zs-sal-image")
    page.locator("#zs-examples button", has_text="purple star").click()
    page.wait_for_function("() => document.querySelector('#zs-sal-class input').value.startsWith('star')")
    page.wait_for_function(f"(old) => ({LOADED_IMG})('#zs-sal-image') && ({LOADED_IMG})('#zs-sal-image') !== old", arg=old)
    assert 'the class "star"' in page.locator("#zs-sal-note").inner_text()
