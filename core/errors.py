"""The errors whose message is for the user, as opposed to a bug or an outage.

Front ends (the app, the CLIs) show a `UserFacingError` as its one-line message and treat every
other exception as an operator error: logged with its traceback, reported generically, never
blamed on the user. The family is deliberately *not* a `ValueError`: an `except ValueError`
somewhere must not swallow a user's error as a bug, nor a bug as a user's error.

- `UserInputError`: the input was wrong; the message says what to change.
- `ModelLoadError`: a model could not be loaded (a bad name, a missing or over-large checkpoint).
The app adds its own members (stopped, timed out, busy, over quota: demo/platform/errors.py).
"""

from __future__ import annotations


class UserFacingError(Exception):
    """An error whose message is one line written for the user."""


class UserInputError(UserFacingError):
    """Bad input from the user: the message is one line that says what to change."""


class ModelLoadError(UserInputError):
    """A model could not be loaded. The message is one line, written for the user."""
