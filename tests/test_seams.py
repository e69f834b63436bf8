"""Seams a new user fell through (issue "One contract for every tab"), each pinned by a test of its own."""

from __future__ import annotations

import pytest

from core.data import DataError, SourceUnavailable, open_dataset
from core.errors import UserFacingError, UserInputError
from core.train import recipe_names, validate
from demo.platform.config import AppConfig
from demo.platform.context import AppContext
from demo.platform.contract import Call, endpoint
from demo.tabs.shared.zero_shot_scores import duplicate_notice
from demo.tabs.train.tab import FINETUNE, KNOBS, build_config, knob_values
from demo.tabs.zero_shot import tab as zero_shot


def test_a_template_that_does_not_parse_reads_custom_and_logs_nothing(caplog):
    """Typing 'a picture of a thing' (no {}) and leaving the box: the preset menu says custom, no traceback."""
    ctx = AppContext.create(AppConfig())
    with caplog.at_level("ERROR", logger="clip_lab"):
        assert endpoint(ctx, zero_shot.templates_preset_of)("a picture of a thing", {}) == "custom"
        assert endpoint(ctx, zero_shot.templates_preset_of)("a snapshot of the {}.", {"mine": "a snapshot of the {}."}) == "mine"
    assert not caplog.records


@pytest.mark.parametrize("recipe", recipe_names())
def test_a_fine_tune_from_any_recipe_builds_a_valid_config(recipe):
    """Fine-tuning the current model from a from-scratch recipe (shapes-tiny sets init_logit_scale=100) works:
    a loaded model keeps its learned scale, so the recipe's starting scale is dropped."""
    knobs = dict(zip(KNOBS, knob_values(recipe)))
    cfg = build_config(recipe, knobs, FINETUNE, "shapes-tiny", "some/folder", True, False, False)
    validate(cfg)  # raises ConfigError (a UserInputError) if a setting cannot work
    assert cfg.model.name == "shapes-tiny" and cfg.model.init_logit_scale == 0


def test_a_dataset_outage_is_not_the_users_fault_and_a_bug_is_not_hidden(monkeypatch):
    import datasets

    def unreachable(*args, **kwargs):
        raise ConnectionError("the Hub is down")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(SourceUnavailable, match="could not be reached") as err:
        open_dataset("someone/pairs")
    assert isinstance(err.value, UserFacingError) and not isinstance(err.value, UserInputError)

    def missing(*args, **kwargs):
        raise FileNotFoundError("no such dataset")

    monkeypatch.setattr(datasets, "load_dataset", missing)
    with pytest.raises(DataError, match="could not open dataset"):
        open_dataset("someone/pairs")

    def bug(*args, **kwargs):
        raise KeyError("a bug of ours")

    monkeypatch.setattr(datasets, "load_dataset", bug)
    with pytest.raises(KeyError):  # not dressed up as the user's mistake
        open_dataset("someone/pairs")


def test_class_names_that_differ_only_in_case_are_said_to_tie():
    notice = duplicate_notice("star, Star, circle", "a photo of a {}.")
    assert "'star' = 'Star'" in notice and "tie" in notice
    assert duplicate_notice("star, circle", "a {}.") is None


def test_the_errors_are_a_family_of_their_own():
    from core.train import ConfigError
    from demo.platform.errors import Busy, OverQuota, Stopped, TimedOut

    assert not issubclass(UserFacingError, ValueError)
    assert issubclass(ConfigError, UserInputError) and issubclass(DataError, UserInputError)
    for kind in (Stopped, TimedOut, Busy, OverQuota, SourceUnavailable):
        assert issubclass(kind, UserFacingError) and not issubclass(kind, UserInputError)


def test_the_slider_shows_the_models_own_scale_once_the_model_is_in_memory():
    ctx = AppContext.create(AppConfig())
    call = Call(ctx)
    assert zero_shot.fill_defaults(call)[2] == {"__type__": "update"}  # not loaded: the slider stays as it is
    clip = ctx.models.get(ctx.config.default_model)
    assert zero_shot.fill_defaults(call)[2] == round(float(clip.logit_scale), 2)


def test_a_32_pair_matrix_and_its_colour_bar_fit_a_1400_px_page():
    from demo.inputs.pairs import shapes_pairs
    from demo.tabs.matrix.batch import matrix_figure

    pairs = shapes_pairs(32, seed=0)
    values = __import__("numpy").zeros((32, 32))
    fig = matrix_figure(values, [""] * 32, list(pairs.captions), "cosine", 32)
    assert fig.layout.width <= 1300  # the tab's plot panel on a 1,400 px page (it was 1,402 px: the bar hid)


def test_one_template_is_not_one_templates():
    import torch

    from demo.tabs.shared.zero_shot_scores import ZeroShotScores, render

    s = ZeroShotScores(["x.png"], ["circle", "star"], ["a {}."], torch.tensor([[0.3, 0.2]]), torch.tensor([[0.3, 0.2]]),
                       "m", 100.0)
    assert "2 classes × 1 template." in render(s, 2, 100.0).info


def test_a_saved_model_is_readable_like_any_file_the_user_writes(tmp_path, micro):
    import os
    import stat

    from core.model import save_pretrained_atomic

    mask = os.umask(0o022)
    try:
        folder = save_pretrained_atomic(micro, tmp_path / "model")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((folder / "model.safetensors").stat().st_mode) == 0o644  # mkdtemp's files were 0600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755


def test_two_uploads_in_evaluate_say_how_to_start_again(tmp_path):
    from demo.inputs.labelled_sets import upload_set

    (tmp_path / "a.zip").write_bytes(b"PK")
    (tmp_path / "b.png").write_bytes(b"x")
    with pytest.raises(UserInputError, match="clear the files box"):
        upload_set([str(tmp_path / "a.zip"), str(tmp_path / "b.png")], 100)


def test_shown_messages_carry_no_server_paths_or_reprs():
    """What a visitor reads (toasts, API and MCP errors) never lays out the server: absolute paths keep
    their last part, Python object reprs go; URLs and relative names stay."""
    from core.errors import UserInputError
    from demo.platform.errors import one_line

    shown = one_line(UserInputError("no such model directory `/srv/app/runs/app-1a2b/model`: see https://hf.co/a/b"))
    assert shown == 'no such model directory "…/model": see https://hf.co/a/b'
    assert one_line(ValueError("bad <gradio.data_classes.FileData object at 0x7f3a2c> in assets/x.png")) == \
        "bad a value in assets/x.png"
