"""Each tab's logic as pure functions: no server, no browser."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest_app import make_model_dirs, model_source
from PIL import Image

import core
from core.errors import UserInputError
from core.model import ModelLoadError
from demo.inputs.images import ImageInputError, open_image, thumbnail_uri
from demo.inputs.pairs import caption_from_name, check_dataset_source, shapes_pairs, upload_pairs
from demo.platform.config import AppConfig
from demo.platform.context import AppContext
from demo.platform.models import ModelCache
from demo.platform.lru import ByteLRU
from demo.inputs import pairs as pairs_mod
from demo.tabs.matrix import batch as mv
from demo.tabs.shared import zero_shot_scores as zv
from demo.inputs import presets
from demo.tabs.zero_shot import tab as zs


@pytest.fixture(scope="module")
def clip():
    import torch

    torch.set_num_threads(2)
    return core.load(model_source())


@pytest.fixture(scope="module")
def star() -> Image.Image:
    return Image.open(Path(__file__).resolve().parents[1] / "assets/examples/shapes_purple_star.png")


# ---- zero-shot ----

def test_presets_cover_the_issue():
    assert set(presets.CLASSNAME_PRESETS) >= {"shapes world: shapes", "CIFAR-10", "CIFAR-100", "ImageNet-1k"}
    assert set(presets.TEMPLATE_PRESETS) == {"single", "OpenAI's 7", "OpenAI's 80", "CIFAR", "shapes world"}
    for name in presets.CLASSNAME_PRESETS:
        assert presets.preset_text("classnames", name).strip()
    assert len(presets.preset_text("templates", "OpenAI's 80").splitlines()) == 80
    with pytest.raises(UserInputError, match="unknown"):
        presets.preset_text("templates", "nope")


def zero_shot(ctx, clip, images, classnames, templates, top_k=5, scale=None):
    """The tab's pipeline without the server: checks, the services' head, scores, one render."""
    names, tpls = zv.check_inputs(images, classnames, templates, ctx.config.max_prompts)
    head, cached = ctx.services.zero_shot_head(clip, names, tpls)
    s = zv.score(clip, head, images, [f"img{i}" for i in range(len(images))], "m", [])
    return s, zv.render(s, top_k, clip.logit_scale if scale is None else scale), cached


def test_zero_shot_numbers_match_a_numpy_oracle(clip, star):
    ctx = AppContext.create(AppConfig(default_model=model_source()))
    s, v, cached = zero_shot(ctx, clip, [star, star], "circle, star, square", "a photo of a {}.\na {}.", 2)
    assert not cached and len(v.label) == 2 and list(v.templates["template"])[-1].startswith("ENSEMBLE")
    img = core.encode_images(clip, [star]).numpy()[0]
    per_t = np.stack([core.encode_texts(clip, [t.format(c) for c in ("circle", "star", "square")]).numpy()
                      for t in ("a photo of a {}.", "a {}.")])  # [T, C, D]
    head = per_t.mean(0)
    head /= np.linalg.norm(head, axis=1, keepdims=True)
    np.testing.assert_allclose(s.template_cosines.numpy(), per_t @ img, atol=1e-5)
    np.testing.assert_allclose(s.cosines[0].numpy(), head @ img, atol=1e-5)
    for scale in (clip.logit_scale, 1.0, 12.5):
        v = zv.render(s, 3, scale)
        logits = scale * head @ img
        expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        got = {d["class"]: d["probability"] for d in v.data["images"][0]["top_k"]}
        np.testing.assert_allclose([got[c] for c in ("circle", "star", "square")], expected, rtol=1e-4, atol=1e-6)
        cos_t = v.data["per_template_first_image"][1]["classes"]["star"]
        assert cos_t["logit"] == pytest.approx(scale * cos_t["cosine"]) and f"Logit scale {scale:.2f}" in v.info
    assert v.templates["cosine of top-1"].iloc[0] == pytest.approx(float((per_t[0] @ img).max()), abs=1e-4)


def test_the_scale_re_renders_without_encoding(clip, star, monkeypatch):
    ctx = AppContext.create(AppConfig(default_model=model_source()))
    s, v_model, _ = zero_shot(ctx, clip, [star], "circle, star, square", "a photo of a {}.")
    monkeypatch.setattr(zv, "embed_images", lambda *a, **k: pytest.fail("re-encoded an image"))
    v_low = zv.render(s, 3, 1.0)
    assert max(v_low.label.values()) < max(v_model.label.values())  # a low scale flattens the probabilities
    assert "set by you" in v_low.info and "the model's own" in v_model.info
    for bad in (0.5, 150.5, float("nan"), "x"):
        with pytest.raises(UserInputError, match="logit scale"):
            zv.render(s, 3, bad)


def test_a_cached_head_answers_again_without_tokenizing_its_prompts_for_the_panel(clip, star, monkeypatch):
    ctx = AppContext.create(AppConfig(default_model=model_source()))
    first, _, _ = zero_shot(ctx, clip, [star], "circle, star, square", "a photo of a {}.")
    monkeypatch.setattr(zv, "model_saw", lambda *a, **k: pytest.fail("tokenized the prompts again"))
    again, view, cached = zero_shot(ctx, clip, [star, star], "circle, star, square", "a photo of a {}.")
    assert cached and again.saw is first.saw and "a photo of a star." in view.saw


def test_heads_are_cached_by_the_services_and_bounded_in_bytes(clip, monkeypatch):
    ctx = AppContext.create(AppConfig(default_model=model_source(), head_cache_mb=1))
    first, cached = ctx.services.zero_shot_head(clip, ["a", "b"], ["a photo of a {}."])
    import core.zeroshot as czs

    monkeypatch.setattr(czs, "encode_texts", lambda *a, **k: pytest.fail("encoded again"))
    again, cached_again = ctx.services.zero_shot_head(clip, ["a", "b"], ["a photo of a {}."])
    assert not cached and cached_again and again is first
    monkeypatch.undo()
    for i in range(40):  # 40 heads of 50 classes x 2 templates: far more than 1 MB in all
        ctx.services.zero_shot_head(clip, [f"c{i}-{j}" for j in range(50)], ["a {}.", "the {}."])
    assert 0 < ctx.services.heads.bytes <= 1 << 20 and len(ctx.services.heads) < 40


def test_byte_lru_computes_once_and_caches_no_failure():
    lru = ByteLRU(max_bytes=1000)
    calls, gate = [], threading.Event()

    def slow():
        calls.append(1)
        gate.wait(5)
        return b"x" * 10

    threads = [threading.Thread(target=lru.get_or_compute, args=("k", slow)) for _ in range(3)]
    [t.start() for t in threads]
    gate.set()
    [t.join() for t in threads]
    assert calls == [1] and lru.get("k") == b"x" * 10
    with pytest.raises(RuntimeError):
        lru.get_or_compute("bad", lambda: (_ for _ in ()).throw(RuntimeError("cancelled")))
    assert "bad" not in lru
    lru.put("big", b"y" * 2000)  # larger than the whole budget: not kept
    assert "big" not in lru and lru.bytes == 10


def test_weights_revision_changes_when_the_weights_do(tmp_path):
    from core.model import create

    create("tiny", seed=0).save(tmp_path / "m")
    first = core.load(str(tmp_path / "m")).revision
    create("tiny", seed=1).save(tmp_path / "m")
    assert core.load(str(tmp_path / "m")).revision != first


def test_notices_vocabulary_duplicates_and_presets():
    assert "never appeared" in zv.vocabulary_notice("shapes-tiny", ["apple", "red star"])
    assert "'apple'" in zv.vocabulary_notice("shapes-tiny", ["apple", "red star"])
    assert zv.vocabulary_notice("shapes-tiny", ["red star", "blue circle"]) is None
    assert zv.vocabulary_notice("openai/clip-vit-base-patch32", ["apple"]) is None
    assert "1 repeated class name ('cat')" in zv.duplicate_notice("cat\ndog\ncat", "a {}.")
    assert zv.duplicate_notice("cat\ndog", "a {}.") is None
    assert len(core.parse_classnames(presets.preset_text("classnames", "ImageNet-1k"))) == 1000  # no silent 998
    assert presets.matching_preset("classnames", presets.preset_text("classnames", "CIFAR-10")) == "CIFAR-10"
    assert presets.matching_preset("classnames", "cat, dog") == presets.CUSTOM
    assert presets.matching_preset("templates", "a photo of a {}.") == "single"


def test_zero_shot_bad_inputs(star):
    check = lambda imgs, c, t: zv.check_inputs(imgs, c, t, 20_000)  # noqa: E731
    with pytest.raises(UserInputError, match="no image"):
        check([], "a, b", "{}")
    with pytest.raises(UserInputError, match="no class names"):
        check([star], " , ", "{}")
    with pytest.raises(UserInputError, match="exactly one"):
        check([star], "a, b", "a photo")
    with pytest.raises(UserInputError, match="at least two"):
        check([star], "cat, cat", "{}")
    with pytest.raises(UserInputError, match="prompts"):
        check([star], presets.preset_text("classnames", "ImageNet-1k"), presets.preset_text("templates", "OpenAI's 80"))


def test_examples_exist_with_licences_and_the_bundled_model_names_them(clip):
    shapes, shape_labels, photos, labels = zs.examples()
    assert len(shapes) >= 4 and len(photos) >= 3 and len(labels) == len(photos) and len(shape_labels) == len(shapes)
    licences = (Path(__file__).resolve().parents[1] / "assets/examples/LICENSES.md").read_text()
    for row in shapes + photos:
        assert Path(row[0]).name in licences
    if clip.source != "shapes-tiny":
        return
    names = presets.preset_text("classnames", "shapes world: shapes")
    templates = presets.preset_text("templates", "shapes world")
    for (path,), label in zip(shapes, shape_labels):
        top, p = core.classify(clip, [open_image(path)], core.parse_classnames(names), core.parse_templates(templates)).top_k(1)[0][0]
        assert top == Path(path).stem.split("_")[-1] == label.split(" ")[-1] and p >= 0.9, (path, top, p)


# ---- similarity matrix ----

def batch_of(pairs):
    return mv.new_batch(pairs, "shapes world", 32)


def test_square_matrix_figures(clip):
    pairs = shapes_pairs(6, seed=1)
    r = mv.compute_matrix(clip, batch_of(pairs), "cosine")
    assert r.output.loss is not None and "loss_i" in r.figures_md and "Accuracy" in r.figures_md
    assert len(r.losses) == 6
    np.testing.assert_allclose(r.losses["row loss (image i → text)"].mean(), float(r.output.loss_i), atol=1e-3)
    heat = r.figure.data[0]
    assert heat.type == "heatmap" and np.array(heat.z).shape == (6, 6) and heat.texttemplate
    assert len(r.figure.layout.images) == 6  # row thumbnails
    assert len(r.figure.layout.shapes) == 6  # the diagonal
    assert {t.name.split(" ")[0] for t in r.figure.data[1:]} == {"row", "column"}


def test_matrix_loss_and_json_match_a_numpy_oracle(clip):
    pairs = shapes_pairs(5, seed=3)
    images = list(pairs.images)  # the batch keeps packed copies (PNG for 64-px images: lossless)
    r = mv.compute_matrix(clip, batch_of(pairs), "logits")
    img = core.encode_images(clip, images).numpy()
    txt = core.encode_texts(clip, pairs.captions).numpy()
    logits = clip.logit_scale * img @ txt.T
    log_rows = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    log_cols = logits - np.log(np.exp(logits).sum(0, keepdims=True))
    loss = (-np.diag(log_rows).mean() - np.diag(log_cols).mean()) / 2
    assert r.data["loss"] == pytest.approx(loss, rel=1e-4)
    np.testing.assert_allclose(r.data["values"], logits, rtol=1e-4, atol=1e-4)
    assert r.data["captions"] == pairs.captions and r.data["images"] == pairs.names
    assert r.data["accuracy_i2t"] == pytest.approx(float((logits.argmax(1) == np.arange(5)).mean()))


@pytest.mark.parametrize("view", [v for v in mv.VIEWS if v != mv.SIGMOID_VIEW])  # that one: test_families.py
def test_views(clip, view):
    out = mv.compute_matrix(clip, batch_of(shapes_pairs(4)), view).output
    v = mv.view_values(out, view)
    if view.startswith("softmax over rows"):
        np.testing.assert_allclose(v.sum(1), 1, atol=1e-5)
    if view.startswith("softmax over columns"):
        np.testing.assert_allclose(v.sum(0), 1, atol=1e-5)
    if view == "logits":
        np.testing.assert_allclose(v, out.cosine.numpy() * out.scale, rtol=1e-5)


def test_a_view_change_encodes_nothing_and_an_edit_only_its_caption(clip, monkeypatch):
    batch = batch_of(shapes_pairs(6))
    first = mv.compute_matrix(clip, batch, "cosine")
    texts = []
    monkeypatch.setattr(mv, "embed_images", lambda *a, **k: pytest.fail("images re-encoded"))
    monkeypatch.setattr(mv, "embed_texts", lambda c, t, *a: texts.append(list(t)) or core.encode_texts(c, t))
    mv.compute_matrix(clip, batch, "logits")
    assert texts == []
    edited = batch.captions
    edited[2] = "a blue heart"
    r = mv.compute_matrix(clip, batch, "cosine", edited)
    assert texts == [["a blue heart"]] and r.data["captions"][2] == "a blue heart"
    keep = [j for j in range(6) if j != 2]
    assert [r.data["cosine"][0][j] for j in keep] == [first.data["cosine"][0][j] for j in keep]  # other columns unchanged


def test_the_matrix_keeps_its_own_pairs(clip):
    """The batch is the one source of truth: its captions stay with its images whatever else changes."""
    batch = batch_of(shapes_pairs(4, seed=5))
    r = mv.compute_matrix(clip, batch, "cosine")
    other = shapes_pairs(8, seed=9)  # what the source controls now say; the batch is not rebuilt
    again = mv.compute_matrix(clip, batch, "cosine")
    assert again.data["captions"] == r.data["captions"] == batch.pairs.captions != other.captions[:4]
    assert mv.captions_from_frame(mv.captions_frame(other), len(batch.pairs)) is None  # a table of another batch


def test_non_square_and_edits(clip):
    pairs = shapes_pairs(4)
    r = mv.compute_matrix(clip, batch_of(pairs), "cosine", None, mv.parse_extra("a cat\n\na dog", 16))
    assert r.output.loss is None and "no loss" in r.figures_md and r.losses.empty and r.data["loss"] is None
    assert np.array(r.figure.data[0].z).shape == (4, 6)
    frame = pd.DataFrame({"image": pairs.names, "caption": ["a red circle"] * 4})
    assert mv.captions_from_frame(frame, 4) == ["a red circle"] * 4
    assert mv.captions_from_frame({"headers": ["image", "caption"], "data": frame.values.tolist()}, 4) == ["a red circle"] * 4
    assert mv.captions_from_frame(frame, 5) is None
    with pytest.raises(UserInputError, match="row 1 is empty"):
        mv.compute_matrix(clip, batch_of(pairs), "cosine", ["x", "", "y", "z"])
    with pytest.raises(UserInputError, match="unknown view"):
        mv.compute_matrix(clip, batch_of(shapes_pairs(2)), "bogus")
    with pytest.raises(UserInputError, match="limit"):
        mv.new_batch(shapes_pairs(33), "shapes world", 32)
    with pytest.raises(UserInputError, match="limit"):
        mv.parse_extra("\n".join(f"c{i}" for i in range(17)), 16)


# ---- embedding map ----

def test_startup_warmup_waits_for_the_first_answer(monkeypatch):
    import app

    assert AppConfig.from_env({"CLIP_LAB_WARMUP_DELAY": "2.5"}).warmup_delay == 2.5
    ctx = AppContext.create(AppConfig(default_model=model_source(), warmup_delay=60))
    events = []
    monkeypatch.setattr(app, "warm_umap", lambda: events.append("umap"))
    monkeypatch.setattr(pairs_mod, "prewarm", lambda c: events.append("map set"))
    thread = app.start_warmup(ctx)
    deadline = time.time() + 60
    while not ctx.models.cached() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert ctx.models.cached() and events == []  # model loaded; map work waits for the first answer
    ctx.first_answer.set()
    thread.join(10)
    assert events == ["umap", "map set"]


# ---- models, images, sources ----

def test_model_cache_allowlist_and_failures(tmp_path):
    dirs = make_model_dirs(tmp_path, model_source())
    cfg = AppConfig(default_model=model_source())
    cfg.model_dirs.append(dirs["folder"].resolve())
    cache = ModelCache(cfg)
    assert str(dirs["other"]) in cache.choices() and "openai/clip-vit-base-patch32" in cache.choices()
    assert cache.get(str(dirs["other"])).embed_dim > 0
    with pytest.raises(ModelLoadError, match="allowed folders"):
        cache.get(str(tmp_path))
    with pytest.raises(ModelLoadError, match="allowed folders"):
        cache.get(str(dirs["folder"] / ".." / ".."))
    with pytest.raises(ModelLoadError, match="not a model CLIP Lab loads"):
        cache.get(str(dirs["not_clip"]))
    with pytest.raises(ModelLoadError, match="safetensors"):
        cache.get(str(dirs["pickle_only"]))
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache|cannot be reached|not found"):
        cache.get("openai/clip-vit-base-patch32")
    with pytest.raises(ModelLoadError, match="not a known model"):
        cache.get("no such model!")


def test_a_model_trained_into_runs_can_be_picked_and_the_app_binds_loopback(tmp_path, monkeypatch):
    import demo.platform.config as context
    from core.model import create

    monkeypatch.setattr(context, "RUNS_DIR", tmp_path / "runs")
    create("tiny", seed=0).save(tmp_path / "runs" / "demo" / "model")  # what scripts/train.py exports
    cfg = AppConfig(default_model=model_source())
    cache = ModelCache(cfg)
    run_model = str(tmp_path / "runs" / "demo" / "model")
    assert run_model in cache.choices() and cache.get(run_model).embed_dim > 0  # no CLIP_LAB_MODEL_DIRS needed
    assert AppConfig.from_env({}).server_name == "127.0.0.1"
    assert AppConfig.from_env({"SPACE_ID": "user/space"}).server_name == "0.0.0.0"
    assert AppConfig.from_env({"GRADIO_SERVER_NAME": "10.0.0.2"}).server_name == "10.0.0.2"


def test_model_cache_lru_and_single_load():
    calls = []

    def loader(source):
        calls.append(source)
        time.sleep(0.05)
        return object()

    cfg = AppConfig(default_model="a/one", max_models=2)
    cache = ModelCache(cfg, loader=loader)
    threads = [threading.Thread(target=cache.get, args=("a/one",)) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert calls == ["a/one"]
    cache.get("b/two")
    cache.get("c/three")
    assert cache.cached() == ["b/two", "c/three"]


def test_open_image_refuses_bad_files(tmp_path, monkeypatch):
    text = tmp_path / "fake.png"
    text.write_text("not an image")
    with pytest.raises(ImageInputError, match="not a readable image"):
        open_image(str(text))
    big = tmp_path / "big.png"
    Image.new("RGB", (300, 300)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageInputError, match="too large"):
        open_image(str(big))
    monkeypatch.undo()
    assert open_image({"path": str(big)}).size == (300, 300)
    assert thumbnail_uri(Image.new("RGB", (100, 50))).startswith("data:image/jpeg;base64,")


def test_sources(tmp_path):
    p = tmp_path / "red_apple-2.png"
    Image.new("RGB", (20, 20), "red").save(p)
    pairs = upload_pairs([str(p)])
    assert pairs.captions == ["red apple 2"] and pairs.names == ["red_apple-2.png"]
    assert caption_from_name("x.jpg") == "x"
    with pytest.raises(UserInputError, match="no images"):
        upload_pairs([])
    with pytest.raises(UserInputError, match="allowed folders"):
        check_dataset_source(str(tmp_path), [])
    assert check_dataset_source(str(tmp_path), [tmp_path.resolve()]) == str(tmp_path.resolve())
    assert check_dataset_source("user/data", []) == "user/data"
    with pytest.raises(UserInputError, match="Hub dataset name"):
        check_dataset_source("bad name!", [])


