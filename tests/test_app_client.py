"""The running app driven with gradio_client: every endpoint, good and bad inputs, per-session models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest_app import ROOT, make_model_dirs, model_source, running_app

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

STAR = str(ROOT / "assets/examples/shapes_brown_star.png")
EMPTY_TABLE = {"headers": ["image", "caption"], "data": []}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    dirs = make_model_dirs(root, model_source())
    data = root / "data"
    data.mkdir()
    import datasets
    from PIL import Image

    from core.shapes import ShapesWorld

    samples = ShapesWorld(seed=3).take(12)
    ds = datasets.Dataset.from_dict({"image": [s.image for s in samples], "text": [s.caption for s in samples],
                                     "shape": [s.labels["shape"] for s in samples]}).cast_column("image", datasets.Image())
    ds.save_to_disk(str(data / "tiny"))
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


def zero_shot(c, image=STAR, files=(), classes="circle\nstar\nsquare", templates="a photo of a {}.\na {}.", k=3):
    return c.predict(handle_file(image) if image else None, [handle_file(f) for f in files], classes, templates, k,
                     api_name="/zero_shot")


def matrix(c, source="shapes world", n=6, files=(), table=None, extra="", view="cosine", ds=("", "train", "image", "text")):
    return c.predict(source, n, 0, "eval", [handle_file(str(f)) for f in files], *ds, table or EMPTY_TABLE, extra, view,
                     api_name="/similarity_matrix")


def emb_map(c, source="shapes world", n=200, method="PCA", dims=2, colour="modality", prompts=False, centred=False,
            files=(), ds=("", "train", "image", "text")):
    return c.predict(source, n, 0, "eval", [handle_file(str(f)) for f in files], *ds, prompts, method, dims, 10, 0.1,
                     colour, centred, True, "circle\nstar", "a {}.", api_name="/embedding_map")


def test_api_names(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/zero_shot", "/similarity_matrix", "/embedding_map", "/load_model", "/build_batch",
            "/classname_preset", "/template_preset"} <= names


def test_zero_shot_single_and_batch(client, env):
    label, plot, info, table, batch = zero_shot(client)
    assert label["label"] in {"circle", "star", "square"} and len(label["confidences"]) == 3
    assert "Logit scale" in info and plot
    assert table["data"][-1][0].startswith("ENSEMBLE")
    *_, batch = zero_shot(client, files=[STAR, str(env["blue"])])
    assert [row[0] for row in batch["data"]] == ["shapes_brown_star.png", "shapes_brown_star.png", "blue_square.png"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(image=None), "no image"),
    (dict(classes=" , "), "no class names"),
    (dict(templates="a photo of a"), "exactly one"),
    (dict(templates="{} {}"), "exactly one"),
])
def test_zero_shot_bad_inputs(client, kwargs, message):
    with pytest.raises(AppError, match=message):
        zero_shot(client, **kwargs)


def test_zero_shot_refuses_a_non_image(client, env):
    with pytest.raises(AppError, match="not a readable image"):
        zero_shot(client, files=[str(env["bad"])])


def test_presets(client):
    assert "airplane" in client.predict("CIFAR-10", api_name="/classname_preset")
    assert client.predict("single", api_name="/template_preset").strip() == "a photo of a {}."
    with pytest.raises(AppError):
        client.predict("no such preset", api_name="/template_preset")


def test_similarity_matrix_square_edited_and_non_square(client):
    table = client.predict("shapes world", 6, 0, "eval", [], "", "train", "image", "text", api_name="/build_batch")
    assert len(table["data"]) == 6
    plot, figures, losses = matrix(client)
    assert "loss_i" in figures and "loss_t" in figures and len(losses["data"]) == 6
    edited = {"headers": table["headers"], "data": [[r[0], "a red circle"] for r in table["data"]]}
    _, figures2, losses2 = matrix(client, table=edited, view="softmax over rows (image → text)")
    assert figures2 != figures and all(r[1] == "a red circle" for r in losses2["data"])
    _, figures3, losses3 = matrix(client, extra="a cat\na dog", view="logits")
    assert "6 images × 8 captions" in figures3 and "no loss" in figures3 and not losses3["data"]


def test_similarity_matrix_uploads_and_dataset(client, env):
    _, figures, _ = matrix(client, source="uploaded images", files=[STAR, env["blue"]])
    assert "loss" in figures
    table = client.predict("datasets source", 4, 0, "eval", [], str(env["data"]), "train", "image", "text", api_name="/build_batch")
    assert len(table["data"]) == 4


@pytest.mark.parametrize("kwargs, message", [
    (dict(source="uploaded images"), "no images uploaded"),
    (dict(source="datasets source", ds=("/etc", "train", "image", "text")), "allowed folders"),
    (dict(source="datasets source", ds=("", "train", "image", "text")), "no dataset"),
    (dict(table={"headers": ["image", "caption"], "data": [["#0", ""], ["#1", "x"]]}, n=2), "row 0 is empty"),
])
def test_similarity_matrix_bad_inputs(client, kwargs, message):
    with pytest.raises(AppError, match=message):
        matrix(client, **kwargs)


def test_dataset_missing_column(client, env):
    with pytest.raises(AppError, match="no column 'caption'"):
        matrix(client, source="datasets source", n=4, ds=(str(env["data"]), "train", "image", "caption"))


def test_model_picker_failures_keep_the_model(client, env):
    dirs = env["dirs"]
    for name, message in [("openai/clip-vit-base-patch32", "local Hugging Face cache|cannot be reached"),
                          (str(dirs["not_clip"]), "not a CLIP model"), (str(dirs["pickle_only"]), "safetensors"),
                          ("/etc", "allowed folders"), ("not a model id!", "not a known model")]:
        with pytest.raises(AppError, match=message):
            client.predict(name, api_name="/load_model")
    *_, info, _, _ = zero_shot(client)
    assert f"`{model_source()}`" in info


def test_model_choice_is_per_session(url, env):
    other = str(env["dirs"]["other"].resolve())
    a, b = Client(url, verbose=False), Client(url, verbose=False)
    status = a.predict(other, api_name="/load_model")
    assert "other-tiny" in status
    assert f"`{other}`" in zero_shot(a)[2]
    assert f"`{model_source()}`" in zero_shot(b)[2]


@pytest.mark.parametrize("path", [
    "/file=/etc/passwd", "/file=../../../../etc/passwd", "/file=%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/gradio_api/file=/etc/passwd", "/gradio_api/file=../../../../etc/passwd",
    "/gradio_api/file=%2Fetc%2Fpasswd", "/gradio_api/file=..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/gradio_api/file=" + str(ROOT / "app.py"), "/gradio_api/file=" + str(ROOT / "assets/models/shapes-tiny/config.json"),
])
def test_no_file_outside_the_app_is_served(url, path):
    """Traversal and absolute paths, plain and URL-encoded: every one answers 4xx, never the file."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url.rstrip("/") + path, timeout=30) as r:
            status, body = r.status, r.read(200)
    except urllib.error.HTTPError as e:
        status, body = e.code, b""
    assert 400 <= status < 500, (path, status, body[:80])
