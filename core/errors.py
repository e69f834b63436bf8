"""The error family that means "the input was wrong", as opposed to a bug or an outage.

Front ends (the app, the CLIs) show a `UserInputError` to the user as its one-line message and
treat every other exception as an operator error: logged with its traceback, reported generically.
"""

from __future__ import annotations


class UserInputError(ValueError):
    """Bad input from the user: the message is one line that says what to change."""


class ModelLoadError(UserInputError):
    """A model could not be loaded. The message is one line, written for the user."""
