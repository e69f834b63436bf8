"""Limits enforced before any work is done: request bodies, requests in flight per visitor, numbers.

`GuardMiddleware` sits in front of Gradio's routes (an ASGI middleware, passed to the FastAPI app
through `launch(app_kwargs=...)`):
- a request body larger than its route's limit is refused with 413 before it is read into memory
  (by Content-Length, and by counting the bytes of a streamed body);
- a visitor (a browser session, or an IP address: the Spaces proxy passes the client's address in
  X-Forwarded-For) with `max_in_flight` requests already queued or running gets 429 for one more,
  and an address may start at most `rate_per_minute` requests a minute (`burst` at once), so that
  nobody can fill the queue, or keep it busy, and starve the others.
"""

from __future__ import annotations

import math
from typing import Callable

from core.errors import UserInputError


def number(value, name: str, low: float, high: float, integer: bool = False) -> float | int:
    """A number input checked before use: finite, within [low, high], whole if `integer`.

    Raises UserInputError naming the input and its range (NaN, infinity, text, or out of range).
    """
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise UserInputError(f"{name} must be a number between {low:g} and {high:g}, got {value!r}") from None
    if not math.isfinite(x) or not low <= x <= high:
        raise UserInputError(f"{name} must be between {low:g} and {high:g}, got {value!r}")
    if integer:
        if x != int(x):
            raise UserInputError(f"{name} must be a whole number, got {value!r}")
        return int(x)
    return x


def text(value, name: str, max_chars: int) -> str:
    """A text input checked before it is parsed: at most max_chars characters."""
    value = "" if value is None else str(value)
    if len(value) > max_chars:
        raise UserInputError(f"{name}: {len(value):,} characters; the limit is {max_chars:,}")
    return value


def early_checks(checks: dict[int, Callable]) -> Callable:
    """A Gradio `validator=` for an event: checks[i](value) runs on input i when the request joins the
    queue, before it takes a place there, so a request that would be refused never waits in line.
    Each check raises UserInputError; its first line is shown to the user."""
    import gradio as gr

    def validate(*values):
        verdicts = []
        for i, value in enumerate(values):
            try:
                if i in checks:
                    checks[i](value)
                verdicts.append(gr.validate(True, ""))
            except UserInputError as e:
                verdicts.append(gr.validate(False, str(e).splitlines()[0]))
        return verdicts

    return validate


def count_at_most(limit: int, what: str) -> Callable:
    """A check that a list input (uploaded files) has at most `limit` items."""
    def check(value) -> None:
        if value is not None and len(value) > limit:
            raise UserInputError(f"{len(value)} {what}; the limit is {limit} per request")
    return check
