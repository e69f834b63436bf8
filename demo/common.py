"""Glue every tab uses: turning expected failures into one-line `gr.Error`s, and model lookup."""

from __future__ import annotations

import functools
import logging

import gradio as gr

from core.data import DataError
from core.model import ModelLoadError

from .images import ImageInputError

log = logging.getLogger("clip_lab")
USER_ERRORS = (ValueError, ModelLoadError, DataError, ImageInputError)


def user_errors(fn):
    """Decorator: expected failures (bad input, unloadable model, unreadable data) become a
    `gr.Error` with their one-line message; anything else is logged and reported generically."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except USER_ERRORS as e:
            raise gr.Error(str(e).splitlines()[0] if str(e) else e.__class__.__name__, print_exception=False) from None
        except Exception as e:
            log.exception("unexpected failure in %s", fn.__name__)
            raise gr.Error(f"internal error ({e.__class__.__name__}); the server log has details", print_exception=False) from None

    return wrapper


def progress_callback(progress: gr.Progress | None, start: float = 0.0, end: float = 1.0):
    """A (fraction, message) callback mapping [0, 1] into [start, end] of a gr.Progress bar."""
    if progress is None:
        return None

    def report(fraction: float, message: str) -> None:
        progress(start + (end - start) * fraction, desc=message)

    return report


def get_model(ctx, name: str, progress: gr.Progress | None = None):
    """The session's model from the shared cache (ModelLoadError passes to `user_errors`)."""
    return ctx.models.get(name or ctx.config.default_model, progress_callback(progress, 0.0, 0.3))
