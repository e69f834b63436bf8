"""A model change, tab by tab, in a real browser: each tab computes with the first model, the session's
model changes, and each says at once that what it shows belongs to the previous model; nothing on
screen is recomputed with the new model until the user asks (screenshots: <tab>_after_model_change.png).
Needs /usr/bin/chromium (`apt-get install -y chromium`); never `playwright install`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest_app import app_page, make_model_dirs, model_source, screenshot_dir

NOTICE = "not the session's model"


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return screenshot_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    dirs = make_model_dirs(tmp_path_factory.mktemp("models"), model_source())
    with app_page({"CLIP_LAB_MODEL_DIRS": str(dirs["folder"])}) as pg:
        pg.other = str(dirs["other"])  # a second model: a copy of the first, under another name
        pg.wait_for_function("() => document.querySelector('#zs-classnames textarea').value.includes('circle')")
        yield pg


def pick_model(page, name: str) -> None:
    box = page.locator("#model-picker input")
    box.click()
    box.fill(name)
    box.press("Enter")
    page.wait_for_selector(f"#model-status :text('{Path(name).name}')")


def text(page, selector: str) -> str:
    return page.locator(selector).inner_text()


def test_every_tab_says_its_view_belongs_to_the_previous_model(page, shots):
    # zero-shot: classify with the first model
    page.click("#zs-run")
    page.wait_for_selector("#zs-info :text('Logit scale')")
    label_before = text(page, "#zs-label")
    # matrix: build a batch
    page.get_by_role("tab", name="Similarity matrix").click()
    page.click("#mx-build")
    page.wait_for_selector("#mx-figures :text('loss_i')")
    figures_before = text(page, "#mx-figures")
    # map: a PCA map of 200 pairs
    page.get_by_role("tab", name="Embedding map").click()
    page.locator("#map-method label", has_text="PCA").click()
    page.click("#map-run")
    page.wait_for_selector("#map-gap :text('Modality gap')")
    gap_before = text(page, "#map-gap")
    assert "Settings changed" not in gap_before
    # search: index the default set
    page.get_by_role("tab", name="Search").click()
    page.click("#search-index")
    page.wait_for_selector("#search-status :text('Indexed')")
    # evaluate: the shapes world's default study, without selection and probe
    page.get_by_role("tab", name="Evaluate").click()
    page.get_by_label("forward selection of templates (half / half)").uncheck()
    page.get_by_label("few-shot linear probe (k = 1, 2, 4, 8, 16, all)").uncheck()
    page.click("#ev-run")
    page.wait_for_selector("#ev-summary :text('top-1')")
    summary_before = text(page, "#ev-summary")

    pick_model(page, page.other)

    page.get_by_role("tab", name="Zero-shot").click()
    page.wait_for_selector(f"#zs-info :text(\"{NOTICE}\")")
    assert text(page, "#zs-label") == label_before  # the old scores stay, said to be the old model's
    page.screenshot(path=str(shots / "zero_shot_after_model_change.png"), full_page=True)

    page.get_by_role("tab", name="Similarity matrix").click()
    page.wait_for_selector(f"#mx-stale :text(\"{NOTICE}\")")
    page.locator("#mx-view label", has_text="logits").click()  # a view change would encode with the new model
    page.wait_for_selector("#mx-stale :text('press Build batch')")  # refused, said in the batch status
    page.wait_for_selector("[data-testid='toast-body'] :text('press Build batch')")
    assert "still its cosine view" in text(page, "#mx-stale")  # the view menu says logits; the plot is the cosine one
    assert "`" not in text(page, "[data-testid='toast-body']")  # names quoted plainly, not as raw Markdown
    assert text(page, "#mx-figures") == figures_before  # no number of the new model, and no error mark over it
    page.screenshot(path=str(shots / "similarity_matrix_after_model_change.png"), full_page=True)

    page.get_by_role("tab", name="Embedding map").click()
    page.wait_for_selector("#map-gap :text('Settings changed: press Draw map')")
    assert gap_before.split("Modality gap")[1] in text(page, "#map-gap")  # the same figures, marked stale
    page.screenshot(path=str(shots / "embedding_map_after_model_change.png"), full_page=True)

    page.get_by_role("tab", name="Search").click()
    page.wait_for_selector(f"#search-status :text(\"{NOTICE}\")")
    page.click("#search-run")  # a query on the old model's index is refused, not mixed
    page.wait_for_selector("[data-testid='toast-body'] :text('press Index')")
    page.screenshot(path=str(shots / "search_after_model_change.png"), full_page=True)

    page.get_by_role("tab", name="Evaluate").click()
    page.wait_for_selector(f"#ev-summary :text(\"{NOTICE}\")")
    assert summary_before in text(page, "#ev-summary")  # the study stays, said to be the old model's
    page.screenshot(path=str(shots / "evaluate_after_model_change.png"), full_page=True)

    # Train: a run's views belong to the run, not to the session's model; a fine-tune starts from the new one
    page.get_by_role("tab", name="Train").click()
    page.locator("#tr-mode label", has_text="fine-tune").click()
    page.wait_for_selector("#tr-start", state="visible")
    page.screenshot(path=str(shots / "train_after_model_change.png"), full_page=True)
