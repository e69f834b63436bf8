"""The running app driven with gradio_client: the zero-shot and matrix endpoints with good and bad
inputs, the API page's own snippets, the MCP tools, per-session models, and what is never served.
(The map's endpoint is tested in test_map_client.py.)"""

from __future__ import annotations

import json
import re
import urllib.request

import httpx
import numpy as np
import pytest
from conftest_app import ROOT, make_model_dirs, model_source, running_app, save_shapes_dataset

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

STAR = str(ROOT / "assets/examples/shapes_purple_star.png")
ENDPOINTS = {"/zero_shot", "/build_batch", "/similarity_matrix", "/embedding_map", "/load_model"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    dirs = make_model_dirs(root, model_source())
    data = root / "data"
    data.mkdir()
    from PIL import Image

    save_shapes_dataset(data / "tiny")
    bad = root / "bad.png"
    bad.write_text("this is not an image")
    Image.new("RGB", (40, 40), "blue").save(root / "blue_square.png")
    return {"dirs": dirs, "data": data / "tiny", "bad": bad, "blue": root / "blue_square.png",
            "extra_env": {"CLIP_LAB_MODEL_DIRS": str(dirs["folder"]), "CLIP_LAB_DATA_DIRS": str(data)}}


@pytest.fixture(scope="module")
def url(env):
    with running_app(env["extra_env"]) as u:
        yield u


@pytest.fixture(scope="module")
def client(url):
    return Client(url, verbose=False)


@pytest.fixture(scope="module")
def info(url):
    with urllib.request.urlopen(url + "gradio_api/info", timeout=30) as r:
        return json.load(r)


def said(error: Exception) -> str:
    """What a refusal says: an AppError's message, or the body of an HTTP 400 (a control's own range is
    checked as the request joins the queue, and Gradio answers that with the reason in the body)."""
    return error.response.text if isinstance(error, httpx.HTTPStatusError) else str(error)


def zero_shot(c, image=STAR, files=(), classes="circle\nstar\nsquare", templates="a photo of a {}.\na {}.", k=3, **kw):
    return c.predict(image=handle_file(image) if image else None, images=[handle_file(str(f)) for f in files],
                     classnames=classes, templates=templates, top_k=k, api_name="/zero_shot", **kw)


def test_every_endpoint_has_named_parameters_and_outputs(info):
    named = info["named_endpoints"]
    assert ENDPOINTS <= set(named) and not info["unnamed_endpoints"]
    for name, ep in named.items():
        params = [p["parameter_name"] for p in ep["parameters"]]
        assert not any(re.fullmatch(r"param_\d+", p) for p in params), (name, params)
        assert not any(re.fullmatch(r"value_\d+", r["label"]) for r in ep["returns"]), (name, ep["returns"])
    optional = {p["parameter_name"]: p["parameter_has_default"] for ep in named.values() for p in ep["parameters"]}
    for name in ("image", "images", "classnames", "templates", "files", "dataset", "extra_captions", "captions"):
        assert optional[name], name


def test_every_snippet_on_the_api_page_runs_as_pasted(info, monkeypatch):
    """The 'Use via API' Python snippets compile and run; only the network URL of an example file is
    pointed at a local one (this machine has no internet)."""
    for name in sorted(ENDPOINTS - {"/embedding_map"}):  # the map's snippet runs UMAP: test_map_client.py
        code = info["named_endpoints"][name]["code_snippets"]["python"]
        code = re.sub(r"handle_file\('https?://[^']+'\)", f"handle_file({STAR!r})", code)
        compile(code, name, "exec")
        printed = []
        monkeypatch.setattr("builtins.print", lambda *a, **k: printed.append(a))
        exec(code, {})
        monkeypatch.undo()
        assert printed and printed[0][0] is not None, name


def test_the_mcp_tools_describe_themselves(url):
    with urllib.request.urlopen(url + "gradio_api/mcp/schema", timeout=30) as r:
        tools = json.load(r)
    tools = {t["name"]: t for t in (tools if isinstance(tools, list) else tools.get("tools", []))
             if t.get("meta", {}).get("mcp_type", "tool") == "tool"}  # UI endpoints are listed as "api", not tools
    assert set(tools) == {"zero_shot", "compare_models", "build_batch", "embedding_map", "evaluate", "search_images", "saliency"}
    for name, tool in tools.items():
        assert len(tool["description"]) > 40, name
        props = tool["inputSchema"]["properties"]
        assert props and all(p.get("description") for p in props.values()), (name, props)


def test_zero_shot_single_and_batch(client, env):
    label, plot, notes, table, heatmap, batch, data, saw, scale, cls_preset, tpl_preset = zero_shot(client)
    assert label["label"] in {"circle", "star", "square"} and len(label["confidences"]) == 3
    assert "Logit scale" in notes and plot and heatmap and cls_preset == "custom" and tpl_preset == "custom"
    assert table["data"][-1][0].startswith("ENSEMBLE") and len(table["data"]) == 3
    assert data["logit_scale"] == pytest.approx(scale, abs=0.005) and data["num_classes"] == 3  # the slider shows 2 decimals
    assert [t["template"] for t in data["per_template_first_image"]] == ["a photo of a {}.", "a {}."]
    assert "`a photo of a {}.`" in saw and "No known pitfall" in saw and data["pitfalls"] == []
    assert data["receipt"]["model"] == "shapes-tiny" and data["receipt"]["logit_scale"] == pytest.approx(scale, abs=0.005)
    *_, batch, data, _, _, _, _ = zero_shot(client, files=[STAR, env["blue"]])
    assert [row[0] for row in batch["data"]] == ["shapes_purple_star.png", "shapes_purple_star.png", "blue_square.png"]
    assert len(data["images"]) == 3


def test_zero_shot_logit_scale_and_defaults(client):
    *_, data, _, scale, cls_preset, tpl_preset = zero_shot(client, classes=None, templates=None, logit_scale=5.0,
                                                        use_model_scale=False)
    assert data["logit_scale"] == 5.0 and data["model_logit_scale"] > 5 and data["num_classes"] == 8
    assert (cls_preset, tpl_preset) == ("shapes world: shapes", "shapes world")
    probs = [c["probability"] for c in data["images"][0]["top_k"]]
    *_, data_model, _, _, _, _ = zero_shot(client, classes=None, templates=None)
    assert max(probs) < data_model["images"][0]["top_k"][0]["probability"]  # a lower scale is flatter


@pytest.mark.parametrize("kwargs, message", [
    (dict(image=None), "no image"),
    (dict(classes=" , "), "no class names"),
    (dict(templates="a photo of a"), "exactly one"),
    (dict(templates="{} {}"), "exactly one"),
    (dict(logit_scale=500.0, use_model_scale=False), "greater than maximum|logit scale"),
])
def test_zero_shot_bad_inputs(client, kwargs, message):
    with pytest.raises((AppError, httpx.HTTPStatusError)) as err:
        zero_shot(client, **kwargs)
    assert re.search(message, said(err.value)), said(err.value)


def test_zero_shot_refuses_a_non_image(client, env):
    with pytest.raises(AppError, match="not a readable image"):
        zero_shot(client, files=[env["bad"]])


def build(c, **kw):
    return c.predict(api_name="/build_batch", **kw)


def test_similarity_matrix_build_edit_view_and_non_square(url):
    c = Client(url, verbose=False)
    table, plot, figures, losses, data, status = build(c, n=6)
    assert len(table["data"]) == 6 and "loss_i" in figures and len(losses["data"]) == 6 and status == ""
    assert data["captions"] == [r[1] for r in table["data"]] and len(data["values"]) == 6
    edited = {"headers": table["headers"], "data": [[r[0], "a red circle"] for r in table["data"]]}
    _, figures2, losses2, data2, _ = c.predict(captions=edited, view="softmax over rows (image → text)",
                                               api_name="/similarity_matrix")
    assert figures2 != figures and all(r[1] == "a red circle" for r in losses2["data"])
    assert [sum(row) for row in data2["values"]] == pytest.approx([1.0] * 6, abs=1e-4)
    _, figures3, losses3, data3, _ = c.predict(extra_captions="a cat\na dog", view="logits", api_name="/similarity_matrix")
    assert "6 images × 8 captions" in figures3 and "no loss" in figures3 and not losses3["data"]
    assert data3["captions"][:6] == ["a red circle"] * 6 and data3["loss"] is None  # the edit stays with the batch


def test_the_loss_microscope_gradient_false_negatives_and_one_step(url):
    """Through the API: the gradient view is autograd's on the shown logits, a duplicated caption is named as a
    false negative, and one step lowers the batch's loss while the model's own matrix stays as it was."""
    import torch
    import torch.nn.functional as F

    from demo.tabs.matrix.microscope import GRADIENT_VIEW

    c = Client(url, verbose=False)
    table, *_ = build(c, n=5)
    twins = {"headers": table["headers"], "data": [[r[0], table["data"][0][1] if i == 1 else r[1]]
                                                   for i, r in enumerate(table["data"])]}
    _, figures, _, data, _ = c.predict(captions=twins, view=GRADIENT_VIEW, api_name="/similarity_matrix")
    z = (torch.tensor(data["cosine"], dtype=torch.float64) * data["logit_scale"]).requires_grad_(True)
    target = torch.arange(5)
    loss = (F.cross_entropy(z, target) + F.cross_entropy(z.T, target)) / 2
    np.testing.assert_allclose(data["values"], torch.autograd.grad(loss, z)[0].numpy(), atol=1e-5)
    assert "False negatives" in figures and "0 and 1" in figures
    text, _, step = c.predict(lr="1e-5", api_name="/take_one_step")
    assert step["loss_after"] < step["loss_before"] and "untouched" in text
    assert step["loss_before"] == pytest.approx(data["loss"], rel=1e-3)  # the same batch and captions
    *_, again, _ = c.predict(captions=twins, view="cosine", api_name="/similarity_matrix")
    assert again["cosine"] == data["cosine"]  # the session's model did not move
    with pytest.raises((AppError, httpx.HTTPStatusError)) as refused:  # the menu's choices only
        c.predict(lr="0.5", api_name="/take_one_step")
    assert re.search("0.5|learning rate", said(refused.value)), said(refused.value)


def test_the_claims_tab_shows_the_bundled_result_and_reruns_the_quick_variant(url):
    """Through the API: a claim's bundled result as shipped, and "run it yourself" reproducing the bundled quick
    numbers within their intervals, with the verdict written beside the paper's statement."""
    from core.experiments import bundled_result, experiment_names

    c = Client(url, verbose=False)
    verdict, _, table, data = c.predict(name="prompt-ensembling", api_name="/show_claim")
    assert data == bundled_result("prompt-ensembling") and "The paper" in verdict and data["verdict"] in verdict
    assert [row[0] for row in table["data"]][:2] == ["bare", "photo"]
    for name in experiment_names():  # every claim opens on its bundled result, with a figure and the verdict
        verdict, plot, table, data = c.predict(name=name, api_name="/show_claim")
        assert data == bundled_result(name) and data["verdict"] in verdict and plot and table["data"]
    verdict, _, _, ours = c.predict(name="zero-shot-vs-probe", api_name="/run_claim")
    bundled = bundled_result("zero-shot-vs-probe", quick=True)
    assert ours["quick"] and "Your run" in verdict and ours["verdict"] == bundled["verdict"]
    assert ours["summary"]["zero_shot"]["mean"] == pytest.approx(bundled["summary"]["zero_shot"]["mean"], abs=1e-6)
    with pytest.raises(AppError, match="nope.*prompt-ensembling"):  # names the experiments there are
        c.predict(name="nope", api_name="/show_claim")


def test_similarity_matrix_without_a_batch_uses_the_default_one_and_says_so(url):
    *_, data, status = Client(url, verbose=False).predict(api_name="/similarity_matrix")
    assert len(data["captions"]) == 8 and "default batch" in status


def test_similarity_matrix_uploads_and_dataset(client, env):
    table, _, figures, *_ = build(client, source="uploaded images", files=[handle_file(STAR), handle_file(str(env["blue"]))])
    assert "loss" in figures and [r[0] for r in table["data"]] == ["shapes_purple_star.png", "blue_square.png"]
    table, *_ = build(client, source="datasets source", n=4, dataset=str(env["data"]))
    assert len(table["data"]) == 4


@pytest.mark.parametrize("kwargs, message", [
    (dict(source="uploaded images"), "no images uploaded"),
    (dict(source="datasets source", dataset="/etc"), "allowed folders"),
    (dict(source="datasets source"), "no dataset"),
    (dict(source="datasets source", n=4, dataset="DATA", text_column="caption"), "no column 'caption'"),
    (dict(view="bogus"), "unknown view|bogus"),
])
def test_similarity_matrix_bad_inputs(client, env, kwargs, message):
    kwargs = {k: str(env["data"]) if v == "DATA" else v for k, v in kwargs.items()}
    with pytest.raises((AppError, ValueError, httpx.HTTPStatusError)) as err:
        build(client, **kwargs)
    assert re.search(message, said(err.value)), said(err.value)


def test_an_edited_table_must_describe_the_batch(url):
    """A refused redraw keeps the matrix (no error covers it on the page) and says why in the batch status."""
    c = Client(url, verbose=False)
    build(c, n=2)
    *_, status = c.predict(captions={"headers": ["image", "caption"], "data": [["#0", ""], ["#1", "x"]]},
                           api_name="/similarity_matrix")
    assert status.startswith("⚠️") and "row 0 is empty" in status
    *_, status = c.predict(captions={"headers": ["image", "caption"], "data": [["#0", "y"]]}, api_name="/similarity_matrix")
    assert "2 rows" in status


def test_model_picker_failures_keep_the_model(client, env):
    dirs = env["dirs"]
    for name, message in [("openai/clip-vit-base-patch32", "local Hugging Face cache|cannot be reached"),
                          (str(dirs["not_clip"]), "not a model CLIP Lab loads"), (str(dirs["pickle_only"]), "safetensors"),
                          ("/etc", "allowed folders"), ("not a model id!", "not a known model"), ("", "no model chosen")]:
        with pytest.raises(AppError, match=message):
            client.predict(name, api_name="/load_model")
    assert zero_shot(client)[6]["model"] == model_source()


def test_model_choice_is_per_session(url, env):
    other = str(env["dirs"]["other"].resolve())
    a, b = Client(url, verbose=False), Client(url, verbose=False)
    status = a.predict(other, api_name="/load_model")
    assert "other-tiny" in status and "loaded" in status
    assert zero_shot(a)[6]["model"] == other
    assert zero_shot(b)[6]["model"] == model_source()


@pytest.mark.parametrize("path", [
    "/file=/etc/passwd", "/file=../../../../etc/passwd", "/file=%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/gradio_api/file=/etc/passwd", "/gradio_api/file=../../../../etc/passwd",
    "/gradio_api/file=%2Fetc%2Fpasswd", "/gradio_api/file=..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/gradio_api/file=" + str(ROOT / "app.py"), "/gradio_api/file=" + str(ROOT / "assets/models/shapes-tiny/config.json"),
])
def test_no_file_outside_the_app_is_served(url, path):
    """Traversal and absolute paths, plain and URL-encoded: every one answers 4xx, never the file."""
    import urllib.error

    try:
        with urllib.request.urlopen(url.rstrip("/") + path, timeout=30) as r:
            status, body = r.status, r.read(200)
    except urllib.error.HTTPError as e:
        status, body = e.code, b""
    assert 400 <= status < 500, (path, status, body[:80])
