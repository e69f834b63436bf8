"""The app's interfaces for scripts and agents, through real clients: every MCP tool through the `mcp`
package's streamable-HTTP client (the same JSON numbers as the API), and every "Use via API" snippet
executed as the API page shows it."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client

from conftest_app import running_app

TOOLS = {"zero_shot", "compare_models", "build_batch", "embedding_map", "evaluate", "search_images", "saliency"}
SMALL = {  # arguments that keep each call small; every other argument is the tool's default
    "zero_shot": {"classnames": "circle, star, square", "templates": "a photo of a {}.", "top_k": 3},
    "build_batch": {"n": 4, "seed": 1},
    "embedding_map": {"n": 200, "method": "PCA"},
    "evaluate": {"n": 40, "select_templates": False, "linear_probe": False, "several_labels": True},
    "search_images": {"text_query": "a red circle", "n": 100, "k": 5},
    "saliency": {"text": "a purple star"},
}
API_OF = {"zero_shot": "/zero_shot", "build_batch": "/build_batch", "embedding_map": "/embedding_map",
          "evaluate": "/evaluate", "saliency": "/saliency"}
VOLATILE = {"timings_ms", "seconds", "encode_seconds", "elapsed_s"}
# endpoints whose snippet needs an earlier step of the same session (a training run's ticket): they
# must still run, and answer with their one-line message
NEEDS_A_RUN = {"/train_stop", "/train_status", "/train_resume", "/train_use_model", "/train_download", "/train_try"}
# the comparison's second model is the next in the app's list: here, offline, a Hub model not in the cache
NEEDS_THE_HUB = {name: "not in the local Hugging Face cache" for name in ("/compare_models", "/mcp_compare_models")}
NEEDS_THE_HUB["/take_one_step"] = "build a batch first"  # a step is taken on the session's built batch
NEEDS_THE_HUB["/explore_set"] = "no embedding set chosen"  # an embedding set is a folder this app may open
NEEDS_THE_HUB["/explore_search"] = "open an embedding set first"


@pytest.fixture(scope="module")
def mcp_url():
    with running_app({"CLIP_LAB_MAX_TRAIN_STEPS": "50"}) as url:
        yield url


def call_tools(url: str, calls: dict) -> tuple[list, dict]:
    """List the tools and call each named one with its arguments, through the mcp package's client."""
    async def run():
        async with streamablehttp_client(url + "gradio_api/mcp/", timeout=60, sse_read_timeout=600) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = (await session.list_tools()).tools
                answers = {name: await session.call_tool(name, args) for name, args in calls.items()}
                return tools, answers
    return asyncio.run(run())


def stable(value):
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def test_every_tool_answers_the_apis_json_numbers(mcp_url):
    tools, answers = call_tools(mcp_url, SMALL)
    assert {t.name for t in tools} == TOOLS  # no Stop, Train or session-only endpoint among them
    for tool in tools:
        props = set((tool.inputSchema or {}).get("properties", {}))
        assert not props & {"map_state", "index", "batch", "scores", "progress", "request", "ticket"}, tool.name
        assert tool.description and "Args" not in tool.name
    client = Client(mcp_url, verbose=False)
    for name, answer in answers.items():
        assert not answer.isError, (name, answer.content)
        mine = json.loads(answer.content[0].text)
        assert isinstance(mine, dict) and mine, name
        receipt = mine["receipt"]  # every result says which model, weights, preprocessing and rule made it
        assert receipt["model"] == "shapes-tiny" and receipt["family"] == "CLIP" and receipt["weights_revision"], name
        assert receipt["image_processor"]["class"] and receipt["libraries"]["transformers"], name
        if name in API_OF:
            outputs = client.predict(**SMALL[name], api_name=API_OF[name])
            theirs = next(o for o in outputs if isinstance(o, dict) and set(o) == set(mine))
            assert stable(theirs) == stable(mine), name
    assert answers["zero_shot"].content and json.loads(answers["zero_shot"].content[0].text)["images"][0]["top_k"]
    evaluated = json.loads(answers["evaluate"].content[0].text)  # calibration, "none of these", several labels
    assert 0 <= evaluated["calibration"]["calibration"]["after"]["ece"] <= 1 and evaluated["calibration"]["sets"]["q"]
    assert 0 <= evaluated["several_labels"]["mAP"] <= 1 and "decision" in evaluated["several_labels"]
    hits = json.loads(answers["search_images"].content[0].text)["hits"]
    assert len(hits) == 5 and hits[0]["rank"] == 1


def test_a_tool_refuses_bad_input_and_files_that_are_not_the_apps(mcp_url):
    _, answers = call_tools(mcp_url, {"zero_shot": {"classnames": "x" * 200_000},
                                      "saliency": {"image": "/etc/passwd", "text": "a star"},
                                      "build_batch": {"n": 1000}})
    assert answers["zero_shot"].isError and "100,000" in answers["zero_shot"].content[0].text
    assert answers["saliency"].isError and "uploaded to this app" in answers["saliency"].content[0].text
    assert answers["build_batch"].isError and "between 2 and 32" in answers["build_batch"].content[0].text


def test_a_tool_call_is_under_the_body_limit(mcp_url):
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "zero_shot", "arguments": {"classnames": "x" * (2 << 20)}}}
    r = httpx.post(mcp_url + "gradio_api/mcp/", json=body, headers={"accept": "application/json, text/event-stream"})
    assert r.status_code == 413


def test_every_api_snippet_runs_as_pasted(mcp_url):
    info = httpx.get(mcp_url + "gradio_api/info").json()["named_endpoints"]
    assert len(info) >= 20
    for api_name, endpoint in info.items():
        snippet = endpoint["code_snippets"]["python"]
        compile(snippet, api_name, "exec")  # a snippet is valid Python (a multi-line default broke one)
        assert "github" not in snippet and "bus.png" not in snippet, api_name  # offline: the app's own example files
        if api_name == "/train_start":  # 400 steps over the app's limit here: refused in one line, nothing trains
            with pytest.raises(Exception, match="steps must be between 1 and 50"):
                exec(snippet, {"print": lambda *a: None})
            continue
        try:
            exec(snippet, {"print": lambda *a: None})
        except AppError as e:
            expected = NEEDS_THE_HUB.get(api_name, "no such run" if api_name in NEEDS_A_RUN else None)
            assert expected and expected in str(e), (api_name, str(e))
