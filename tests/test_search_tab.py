"""The Search tab and the saliency views: pure logic against core.search and NumPy, then the running
app through gradio_client (index the shapes world, a text query ranked as a NumPy brute force over the
same embeddings, a hit's saliency and caption rank, the /saliency endpoint, refusals, the API page's
snippets and the MCP tools)."""

from __future__ import annotations

import json
import re
import statistics
import time
import urllib.request

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest_app import ROOT, model_source, running_app
from PIL import Image

from core.errors import UserInputError
from core.search import caption_rank, retrieval_report, search
from demo.inputs.pairs import Pairs
from demo.tabs.search.index import (
    HeldSet,
    SearchIndex,
    cosine_counts,
    gallery_items,
    histogram_figure,
    hit_markdown,
    results_data,
    retrieval_markdown,
    retrieval_numbers,
    run_query,
)
from demo.tabs.search.tab import MAX_N, index_spec
from demo.tabs.shared.saliency import SaliencyView, colormap, model_square, overlay, saliency_data

STAR = str(ROOT / "assets/examples/shapes_purple_star.png")


def _unit(n, d, seed=0):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _index(n=300, d=32, captions=True, thumb=None):
    img = _unit(n, d)
    txt = F.normalize(img + 0.8 * _unit(n, d, seed=1), dim=-1)  # each caption near its image
    thumb = thumb or Image.new("RGB", (64, 64), "red")
    pairs = Pairs([thumb] * n, [f"caption {i}" for i in range(n)], [f"#{i}" for i in range(n)])
    return SearchIndex("m", ("m", "r"), ("set",), "shapes world", "test set",
                       HeldSet(pairs, img, txt if captions else None, strong=True))


# ---------------------------------------------------------------- pure view logic


def test_blockwise_retrieval_numbers_equal_retrieval_report():
    idx = _index(300)
    direct = retrieval_report(idx.image_emb, idx.text_emb)
    blocks = retrieval_numbers(idx.image_emb, idx.text_emb, chunk=64, direct_max=0)  # five blocks, the last short
    assert set(blocks) == set(direct)
    for key, value in direct.items():
        assert blocks[key] == pytest.approx(value, abs=1e-9), key
    assert retrieval_numbers(idx.image_emb, idx.text_emb) == direct  # small sets: retrieval_report itself


def test_query_is_core_search_and_a_numpy_brute_force():
    idx = _index(500, 48)
    t, i = _unit(1, 48, seed=5)[0], _unit(1, 48, seed=6)[0]
    results, sims = run_query(idx, t, i, 0.3, 7, "blue")
    q = 0.3 * t.numpy() + 0.7 * i.numpy()
    brute = idx.image_emb.numpy() @ (q / np.linalg.norm(q))
    assert results.hits == np.argsort(-brute)[:7].tolist()
    np.testing.assert_allclose(results.scores, brute[results.hits], atol=1e-6)
    np.testing.assert_allclose(sims.numpy(), brute, atol=1e-6)
    core_idx, core_cos = search(idx.image_emb, results.query, k=7)
    assert core_idx.tolist() == results.hits and np.allclose(core_cos.numpy(), results.scores)
    assert results.describe() == 'the image and the text "blue" (text weight 0.30)'
    with pytest.raises(UserInputError):
        run_query(idx, None, None, 0.5, 5)


def test_histogram_gallery_and_data_describe_the_hits():
    idx = _index(400)
    results, sims = run_query(idx, _unit(1, 32, seed=3)[0], None, 0.5, 12)
    counts, edges = cosine_counts(sims)
    assert counts.sum() == 400 and len(edges) == len(counts) + 1
    fig = histogram_figure(counts, edges, results, idx.n)
    bars, marks = fig.data
    assert list(bars.y) == counts.tolist() and fig.layout.yaxis.type == "log"
    assert list(marks.x) == results.scores and list(marks.customdata) == list(range(1, 13))
    assert fig.layout.shapes[0].x0 == results.scores[-1]  # the k-th cosine
    items = gallery_items(idx, results)
    assert [c for _, c in items][:2] == [f"#1 · {results.scores[0]:.3f}", f"#2 · {results.scores[1]:.3f}"]
    assert items[0][0].size == (128, 128)  # 64-px thumbnails enlarged 2x, crisp
    data = results_data(idx, results, counts, edges)
    assert [h["index"] for h in data["hits"]] == results.hits and data["hits"][0]["caption"] == f"caption {results.hits[0]}"
    assert data["histogram"]["counts"] == counts.tolist()
    json.dumps(data)


def test_a_hits_caption_rank_is_core_caption_rank():
    idx = _index(200)
    results, _ = run_query(idx, idx.text_emb[17], None, 0.5, 5)
    rank = results.hits.index(17) + 1
    text = hit_markdown(idx, results, rank)
    r = caption_rank(idx.image_emb[17], idx.text_emb, 17)
    assert f"ranked **{r:,}** of 200 captions" in text and '"caption 17"' in text
    no_captions = _index(200, captions=False)
    assert "ranked" not in hit_markdown(no_captions, run_query(no_captions, idx.text_emb[17], None, 0.5, 5)[0], 1)
    assert "not shown" in retrieval_markdown(no_captions)


def test_query_work_does_not_grow_in_python_with_n():
    """10,000 x 512 (ViT-B/32's width): the whole view side of a query stays far inside 200 ms."""
    idx = _index(10_000, 512)
    times = []
    for seed in range(5):
        t0 = time.perf_counter()
        results, sims = run_query(idx, _unit(1, 512, seed=seed)[0], None, 0.5, 50)
        counts, edges = cosine_counts(sims)
        histogram_figure(counts, edges, results, idx.n), gallery_items(idx, results), results_data(idx, results, counts, edges)
        times.append(time.perf_counter() - t0)
    assert statistics.median(times) < 0.2, times


def test_index_spec_limits():
    assert index_spec(None, None, None, None, None, None, None, None, None).n == 500
    assert index_spec("shapes world", MAX_N, 0, "train", None, None, None, None, None).n == 10_000
    for bad in (dict(n=MAX_N + 1), dict(n=5), dict(source="bogus"), dict(split="test")):
        args = {"source": "shapes world", "n": 500, "split": "eval", **bad}
        with pytest.raises(UserInputError):
            index_spec(args["source"], args["n"], 0, args["split"], None, None, None, None, None)


def test_colormap_overlay_and_model_square():
    ends = colormap(np.array([[0.0, 1.0]]))
    assert ends[0, 0].tolist() == [0, 0, 4] and ends[0, 1].tolist() == [252, 255, 164]
    ramp = colormap(np.linspace(0, 1, 50)[None]).astype(float)[0] @ [0.299, 0.587, 0.114]
    assert np.all(np.diff(ramp) > 0)  # brightness rises with the value: readable without colour
    base = np.full((256, 256, 3), 100, np.uint8)
    grid = np.arange(16, dtype=np.float32).reshape(4, 4)
    view = SaliencyView(base, grid, "relevance", "x")
    assert np.array_equal(np.asarray(overlay(view, 0.0)), base)
    full = np.asarray(overlay(view, 1.0))  # the heat covers each pixel in proportion to its value
    assert full.shape == (256, 256, 3) and full[0, 0].tolist() == [100, 100, 100] and full[-1, -1].tolist() == [252, 255, 164]
    half = np.asarray(overlay(view, 0.5))[-1, -1].astype(float)
    assert np.allclose(half, (np.array([100, 100, 100]) + [252, 255, 164]) / 2, atol=1)
    data = saliency_data(view)
    assert data["grid"] == [4, 4] and data["peak"] == {"row": 3, "col": 3} and data["map"][3][3] == 15.0
    # the ring: the peak cell (3, 3) pulled toward its neighbours by their excess over the median 7.5:
    # rows (2 * (2.5 + 3.5) + 3 * (6.5 + 7.5)) / 20 = 2.7 cells, cols (2 * (2.5 + 6.5) + 3 * (3.5 + 7.5)) / 20 = 2.55
    assert data["point"] == {"y": 0.8, "x": 0.7625}
    white = np.argwhere((full == 255).all(-1))  # [K, 2]: the ring's white pixels
    distance = np.hypot(white[:, 0] - 0.8 * 256, white[:, 1] - 0.7625 * 256)
    assert len(white) > 20 and distance.max() <= 256 / 28 + 1.5 and distance.min() >= 256 / 28 - 2.5

    class Processor:
        do_center_crop = True

    class FakeClip:
        processor = Processor()

    assert model_square(FakeClip(), Image.new("RGB", (300, 200))).size == (200, 200)


def test_a_sessions_index_never_keeps_a_set_the_cache_let_go(clip):
    """Sessions hold their index weakly: the set cache alone bounds the memory of every session's sets
    together, and an index whose set was evicted asks for Index again instead of keeping it alive."""
    import gc
    import weakref

    from demo.inputs.pairs import SourceSpec
    from demo.platform.config import AppConfig
    from demo.platform.context import AppContext
    from demo.platform.jobs import Job
    from demo.tabs.search.index import index_markdown
    from demo.tabs.search.tab import build_index

    with pytest.raises(UserInputError, match="more than this server keeps in memory"):
        build_index(AppContext.create(AppConfig(set_cache_mb=1)), clip, "m", SourceSpec("shapes world", 100, 1), None, Job())
    ctx = AppContext.create(AppConfig(set_cache_mb=2))  # room for one set of 100 pairs (1.3 MB) at a time
    first = build_index(ctx, clip, "m", SourceSpec("shapes world", 100, 1), None, Job())
    assert first.n == 100 and len(first.captions) == 100
    kept = weakref.ref(first.image_emb)
    second = build_index(ctx, clip, "m", SourceSpec("shapes world", 100, 2), None, Job())
    gc.collect()
    assert kept() is None  # evicted: no session keeps the first set's embeddings alive
    with pytest.raises(UserInputError, match="press Index again"):
        first.image_emb
    assert second.image_emb.shape == (100, second.held.dim)
    assert "Indexed 100 images" in index_markdown(first)  # what it was is still said without the set


# ---------------------------------------------------------------- the running app

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

ENDPOINTS = ("/search_index", "/search", "/search_hit", "/saliency")


@pytest.fixture(scope="module")
def url():
    with running_app() as u:
        yield u


@pytest.fixture(scope="module")
def client(url):
    return Client(url, verbose=False)


@pytest.fixture(scope="module")
def clip():
    from core.model import load

    return load(model_source())


@pytest.fixture(scope="module")
def indexed(client):
    status, retrieval = client.predict(source="shapes world", n=300, seed=0, split="eval", api_name="/search_index")
    return status, retrieval


def test_index_reports_the_set_and_its_retrieval(indexed):
    status, retrieval = indexed
    assert "Indexed 300 images" in status and "shapes world, eval split, seed 0" in status
    assert "R@1" in retrieval and "image → its caption" in retrieval and "caption → its image" in retrieval


def test_text_query_ranks_as_numpy_over_the_same_embeddings(client, indexed, clip):
    import core
    from demo.inputs.pairs import shapes_pairs
    from demo.platform.gpu import CHUNK_IMAGES

    gallery, plot, summary, data = client.predict(text_query="a red circle", k=10, api_name="/search")
    pairs = shapes_pairs(300, 0, "eval")
    emb = core.encode_images(clip, pairs.images, batch_size=CHUNK_IMAGES).numpy()  # [300, D]
    q = core.encode_texts(clip, ["a red circle"])[0].numpy()
    sims = emb @ (q / np.linalg.norm(q))
    order = np.argsort(-sims)
    got = [h["index"] for h in data["hits"]]
    cos = np.array([h["cosine"] for h in data["hits"]])
    np.testing.assert_allclose(cos, sims[got], atol=1e-4)  # each hit's cosine is its brute-force cosine
    assert np.all(np.diff(cos) <= 1e-7)
    others = np.setdiff1d(np.arange(300), got)
    assert sims[others].max() <= cos.min() + 1e-4  # nothing left out beats a hit (beyond float noise)
    if np.diff(-sims[order[:11]]).min() > 1e-4:  # no near-ties: exactly NumPy's order
        assert got == order[:10].tolist()
    assert [h["caption"] for h in data["hits"]] == [pairs.captions[i] for i in got]
    assert len(gallery) == 10 and gallery[0]["caption"].startswith("#1 · ")
    assert sum(data["histogram"]["counts"]) == 300 and "Top 10 of 300" in summary
    assert data["timings_ms"]["handler"] < 1000


def test_a_hits_saliency_has_the_models_grid_and_its_caption_rank(client, indexed, clip):
    from core.saliency import grid_size

    client.predict(text_query="a red circle", k=5, api_name="/search")
    picture, about, data = client.predict(rank=2, method="relevance", opacity=0.6, api_name="/search_hit")
    g = grid_size(clip.model)
    grid = np.array(data["map"])
    assert data["grid"] == [g, g] and grid.shape == (g, g) and np.isfinite(grid).all() and grid.std() > 0
    assert "Hit #2" in about and re.search(r"ranked \*\*[\d,]+\*\* of 300 captions", about)
    assert Image.open(picture).size[0] >= 256
    _, _, centre = client.predict(rank=2, method="centre", api_name="/search_hit")
    assert np.argmax(np.array(centre["map"])) in {(g // 2 - 1) * g + g // 2 - 1, (g // 2) * g + g // 2}


def test_image_and_combined_queries(client, indexed):
    _, _, summary, data = client.predict(text_query="", image=handle_file(STAR), k=5, api_name="/search")
    assert "the query image" in summary and len(data["hits"]) == 5
    _, _, summary, both = client.predict(text_query="a blue star", image=handle_file(STAR), text_weight=0.8, k=5,
                                         api_name="/search")
    assert "text weight 0.80" in summary and both["query"]["image"] and both["query"]["text"] == "a blue star"


def test_saliency_endpoint_returns_a_finite_map_of_the_grid(client, clip):
    from core.saliency import METHODS, grid_size

    g = grid_size(clip.model)
    for method in METHODS:
        picture, about, data = client.predict(image=handle_file(STAR), text="a purple star", method=method,
                                              api_name="/saliency")
        grid = np.array(data["map"])
        assert grid.shape == (g, g) and np.isfinite(grid).all() and data["method"] == method, method
        assert method in about and Image.open(picture).mode == "RGB"


@pytest.mark.parametrize("endpoint, kwargs, message", [
    ("/search_index", dict(n=20_000), "N must be between|maximum"),
    ("/search_index", dict(source="uploaded images"), "no images uploaded"),
    ("/search", dict(text_query="", image=None), "give a text, an image"),
    ("/search", dict(k=0), "top-k|minimum"),
    ("/saliency", dict(image=None), "no image"),
    ("/saliency", dict(image="STAR", method="bogus"), "unknown saliency method|bogus"),
])
def test_refusals_say_what_to_change(url, endpoint, kwargs, message):
    import httpx

    kwargs = {k: handle_file(STAR) if v == "STAR" else v for k, v in kwargs.items()}
    with pytest.raises((AppError, httpx.HTTPStatusError, ValueError)) as err:
        Client(url, verbose=False).predict(api_name=endpoint, **kwargs)
    said = err.value.response.text if isinstance(err.value, httpx.HTTPStatusError) else str(err.value)
    assert re.search(message, said), said


def test_stop_ends_a_10000_image_index_within_a_batch(url):
    from conftest_app import wait_for_status
    from gradio_client.utils import Status

    c = Client(url, verbose=False)
    job = c.submit(n=MAX_N, seed=11, api_name="/search_index")  # about a minute of drawing and encoding
    wait_for_status(job, (Status.PROGRESS,))  # drawing shapes-world images reports progress, so Stop reaches it
    assert c.predict(api_name="/stop_search") == "stopped 1 job(s)"
    stopped = time.monotonic()
    job.result(timeout=60)  # the job ends with its outputs unchanged
    assert time.monotonic() - stopped < 5.0
    assert "Indexed 100 images" in c.predict(n=100, seed=11, api_name="/search_index")[0]  # and the app serves on


def test_a_hit_before_any_search_searches_the_default_query_first(url):
    """A pasted /search_hit snippet runs alone: without a search in the session, the default query runs first."""
    picture, summary, data = Client(url, verbose=False).predict(api_name="/search_hit")
    assert picture and "a red circle" in data["target"] and data["grid"]


def test_search_without_an_index_indexes_the_default_set_and_says_so(url):
    _, _, summary, data = Client(url, verbose=False).predict(text_query="a green star", api_name="/search")
    assert "default set" in summary and data["indexed"] == 500


def test_endpoints_are_named_documented_and_their_snippets_run(url, monkeypatch):
    with urllib.request.urlopen(url + "gradio_api/info", timeout=30) as r:
        named = json.load(r)["named_endpoints"]
    for name in ENDPOINTS + ("/stop_search",):
        ep = named[name]
        assert all(p["parameter_has_default"] and not re.fullmatch(r"param_\d+", p["parameter_name"])
                   for p in ep["parameters"]), (name, ep["parameters"])
        assert not any(re.fullmatch(r"value_\d+", r["label"]) for r in ep["returns"]), (name, ep["returns"])
    for name in ("/search_index", "/search", "/saliency"):  # each snippet is a new session: search indexes the default set
        code = named[name]["code_snippets"]["python"]  # as pasted: its example file is the app's own
        printed = []
        monkeypatch.setattr("builtins.print", lambda *a, **k: printed.append(a))
        exec(compile(code, name, "exec"), {})
        monkeypatch.undo()
        assert printed and printed[0][0] is not None, name
    with urllib.request.urlopen(url + "gradio_api/mcp/schema", timeout=30) as r:
        tools = json.load(r)
    tools = {t["name"]: t for t in (tools if isinstance(tools, list) else tools.get("tools", []))
             if t.get("meta", {}).get("mcp_type", "tool") == "tool"}
    for name in ("search_images", "saliency"):  # the stateful endpoints (index, search, hit) are not MCP tools
        tool = tools[name]
        assert len(tool["description"]) > 40, name
        props = tool["inputSchema"]["properties"]
        assert props and all(p.get("description") for p in props.values()), (name, props)
