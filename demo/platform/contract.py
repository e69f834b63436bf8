"""The handler contract: one decorator gives every endpoint the app's conventions.

A handler is a module-level function whose first parameter is a `Call`, followed by its inputs
by name, and which returns its outputs:

    @handler("zero_shot", checks={"top_k": in_range("top-k", 1, 20, integer=True)}, uploads=("image",))
    def zero_shot(call: Call, image: str | None = None, top_k: float = 5, model: str | None = None):
        clip = call.model(model)
        ...

`listen(ctx, on, fn, inputs, outputs)` wires it to events. From the declaration alone, every
call then gets:
- **input checks by name**: each check runs when the request joins the queue (Gradio's
  `validator=`, so a refused request never waits in line) and again when it runs (so /call, the
  API and MCP are checked too); the handler receives the checked values;
- **upload ownership**: the files in the named parameters must be the visitor's own uploads;
- **a fair turn, Stop and the time limit** (turn=True): the call waits for a slot of the fair
  scheduler (demo/platform/fair.py), registers with the tab's Stop button, and `call.report(...)`
  progress callbacks end it at the next batch after a Stop or past the time limit;
- **progress with an ETA**: `call.report(desc, unit)` counts steps on the page's progress bar;
- **the error channel**: demo/platform/errors.py's table (Stopped keeps the outputs and says
  "Stopped.", a user's error is one line, a bug is logged and never blamed on the user);
- **the first-answer signal** that the start-up warm-up waits for.

Handlers never see Gradio's request or progress objects; tests call them by name with a `Call`.
"""

from __future__ import annotations

import functools
import inspect
import logging
import typing
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Mapping

import gradio as gr
import plotly.io as pio

from core.errors import UserFacingError, UserInputError
from demo.platform.errors import Stopped, one_line
from demo.platform.fair import visitor_of
from demo.platform.jobs import Job

log = logging.getLogger("clip_lab")

# Every figure of the app is drawn in plotly_white. As the default template plotly applies it when a
# figure is serialised, without validating and copying it into each figure: ~7 ms instead of ~28 ms
# for the zero-shot bar chart, the same JSON.
pio.templates.default = "plotly_white"
OUT_OF_MEMORY = ("the server ran out of memory for this request (not a fault of your input): "
                 "try again in a minute, or ask for less at once")


@dataclass(frozen=True)
class Contract:
    """What a handler declares: its Stop group (`tab`), whether it takes a fair turn, its named
    input checks, and the parameters that hold uploaded files."""

    tab: str
    turn: bool = True
    checks: Mapping[str, Callable] = field(default_factory=dict)
    uploads: tuple[str, ...] = ()
    refusal_output: int | None = None
    cost: str = "quick"


COSTS = ("quick", "heavy", "training")


def handler(tab: str, *, turn: bool = True, checks: Mapping[str, Callable] | None = None,
            uploads: tuple[str, ...] = (), refusal_output: int | None = None, cost: str = "quick") -> Callable:
    """Decorator: put `fn(call, **inputs)` under the contract (see the module docstring).

    tab: the Stop group (a Stop of this tab, or the closing of the page, ends the call).
    turn: take a fair turn on the CPU, with Stop and the time limit; False for quick view changes
        that compute nothing heavy (they still get the checks and the error channel).
    checks: {parameter name: check(value, config) -> value} (demo/inputs/checks.py).
    uploads: parameter names whose files must be the visitor's own uploads.
    cost: what a turn costs, for the fair scheduler (demo/platform/fair.py): "quick" (seconds: any free
        slot; a quick handler that meets big work, a huge zero-shot head, asks for a heavy slot then),
        "heavy" (a set encoded, a study, an index, a map: only the heavy slots, on low-priority threads that
        leave the cores to quick requests first), "training" (starts a Train-tab run, which has its own line).
    refusal_output: for a handler that redraws a view the page keeps (another view of a built batch):
        the output that says a refusal ("⚠️ …", with a warning toast) while every other output keeps
        what it shows. An error would cover the view with error marks; the API still reads the reason there.
    """
    def decorate(fn):
        names = list(inspect.signature(fn).parameters)
        if not names or names[0] != "call":
            raise TypeError(f"{fn.__name__}: a handler's first parameter is `call`")
        unknown = (set(checks or {}) | set(uploads)) - set(names)
        if unknown:
            raise TypeError(f"{fn.__name__}: no parameter named {', '.join(sorted(unknown))}")
        if cost not in COSTS:
            raise TypeError(f"{fn.__name__}: cost must be one of {', '.join(COSTS)}")
        fn.contract = Contract(tab, turn, dict(checks or {}), tuple(uploads), refusal_output, cost)
        return fn
    return decorate


@dataclass
class Call:
    """What a handler receives besides its inputs: the app context, the request, its job and progress."""

    ctx: object
    request: object = None
    progress: object = None
    job: Job | None = None

    @property
    def config(self):
        return self.ctx.config

    def check(self) -> None:
        """End here if Stop was pressed or the time limit passed (between two pieces of work)."""
        if self.job is not None:
            self.job.check()

    def report(self, desc: str, unit: str = "steps") -> Callable[[int, int], None]:
        """A (done, total) callback for work in batches: checks Stop and the time limit, then shows
        "desc: done of total unit" with Gradio's ETA."""
        job = self.job or Job()
        return job.reporter(self.progress, desc, unit)

    def say(self, fraction: float, desc: str) -> None:
        """Move the progress bar to `fraction` (0 to 1) with a message (and check Stop)."""
        self.check()
        if self.progress is not None:
            self.progress(fraction, desc=desc)

    def model(self, name: str | None = None, pool: str = "main"):
        """The model called `name` (the app's default when empty) from the shared cache, loading it if needed
        (pool 'compare': the comparison view's, which never evicts another session's model)."""
        name = (name or "").strip() or self.config.default_model

        def loading(fraction: float, message: str) -> None:
            if self.progress is not None:
                self.progress(0.3 * fraction, desc=message)
        return self.ctx.models.get(name, loading, pool=pool)

    @property
    def session(self) -> str:
        return str(getattr(self.request, "session_hash", "") or "")


def public_parameters(fn) -> list[inspect.Parameter]:
    """A handler's inputs: its parameters after `call` (a `**settings` parameter included)."""
    return list(inspect.signature(fn).parameters.values())[1:]


def input_names(fn, inputs) -> list[str]:
    """The parameter names that an event's inputs fill: a list fills fn's parameters in order; a dict
    {parameter name: component} names them: fn takes those of its parameters that the dict holds
    (and, with a `**settings` parameter, all the others too)."""
    params = public_parameters(fn)
    own = [p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    takes_more = any(p.kind == p.VAR_KEYWORD for p in params)
    if isinstance(inputs, dict):
        extra = [name for name in inputs if name not in own] if takes_more else []
        return [name for name in own if name in inputs] + extra
    if len(inputs) > len(own):
        raise TypeError(f"{fn.__name__}: {len(inputs)} inputs for {len(own)} parameters")
    return own[:len(inputs)]


def endpoint(ctx, fn, names: list[str] | None = None, n_outputs: int = 1) -> Callable:
    """The function Gradio calls for handler `fn`, whose inputs are the parameters `names` (all by
    default), plus Gradio's request and progress, with the contract applied around fn. Its name,
    docstring and parameters (hence the API's and MCP's documentation) are fn's."""
    contract: Contract = fn.contract
    params = {p.name: p for p in public_parameters(fn) if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    all_hints = typing.get_type_hints(fn)
    event_data = [n for n in params if isinstance(all_hints.get(n), type) and issubclass(all_hints[n], gr.EventData)]
    names = [n for n in (list(names) if names is not None else list(params)) if n not in event_data] + event_data
    shown = [params[n].replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) if n in params
             else inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None) for n in names]
    shown = [p.replace(default=None) if p.name in event_data else p for p in shown]  # Gradio fills them in
    hints = {k: v for k, v in all_hints.items() if k in names}
    # Gradio injects the request and the progress tracker only into positional parameters, after the inputs
    special = [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request),
               inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=gr.Progress())]
    signature = inspect.Signature(shown + special)

    def run(*args, **kwargs):
        try:
            values = dict(signature.bind(*args, **kwargs).arguments)
            request, progress = values.pop("request", None), values.pop("progress", None)
            for name, check in contract.checks.items():
                if name in values:
                    values[name] = check(values[name], ctx.config)
            ctx.check_own_uploads(request, *(values[name] for name in contract.uploads if name in values))
            with _turn(ctx, request, contract) as job:
                if contract.cost == "heavy":  # on a low-priority thread: quick requests get the cores first
                    return ctx.services.background.run(fn, Call(ctx, request, progress, job), **values)
                return fn(Call(ctx, request, progress, job), **values)
        except BaseException as e:
            return _shown(e, fn.__name__, n_outputs, contract.refusal_output)
        finally:
            if contract.turn:
                ctx.first_answer.set()  # a first answer is out: the start-up warm-up goes on (app.start_warmup)

    run.__name__ = run.__qualname__ = fn.__name__
    run.__doc__ = fn.__doc__
    run.__module__ = fn.__module__
    run.__signature__ = signature
    run.__annotations__ = {**hints, "request": gr.Request}
    run.contract, run.handler, run.ctx = contract, fn, ctx
    return run


@contextmanager
def _turn(ctx, request, contract: Contract):
    """The job of one call: registered for its tab's Stop, and (turn=True) holding a fair slot."""
    if not contract.turn:
        yield None
        return
    session = getattr(request, "session_hash", None)
    job = ctx.jobs.start(session, contract.tab, ctx.config.time_limit_s)
    try:
        job.check()  # a Stop that came while the request waited in Gradio's queue
        with ctx.services.cpu.turn(visitor_of(request), job.check, heavy=contract.cost == "heavy"):
            yield job
    finally:
        ctx.jobs.finish(session, contract.tab, job)
        if contract.cost == "heavy":
            return_freed_memory()  # a heavy request's big arrays are freed; give the pages back to the system


@functools.lru_cache(maxsize=1)
def _libc():
    """The C library, looked up once (ctypes.util.find_library runs ldconfig: not per request); None when absent."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def return_freed_memory() -> None:
    """Ask glibc to return freed heap pages to the system (malloc_trim), so that memory freed after a
    heavy request shows up as free again instead of staying in the process's arenas; a no-op elsewhere."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


def _shown(error: BaseException, name: str, n_outputs: int, refusal_output: int | None = None):
    """Show an error the way its kind asks (demo/platform/errors.py); returns outputs that keep what was shown."""
    keep = gr.skip() if n_outputs <= 1 else tuple(gr.skip() for _ in range(n_outputs))
    if refusal_output is not None and isinstance(error, UserInputError) and refusal_output < max(n_outputs, 1):
        gr.Warning(one_line(error))
        said = f"⚠️ {one_line(error)}"
        return said if n_outputs <= 1 else tuple(said if i == refusal_output else gr.skip() for i in range(n_outputs))
    if isinstance(error, (KeyboardInterrupt, SystemExit, GeneratorExit)):
        raise error
    if isinstance(error, gr.Error):  # raised by Gradio or a library it runs (spaces' quota messages)
        raise error
    if isinstance(error, Stopped):
        gr.Info("Stopped.")
        return keep
    if isinstance(error, UserFacingError):
        kind = getattr(error, "shown_as", "error")
        if kind == "warning":
            gr.Warning(one_line(error))
            return keep
        raise gr.Error(one_line(error), print_exception=False) from error
    if isinstance(error, MemoryError) or error.__class__.__name__ == "OutOfMemoryError":
        log.exception("out of memory in %s", name)
        raise gr.Error(OUT_OF_MEMORY, print_exception=False) from error
    log.exception("unexpected failure in %s", name)
    raise gr.Error(f"internal error ({error.__class__.__name__}); the server log has details",
                   print_exception=False) from error


def validator(ctx, fn, names: list[str]) -> Callable | None:
    """Gradio's `validator=` for an event whose inputs fill fn's parameters `names`: the contract's
    checks by name, run when the request joins the queue (no check among them: None)."""
    checks = fn.contract.checks
    if not any(name in checks for name in names):
        return None

    def validate(*values):
        verdicts = []
        for name, value in zip(names, values):
            try:
                if name in checks:
                    checks[name](value, ctx.config)
                verdicts.append(gr.validate(True, ""))
            except UserFacingError as e:
                verdicts.append(gr.validate(False, one_line(e)))
        return verdicts

    validate.checks_of = fn  # Gradio registers it as a function of its own: this says whose checks it runs
    return validate


def queue_group(ctx, contract: Contract) -> dict:
    """Gradio's concurrency group for a handler that takes a turn: quick ones share "inference" (wide: they
    wait in the fair scheduler, not in Gradio's first-come line); heavy ones "heavy", as wide as the
    heavy slots, so that a backlog of big requests never holds the threads that quick ones need. A tab
    may name its own group (the map's, one at a time)."""
    if contract.cost == "heavy":
        return dict(concurrency_id="heavy", concurrency_limit=ctx.config.concurrency)
    return dict(concurrency_id="inference", concurrency_limit=ctx.config.inference_threads())


def listen(ctx, on, fn, inputs: list | dict, outputs: list, *, api_name: str | None = None, **options):
    """Wire handler `fn` to the events `on` (one listener such as `button.click`, a list for gr.on, or
    None for the page load).

    `inputs` fill fn's parameters: a list in order, or a dict {parameter name: component}. Calls
    that take a turn run in the "inference" concurrency group, where the fair scheduler decides who
    goes next; quick ones skip the queue. Without `api_name` the event is
    private. Returns Gradio's dependency (for `.then`, `cancels=`).
    """
    if not hasattr(fn, "contract"):
        raise TypeError(f"{getattr(fn, '__name__', fn)} is not a handler: decorate it with @handler")
    outputs = outputs if isinstance(outputs, list) else [outputs]
    names = input_names(fn, inputs)
    inputs = [inputs[name] for name in names] if isinstance(inputs, dict) else list(inputs)
    defaults = queue_group(ctx, fn.contract) if fn.contract.turn else dict(queue=False, show_progress="hidden")
    kwargs = {**defaults, **options}
    if api_name:
        kwargs["api_name"] = api_name
    else:
        kwargs.setdefault("api_visibility", "private")
    check = validator(ctx, fn, names)
    if check is not None and kwargs.get("queue", True):
        kwargs["validator"] = check
    target = endpoint(ctx, fn, names, len(outputs))
    if api_name:
        target._mcp_type = "api"  # on the API page, not an MCP tool: those are demo/platform/mcp.py's
        target.__name__ = target.__qualname__ = f"{fn.__name__}_ui"  # MCP names tools after functions: leave the name free
    if on is None:  # the page load
        return gr.on(None, target, inputs, outputs, **kwargs)
    if callable(on) and not isinstance(on, (list, tuple)):
        return on(target, inputs, outputs, **kwargs)
    return gr.on(list(on), target, inputs, outputs, **kwargs)


def stop_handler(tab: str):
    """The handler of a tab's Stop button: it sets the Stop flags of this session's jobs on `tab`."""
    def stop(call: Call) -> str:
        return f"stopped {call.ctx.jobs.stop(call.session or None, tab)} job(s)"

    stop.__name__ = stop.__qualname__ = f"stop_{tab}"
    stop.__doc__ = f"Stop this session's running {tab.replace('_', '-')} job (its work ends after the current batch)."
    return handler(tab, turn=False)(stop)


def stop_button(ctx, button, tab: str, events: list) -> None:
    """Wire a Stop button: it cancels the events in the browser and stops their work on the server.
    It is also the API endpoint /stop_<tab>, for scripts: gradio_client's job.cancel() alone only
    stops waiting for the answer, while this stops the session's work."""
    listen(ctx, button.click, stop_handler(tab), [], [gr.Textbox(visible=False, label="Stopped")], cancels=events,
           api_name=f"stop_{tab}")
