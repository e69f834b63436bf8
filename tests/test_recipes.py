"""Recipes are files: shapes-tiny is the bundled model's config field for field; every recipe loads,
validates, and drives the generated CLI the same way."""

import sys

import pytest

from core.train import ConfigError, TrainConfig, flat_fields, read_recipe, recipe_names, validate

sys.path.insert(0, "scripts")

# The shipped run v7 (assets/models/shapes-tiny/README.md), as the trainer of commit cb7acfb saw it:
#   python scripts/train.py --model tiny --steps 3900 --batch-size 128 --lr 5e-4 --warmup-steps 200
#     --hard-negatives 0.5 --curriculum-steps 1750 --group-loss 1.0 --init-logit-scale 100 --seed 0
#     --save-dtype float16 --eval-every 500 --save-every 500 --out runs/shapes-tiny-v7
# with every other field at that trainer's default. Written out by hand: an oracle, not a re-reading.
SHIPPED_V7 = {
    "output_dir": "runs/shapes-tiny-v7", "model": "tiny", "data": "shapes", "image_column": "image",
    "text_column": "text", "split": "train", "streaming": False, "hard_negatives": 0.5, "curriculum_steps": 1750,
    "group_loss": 1.0, "init_logit_scale": 100.0, "loss": "clip", "local_loss": False, "accum_freq": 1,
    "grad_checkpointing": False, "compile": "", "patch_dropout": 0.0, "steps": 3900, "batch_size": 128, "lr": 5e-4,
    "weight_decay": 0.1, "warmup_steps": 200, "min_lr_ratio": 0.0, "beta2": 0.98, "grad_clip": 1.0, "seed": 0,
    "device": "cpu", "precision": "fp32", "lock_image": False, "lock_text": False, "eval_every": 500,
    "eval_samples": 500, "eval_templates": "shapes_world", "save_every": 500, "keep_checkpoints": 2, "log_every": 10,
    "num_workers": 1, "worker_nice": 19, "threads": 0, "save_dtype": "float16", "export_dir": "", "progress": True,
}
WHERE_NOT_WHAT = {"output_dir", "export_dir", "progress"}  # where a run goes and whether a bar shows


def test_the_recipe_file_is_the_bundled_models_config_field_for_field():
    cfg = TrainConfig.from_flat(read_recipe("shapes-tiny"), output_dir="runs/shapes-tiny-v7")
    got = cfg.flat()
    assert len(SHIPPED_V7) == 42
    for key, value in SHIPPED_V7.items():
        if key not in WHERE_NOT_WHAT:
            assert got[key] == value and type(got[key]) is type(value), key
    new = set(got) - set(SHIPPED_V7)  # fields added since: at a default that changes nothing
    assert new == {"stop_at", "learn_logit_scale"} and got["stop_at"] == 0 and got["learn_logit_scale"] is True


def test_the_cli_with_the_recipe_gives_the_same_config():
    import train as cli

    cfg, start = cli.parse_args(["--recipe", "shapes-tiny", "--out", "runs/x"])
    assert start == "new" and cfg.flat() == TrainConfig.from_flat(read_recipe("shapes-tiny"), output_dir="runs/x").flat()
    cfg, _ = cli.parse_args(["--recipe", "shapes-tiny", "--lr", "1e-4", "--set", "steps=50", "--out", "x"])
    assert cfg.optim.lr == 1e-4 and cfg.optim.steps == 50 and cfg.data.curriculum_steps == 1750


def test_every_recipe_loads_and_validates():
    assert set(recipe_names()) >= {"shapes-tiny", "quick-demo", "small", "base-gpu", "finetune-lit"}
    for name in recipe_names():
        validate(TrainConfig.from_flat(read_recipe(name)))


def test_unknown_keys_and_bad_values_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 1e-3\n  learning_rate: 2\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        read_recipe(str(bad))
    with pytest.raises(ConfigError, match="no recipe 'nope'"):
        read_recipe("nope")
    with pytest.raises(ConfigError, match="batch_size: expected int"):
        TrainConfig.from_flat(batch_size="many")
    assert TrainConfig.from_flat(lr="5e-4", lock_image="true", steps="2e3").flat()["steps"] == 2000


def test_the_cli_is_generated_from_the_fields_with_defaults_shown():
    import train as cli

    text = " ".join(cli.build_parser().format_help().split())
    for key, spec in flat_fields().items():
        assert "--" + key.replace("_", "-") in text, key
    assert "--min-lr-ratio" in text and "--beta2" in text and "(default: 0.98)" in text
    assert "2800" not in text  # the stale example is gone
