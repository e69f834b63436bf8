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
    return re.sub(r"`([^`]*)`", r'"\1"', line)
