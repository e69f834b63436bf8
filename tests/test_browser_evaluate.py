"""The Evaluate tab in a real browser (Playwright driving Debian's Chromium).

One click evaluates the default shapes-world set with one request and shows every result: the
accuracy line, the confusion heatmap (row-normalised, counts on hover, confused classes together),
the per-class table, the galleries, the template table and the probe curve. "Use the chosen
templates" fills the zero-shot tab's template box; an uploaded zip of class folders is evaluated
too. Screenshots go to a temp folder, or to docs/screenshots/evaluate*.png when
CLIP_LAB_UPDATE_SCREENSHOTS=1. Needs /usr/bin/chromium (`apt-get install -y chromium`); never
`playwright install`.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import pytest
from conftest_app import app_page, screenshot_dir

from core.shapes import ShapesWorld

HEATMAP = "document.querySelector('#ev-confusion .js-plotly-plot')"


@pytest.fixture(scope="module")
def page():
    with app_page({"OMP_NUM_THREADS": "1"}) as pg:
        pg.get_by_role("tab", name="Evaluate").click()
        pg.wait_for_selector("#ev-run")
        pg.wait_for_function("() => document.querySelector('#ev-templates textarea').value.includes('a photo of a {}.')")
        yield pg


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return screenshot_dir(tmp_path_factory)


def _settled(page) -> None:
    page.wait_for_function("() => !document.querySelector('#ev-summary .pending, .eta-bar')")


def _coverage(page) -> str:
    return page.locator("#ev-coverage input").input_value()


def test_one_click_shows_every_result_with_one_request(page, shots):
    """The coverage menu takes a typed choice with Enter and keeps its value on Tab; several labels ticked; then
    one click, one request, every result."""
    menu = page.locator("#ev-coverage input")
    menu.click()
    menu.fill("95")
    menu.press("Tab")
    page.wait_for_function("() => document.querySelector('#ev-coverage input').value == '90%'")
    menu.click()
    menu.fill("80")
    menu.press("Enter")
    page.wait_for_function("() => document.querySelector('#ev-coverage input').value == '80%'")
    page.locator("#ev-several input").check()
    before = len(page.joins)
    page.click("#ev-run")
    page.wait_for_selector("#ev-summary :text('Top-1')")
    page.wait_for_function(f"() => {{ const el = {HEATMAP}; return el && el.data && el.data.length; }}")
    page.wait_for_selector("#ev-probe .js-plotly-plot")
    page.wait_for_selector("#ev-mistakes img")
    _settled(page)
    assert len(page.joins) - before == 1, page.joins
    heat = page.evaluate(f"() => {{ const d = {HEATMAP}.data[0]; return {{x: d.x, y: d.y, hover: d.hovertemplate, "
                         "counts: d.customdata}; }")
    assert len(heat["x"]) == 8 and heat["x"] == heat["y"] and "of its images" in heat["hover"]
    assert sum(map(sum, heat["counts"])) == 1000  # the default set: 1,000 images
    summary = page.locator("#ev-summary").inner_text()
    assert "mean per-class recall" in summary and "Retrieval" in summary
    assert "ENSEMBLE" in page.locator("#ev-templates-table").inner_text()
    assert page.locator("#ev-correct img").count() >= 1
    assert "evaluate_results" in page.locator("#ev-downloads").inner_text()
    several = page.locator("#ev-several-summary").inner_text()
    assert "Several labels per image" in several and "mean average precision" in several and "chosen for F1" in several
    assert "circle" in page.locator("#ev-several-table").inner_text() and _coverage(page) == "80%"
    page.screenshot(path=str(shots / "evaluate.png"), full_page=True)
    page.locator("#ev-several-summary").screenshot(path=str(shots / "evaluate_several_labels_text.png"))
    page.locator("#ev-several-table").screenshot(path=str(shots / "evaluate_several_labels.png"))
    page.locator("#ev-confusion").screenshot(path=str(shots / "evaluate_confusion.png"))
    page.locator("#ev-probe").screenshot(path=str(shots / "evaluate_probe.png"))


def test_the_chosen_templates_go_to_the_zero_shot_tab(page):
    chosen_text = page.locator("#ev-selection").inner_text()
    page.click("#ev-use")
    page.get_by_role("tab", name="Zero-shot").click()
    page.wait_for_function("() => !document.querySelector('#zs-templates textarea').value.includes('a line drawing of a {}.\\n')"
                           " || document.querySelector('#zs-templates textarea').value.split('\\n').length < 6")
    lines = page.locator("#zs-templates textarea").input_value().splitlines()
    assert lines and all(line in chosen_text for line in lines), (lines, chosen_text)
    # they are a preset of this session now: the menu names it, and picking another preset and then it
    # again brings them back
    preset = page.locator("#zs-tpl-preset input")
    assert preset.input_value() == f"chosen in Evaluate ({len(lines)})"
    page.locator("#zs-tpl-preset input").click()
    page.get_by_role("option", name="OpenAI's 7").click()
    page.wait_for_function("() => document.querySelector('#zs-templates textarea').value.split('\\n').length == 7")
    page.locator("#zs-tpl-preset input").click()
    page.get_by_role("option", name=f"chosen in Evaluate ({len(lines)})").click()
    page.wait_for_function(f"() => document.querySelector('#zs-templates textarea').value.split('\\n').length == {len(lines)}")
    page.get_by_role("tab", name="Evaluate").click()


def test_the_calibrated_scale_and_its_prediction_sets_go_to_the_zero_shot_tab(page, shots):
    """The first test's evaluation calibrated the 8 shapes with the shapes-world templates: "Use the calibrated
    scale" puts its fitted scale on the zero-shot slider (its own-scale box unticked); with other templates the
    zero-shot tab says the sets do not apply, with the same ones it gives each image's 80% set and the labels
    its several-labels decision calls present."""
    text = page.locator("#ev-calibration").inner_text()
    assert "15 equal-width bins" in text and "Prediction sets, every class" in text and "Unknown images" in text
    fitted = re.search(r"calibration half of [\d,]+ images: ([\d.]+)", text).group(1)
    page.locator("#ev-calibration").screenshot(path=str(shots / "evaluate_calibration_text.png"))
    page.click("#ev-use-scale")
    page.get_by_role("tab", name="Zero-shot").click()
    page.wait_for_function("v => document.querySelector('#zs-scale input[type=number]').value == v", arg=fitted)
    assert not page.locator("#zs-follow input").is_checked()
    page.click("#zs-run")  # the templates are still the ones chosen in the previous test
    page.wait_for_selector("#zs-info :text('No prediction sets')")
    assert "other templates" in page.locator("#zs-info").inner_text()
    page.locator("#zs-tpl-preset input").click()
    page.get_by_role("option", name="shapes world", exact=True).click()
    page.wait_for_function("() => document.querySelector('#zs-templates textarea').value.split('\\n').length == 6")
    page.click("#zs-run")
    page.wait_for_selector("#zs-info :text('Prediction set at 80% coverage')")
    info = page.locator("#zs-info").inner_text()
    assert f"fitted scale {fitted}" in info and ("{" in info or "none of these" in info) and "Labels present" in info
    batch = page.locator("#zs-batch").inner_text()
    assert "set (80%)" in batch and "labels present" in batch
    page.screenshot(path=str(shots / "zero_shot_prediction_sets.png"), full_page=True)
    page.get_by_role("tab", name="Evaluate").click()


def test_an_uploaded_zip_of_class_folders(page, tmp_path, shots):
    path = tmp_path / "colours.zip"
    with zipfile.ZipFile(path, "w") as z:
        for s in ShapesWorld(seed=9, split="eval", min_objects=1, max_objects=1).take(120):
            buf = io.BytesIO()
            s.image.save(buf, "PNG")
            z.writestr(f"colours/{s.labels['colour']}/{s.index}.png", buf.getvalue())
    page.get_by_label("uploaded zip or files").check()
    page.locator("#ev-several input").uncheck()  # several labels are a shapes-world study
    page.locator("#ev-files input[type=file]").set_input_files(str(path))
    page.wait_for_function("() => document.querySelector('#ev-files').innerText.includes('colours')")
    page.locator("#ev-renames textarea").fill("red = red shape\nblue = blue shape")
    page.click("#ev-run")
    page.wait_for_selector("#ev-summary :text('120 images in 8 classes')")
    _settled(page)
    ticks = page.evaluate(f"() => {HEATMAP}.data[0].x")
    assert "red shape" in ticks and "blue shape" in ticks and "green" in ticks
    assert "No mistakes" in page.locator("#ev-mistakes").inner_text()  # the bundled model knows its colours
    top = page.locator("#ev-files").bounding_box()
    bottom = max((page.locator(x).bounding_box() for x in ("#ev-mistakes", "#ev-correct")), key=lambda b: b["y"] + b["height"])
    scroll = page.evaluate("() => window.scrollY")
    page.screenshot(path=str(shots / "evaluate_upload.png"), full_page=True,
                    clip={"x": 0, "y": top["y"] + scroll - 10, "width": 1360, "height": bottom["y"] + bottom["height"] - top["y"] + 20})
