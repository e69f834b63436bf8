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
from core.model import ModelLoadError
from core.projection import ProjectionConfig
from demo import embedding_map as em
from demo import similarity_matrix as mx
from demo import zero_shot as zs
from demo.context import AppConfig, AppContext
from demo.images import ImageInputError, open_image, thumbnail_uri
from demo.models import ModelCache
from demo.sources import caption_from_name, check_dataset_source, shapes_pairs, upload_pairs


@pytest.fixture(scope="module")
def clip():
    import torch

    torch.set_num_threads(2)
    return core.load(model_source())


@pytest.fixture(scope="module")
def star() -> Image.Image:
    return Image.open(Path(__file__).resolve().parents[1] / "assets/examples/shapes_brown_star.png")


# ---- zero-shot ----

def test_presets_cover_the_issue():
    assert set(zs.CLASSNAME_PRESETS) >= {"shapes world: shapes", "CIFAR-10", "CIFAR-100", "ImageNet-1k"}
    assert set(zs.TEMPLATE_PRESETS) == {"single", "OpenAI's 7", "OpenAI's 80", "CIFAR", "shapes world"}
    for name in zs.CLASSNAME_PRESETS:
        assert zs.preset_text("classnames", name).strip()
    assert len(zs.preset_text("templates", "OpenAI's 80").splitlines()) == 80
    with pytest.raises(ValueError, match="unknown"):
        zs.preset_text("templates", "nope")


def test_zero_shot_result(clip, star):
    r = zs.run_zero_shot(clip, [star, star], ["a.png", "b.png"], "circle, star, square", "a photo of a {}.\na {}.", 2)
    assert len(r.label) == 2 and all(0 <= p <= 1 for p in r.label.values())
    assert list(r.templates["template"])[-1].startswith("ENSEMBLE")
    assert len(r.templates) == 3  # two templates + the ensemble
    assert len(r.batch) == 2 and list(r.batch["image"]) == ["a.png", "b.png"]
    assert "Logit scale" in r.info and f"{clip.logit_scale:.2f}" in r.info
    assert r.figure.data[0].type == "bar"
    again = zs.run_zero_shot(clip, [star], ["a.png"], "circle, star, square", "a photo of a {}.\na {}.", 2)
    assert "reused from the cache" in again.info


def test_zero_shot_bad_inputs(clip, star):
    with pytest.raises(ValueError, match="no image"):
        zs.run_zero_shot(clip, [], [], "a, b", "{}", 1)
    with pytest.raises(ValueError, match="no class names"):
        zs.run_zero_shot(clip, [star], ["x"], " , ", "{}", 1)
    with pytest.raises(ValueError, match="exactly one"):
        zs.run_zero_shot(clip, [star], ["x"], "a, b", "a photo", 1)
    with pytest.raises(ValueError, match="at least two"):
        zs.run_zero_shot(clip, [star], ["x"], "cat, cat", "{}", 1)
    with pytest.raises(ValueError, match="prompts"):
        zs.run_zero_shot(clip, [star], ["x"], zs.preset_text("classnames", "ImageNet-1k"),
                         zs.preset_text("templates", "OpenAI's 80"), 5)


def test_examples_exist_with_licences():
    shapes, photos, labels = zs.examples()
    assert len(shapes) >= 4 and len(photos) >= 3 and len(labels) == len(photos)
    licences = (Path(__file__).resolve().parents[1] / "assets/examples/LICENSES.md").read_text()
    for row in shapes + photos:
        assert Path(row[0]).name in licences


# ---- similarity matrix ----

def test_square_matrix_figures(clip):
    pairs = shapes_pairs(6, seed=1)
    r = mx.compute_matrix(clip, pairs, "cosine")
    assert r.output.loss is not None and "loss_i" in r.figures_md and "Accuracy" in r.figures_md
    assert len(r.losses) == 6
    np.testing.assert_allclose(r.losses["row loss (image i → text)"].mean(), float(r.output.loss_i), atol=1e-3)
    heat = r.figure.data[0]
    assert heat.type == "heatmap" and np.array(heat.z).shape == (6, 6) and heat.texttemplate
    assert len(r.figure.layout.images) == 6  # row thumbnails
    assert len(r.figure.layout.shapes) == 6  # the diagonal
    assert {t.name.split(" ")[0] for t in r.figure.data[1:]} == {"row", "column"}


@pytest.mark.parametrize("view", list(mx.VIEWS))
def test_views(clip, view):
    out = mx.compute_matrix(clip, shapes_pairs(4), view).output
    v = mx.view_values(out, view)
    if view.startswith("softmax over rows"):
        np.testing.assert_allclose(v.sum(1), 1, atol=1e-5)
    if view.startswith("softmax over columns"):
        np.testing.assert_allclose(v.sum(0), 1, atol=1e-5)
    if view == "logits":
        np.testing.assert_allclose(v, out.cosine.numpy() * out.scale, rtol=1e-5)


def test_non_square_and_edits(clip):
    pairs = shapes_pairs(4)
    r = mx.compute_matrix(clip, pairs, "cosine", mx.parse_extra("a cat\n\na dog"))
    assert r.output.loss is None and "no loss" in r.figures_md and r.losses.empty
    assert np.array(r.figure.data[0].z).shape == (4, 6)
    frame = pd.DataFrame({"image": pairs.names, "caption": ["a red circle"] * 4})
    assert mx.captions_from_frame(frame, 4) == ["a red circle"] * 4
    assert mx.captions_from_frame(frame, 5) is None
    pairs.captions = ["x", "", "y", "z"]
    with pytest.raises(ValueError, match="row 1 is empty"):
        mx.compute_matrix(clip, pairs, "cosine")
    with pytest.raises(ValueError, match="unknown view"):
        mx.compute_matrix(clip, shapes_pairs(2), "bogus")
    with pytest.raises(ValueError, match="limit"):
        mx.compute_matrix(clip, shapes_pairs(mx.MAX_N + 1), "cosine")
    with pytest.raises(ValueError, match="limit"):
        mx.parse_extra("\n".join(f"c{i}" for i in range(mx.MAX_EXTRA + 1)))


# ---- embedding map ----

def test_map_pca_2d_3d_with_prompts(clip):
    pairs = shapes_pairs(30)
    img, txt = core.encode_images(clip, pairs.images), core.encode_texts(clip, pairs.captions)
    prompts, names = em.prompt_embeddings(clip, "circle\nstar", "a {}.")
    r = em.compute_map(img, txt, pairs, ProjectionConfig("pca", 2), "modality", prompts=prompts, prompt_names=names)
    kinds = {t.name: t for t in r.figure.data}
    assert {"images", "captions", "class prompts", "image–caption link"} <= set(kinds)
    assert kinds["images"].marker.symbol == "circle" and kinds["captions"].marker.symbol == "diamond"
    assert kinds["images"].customdata[0][2].startswith("data:image/jpeg;base64,")
    assert r.coords.shape == (62, 2) and "Modality gap" in r.gap_md and "Centred" in r.gap_md
    r3 = em.compute_map(img, txt, pairs, ProjectionConfig("pca", 3), "shape", centred=True, show_links=False)
    assert r3.coords.shape == (60, 3) and all(t.type == "scatter3d" for t in r3.figure.data)
    assert "centred" in r3.figure.layout.title.text
    with pytest.raises(ValueError, match="colour"):
        em.compute_map(img, txt, pairs, ProjectionConfig("pca"), "flavour")


def test_map_embedding_cache(clip):
    ctx = AppContext.create(AppConfig(default_model=model_source()))
    spec = em.SourceSpec("shapes world", 20, 3, "eval")
    first = em.encoded_set(ctx, clip, spec)
    assert em.encoded_set(ctx, clip, spec) is first


def test_map_set_is_encoded_once_under_concurrent_requests(clip, monkeypatch):
    ctx = AppContext.create(AppConfig(default_model=model_source()))
    spec = em.SourceSpec("shapes world", 12, 5, "eval")
    calls, real = [], em.build_pairs
    monkeypatch.setattr(em, "build_pairs", lambda *a, **k: calls.append(1) or (time.sleep(0.2), real(*a, **k))[1])
    results = [None] * 3

    def ask(i):
        results[i] = em.encoded_set(ctx, clip, spec)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(calls) == 1 and results[0] is results[1] is results[2]


def test_startup_warmup_waits_for_the_first_answer(monkeypatch):
    import app
    import core.projection

    assert AppConfig.from_env({"CLIP_LAB_WARMUP_DELAY": "2.5"}).warmup_delay == 2.5
    ctx = AppContext.create(AppConfig(default_model=model_source(), warmup_delay=60))
    events = []
    monkeypatch.setattr(core.projection, "start_umap_warmup", lambda: events.append("umap"))
    monkeypatch.setattr(em, "prewarm", lambda c: events.append("map set"))
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
    with pytest.raises(ModelLoadError, match="not a CLIP model"):
        cache.get(str(dirs["not_clip"]))
    with pytest.raises(ModelLoadError, match="safetensors"):
        cache.get(str(dirs["pickle_only"]))
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache|cannot be reached|not found"):
        cache.get("openai/clip-vit-base-patch32")
    with pytest.raises(ModelLoadError, match="not a known model"):
        cache.get("no such model!")


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
    with pytest.raises(ValueError, match="no images"):
        upload_pairs([])
    with pytest.raises(ValueError, match="allowed folders"):
        check_dataset_source(str(tmp_path), [])
    assert check_dataset_source(str(tmp_path), [tmp_path.resolve()]) == str(tmp_path.resolve())
    assert check_dataset_source("user/data", []) == "user/data"
    with pytest.raises(ValueError, match="Hub dataset name"):
        check_dataset_source("bad name!", [])


def test_unexpected_errors_reach_the_user_generically_and_the_log_in_full(caplog):
    import gradio as gr

    from demo.common import user_errors

    @user_errors
    def broken():
        raise KeyError("secret/internal/path")

    @user_errors
    def bad_input():
        raise ValueError("no class names given\nsecond line")

    with caplog.at_level("ERROR", logger="clip_lab"), pytest.raises(gr.Error) as err:
        broken()
    assert "internal error (KeyError)" in str(err.value) and "secret" not in str(err.value)
    assert "secret/internal/path" in caplog.text  # the trace goes to the server log
    with pytest.raises(gr.Error, match="no class names given") as err:
        bad_input()
    assert "second line" not in str(err.value)  # one line for the user
