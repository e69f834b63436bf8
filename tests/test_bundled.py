"""The bundled model: an ordinary HF checkpoint that transformers' own pipeline agrees with, small
enough to ship, and good enough on fresh shapes-world images."""

import pytest
import torch
from transformers import pipeline

from core.evaluate import evaluate_shapes
from core.model import MODELS_DIR, DEFAULT_MODEL
from core.shapes import ShapesWorld
from core.zeroshot import classify, template_presets


def test_zero_shot_equals_transformers_pipeline(bundled):
    pipe = pipeline("zero-shot-image-classification", model=str(MODELS_DIR / DEFAULT_MODEL), dtype=torch.float32)
    labels = ["red star", "blue circle", "green square", "yellow triangle", "purple heart", "a cat"]
    images = [s.image for s in ShapesWorld(seed=11, split="eval").take(4)]
    ours = classify(bundled, images, labels, ["a photo of a {}."]).probs
    for image, row in zip(images, ours):
        ref = {r["label"]: r["score"] for r in pipe(image, candidate_labels=labels, hypothesis_template="a photo of a {}.")}
        torch.testing.assert_close(row, torch.tensor([ref[l] for l in labels]), atol=1e-4, rtol=0)


def test_bundled_model_fits_the_size_budget():
    size = sum(f.stat().st_size for f in (MODELS_DIR / DEFAULT_MODEL).rglob("*") if f.is_file())
    assert size <= 25 * 1024 * 1024, f"{size / 2**20:.1f} MiB"
    assert (MODELS_DIR / DEFAULT_MODEL / "README.md").is_file(), "the model card is missing"


@pytest.fixture(scope="module")
def fresh_eval(bundled):
    return evaluate_shapes(bundled, n=200, seed=2024, templates=template_presets()["shapes_world"])


def test_bundled_model_clears_the_colour_floor_on_fresh_images(fresh_eval):
    assert fresh_eval["colour"]["top1"] >= 0.95, fresh_eval["colour"]


def test_bundled_model_clears_the_shape_floor_on_fresh_images(fresh_eval):
    assert fresh_eval["shape"]["top1"] >= 0.90, fresh_eval["shape"]
