"""The handler contract (demo/platform/contract.py): what it gives a handler, and that every endpoint has it."""

from __future__ import annotations

import threading

import gradio as gr
import pytest

from core.errors import UserInputError
from demo.inputs.checks import at_most_chars, in_range
from demo.platform.config import AppConfig
from demo.platform.context import AppContext
from demo.platform.contract import OUT_OF_MEMORY, Call, endpoint, handler, input_names, listen, validator
from demo.platform.errors import Busy, OverQuota, Stopped, TimedOut

SKIP = {"__type__": "update"}


class Visitor:
    """A gr.Request stand-in: a browser session on this machine."""

    def __init__(self, session: str = "s1"):
        self.session_hash, self.headers, self.client = session, {}, None


@pytest.fixture()
def ctx():
    return AppContext.create(AppConfig())


@handler("demo", checks={"n": in_range("n", 1, 10, integer=True, default=3), "text": at_most_chars("the text", 5)})
def counted(call: Call, n: float = 3, text: str = ""):
    return n, text


def test_checks_run_by_name_and_the_handler_gets_the_checked_values(ctx):
    run = endpoint(ctx, counted, n_outputs=2)
    assert run(4.0, "abc", request=Visitor()) == (4, "abc") and isinstance(run(4.0, "")[0], int)
    assert run(None, None) == (3, "")  # None is the default
    with pytest.raises(gr.Error, match="n must be between 1 and 10, got 11"):
        run(11, "")
    with pytest.raises(gr.Error, match="the text: 7 characters; the limit is 5"):
        run(text="toolong")


def test_the_queue_validator_is_keyed_by_parameter_name_not_position(ctx):
    verdicts = validator(ctx, counted, ["text", "n"])("too long", 2)  # the inputs in another order than the signature
    assert [v["is_valid"] for v in verdicts] == [False, True] and "the limit is 5" in verdicts[0]["message"]
    assert input_names(counted, {"text": None, "n": None}) == ["n", "text"]  # a dict of inputs: fn's order
    assert validator(ctx, counted, []) is None  # no input that has a check: no validator


@pytest.mark.parametrize("error, shown", [
    (UserInputError("no class names given\nsecond line"), "no class names given"),
    (OverQuota("you have uploaded 300 MB"), "you have uploaded 300 MB"),
])
def test_a_users_error_is_one_line_with_its_cause_kept(ctx, error, shown):
    @handler("demo")
    def failing(call: Call):
        raise error

    with pytest.raises(gr.Error) as err:
        endpoint(ctx, failing)()
    assert str(err.value.message) == shown and err.value.__cause__ is error


def test_a_bug_is_logged_in_full_and_never_blamed_on_the_user(ctx, caplog):
    @handler("demo")
    def a_bug(call: Call):
        raise ValueError("math domain error in secret/internal/path")  # a bare ValueError is ours, not the user's

    with caplog.at_level("ERROR", logger="clip_lab"), pytest.raises(gr.Error) as err:
        endpoint(ctx, a_bug)()
    assert "internal error (ValueError)" in err.value.message and "secret" not in err.value.message
    assert "secret/internal/path" in caplog.text and isinstance(err.value.__cause__, ValueError)


def test_out_of_memory_says_so_without_blaming_the_input(ctx, caplog):
    @handler("demo")
    def greedy(call: Call):
        raise MemoryError()

    with caplog.at_level("ERROR", logger="clip_lab"), pytest.raises(gr.Error) as err:
        endpoint(ctx, greedy)()
    assert err.value.message == OUT_OF_MEMORY and "not a fault of your input" in OUT_OF_MEMORY


@pytest.mark.parametrize("error", [Stopped("stopped"), TimedOut("past the time limit"), Busy("busy")])
def test_stopped_timed_out_and_busy_keep_every_output(ctx, error):
    @handler("demo")
    def interrupted(call: Call):
        raise error

    assert endpoint(ctx, interrupted, n_outputs=3)() == (SKIP, SKIP, SKIP)
    assert endpoint(ctx, interrupted, n_outputs=1)() == SKIP
    assert not issubclass(type(error), (UserInputError, ValueError))  # none of them is the user's mistake


def test_a_stop_reaches_a_running_handler_at_its_next_batch(ctx):
    entered, batches = threading.Event(), []

    @handler("demo")
    def long(call: Call):
        report = call.report("working", "batches")
        entered.set()
        for i in range(100_000):
            report(i, 100_000)  # raises Stopped once the tab's Stop was pressed
            batches.append(i)
            threading.Event().wait(0.001)
        return "finished"

    result = []
    worker = threading.Thread(target=lambda: result.append(endpoint(ctx, long)(request=Visitor("s1"))))
    worker.start()
    assert entered.wait(30)
    assert ctx.jobs.stop("s2", "demo") == 0  # another session's Stop does not reach it
    assert ctx.jobs.stop("s1", "demo") == 1
    worker.join(30)
    assert result == [SKIP] and len(batches) < 100_000 and len(ctx.jobs) == 0


def test_the_time_limit_ends_a_call_before_its_work(ctx):
    ran = []

    @handler("demo")
    def work(call: Call):
        ran.append(1)

    ctx.config.time_limit_s = 0
    assert endpoint(ctx, work, n_outputs=2)() == (SKIP, SKIP) and not ran
    assert len(ctx.jobs) == 0  # nothing left registered


def test_a_quick_handler_takes_no_turn_and_no_job(ctx):
    @handler("demo", turn=False)
    def quick(call: Call):
        return call.job is None and ctx.services.cpu.running() == 0

    ctx.config.time_limit_s = 0
    assert endpoint(ctx, quick)() is True


def test_a_handler_is_declared_with_call_first_and_known_names():
    with pytest.raises(TypeError, match="first parameter is `call`"):
        handler("demo")(lambda x: x)
    with pytest.raises(TypeError, match="no parameter named nope"):
        handler("demo", checks={"nope": in_range("n", 0, 1)})(lambda call, n=1: n)


def test_listen_refuses_a_function_outside_the_contract(ctx):
    with gr.Blocks(), pytest.raises(TypeError, match="not a handler"):
        listen(ctx, gr.Button().click, lambda: None, [], [])


@pytest.fixture(scope="module")
def built_app():
    import app

    return app.build_app(AppContext.create(AppConfig()))


GRADIO_OWN = {"load_example"}  # gr.Examples' own loader: it fills the inputs and calls nothing of ours


def test_every_endpoint_of_the_app_is_under_the_contract(built_app):
    validators = [f.validator for f in built_app.fns.values() if getattr(f, "validator", None) is not None]
    assert validators and all(hasattr(v, "checks_of") for v in validators)  # the contract's, keyed by name
    fns = [f for f in built_app.fns.values() if f.fn is not None]
    outside = [f.fn.__name__ for f in fns if not hasattr(f.fn, "contract") and f.fn.__name__ not in GRADIO_OWN]
    assert not outside, f"handlers outside the contract: {outside}"
    assert len(fns) > 50
    for f in fns:
        if f.fn.__name__ in GRADIO_OWN:
            continue
        names = [p for p in f.fn.__signature__.parameters if p not in ("request", "progress")]
        assert len(names) >= len(f.inputs), f"{f.fn.__name__}: an input without a parameter name"


def test_every_turn_handler_of_the_app_obeys_the_time_limit_and_keeps_its_outputs(built_app):
    turn = [f for f in built_app.fns.values() if getattr(f.fn, "contract", None) is not None and f.fn.contract.turn]
    assert {f.fn.contract.tab for f in turn} >= {"zero_shot", "matrix", "map", "search", "evaluate", "saliency"}
    for f in turn:
        ctx = f.fn.ctx
        limit, ctx.config.time_limit_s = ctx.config.time_limit_s, 0
        try:
            if f.api_name and f.api_name.startswith("mcp_"):  # an MCP tool says so in its one answer
                with pytest.raises(gr.Error, match="stopped before it finished"):
                    f.fn(*[None] * len(f.inputs), request=Visitor())
                continue
            out = f.fn(*[None] * len(f.inputs), request=Visitor())
        finally:
            ctx.config.time_limit_s = limit
        expected = SKIP if len(f.outputs) <= 1 else tuple([SKIP] * len(f.outputs))
        assert out == expected, f"{f.fn.__name__} did not stop at its time limit"


def test_every_tab_with_long_work_has_a_stop_endpoint(built_app):
    api = {f.api_name for f in built_app.fns.values() if f.api_name}
    for tab in ("zero_shot", "matrix", "map", "search", "evaluate"):
        assert f"stop_{tab}" in api


def test_the_documented_example_tab_gets_the_contract_without_extra_code(tmp_path, monkeypatch, micro_dir):
    """docs/tabs.md's worked example, built from the page itself: checks, errors, Stop and the time limit."""
    import re
    import sys
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "tabs.md").read_text()
    code = next(block for block in re.findall(r"```python\n(.*?)```", page, re.S) if "def build_tab" in block)
    (tmp_path / "text_pair_tab.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("text_pair_tab", None)
    import text_pair_tab

    ctx = AppContext.create(AppConfig(default_model=str(micro_dir), model_dirs=[micro_dir.parent]))
    with gr.Blocks() as blocks:
        text_pair_tab.build_tab(ctx, gr.State(str(micro_dir)))
    fns = {f.api_name: f for f in blocks.fns.values() if f.api_name and f.fn is not None}
    assert set(fns) == {"text_cosine", "stop_text_pair"} and fns["text_cosine"].fn.contract.turn
    run = fns["text_cosine"].fn
    answer = run("a red circle", "a red circle", str(micro_dir), request=Visitor())
    assert answer["cosine"] == pytest.approx(1.0, abs=1e-4)
    verdicts = fns["text_cosine"].validator("x" * 1001, "b", None)  # at the queue, by name
    assert not verdicts[0]["is_valid"] and "the first text" in verdicts[0]["message"]
    with pytest.raises(gr.Error, match="the limit is 1,000"):
        run("x" * 1001, "b", str(micro_dir))
    with pytest.raises(gr.Error, match="no/such-model-here is not in the local Hugging Face cache"):
        run("a", "b", "no/such-model-here")
    ctx.config.time_limit_s = 0
    assert run("a", "b", str(micro_dir), request=Visitor()) == SKIP


def test_heavy_work_runs_on_a_low_priority_thread_that_keeps_the_requests_turn_and_stop(ctx):
    """The kernel gives quick requests the cores first: a heavy handler's thread, and the torch threads it
    starts, have the raised nice value; it still holds its request's turn and hears its tab's Stop."""
    import torch

    from demo.platform.fair import current_turn
    from demo.platform.low_priority import thread_nice

    seen = {}

    def torch_thread_nices() -> list[int]:
        import glob
        return [int(open(f"{d}/stat").read().rsplit(")", 1)[1].split()[16]) for d in glob.glob("/proc/self/task/*")]

    @handler("demo", cost="heavy")
    def heavy(call: Call):
        before = set(torch_thread_nices())
        torch.ones(512, 512) @ torch.ones(512, 512)  # starts this thread's OpenMP team
        seen.update(nice=thread_nice(), turn=current_turn(), heavy=current_turn().heavy, before=before,
                    main=threading.current_thread() is threading.main_thread(), job=call.job)
        return "done"

    @handler("demo", cost="quick")
    def quick(call: Call):
        return thread_nice()

    assert endpoint(ctx, heavy)(request=Visitor()) == "done"
    assert seen["nice"] >= ctx.config.heavy_nice > 0 and seen["heavy"] and not seen["main"] and seen["job"] is not None
    assert endpoint(ctx, quick)(request=Visitor()) == 0  # quick work keeps the normal priority
    if torch.get_num_threads() > 1:  # the OpenMP workers of the heavy thread inherit its nice value
        assert torch_thread_nices().count(seen["nice"]) >= 2
