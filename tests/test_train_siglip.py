"""Training a SigLIP: loss=siglip from a preset makes a SigLIP model whose bias is its own logit_bias,
exported so that transformers' SiglipModel and zero-shot pipeline read it and score it as we do."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import core
from core.encode import encode_images, encode_texts
from core.errors import UserInputError
from core.model import create
from core.shapes import ShapesWorld
from core.train import Hook, TrainConfig, latest_checkpoint, train
from core.train.distributed import add_patch_dropout
from core.train.shapes_source import ShapesPairs
from core.zeroshot import classify

from conftest import MICRO

CLASSES = ["red circle", "blue square", "green triangle", "yellow star"]
PIPELINE_TEMPLATE = ("This is a photo of {}.",)  # the pipeline's hidden template


def _cfg(out, model="tiny", **kw) -> TrainConfig:
    base = dict(output_dir=str(out), model=str(model), loss="siglip", steps=4, batch_size=8, lr=2e-3, warmup_steps=1,
                eval_every=0, save_every=2, log_every=1, num_workers=0, progress=False, seed=0)
    return TrainConfig.from_flat({**base, **kw})


def _losses(run_dir) -> list[float]:
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def _bias(folder) -> float:
    return float(load_file(str(Path(folder) / "model.safetensors"))["logit_bias"].reshape(()))


class BiasAtStart(Hook):
    def on_start(self, state):
        self.bias = float(state.towers.logit_bias().detach().reshape(()))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny-preset SigLIP trained 4 steps from scratch: (run folder, the Clip train returned)."""
    out = tmp_path_factory.mktemp("siglip") / "run"
    return out, train(_cfg(out))


def test_a_siglip_run_exports_a_siglip_model_with_its_learned_bias(run):
    from transformers import SiglipModel

    out, clip = run
    model = SiglipModel.from_pretrained(str(out / "model"))
    trained = float(clip.model.logit_bias.detach().reshape(()))
    assert float(model.logit_bias.detach().reshape(())) == trained != pytest.approx(-10.0, abs=1e-4)  # learned, from -10
    assert float(model.logit_scale.detach().exp().reshape(())) == pytest.approx(clip.logit_scale, rel=1e-6)
    assert _bias(latest_checkpoint(out)) == trained  # the checkpoint holds it in its weights too
    assert load_file(str(latest_checkpoint(out) / "loss.safetensors")) == {}  # no separate bias any more
    loaded = core.load(str(out / "model"))
    assert loaded.family.rule == "sigmoid" and loaded.family.name == "siglip"
    assert loaded.logit_bias == pytest.approx(trained, abs=1e-7) and loaded.context_length == 64


def test_the_pipeline_gives_our_probabilities(run):
    from transformers import pipeline

    out, _ = run
    images = [s.image for s in ShapesWorld(seed=3).take(4)]
    ours = classify(core.load(str(out / "model")), images, CLASSES, templates=PIPELINE_TEMPLATE).probs  # [4, 4]
    pipe = pipeline("zero-shot-image-classification", model=str(out / "model"), device="cpu")
    assert pipe.tokenizer("a", padding="max_length", max_length=64)["input_ids"].__len__() == 64
    for i, image in enumerate(images):
        scores = {r["label"]: r["score"] for r in pipe(image, candidate_labels=CLASSES)}
        torch.testing.assert_close(torch.tensor([scores[c] for c in CLASSES]), ours[i], atol=1e-4, rtol=0)
    assert float(ours.sum(dim=1).max()) < 0.99 or float(ours.sum(dim=1).min()) > 1.01  # sigmoids, not a softmax


def test_a_resumed_siglip_run_goes_on_from_the_saved_bias(tmp_path, run):
    full_dir, full = run
    train(_cfg(tmp_path / "cut", stop_at=2))
    saved = _bias(latest_checkpoint(tmp_path / "cut"))
    start = BiasAtStart()
    resumed = train(_cfg(tmp_path / "cut"), hooks=[start], start="resume")
    assert start.bias == saved != -10.0
    assert _losses(tmp_path / "cut") == pytest.approx(_losses(full_dir), abs=1e-5)
    assert float(resumed.model.logit_bias.detach().reshape(())) == pytest.approx(
        float(full.model.logit_bias.detach().reshape(())), abs=1e-6)


def test_fine_tuning_a_siglip_folder_trains_its_bias_and_tokenizes_as_inference_does(tmp_path, run):
    out, _ = run
    snapshots = []

    class Snap(Hook):
        def on_snapshot(self, state, snapshot):
            snapshots.append(snapshot)

    clip = train(_cfg(tmp_path / "ft", out / "model", steps=2, save_every=0, eval_every=1, eval_samples=8,
                      patch_dropout=0.25), hooks=[Snap()], snapshot_every=2)
    assert clip.family.rule == "sigmoid" and _bias(tmp_path / "ft" / "model") != _bias(out / "model")
    p = clip.processor  # SigLIP's mean and std, 0.5
    probe = ShapesPairs(seed=0, image_size=clip.image_size, mean=p.image_mean, std=p.image_std).probe(32)
    last = snapshots[-1]  # the data source tokenized its captions: the same embeddings as core.encode's
    torch.testing.assert_close(last.text_emb, encode_texts(clip, probe.captions), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(last.image_emb, encode_images(clip, probe.pixel_values), atol=1e-5, rtol=1e-4)
    with pytest.raises(UserInputError, match="train it with loss=siglip"):
        train(_cfg(tmp_path / "softmax", out / "model", steps=1, loss="clip"))


def test_patch_dropout_keeps_clips_cls_token_and_drops_any_siglip_patch():
    pixels = torch.randn(2, 3, 32, 32)  # 8-px patches: 16 patches
    for family, tokens in (("clip", 1 + 8), ("siglip", 8)):
        model = create(MICRO, seed=0, family=family).model
        handle = add_patch_dropout(model.vision_model, 0.5)
        model.train()
        assert model.vision_model.embeddings(pixels).shape[1] == tokens
        handle.remove()


def test_the_live_probe_matrix_of_a_siglip_run_shows_its_sigmoid_and_its_loss():
    """The Train tab's probe matrix reads a SigLIP model with its own rule: each cell's sigmoid(logit + b) and
    the sigmoid loss (NumPy), not the row softmax and CLIP's loss."""
    import numpy as np

    from core.loss import similarity
    from core.train.hooks import Snapshot
    from demo.tabs.train.figures import probe_figure
    from demo.tabs.train.live import probe_frame

    rng = np.random.default_rng(0)
    img, txt = (torch.tensor(rng.normal(size=(4, 8)), dtype=torch.float32) for _ in range(2))
    view = similarity(img, txt, 10.0, -3.0)
    frame = probe_frame(Snapshot(7, ["a"] * 4, [], img, txt, view, 0.0, False))
    logits = 10.0 * (torch.nn.functional.normalize(img, dim=-1) @ torch.nn.functional.normalize(txt, dim=-1).T).numpy()
    np.testing.assert_allclose(frame.probs_rows, 1 / (1 + np.exp(-(logits - 3.0))), atol=1e-6)
    signs = 2 * np.eye(4) - 1
    assert frame.sigmoid and frame.loss == pytest.approx(np.log1p(np.exp(-signs * (logits - 3.0))).sum() / 4, rel=1e-5)

    class Frame:
        step, probe = 7, frame
    figure = probe_figure(Frame())
    assert "sigmoid loss" in figure.layout.title.text and "sigmoid(logit + bias)" in figure.layout.annotations[1].text
