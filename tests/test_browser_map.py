"""The embedding-map tab in a real browser (Playwright driving Debian's Chromium).

The default UMAP map is drawn; colour-by recolours from the session's state with one request;
"colour by colour" draws each colour label in its own colour; the hover card shows the hovered
pair's thumbnail and caption; 3D maps keep their links. The screenshot goes to a temp folder, or
to docs/screenshots/embedding_map.png when CLIP_LAB_UPDATE_SCREENSHOTS=1.
Needs /usr/bin/chromium (`apt-get install -y chromium`); never `playwright install`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest_app import launch_chromium, running_app, screenshot_dir

from core.shapes import COLOURS

PLOT = "document.querySelector('#map-plot .js-plotly-plot')"
JOIN = "/gradio_api/queue/join"


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    with running_app() as url, sync_playwright() as p:
        browser = launch_chromium(p)
        pg = browser.new_page(viewport={"width": 1360, "height": 1100})
        pg.set_default_timeout(180_000)
        pg.joins = []
        pg.on("request", lambda r: pg.joins.append(r.url) if r.method == "POST" and JOIN in r.url else None)
        pg.goto(url)
        pg.wait_for_selector("#zs-run")
        pg.get_by_role("tab", name="Embedding map").click()
        pg.wait_for_selector("#map-run")
        yield pg
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return screenshot_dir(tmp_path_factory)


def _title(page) -> str:
    return page.evaluate(f"() => {{ const el = {PLOT}; return el && el.layout.title ? el.layout.title.text : ''; }}")


def _draw(page, expect_in_title: str) -> int:
    """Click Draw map, wait for a map whose title has `expect_in_title`; returns the queue joins it sent."""
    before, old = len(page.joins), _title(page)
    page.click("#map-run")
    page.wait_for_function(f"([t, old]) => {{ const el = {PLOT}; const s = el && el.layout.title && el.layout.title.text;"
                           " return s && s.includes(t) && s !== old; }", arg=[expect_in_title, old])
    page.wait_for_selector("#map-gap :text('Modality gap')")
    return len(page.joins) - before


def _traces(page) -> list[dict]:
    # _fullData: plotly's decoded traces (data keeps the typed arrays as {dtype, bdata} as sent)
    return page.evaluate(f"() => {PLOT}._fullData.map(t => ({{name: t.name, kind: t.meta && t.meta.kind, type: t.type,"
                         " colour: t.marker && t.marker.color, n: t.x ? t.x.length : 0, visible: t.visible}))")


def test_default_umap_map_one_request_per_click(page):
    assert page.locator("#map-method input[value='UMAP']").is_checked()  # the default is UMAP, not PCA
    status = page.locator("#map-status").bounding_box()  # where the progress bar shows: visible, at the top
    assert status["height"] >= 20 and status["y"] < 400, status
    assert _draw(page, "UMAP 2D") == 1
    kinds = {t["kind"] for t in _traces(page)}
    assert {"image", "caption", "link"} <= kinds
    assert sum(t["n"] for t in _traces(page) if t["kind"] == "image") == 500


def test_colour_by_colour_redraws_at_once_with_one_request(page):
    before = len(page.joins)
    page.locator("#map-colour-by input").click()
    page.get_by_role("option", name="colour", exact=True).click()
    page.wait_for_function(f"() => {PLOT}.data.some(t => t.name === 'yellow')")
    assert len(page.joins) - before == 1
    points = [t for t in _traces(page) if t["kind"] in ("image", "caption")]
    assert {t["name"] for t in points} == set(COLOURS)
    for t in points:
        r, g, b = COLOURS[t["name"]]
        assert t["colour"] == f"rgb({r},{g},{b})", t
    assert "UMAP 2D" in _title(page)  # the same projection, recoloured


def test_hover_card_shows_the_hovered_pairs_thumbnail_and_caption(page, shots):
    page.evaluate(f"() => {{ const el = {PLOT}; window.__hovered = null;"
                  " el.on('plotly_hover', e => {"
                  " window.__hovered = {curve: e.points[0].curveNumber, point: e.points[0].pointNumber}; }); }")
    curve = next(i for i, t in enumerate(_traces(page)) if t["kind"] == "image")
    point = page.locator("#map-plot .scatterlayer .trace").nth(curve).locator(".point").nth(3)
    point.scroll_into_view_if_needed()
    box = point.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_function("() => { const c = document.querySelector('#clip-hover-card'); const i = c && c.querySelector('img');"
                           " return window.__hovered && c.style.display === 'block' && i && i.complete && i.naturalWidth > 0; }",
                           timeout=30_000)
    got = page.evaluate(f"""() => {{
        const el = {PLOT}, h = window.__hovered, t = el._fullData[h.curve], i = Number(t.customdata[h.point]);
        const card = document.querySelector('#clip-hover-card'), img = card.querySelector('img');
        return {{kind: t.meta.kind, index: i, caption: el.layout.meta.captions[i], name: el.layout.meta.names[i],
                 card_kind: card.dataset.kind, card_index: Number(card.dataset.index), card_text: card.innerText,
                 src: img.src.slice(0, 22), width: img.naturalWidth, tile: el.layout.meta.tile}};
    }}""")
    assert got["card_kind"] == got["kind"] and got["card_index"] == got["index"], got
    assert got["caption"] and got["caption"] in got["card_text"] and got["name"] in got["card_text"], got
    assert got["src"] == "data:image/png;base64," and got["width"] == got["tile"], got
    page.screenshot(path=str(shots / "embedding_map.png"), full_page=True)
    page.mouse.move(5, 5)


def test_3d_map_keeps_its_links(page, tmp_path):
    before = len(page.joins)
    with page.expect_request(lambda r: r.method == "POST" and JOIN in r.url):  # each edit: one request that marks it stale
        page.locator("#map-method label", has_text="PCA").click()
    with page.expect_request(lambda r: r.method == "POST" and JOIN in r.url):
        page.locator("#map-dims input").click()
        page.get_by_role("option", name="3", exact=True).click()
    page.wait_for_selector("#map-gap :text('Settings changed: press Draw map')")
    assert len(page.joins) - before == 2
    assert _draw(page, "PCA 3D") == 1
    (link,) = [t for t in _traces(page) if t["kind"] == "link"]
    assert link["type"] == "scatter3d" and link["n"] == 1500 and link["visible"] is not False
    drawn = page.evaluate(f"() => {PLOT}._fullData.filter(t => t.meta && t.meta.kind === 'link').map(t => t.visible)")
    assert drawn == [True]
    page.locator("#map-plot").screenshot(path=str(tmp_path / "embedding_map_3d.png"))
    print("3D map screenshot:", tmp_path / "embedding_map_3d.png")
