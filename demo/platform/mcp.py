"""MCP tools: each tab's main handler as a stateless tool that agents call with a real MCP client.

Gradio turns public endpoints into MCP tools (`launch(mcp_server=True)`), but a UI endpoint is a
poor tool: its session-only inputs (gr.State) are sent as None, and every MCP client shares one
Gradio session, so a kept batch or index would leak between agents; its outputs (plots, tables,
State) come back as Python reprs, and in Gradio 6.31 a State output makes the tool answer nothing
or fail ("pop index out of range"). So UI endpoints are hidden from MCP (they stay on the API page),
and `mcp_tool` registers, for a handler, an API endpoint `/mcp_<name>` whose inputs are the
handler's parameters that a caller can give (no State), whose answer is the handler's JSON output
as JSON text (the same numbers as the UI endpoint's JSON output), and which MCP lists under the
handler's own name. It runs under the same contract, so the same checks, turn, Stop and limits apply.
A tool call is a queue join like any other, so the guard's body size, rate and in-flight caps apply.
"""

from __future__ import annotations

import inspect
import json
import typing
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from core.eval_study import finite
from demo.platform.config import EXAMPLES_DIR
from demo.platform.contract import endpoint, queue_group

SKIPPED = {"__type__": "update"}


def hide_from_mcp(target) -> None:
    """Keep a UI endpoint on the API page but out of MCP's tool list (and out of its tool names)."""
    target._mcp_type = "api"
    target.__name__ = target.__qualname__ = f"{target.__name__}_ui"


def mcp_tool(ctx, fn, names: list[str], pick: int, n_outputs: int) -> None:
    """Register handler `fn` as the MCP tool `fn.__name__` (API endpoint /mcp_<name>): its parameters `names`
    as the tool's arguments, output number `pick` (a JSON-able dict) as its answer, in JSON text."""
    target = endpoint(ctx, fn, names, n_outputs)
    files = [n for n in target.contract.uploads if n in names]
    # the tool's parameters: the inputs (each with a type hint, as gr.api needs) and the request; no progress
    hints = {**{n: typing.Optional[str] for n in names}, **target.__annotations__}
    # a text parameter with a text default is typed `str` (the API page quotes only plain `str` defaults)
    params = [p.replace(annotation=str if isinstance(p.default, str) else hints[p.name])
              for p in target.__signature__.parameters.values() if p.name != "progress"]
    signature = inspect.Signature(params, return_annotation=str)

    def tool(*args, **kwargs) -> str:
        bound = signature.bind(*args, **kwargs).arguments
        for name in files:
            served_files_only(bound.get(name))
        out = target(**bound)
        value = out[pick] if isinstance(out, tuple) else out
        if value == SKIPPED:
            raise gr.Error("stopped before it finished (a Stop, the time limit, or a busy server)")
        return json.dumps(finite(value), ensure_ascii=False)

    tool.__name__ = tool.__qualname__ = fn.__name__
    tool.__doc__, tool.__module__ = fn.__doc__, fn.__module__
    tool.__signature__ = signature
    tool.__annotations__ = {**{p.name: p.annotation for p in params}, "return": str}
    tool.contract, tool.handler, tool.ctx = target.contract, fn, ctx
    gr.api(tool, api_name=f"mcp_{fn.__name__}", **queue_group(ctx, fn.contract))


def served_files_only(value) -> None:
    """Refuse file arguments that are not this app's own files: uploads (POST /gradio_api/upload) or its
    examples. A tool's file argument is a plain string, which Gradio does not fetch or check, so without
    this an agent could name any path on the server (or a URL to fetch)."""
    roots = [Path(get_upload_folder()).resolve(), EXAMPLES_DIR.resolve()]
    for item in value if isinstance(value, (list, tuple)) else [value]:
        if not item:
            continue
        path = getattr(item, "path", item)
        try:
            resolved = Path(str(path)).resolve()
        except (OSError, RuntimeError, ValueError):
            resolved = None
        if resolved is None or not any(resolved == r or r in resolved.parents for r in roots):
            raise gr.Error("a file argument must be a file uploaded to this app (POST /gradio_api/upload) or one of "
                           "its examples, given by the path the upload returned", print_exception=False)
