"""SigLIP (v1, SentencePiece `SiglipTokenizer`): it loads as the "siglip" family, its zero-shot
probabilities are transformers' pipeline's, and without its tokenizer's packages the load fails with
core's one-line ModelLoadError."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from family_standins import siglip_standin
from PIL import Image

import core
from core.zeroshot import classify

pytest.importorskip("sentencepiece")  # requirements.txt installs it (and protobuf) for SigLIP's tokenizer

LABELS = ["circle", "star", "square"]
TEMPLATE = "This is a photo of {}."  # the pipeline's hidden template: compare with the same one
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return siglip_standin(tmp_path_factory.mktemp("siglip") / "siglip")


def _images(n=3):
    return [Image.fromarray((np.random.RandomState(i).rand(40, 48, 3) * 255).astype("uint8")) for i in range(n)]


def test_it_loads_as_siglip_with_64_positions_and_its_sentencepiece_tokenizer(folder):
    clip = core.load(str(folder))
    assert clip.family.name == "siglip" and clip.family.pad_to == 64 and clip.family.rule == "sigmoid"
    assert type(clip.tokenizer).__name__ == "SiglipTokenizer"
    assert not clip.family.lowercase  # SiglipTokenizer lower-cases (and drops punctuation) itself
    tokens = clip.tokenizer.convert_ids_to_tokens(clip.tokenizer(TEMPLATE.format("star"))["input_ids"])
    assert tokens == ["▁this", "▁is", "▁a", "▁photo", "▁of", "▁star", "</s>"]
    tokens = core.tokenize(clip, ["a star", TEMPLATE.format("star")])
    assert tokens["input_ids"].shape == (2, 64) and tokens["attention_mask"] is None  # all 64 positions read


def test_zero_shot_probabilities_are_the_pipelines_and_need_not_sum_to_1(folder):
    """The independent oracle: transformers' zero-shot pipeline on the same folder, labels and template."""
    from transformers import pipeline

    clip = core.load(str(folder))
    ours = classify(clip, _images(), LABELS, [TEMPLATE])
    pipe = pipeline("zero-shot-image-classification", model=str(folder), device="cpu")
    theirs = []
    for image in _images():
        scores = {o["label"]: o["score"] for o in pipe(image, candidate_labels=LABELS, hypothesis_template=TEMPLATE)}
        theirs.append([scores[c] for c in LABELS])
    np.testing.assert_allclose(ours.probs.numpy(), np.array(theirs), atol=1e-4)
    assert ours.rule == "sigmoid" and clip.logit_bias == pytest.approx(-1.5)
    assert not torch.allclose(ours.probs.sum(1), torch.ones(3), atol=1e-2)  # independent, never a softmax


@pytest.mark.parametrize("package", ["sentencepiece", pytest.param("google.protobuf", marks=pytest.mark.slow)])
def test_without_its_tokenizer_packages_the_load_is_one_line(folder, package):
    """A fresh process in which the package cannot be imported (as where it is not installed): core.load
    raises ModelLoadError, one line that names SigLIP's tokenizer and the missing package."""
    code = (f"import sys, json\nsys.modules[{package!r}] = None\n"
            + ("sys.modules['google'] = None\n" if package.startswith("google") else "")
            + "import core\n"
            f"try:\n    core.load({str(folder)!r})\nexcept core.ModelLoadError as e:\n"
            "    print(json.dumps({'type': type(e).__name__, 'message': str(e)}))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    message = result["message"]
    assert result["type"] == "ModelLoadError" and "\n" not in message
    assert "SigLIP tokenizer needs a package that is not installed" in message
    assert ("SentencePiece" if package == "sentencepiece" else "protobuf").lower() in message.lower(), message
