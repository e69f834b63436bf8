"""Checks of what a visitor sends, by the handler parameter they guard.

`number` and `text` check one value. The factories below (`in_range`, `at_most_chars`,
`at_most_items`) build the named checks that a handler declares in its contract
(demo/platform/contract.py): `checks={"top_k": in_range("top-k", 1, 20, integer=True)}`. A check
is `check(value, config) -> value`: it raises `UserInputError` naming the input, or returns the
value to use (a whole number as an int, None replaced by the default). Limits may name an
`AppConfig` field ("max_matrix_pairs"), so every limit lives in the configuration. The contract
runs the checks when a request joins the queue (before it waits in line) and again when it runs,
so a call that skips the queue (the API's /call route, MCP) is checked too.
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
    except (TypeError, ValueError) as e:
        raise UserInputError(f"{name} must be a number between {low:g} and {high:g}, got {value!r}") from e
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


def count_at_most(limit: int, what: str) -> Callable:
    """A check that a list input (uploaded files) has at most `limit` items."""
    def check(value) -> None:
        if value is not None and len(value) > limit:
            raise UserInputError(f"{len(value)} {what}; the limit is {limit} per request")
    return check


Check = Callable[[object, object], object]


def _limit(value, config):
    """A bound given as a number, or as the name of an AppConfig field."""
    return getattr(config, value) if isinstance(value, str) else value


def in_range(name: str, low, high, integer: bool = False, default=None) -> Check:
    """A check that a number lies in [low, high] (bounds: numbers or AppConfig field names); None means `default`."""
    def check(value, config):
        if value in (None, "") and default is not None:
            value = default
        return number(value, name, _limit(low, config), _limit(high, config), integer)
    return check


def one_of(name: str, allowed: tuple[str, ...], default: str | None = None) -> Check:
    """A check that a number is one of a menu's `allowed` numbers (written as text); returns it as a float."""
    def check(value, config):
        value = default if value in (None, "") else value
        try:
            found = next((float(a) for a in allowed if float(value) == float(a)), None)
        except (TypeError, ValueError):
            found = None
        if found is None:
            raise UserInputError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        return found
    return check


def at_most_chars(name: str, limit="max_text_chars") -> Check:
    """A check that a text has at most `limit` characters (a number or an AppConfig field name); None is ""."""
    def check(value, config):
        return text(value, name, _limit(limit, config))
    return check


def at_most_items(what: str, limit="max_upload_images") -> Check:
    """A check that a list (uploaded files) has at most `limit` items; None is an empty list."""
    def check(value, config):
        count_at_most(_limit(limit, config), what)(value)
        return value
    return check
