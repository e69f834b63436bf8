"""The running app's /embedding_map endpoint driven with gradio_client: named, optional, documented parameters."""

from __future__ import annotations

import pytest
from conftest_app import running_app, save_shapes_dataset

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402

PARAMS = ["source", "n", "seed", "split", "files", "dataset", "dataset_split", "image_column", "text_column",
          "use_prompts", "method", "dims", "n_neighbors", "min_dist", "colour_by", "centred", "links",
          "classnames_text", "templates_text"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("map-app")
    data = root / "data"
    data.mkdir()
    save_shapes_dataset(data / "tiny")
    return {"data": data / "tiny", "extra_env": {"CLIP_LAB_DATA_DIRS": str(data)}}


@pytest.fixture(scope="module")
def client(env):
    with running_app(env["extra_env"]) as url:
        yield Client(url, verbose=False)


def emb_map(c, **kwargs):
    kwargs = {"method": "PCA", "n": 200, **kwargs}
    return c.predict(api_name="/embedding_map", **kwargs)


def test_parameters_are_named_optional_and_snippet_safe(client):
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/embedding_map"]
    params = {p["parameter_name"]: p for p in info["parameters"]}
    assert list(params) == PARAMS  # no param_N; the session states are not API inputs
    assert all(p["parameter_has_default"] for p in params.values()), [k for k, p in params.items() if not p["parameter_has_default"]]
    assert params["dims"]["type"]["enum"] == ["2", "3"] and params["dims"]["parameter_default"] == "2"
    # the "Use via API" page pastes a str default raw between double quotes: it must be one line
    for name, p in params.items():
        default = p["parameter_default"]
        assert not (isinstance(default, str) and ("\n" in default or '"' in default)), (name, default)
    assert len(info["returns"]) == 3  # the map, the gap report, the map data


def test_embedding_map_2d_3d_prompts_and_data(client):
    plot, gap, data = emb_map(client, use_prompts=True, classnames_text="circle, star", templates_text="a {}.")
    assert "Modality gap" in gap and plot
    assert data["class_prompts"] == 2 and len(data["points"]) == 402 and data["points"][-1]["kind"] == "class prompt"
    _, gap3, data3 = emb_map(client, dims="3", colour_by="shape", centred=True)
    assert "centred (gap removed)" in gap3
    assert data3["projection"]["dims"] == 3 and data3["projection"]["centred"] and "z" in data3["points"][0]
    assert set(data3["gap"]) == {"raw", "centred"} and data3["gap"]["centred"]["gap"] < data3["gap"]["raw"]["gap"]


def test_embedding_map_dataset_source(client, env):
    _, gap, data = emb_map(client, source="datasets source", colour_by="shape", dataset=str(env["data"]))
    assert "Modality gap" in gap and data["pairs"] == 12


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=100), "minimum value 200|between 200 and 5000"),
    (dict(source="uploaded images"), "no images uploaded"),
    (dict(use_prompts=True), "no class names"),
    (dict(use_prompts=True, classnames_text="a, b", templates_text=""), "no templates"),
    (dict(dims="4"), "dims must be between 2 and 3, got '4'"),
    (dict(dims=4), "dims must be between 2 and 3, got 4"),  # an int is checked by the contract, not a bare 400
])
def test_embedding_map_bad_inputs(client, kwargs, message):
    """Each refusal names the problem: as the request joins the queue (the contract's checks: a validation
    error with the reason), or in the handler (an AppError)."""
    import re

    import httpx

    with pytest.raises(Exception) as err:
        emb_map(client, **kwargs)
    if "n" in kwargs:  # Gradio's own slider range check: HTTP 400 at the join, the reason in the body
        said = err.value.response.text
    else:  # the contract's checks and the handler: the reason reaches gradio_client (dims as an int too)
        assert not isinstance(err.value, httpx.HTTPStatusError), kwargs
        said = str(err.value)
    assert re.search(message, said), said
