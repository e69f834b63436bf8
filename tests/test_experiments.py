"""The paper's claims as experiments: recipes load and match their bundled results field for field, the
verdict logic says what the intervals say, and a CLI run of a quick recipe reproduces its bundled numbers."""

import dataclasses
import json

import pytest

from core.errors import UserInputError
from core.experiments import (Experiment, bundled_result, experiment_names, interval, load_experiment, side,
                              verdict)


@pytest.mark.parametrize("name", experiment_names())
def test_each_recipe_is_the_config_of_its_bundled_results(name):
    exp = load_experiment(name)
    for quick in (False, True):
        result = bundled_result(name, quick)
        assert result is not None, f"no bundled {'quick ' if quick else ''}result for {name}"
        config = {k: tuple(v) if isinstance(v, list) else v for k, v in result["config"].items()}
        assert config == dataclasses.asdict(exp)  # the recipe made it, field for field
        assert result["ran"]["n"] == exp.scaled(quick).n and result["verdict"] and result["findings"]


def test_an_unknown_experiment_or_field_is_one_line(tmp_path, monkeypatch):
    with pytest.raises(UserInputError, match="no experiment 'nope'; the experiments are"):
        load_experiment("nope")
    import core.experiments.recipe as ce

    (tmp_path / "bad.yaml").write_text("name: bad\nkind: prompts\nclaim: x\nsource: y\nseedz: [1]\n")
    monkeypatch.setattr(ce, "EXPERIMENTS_DIR", tmp_path)
    with pytest.raises(UserInputError, match="unknown field.*seedz"):
        load_experiment("bad")
    (tmp_path / "bad.yaml").write_text("name: bad\nkind: objectives\nclaim: x\nsource: y\nsettings: {imgs: 5}\n")
    with pytest.raises(UserInputError, match="unknown setting.*imgs.*known:.*images"):
        load_experiment("bad")
    (tmp_path / "bad.yaml").write_text("name: bad\nkind: gap\nclaim: x\nsource: y\nquick: {settings: {scale: 5}}\n")
    with pytest.raises(UserInputError, match=r"unknown setting\(s\) scale for kind gap; known:.*scales"):
        load_experiment("bad")


def test_the_quick_variant_overrides_settings_key_by_key():
    exp = load_experiment("temperature-and-batch")
    quick = exp.scaled(True)
    assert quick.settings["images"] < exp.settings["images"] and quick.settings["batch_sizes"] == exp.settings["batch_sizes"]
    assert quick.kind_settings().images == quick.settings["images"] and quick.seeds == tuple(exp.quick["seeds"])


def test_intervals_and_sides_follow_the_t_distribution():
    effect = interval([0.02, 0.03, 0.025, 0.035])  # small spread, clearly above 0
    assert effect["mean"] == pytest.approx(0.0275) and effect["ci95"] == pytest.approx(3.182 * 0.006455 / 2, rel=1e-3)
    assert side(effect) == "above" and side(interval([0.01, -0.02, 0.015])) == "zero"
    assert side(interval([-0.05, -0.06, -0.055])) == "below"


def _prompts(photo_minus_bare, ensemble_minus_photo):
    return {"photo_minus_bare": interval(photo_minus_bare), "ensemble_minus_photo": interval(ensemble_minus_photo)}


def test_the_verdict_says_reproduced_only_when_every_part_holds_and_reversed_when_one_turns():
    exp = Experiment("x", "prompts", "c", "s")
    assert verdict(exp, _prompts([0.02, 0.03, 0.025], [0.01, 0.02, 0.015]))[0] == "reproduced"
    assert verdict(exp, _prompts([0.02, 0.03, 0.025], [0.01, -0.02, 0.0]))[0] == "not reproduced at this scale"
    assert verdict(exp, _prompts([-0.02, -0.03, -0.025], [0.01, 0.02, 0.015]))[0] == "reversed"
    probe = Experiment("y", "probe", "c", "s", shots=(1, 2, 4))  # a match: no difference is the paper's result
    matched = {"zero_shot_minus_probe_4": interval([0.01, -0.01, 0.0]), "catch_up_k": [4, 2, 4]}
    overall, findings = verdict(probe, matched)
    assert overall == "reproduced" and "matches a 4-shot probe" in findings[0] and "k = 2, 4" in findings[0]
    stronger = {"zero_shot_minus_probe_4": interval([0.2, 0.25, 0.22]), "catch_up_k": [16, None, 16]}
    assert verdict(probe, stronger)[0] == "not reproduced at this scale"


def _smallest() -> str:
    """The recipe whose quick variant encodes the fewest images."""
    return min(experiment_names(), key=lambda n: (lambda e: e.n * len(e.seeds))(load_experiment(n).scaled(True)))


@pytest.mark.slow
def test_a_cli_run_of_the_smallest_quick_recipe_reproduces_its_bundled_numbers(tmp_path):
    name = _smallest()
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from experiment import main

    out = tmp_path / "result.json"
    assert main([name, "--quick", "--json", str(out)]) == 0
    ours, bundled = json.loads(out.read_text())["summary"], bundled_result(name, quick=True)["summary"]
    for key, value in bundled.items():
        if isinstance(value, dict):
            width = value["ci95"] if value["ci95"] is not None else 1e-6
            assert ours[key]["mean"] == pytest.approx(value["mean"], abs=width), key  # within the stated interval
        else:
            assert ours[key] == value, key
