"""Shared fixtures: a micro CLIP (random, fast) and the bundled model."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.model import Clip, Preset, create  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# A CLIP small enough to train a few steps in a second: 32 px images, 2 layers, width 32.
MICRO = Preset(image_size=32, patch_size=8, vision_width=32, vision_layers=2, vision_heads=2,
               text_width=32, text_layers=2, text_heads=2, embed_dim=16)


@pytest.fixture(scope="session")
def micro_dir(tmp_path_factory) -> Path:
    """A randomly initialised micro CLIP saved as an ordinary HF checkpoint."""
    path = tmp_path_factory.mktemp("micro") / "model"
    create(MICRO, seed=0).save(path)
    return path


@pytest.fixture()
def micro(micro_dir) -> Clip:
    from core.model import load

    return load(str(micro_dir))


@pytest.fixture(scope="session")
def bundled() -> Clip:
    from core.model import DEFAULT_MODEL, bundled_models, load

    if DEFAULT_MODEL not in bundled_models():
        pytest.fail(f"the bundled model assets/models/{DEFAULT_MODEL} is missing")
    return load(DEFAULT_MODEL)
