"""The app's members of the user-facing error family (core.errors), and how each is shown.

A handler under the contract (demo/platform/contract.py) never builds a `gr.Error` itself: it
raises one of these, or a `core.errors.UserInputError`, and the contract shows it the way its
kind asks for:

| error | shown as | the tab's outputs |
|---|---|---|
| `Stopped` (Stop pressed, tab closed) | "Stopped." (info) | keep what they showed |
| `TimedOut` (past the time limit) | its message (warning) | keep what they showed |
| `Busy` (no slot for big work) | its message (warning) | keep what they showed |
| `OverQuota` (uploads, a GPU quota) | its message (error) | keep what they showed |
| `UserInputError` and family | its first line (error) | keep what they showed |
| anything else (a bug, an outage, out of memory) | "internal error (Class); the server log has details" | keep what they showed |

None of these is an input error: a Stop or a busy server is not the user's mistake.
"""

from __future__ import annotations

import re

from core.errors import UserFacingError


class Stopped(UserFacingError):
    """The user pressed Stop (or closed the tab): the job ends here and nothing half-done is kept."""

    shown_as = "info"


class TimedOut(UserFacingError):
    """The request ran past the app's time limit (AppConfig.time_limit_s)."""

    shown_as = "warning"


class Busy(UserFacingError):
    """Every slot for big work is taken: the user is told to come back, at once."""

    shown_as = "warning"


class OverQuota(UserFacingError):
    """An allowance is used up: a visitor's upload bytes, the server's upload space, a GPU quota."""

    shown_as = "error"


def one_line(error: BaseException) -> str:
    """The first line of an error's message (its class name when it has none), as a toast shows it.

    Messages quote names in Markdown backticks; a toast and an API client show those raw, so they
    become plain double quotes: `shapes-tiny` -> "shapes-tiny".
    """
    text = str(error).strip()
    line = text.splitlines()[0] if text else error.__class__.__name__
    return without_paths(re.sub(r"`([^`]*)`", r'"\1"', line))


SERVER_PATH = re.compile(r"(?<![\w.:/])/(?:[\w.@+-]+/)+([\w.@+-]+)/?")  # an absolute path of two or more parts
INTERNALS = re.compile(r"<[\w.]+ object at 0x[0-9a-f]+>|<class '([\w.]+)'>")


def without_paths(line: str) -> str:
    """A message without the server's paths (a path keeps its last part: '/srv/app/runs/x/model' -> '…/model')
    and without Python object reprs, so that no answer tells a visitor how the server is laid out."""
    line = SERVER_PATH.sub(lambda m: "…/" + m.group(1), line)
    return INTERNALS.sub(lambda m: m.group(1) or "a value", line)


def plain_refusal(detail: str, max_chars: int = 300) -> str:
    """One readable line for Gradio's refusal of a request's inputs (HTTP 400), without its internals.

    "Could not preprocess input component at index 2 (a `number` component) ... Expected a `float | None`,
    but the value passed ... was: nan (of type `float`) ... Original error: ValueError: cannot convert
    float NaN to integer" becomes "input 3 (a number) must be a finite number".
    """
    text = str(detail).strip().strip('"\'')
    found = re.match(r"Could not preprocess input component at index (\d+) \(a `(\w+)` component\)", text)
    if found:
        where = f"input {int(found.group(1)) + 1} (a {found.group(2)})"
        if re.search(r"NaN|infinity", text, re.IGNORECASE):
            return f"{where} must be a finite number"
        expected = re.search(r"Expected an? `([^`]+)`", text)
        got = re.search(r"\(of type `(\w+)`\)", text)
        return (f"{where} expects {expected.group(1) if expected else 'another kind of value'}"
                + (f", not a {got.group(1)}" if got else ""))
    choice = re.match(r"Value: (.{0,60}?) \(type: <class '\w+'>\) is not in the list of choices: \[(.*)\]$", text, re.S)
    if choice:
        return f"{choice.group(1)[:40]} is not one of the choices: {choice.group(2).replace(chr(39), '')}"[:max_chars]
    line = without_paths(text.splitlines()[0] if text else "the request was refused")
    return line[:max_chars]
