"""Glue every tab uses: one-line `gr.Error`s for expected failures, model lookup, the plot template."""

from __future__ import annotations

import functools
import logging
from contextlib import contextmanager

import gradio as gr
import plotly.io as pio

from core.errors import UserInputError
from demo.platform.fair import visitor_of
from demo.platform.jobs import JobStopped

log = logging.getLogger("clip_lab")
# What the user can fix, shown as its one-line message: UserInputError and its family (ModelLoadError,
# DataError, ImageInputError). Anything else is an operator error: logged in full, reported generically.
USER_ERRORS = (UserInputError,)

# Every figure of the app is drawn in plotly_white. As the default template plotly applies it when a
# figure is serialised, without validating and copying it into each figure: ~7 ms instead of ~28 ms
# for the zero-shot bar chart, the same JSON.
pio.templates.default = "plotly_white"


def user_errors(fn):
    """Decorator: expected failures (bad input, unloadable model, unreadable data) become a
    `gr.Error` with their one-line message; anything else is logged and reported generically.
    A job ended by its Stop button changes no output."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except JobStopped:  # Stop pressed: the outputs keep what they showed, and nothing half-done was kept
            gr.Info("Stopped.")
            return gr.skip()
        except gr.Error:
            raise
        except USER_ERRORS as e:
            raise gr.Error(one_line(e), print_exception=False) from e
        except Exception as e:
            log.exception("unexpected failure in %s", fn.__name__)
            raise gr.Error(f"internal error ({e.__class__.__name__}); the server log has details", print_exception=False) from e

    return wrapper


def one_line(error: BaseException) -> str:
    """The first line of an error's message (its class name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else error.__class__.__name__


def progress_callback(progress: gr.Progress | None, start: float = 0.0, end: float = 1.0):
    """A (fraction, message) callback mapping [0, 1] into [start, end] of a gr.Progress bar."""
    if progress is None:
        return None

    def report(fraction: float, message: str) -> None:
        progress(start + (end - start) * fraction, desc=message)

    return report


@contextmanager
def running(ctx, request, tab: str):
    """Register a long job of this session's `tab` for its Stop button, and wait for its fair turn
    on the CPU (demo/fair.py); yields the Job. A Stop or the time limit also ends the wait."""
    session = getattr(request, "session_hash", None)
    job = ctx.jobs.start(session, tab, ctx.config.time_limit_s)
    try:
        with ctx.services.cpu.turn(visitor_of(request), job.check) as turn:
            job.turn = turn
            yield job
    finally:
        ctx.jobs.finish(session, tab, job)


def stop_button(ctx, button, tab: str, events: list) -> None:
    """Wire a Stop button: it cancels the events in the browser and stops their work on the server.
    It is also the API endpoint /stop_<tab>, for scripts: gradio_client's job.cancel() alone only
    stops waiting for the answer, while this stops the session's work."""
    def stop(request: gr.Request) -> str:
        n = ctx.jobs.stop(getattr(request, "session_hash", None), tab)
        return f"stopped {n} job(s)"

    stop.__doc__ = f"Stop this session's running {tab.replace('_', '-')} job (its work ends after the current batch)."
    button.click(stop, None, gr.Textbox(visible=False, label="Stopped"), cancels=events, queue=False,
                 api_name=f"stop_{tab}")


def get_model(ctx, name: str, progress: gr.Progress | None = None):
    """The session's model from the shared cache (ModelLoadError passes to `user_errors`)."""
    return ctx.models.get(name or ctx.config.default_model, progress_callback(progress, 0.0, 0.3))


