"""The embedding-map tab's logic without a server: state, figure, colours, ranges, JSON, handlers."""

from __future__ import annotations

import base64
import inspect
import io
import threading
import time

import gradio as gr
import numpy as np
import pytest
from conftest_app import model_source
from PIL import Image

import core
from core.errors import UserInputError
from core.projection import ProjectionConfig, centre_modalities, modality_gap
from core.shapes import COLOURS
from demo.inputs.pairs import shapes_pairs
from demo.platform.config import AppConfig
from demo.platform.context import AppContext
from demo.inputs import pairs as pairs_mod
from demo.tabs.map import maps as em
from demo.platform.contract import Call, endpoint, public_parameters
from demo.tabs.map import tab as map_tab
from demo.tabs.shared import map_figure as mf


@pytest.fixture(scope="module")
def clip():
    import torch

    torch.set_num_threads(2)
    return core.load(model_source())


@pytest.fixture(scope="module")
def encoded(clip):
    pairs = shapes_pairs(60)
    return pairs, core.encode_images(clip, pairs.images).numpy(), core.encode_texts(clip, pairs.captions).numpy()


def _state(encoded, method="pca", dims=2, prompts=None, names=None):
    pairs, img, txt = encoded
    return em.new_state(em.MapRequest("m", ("k",), None, ProjectionConfig(method, dims)), pairs, img, txt, prompts, names)


@pytest.fixture()
def counted(monkeypatch):
    """Count calls of the projection the tab uses."""
    calls, real = [], em.project
    monkeypatch.setattr(em, "project", lambda x, config, check=None: calls.append(config) or real(x, config, check))
    return calls


def _points(fig, kind=None):
    return [t for t in fig.data if (t.meta or {}).get("kind") in ((kind,) if kind else ("image", "caption"))]


def test_map_pca_2d_3d_with_prompts(clip, encoded):
    prompts, names = em.prompt_embeddings(AppContext.create(AppConfig()), clip, "circle\nstar", "a {}.")
    st = _state(encoded, prompts=prompts.numpy(), names=names)
    fig = em.render(st, "modality", centred=False)
    by_name = {t.name: t for t in fig.data}
    assert {"images", "captions", "class prompts", "image–caption link"} <= set(by_name)
    assert by_name["images"].marker.symbol == "circle" and by_name["captions"].marker.symbol == "diamond"
    assert list(by_name["images"].customdata) == list(range(60))  # each point carries its pair index only
    assert fig.layout.meta["atlas"].startswith("data:image/jpeg;base64,") and fig.layout.meta["captions"] == st.captions
    assert em.coordinates(st, False).shape == (122, 2)
    md = em.gap_markdown(st.gap, False)
    assert "Modality gap" in md and "Centred" in md and "raw embeddings" in md
    st3 = _state(encoded, dims=3)
    fig3 = em.render(st3, "shape", centred=True, links=False)
    assert em.coordinates(st3, True).shape == (120, 3) and all(t.type == "scatter3d" for t in fig3.data)
    assert "centred" in fig3.layout.title.text and not _points(fig3, "link")
    with pytest.raises(UserInputError, match="colour"):
        em.render(st, "flavour", False)


def test_colour_by_colour_uses_the_named_colour(encoded):
    fig = em.render(_state(encoded), "colour", False)
    traces = _points(fig)
    assert {t.name for t in traces} <= set(COLOURS) and len({t.name for t in traces}) >= 5
    for t in traces:
        r, g, b = COLOURS[t.name]
        assert t.marker.color == f"rgb({r},{g},{b})", t.name
    # labels that are no colour name get the palette, each value its own colour
    assert mf.group_colours(["teal", "red", "n/a"], "colour") == {"teal": mf.PALETTE[0], "red": "rgb(215,30,35)",
                                                                   "n/a": mf.PALETTE[1]}
    assert len(set(mf.group_colours([str(i) for i in range(8)], "shape").values())) == 8


def test_held_out_legend_is_readable(encoded):
    pairs = encoded[0]
    values = mf.label_values(pairs.labels, "held_out", len(pairs))
    assert set(values) <= {"held-out combination", "seen in training"} and "seen in training" in values
    names = {t.name for t in _points(em.render(_state(encoded), "held_out", False))}
    assert names <= {"held-out combination", "seen in training"}


def test_recolouring_links_and_centring_do_not_project_again(encoded, counted):
    st = _state(encoded)
    em.render(st, "modality", False)
    assert len(counted) == 1
    for colour_by in ("colour", "shape", "held_out", "modality"):
        em.render(st, colour_by, False, links=colour_by != "shape")
    assert len(counted) == 1  # colour-by and links redraw from the state
    em.render(st, "colour", True)
    assert len(counted) == 2  # the centred map, once
    for centred in (False, True, False, True):
        em.render(st, "colour", centred)
        em.map_data(st, centred)
    assert len(counted) == 2
    np.testing.assert_allclose(em.coordinates(st, True), em.project(
        np.concatenate(centre_modalities(encoded[1], encoded[2])[:2]), ProjectionConfig("pca", 2)), atol=1e-5)


@pytest.mark.parametrize("dims", [2, 3])
def test_links_are_drawn_in_2d_and_3d(encoded, dims):
    fig = em.render(_state(encoded, dims=dims), "modality", False, links=True)
    (link,) = _points(fig, "link")
    assert link.type == ("scatter3d" if dims == 3 else "scatter") and link.mode == "lines"
    x = np.asarray(link.x, np.float64)
    assert len(x) == 3 * 60 and np.isnan(x[2::3]).all() and np.isfinite(x[0::3]).all()
    if dims == 3:  # WebGL drops translucent 3D lines: opaque, and not a hairline
        assert link.line.color.startswith("rgb(") and link.line.width >= 2
    else:
        assert float(link.line.color.rsplit(",", 1)[1].rstrip(")")) >= 0.04


def test_robust_axis_ranges_ignore_outliers():
    rng = np.random.default_rng(0)
    v = rng.normal(size=3000)
    v[:5] = 1000.0  # a few outliers
    a, b = mf.robust_range(v)
    assert -5 < a < -2 and 2 < b < 5
    w = rng.uniform(-1, 1, size=3000)  # no outliers: every point is shown
    a, b = mf.robust_range(w)
    assert a <= w.min() and b >= w.max() and b - a < 2.2
    coords = rng.normal(size=(4000, 2)).astype(np.float32)
    coords[0] = 500
    n = 2000
    fig = mf.map_figure(coords, n, ["c"] * n, ["#"] * n, None, "modality", [], None, False)
    assert fig.layout.xaxis.range[1] < 10 and fig.layout.yaxis.range[1] < 10
    big, small = mf.marker_style(5000, False), mf.marker_style(500, False)
    assert big["size"] < small["size"] and big["image"] < small["image"]
    assert fig.data[0].type == "scatter" and mf.map_figure(
        np.zeros((6000, 2), np.float32), 3000, ["c"] * 3000, ["#"] * 3000, None, "modality", [], None).data[1].type == "scattergl"


def test_thumbnail_sheet_holds_each_pair_at_its_index():
    images = [Image.new("RGB", (64, 64), (i * 9 % 256, 255 - i * 5, (i * 37) % 256)) for i in range(30)]
    atlas = mf.thumbnail_atlas(images, tile=16)
    sheet = Image.open(io.BytesIO(base64.b64decode(atlas.uri.split(",", 1)[1]))).convert("RGB")
    assert atlas.cols == 6 and sheet.size == (96, 80)
    arr = np.asarray(sheet, np.float32)
    for i in (0, 7, 29):
        r, c = divmod(i, atlas.cols)
        tile = arr[r * 16 + 3:r * 16 + 13, c * 16 + 3:c * 16 + 13].reshape(-1, 3).mean(0)
        np.testing.assert_allclose(tile, images[i].getpixel((0, 0)), atol=12)


def test_map_data_has_settings_gap_and_every_point(encoded):
    st = _state(encoded, dims=3)
    data = em.map_data(st, centred=True)
    assert data["projection"] == {"method": "pca", "dims": 3, "n_neighbors": 15, "min_dist": 0.1, "seed": 0,
                                  "n_epochs": 200, "centred": True}
    g = modality_gap(encoded[1], encoded[2])
    assert data["gap"]["raw"]["gap"] == pytest.approx(g.gap, abs=1e-4)
    centred_gap = modality_gap(*centre_modalities(encoded[1], encoded[2])[:2]).gap
    assert data["gap"]["centred"]["gap"] == pytest.approx(centred_gap, abs=1e-4) and centred_gap < g.gap / 3
    assert 0 <= data["gap"]["raw"]["top1"] <= 1
    pts = data["points"]
    assert len(pts) == 120 and pts[0]["kind"] == "image" and pts[60]["kind"] == "caption" and pts[60]["index"] == 0
    assert pts[60]["caption"] == st.captions[0] and set(pts[0]) == {"kind", "index", "caption", "x", "y", "z"}
    assert all(round(p["x"], 4) == p["x"] for p in pts)
    np.testing.assert_allclose([p["z"] for p in pts], em.coordinates(st, True)[:, 2], atol=1e-4)


def test_class_prompts_need_names_and_templates(clip):
    ctx = AppContext.create(AppConfig(max_map_class_prompts=3))
    for names, templates, message in [(None, "a {}.", "no class names"), ("", "a {}.", "no class names"),
                                      ("cat", None, "no templates"), ("a, b, c, d", "a {}.", "limit is 3")]:
        with pytest.raises(UserInputError, match=message):
            em.prompt_embeddings(ctx, clip, names, templates)
    emb, names = em.prompt_embeddings(ctx, clip, "circle, star", "a {}.")
    assert emb.shape == (2, clip.embed_dim) and names == ["circle", "star"]
    assert len(ctx.services.heads) == 1  # the head comes from the services' cache


def _tab(ctx):
    with gr.Blocks() as blocks:
        map_tab.build_tab(ctx, gr.State(ctx.config.default_model), gr.Textbox(), gr.Textbox())
    return {f.name: f for f in blocks.fns.values()}


def test_handlers_named_documented_and_drawn_once(clip, counted):
    ctx = AppContext.create(AppConfig(default_model=model_source()))
    params = [p.name for p in public_parameters(map_tab.embedding_map)]
    assert set(map_tab.SETTINGS) <= set(params)
    assert all(inspect.signature(map_tab.embedding_map).parameters[p].default is None for p in params)
    doc = map_tab.embedding_map.__doc__
    assert "Args:" in doc and all(f"{p}:" in doc for p in params if p not in ("model_name", "map_state"))
    args = dict(source="shapes world", n=200, seed=0, split="eval", method="PCA", dims=3, n_neighbors=10,
                min_dist=0.1, colour_by="colour", centred=False, links=True, model_name=model_source())
    call = Call(ctx)
    fig, md, data, st = map_tab.embedding_map(call, **args)
    assert len(counted) == 1 and data["projection"]["dims"] == 3 and "raw embeddings" in md
    again = map_tab.embedding_map(call, **args, map_state=st)  # same settings: the state's map, no new projection
    assert again[3] is st and len(counted) == 1
    map_tab.redraw(call, st, "shape", False, False)
    assert len(counted) == 1
    fig_c, md_c, data_c, _ = map_tab.centre(call, **{**args, "centred": True}, map_state=st)
    assert len(counted) == 2 and "centred (gap removed)" in md_c and "Settings changed" not in md_c
    settings = {k: v for k, v in args.items() if k not in ("colour_by", "links")}
    assert "Settings changed: press Draw map" in map_tab.mark(call, **{**settings, "n_neighbors": 20}, map_state=st)
    assert "Settings changed" not in map_tab.mark(call, **settings, map_state=st)
    assert "Settings changed: press Draw map" in map_tab.mark(call, **{**settings, "model_name": "other"}, map_state=st)
    assert map_tab.mark(call, **settings, map_state=None) is not None  # no map yet: nothing to mark (a skip)
    draw = endpoint(ctx, map_tab.embedding_map)  # what Gradio calls: the contract's checks and error channel
    with pytest.raises(gr.Error, match="between 200 and 5000"):
        draw(**dict(args, n=100), progress=None)
    with pytest.raises(gr.Error, match="no class names"):
        draw(**dict(args, use_prompts=True, n=300), progress=None)


def test_map_embedding_cache(clip):
    ctx = AppContext.create(AppConfig(default_model=model_source()))
    spec = pairs_mod.SourceSpec("shapes world", 20, 3, "eval")
    first = pairs_mod.encoded_set(ctx, clip, spec)
    assert pairs_mod.encoded_set(ctx, clip, spec) is first


def test_map_set_is_encoded_once_under_concurrent_requests(clip, monkeypatch):
    ctx = AppContext.create(AppConfig(default_model=model_source()))
    spec = pairs_mod.SourceSpec("shapes world", 12, 5, "eval")
    calls, real = [], pairs_mod.build_pairs
    monkeypatch.setattr(pairs_mod, "build_pairs", lambda *a, **k: calls.append(1) or (time.sleep(0.2), real(*a, **k))[1])
    results = [None] * 3

    def ask(i):
        results[i] = pairs_mod.encoded_set(ctx, clip, spec)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(calls) == 1 and results[0] is results[1] is results[2]


def test_a_sessions_map_never_keeps_a_set_the_cache_let_go(clip):
    """A drawn map refers to the set cache's embeddings weakly: once the cache lets the set go, nothing
    of it stays alive in the session, and a new centring asks for Draw again instead of failing oddly."""
    import gc
    import weakref

    pairs = shapes_pairs(30)
    img, txt = core.encode_images(clip, pairs.images), core.encode_texts(clip, pairs.captions)
    st = em.new_state(em.MapRequest("m", ("k",), None, ProjectionConfig("pca", 2)), pairs, img, txt)
    assert em.coordinates(st, False).shape == (60, 2)  # drawn while the cache holds the set
    kept = weakref.ref(img)
    del img, txt  # the cache evicts the set
    gc.collect()
    assert kept() is None
    assert em.coordinates(st, False).shape == (60, 2)  # what was drawn stays drawn
    with pytest.raises(UserInputError, match="press Draw again"):
        em.coordinates(st, True)
