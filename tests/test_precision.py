"""Half precision for serving: a bf16 copy is checked against float32 on a probe, adopted by "auto" only on a
CUDA device and only when it qualifies, and never changes the logit scale; the app reads its policy."""

from __future__ import annotations

import pytest
import torch

import core.precision as precision
from core.encode import encode_images, encode_texts
from core.model import Clip
from core.precision import HalfCheck, adopt_precision, check_half, half_copy, precision_of
from demo.platform.config import AppConfig


def test_a_bf16_copy_of_the_bundled_model_qualifies_against_numpy_cosines(bundled):
    half = half_copy(bundled, "bf16")
    check = check_half(bundled, "bf16", half)
    pixels, prompts = precision.probe(bundled)
    a, b = encode_images(bundled, pixels).numpy(), encode_images(half, pixels).numpy()
    t32, t16 = encode_texts(bundled, prompts).numpy(), encode_texts(half, prompts).numpy()
    oracle = min((a * b).sum(1).min(), (t32 * t16).sum(1).min())  # every embedding is unit length
    assert check.min_cosine == pytest.approx(oracle, abs=1e-6) and 0.99 <= check.min_cosine < 1.0
    assert check.top1_agreement == ((a @ t32.T).argmax(1) == (b @ t16.T).argmax(1)).mean() == 1.0
    assert check.qualifies and "bf16 qualifies" in check.describe()
    assert precision_of(half) == "bf16" and precision_of(bundled) == "fp32"
    assert half.model.logit_scale.dtype == torch.float32  # bf16 would make exp(ln 100) 98.9
    assert torch.equal(half.model.logit_scale, bundled.model.logit_scale)


def test_an_fp16_copy_that_overflows_does_not_qualify(micro):
    with torch.no_grad():
        micro.model.visual_projection.weight.mul_(1e6)  # image embeddings beyond fp16's 65,504
    check = check_half(micro, "fp16")
    assert not check.qualifies and "does not qualify" in check.describe()


def test_auto_keeps_float32_off_cuda_and_on_zero_gpu(bundled):
    assert adopt_precision(bundled, "auto") == (bundled, None)
    assert adopt_precision(bundled, "fp32") == (bundled, None)
    served, check = adopt_precision(bundled, "bf16", checkable=False)  # cast as asked, nothing run
    assert precision_of(served) == "bf16" and check is None
    with pytest.raises(ValueError, match="auto, fp32, bf16, fp16"):
        adopt_precision(bundled, "half")


@pytest.mark.parametrize("passes", [True, False])
def test_auto_on_cuda_serves_bf16_only_when_it_qualifies(bundled, monkeypatch, passes):
    monkeypatch.setattr(Clip, "device", property(lambda self: torch.device("cuda")))
    verdict = HalfCheck("bf16", 0.999 if passes else 0.95, 1.0, 32, 8)
    monkeypatch.setattr(precision, "check_half", lambda clip, p, half=None: verdict)
    served, check = adopt_precision(bundled, "auto")
    assert check is verdict
    assert (precision_of(served) == "bf16") is passes and (served is bundled) is not passes


def test_the_app_reads_its_precision_and_refuses_an_unknown_one():
    assert AppConfig.from_env({}).precision == "auto"
    assert AppConfig.from_env({"CLIP_LAB_PRECISION": "BF16"}).precision == "bf16"
    with pytest.raises(ValueError, match="CLIP_LAB_PRECISION"):
        AppConfig.from_env({"CLIP_LAB_PRECISION": "half"})


def test_one_step_on_a_bf16_served_model_moves_its_logits_as_float32_does(bundled):
    """The similarity matrix's "one step" copies the served model: a bf16 copy would round a 1e-5 step away."""
    from core.evaluate import shapes_eval_set
    from core.microscope import one_step

    samples = shapes_eval_set(6, seed=3)
    images, captions = [s.image for s in samples], [s.caption for s in samples]
    full = one_step(bundled, images, captions, lr=1e-5)
    half = one_step(half_copy(bundled, "bf16"), images, captions, lr=1e-5)
    moved = (full.after - full.before).abs().max()
    assert moved > 1e-3 and (half.after - half.before).abs().max() > moved / 2
