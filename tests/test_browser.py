"""A real browser on the running app: Playwright driving Debian's Chromium, on the zero-shot and
matrix tabs (the map tab: test_browser_map.py).

Each test acts as a new user would and checks what the page then shows, including how many requests
one action sent. Screenshots go to a temp folder, or to docs/screenshots/ when
CLIP_LAB_UPDATE_SCREENSHOTS=1. Needs /usr/bin/chromium (`apt-get install -y chromium`); never
`playwright install`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest_app import ROOT, launch_chromium, running_app, screenshot_dir

JOIN = "gradio_api/queue/join"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with running_app() as url, sync_playwright() as p:
        b = launch_chromium(p)
        b.app_url = url
        yield b
        b.close()


class Requests:
    """The POSTs a page sends, by endpoint path (queue joins name their fn in the body)."""

    def __init__(self, page):
        self.sent = []
        page.on("request", lambda r: self.sent.append((r.url, r.post_data or "")) if r.method == "POST" else None)

    def joins(self) -> int:
        return sum(JOIN in url for url, _ in self.sent)

    def clear(self) -> None:
        self.sent.clear()


@pytest.fixture()
def page(browser):
    pg = browser.new_page(viewport={"width": 1360, "height": 1000})
    pg.set_default_timeout(120_000)
    pg.requests = Requests(pg)
    pg.goto(browser.app_url)
    pg.wait_for_selector("#zs-run")
    pg.wait_for_function("() => document.querySelector('#zs-classnames textarea').value.includes('circle')")
    pg.wait_for_selector("#model-status :text('loaded')")
    yield pg
    pg.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return screenshot_dir(tmp_path_factory)


def _settled(pg, request_count: int) -> None:
    """Once the action's output is drawn and nothing is pending: exactly `request_count` queue joins were sent."""
    pg.wait_for_function("() => !document.querySelector('.pending, .eta-bar')")
    assert pg.requests.joins() == request_count, pg.requests.sent


def test_an_example_click_classifies_it_with_one_request(page, shots):
    page.requests.clear()
    page.locator("#zs-examples button", has_text="red diamond").click()
    page.wait_for_selector("#zs-info :text('Logit scale')")
    _settled(page, 1)  # one classification (the example's image itself loads without the queue)
    label = [line for line in page.locator("#zs-label").inner_text().splitlines() if line.strip()]
    assert "diamond" in label[:2], label  # the heading names the example's shape
    table = page.locator("#zs-templates-table").inner_text()
    assert "ENSEMBLE" in table and "cosine of top-1" in table
    page.wait_for_selector("#zs-heatmap .js-plotly-plot")
    page.screenshot(path=str(shots / "zero_shot.png"), full_page=True)


def test_presets_follow_edits(page):
    box = page.locator("#zs-classnames textarea")
    box.fill("cat\ndog")
    page.locator("#zs-run").focus()
    page.wait_for_function("() => [...document.querySelectorAll('input')].some(i => i.value === 'custom')")
    page.locator("#zs-run").click()
    page.wait_for_selector("#zs-info :text('never appeared')")  # the bundled model never saw these words


def test_one_model_pick_sends_one_request_and_a_failure_leaves_no_error_pill(page):
    page.requests.clear()
    pick = page.locator("#model-picker input")
    pick.click()
    pick.fill("openai/clip-vit-base-patch32")
    pick.press("Enter")
    page.wait_for_selector("[data-testid='toast-body']")
    page.wait_for_function("() => document.querySelector('#model-picker input').value === 'shapes-tiny'")
    _settled(page, 2)
    # one request for the pick; putting the previous model back in the picker sends one more, which
    # finds it in memory: one failure, one toast (it read "Error (2)" when a pick sent two requests)
    bodies = [body for _, body in page.requests.sent if "queue/join" in _]
    assert '"openai/clip-vit-base-patch32"' in bodies[0] and '"shapes-tiny"' in bodies[1]
    assert page.locator("[data-testid='toast-body']").count() == 1
    status = page.locator("#model-status").inner_text()
    assert "loaded" in status and "Error" not in status


def _matrix(page):
    page.get_by_role("tab", name="Similarity matrix").click()
    page.requests.clear()
    page.click("#mx-build")
    page.wait_for_selector("#mx-figures :text('loss_i')")
    page.wait_for_function("() => { const p = document.querySelector('#mx-plot .js-plotly-plot'); return p && p.layout; }")
    _settled(page, 1)


def _columns(page) -> list[str]:
    """The matrix's column captions as drawn (plotly's tick texts, line breaks removed)."""
    ticks = page.evaluate("() => document.querySelector('#mx-plot .js-plotly-plot').layout.xaxis.ticktext")
    return [t.replace("<br>", " ") for t in ticks]


def _table(page) -> list[str]:
    cells = page.locator("#mx-table [role=gridcell]").all_inner_texts()
    return [c.replace("⋮", "").strip() for c in cells[1::2]]  # the selected cell carries a menu button


def _same(drawn: list[str], captions: list[str]) -> bool:
    # drawn captions are wrapped at 16 characters and cut after 3 lines (with an ellipsis)
    return len(drawn) >= len(captions) and all(c.startswith(d.rstrip("…").replace(" ", "")[:8]) or
                                               c.replace(" ", "").startswith(d.rstrip("…").replace(" ", ""))
                                               for d, c in zip(drawn, captions))


def test_the_matrix_keeps_its_captions_with_its_images_after_a_source_change(page, shots):
    _matrix(page)
    captions = _table(page)
    assert len(captions) == 8 and _same(_columns(page), captions)
    page.get_by_label("uploaded images").check()
    page.locator("input[type=file]").nth(1).set_input_files(sorted(str(p) for p in (ROOT / "assets/examples").glob("photo_*.png"))[:3])
    page.wait_for_selector("#mx-stale :text('Press')")
    page.requests.clear()
    page.get_by_label("logits").check()
    page.wait_for_selector("#mx-plot :text('logits = logit scale')")
    _settled(page, 1)
    assert _table(page) == captions and _same(_columns(page), captions)  # still the built batch, all of it
    assert page.locator("#mx-plot .layer-above image").count() == 8
    assert "Press Build batch" in page.locator("#mx-stale").inner_text()


def test_one_edit_one_request_and_the_edit_reaches_its_column(page, shots):
    _matrix(page)
    cell = page.locator("#mx-table [role=gridcell]").nth(3)  # row 1's caption
    page.requests.clear()
    cell.dblclick()
    editor = page.locator("#mx-table textarea, #mx-table input[type=text]").first
    editor.fill("a purple star")
    editor.press("Enter")
    page.wait_for_function("() => document.querySelector('#mx-plot .js-plotly-plot').layout.xaxis.ticktext[1].includes('purple')")
    _settled(page, 1)
    assert _table(page)[1] == "a purple star" and _columns(page)[1] == "a purple star"
    page.screenshot(path=str(shots / "similarity_matrix.png"), full_page=True)
    page.requests.clear()
    page.locator("#mx-extra textarea").fill("a cat\na dog")
    page.locator("#mx-build").focus()  # leaving the box updates the matrix
    page.wait_for_selector("#mx-figures :text('8 images × 10 captions')")
    _settled(page, 1)
    assert _columns(page)[-2:] == ["a cat", "a dog"]


def test_the_logit_scale_box_applies_a_typed_value_on_enter_and_on_tab(page):
    """Typing a scale in the slider's number box re-renders the probabilities and the info text from the
    kept cosines (nothing is encoded): committed with Enter, and with Tab."""
    page.click("#zs-run")
    page.wait_for_selector("#zs-info :text('Logit scale')")
    box = page.locator("#zs-scale input[type=number]")
    box.fill("20")
    box.press("Enter")
    page.wait_for_selector("#zs-info :text('Logit scale 20.00')")
    assert not page.locator("#zs-follow input").is_checked()  # a scale of the user's: no longer the model's
    box.fill("7.5")
    box.press("Tab")
    page.wait_for_selector("#zs-info :text('Logit scale 7.50')")


def test_on_a_phone_every_tab_name_shows_and_the_model_status_keeps_its_words(browser, shots):
    """At 390 px the eight tab names wrap onto more lines (none hides behind a "⋯" menu), and the
    model status sits under the picker at full width instead of wrapping mid-word in a narrow column."""
    pg = browser.new_page(viewport={"width": 390, "height": 844})
    try:
        pg.set_default_timeout(120_000)
        pg.goto(browser.app_url)
        pg.wait_for_selector("#model-status :text('loaded')")
        shown = [t.inner_text().strip() for t in pg.locator("button[role=tab]").all() if t.is_visible()]
        assert shown == ["Zero-shot", "Compare models", "Similarity matrix", "Embedding map", "Train", "Evaluate",
                         "Search", "Paper's claims"], shown
        status, picker = pg.locator("#model-status").bounding_box(), pg.locator("#model-picker").bounding_box()
        assert status["y"] >= picker["y"] + picker["height"] - 1, (status, picker)  # under the picker
        assert status["width"] >= 0.9 * picker["width"], (status, picker)
        pg.screenshot(path=str(shots / "phone.png"))
        pg.locator("button[role=tab]", has_text="Search").click()
        pg.wait_for_selector("#search-source", state="visible")
    finally:
        pg.close()


def test_the_browser_keeps_no_run_history(page):
    """On a shared computer the next person must not find this one's inputs or results: Gradio's run
    history (localStorage) is off unless the operator turns it on (CLIP_LAB_RUN_HISTORY=1)."""
    page.click("#zs-run")  # a run the user starts (an example's click is not kept even with the history on)
    page.wait_for_selector("#zs-info :text('Logit scale')")
    _settled(page, page.requests.joins())
    stored = page.evaluate("() => Object.keys(window.localStorage)")
    assert not [key for key in stored if "run-history" in key], stored
