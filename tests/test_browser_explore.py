"""The map's explorer in Chromium: an embedding set opened from an allowed folder, drawn with WebGL; a lasso
dragged with the mouse opens exactly the images inside its polygon (the test computes, from the drawn
figure, which image points lie inside it and which outside, leaving out those within 3 px of its edges),
and "search near the selection" ranks by its centroid; hovering a point shows its thumbnail and clicking it
lists its neighbours; a text search rings its nearest images and draws the query."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest_app import app_page, make_model_dirs, model_source, screenshot_dir

from core.embedding_set import EmbedSource, embed_chunks, merge_parts, open_set
from core.set_projection import SetProjection, project_set

PLOT = "document.querySelector('#atlas-plot .js-plotly-plot')"


@pytest.fixture(scope="module")
def page(tmp_path_factory, bundled):
    root = tmp_path_factory.mktemp("atlas")
    embed_chunks(bundled, EmbedSource("shapes", n=1500, seed=5), root / "shapes1500", chunk_rows=512)
    merge_parts(root / "shapes1500")
    project_set(open_set(root / "shapes1500"), SetProjection())  # the map is read from the set, as a Space ships it
    dirs = make_model_dirs(tmp_path_factory.mktemp("models"), model_source())  # a second model, to change to
    with app_page({"CLIP_LAB_DATA_DIRS": str(root), "CLIP_LAB_MODEL_DIRS": str(dirs["folder"]),
                   "OMP_NUM_THREADS": "1"}) as pg:
        pg.other = str(dirs["other"])
        pg.get_by_role("tab", name="Embedding map").click()
        pg.locator("#atlas-accordion").click()
        pg.locator("#atlas-set input").click()
        pg.get_by_role("option", name=re.compile("shapes1500")).click()
        pg.click("#atlas-run")
        pg.wait_for_function(f"() => {{ const el = {PLOT}; return el && el.data && el.data.length > 3; }}")
        pg.wait_for_function("() => document.querySelector('#atlas-bridge [data-bound]')")
        yield pg


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return screenshot_dir(tmp_path_factory)


def image_points(page) -> tuple[np.ndarray, np.ndarray]:
    """(rows [P], page pixel positions [P, 2]) of every drawn image point, the plot scrolled into view."""
    page.locator("#atlas-plot .nsewdrag").first.scroll_into_view_if_needed()
    got = page.evaluate(f"""() => {{
      const el = {PLOT}, L = el._fullLayout, box = el.getBoundingClientRect();
      const out = {{rows: [], x: [], y: []}};
      el._fullData.forEach((d) => {{
        if (!d.meta || d.meta.kind !== 'image' || d.name.startsWith('nearest')) return;
        const xs = Array.from(d.x), ys = Array.from(d.y), cs = Array.from(d.customdata);
        xs.forEach((x, i) => {{
          out.rows.push(cs[i]);
          out.x.push(box.left + L.xaxis._offset + L.xaxis.d2p(x));
          out.y.push(box.top + L.yaxis._offset + L.yaxis.d2p(ys[i]));
        }});
      }});
      return out; }}""")
    return np.array(got["rows"]), np.stack([got["x"], got["y"]], axis=1)


def polygon_sides(points: np.ndarray, poly: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(surely inside, surely outside) of a polygon: even-odd rule, at least 3 px from every edge."""
    x, y = points[:, 0:1], points[:, 1:2]
    a, b = poly, np.roll(poly, -1, axis=0)
    crosses = (a[:, 1] > y) != (b[:, 1] > y)
    at = a[:, 0] + (y - a[:, 1]) * (b[:, 0] - a[:, 0]) / np.where(b[:, 1] != a[:, 1], b[:, 1] - a[:, 1], 1e-9)
    inside = (crosses & (x < at)).sum(1) % 2 == 1
    ab = b - a
    t = np.clip(((points[:, None, :] - a) * ab).sum(-1) / (ab * ab).sum(-1), 0, 1)
    edge = np.linalg.norm(points[:, None, :] - (a + t[..., None] * ab), axis=-1).min(1)
    return inside & (edge > 3), ~inside & (edge > 3)


def test_a_lasso_opens_exactly_the_images_inside_it(page, shots):
    rows, px = image_points(page)
    centre = px[np.argsort(np.linalg.norm(px - np.median(px, 0), axis=1))[0]]
    for radius in (60, 45, 30, 20, 12):
        hexagon = centre + radius * np.stack([np.cos(np.arange(6) * np.pi / 3), np.sin(np.arange(6) * np.pi / 3)], 1)
        sure_in, sure_out = polygon_sides(px, hexagon)
        if 1 <= sure_in.sum() and (sure_in.sum() + (~sure_in & ~sure_out).sum()) <= 40:
            break
    page.mouse.move(*hexagon[0])
    page.mouse.down()
    for corner in list(hexagon[1:]) + [hexagon[0]]:
        page.mouse.move(*corner, steps=6)
    page.mouse.up()
    page.wait_for_selector("#atlas-summary :text('Selection:')")
    summary = page.locator("#atlas-summary").inner_text()
    count = int(re.search(r"Selection: ([\d,]+) images", summary).group(1).replace(",", ""))
    shown = {int(r) for r in re.findall(r"data-row=\"?'?(\d+)", page.locator("#atlas-gallery").inner_html())}
    assert len(shown) == count <= 48
    assert set(rows[sure_in]) <= shown and not set(rows[sure_out]) & shown, (sorted(shown), sorted(rows[sure_in]))
    assert "Class prompts nearest to its centroid" in summary
    page.locator("#atlas-accordion").screenshot(path=str(shots / "map_explore_lasso.png"))
    page.click("#atlas-near")  # search near the selection: its centroid's nearest images, the selection among them
    page.wait_for_selector("#atlas-summary :text(\"nearest to the selection's centroid\")")
    near = {int(r) for r in re.findall(r"data-row=\"?'?(\d+)", page.locator("#atlas-gallery").inner_html())}
    assert len(near) == 48 and near & shown  # a lasso holds neighbours: some of them rank near their centroid


def test_hover_shows_the_thumbnail_and_a_search_rings_its_nearest_images(page, shots):
    rows, px = image_points(page)
    seen = np.flatnonzero((px[:, 0] > 10) & (px[:, 0] < 1350) & (px[:, 1] > 10) & (px[:, 1] < 990))  # in the window
    page.mouse.move(*px[seen[0]])
    page.wait_for_function("() => { const c = document.querySelector('#atlas-hover-card'); "
                           "return c && c.style.display === 'block' && c.querySelector('img'); }")
    hovered = int(page.locator("#atlas-hover-card").get_attribute("data-row"))
    assert hovered in set(rows.tolist())
    page.mouse.down()  # a click on the hovered point lists its nearest images
    page.mouse.up()
    page.wait_for_selector(f"#atlas-summary :text('Row {hovered}')")
    assert "Neighbours of row" in page.locator("#atlas-gallery").inner_text()
    page.locator("#atlas-query textarea").fill("a blue star")
    page.locator("#atlas-query textarea").press("Enter")
    page.wait_for_selector("#atlas-summary :text('nearest to a blue star')")
    names = page.evaluate(f"() => {PLOT}.data.map(d => d.name)")
    assert any(n.startswith("nearest to") for n in names) and any("the query" in n for n in names)
    assert page.locator("#atlas-gallery figure").count() == 48  # the first 48 of the 50 ringed
    page.locator("#atlas-accordion").screenshot(path=str(shots / "map_explore_search.png"))


def test_a_model_change_says_whose_space_the_map_shows(page, shots):
    """Last in this file: it changes the session's model (and changes it back)."""
    from test_browser_model_change import pick_model

    assert page.locator("#atlas-notice").inner_text().strip() == ""
    pick_model(page, page.other)
    page.wait_for_selector("#atlas-notice :text('This map shows the space of')")
    notice = page.locator("#atlas-notice").inner_text()
    assert "shapes-tiny" in notice and "other-tiny" in notice and "search needs" in notice
    page.locator("#atlas-notice").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "map_explore_model_change.png"))
    pick_model(page, "shapes-tiny")
    page.wait_for_function("() => document.querySelector('#atlas-notice').innerText.trim() === ''")

