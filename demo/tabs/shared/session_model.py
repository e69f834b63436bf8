"""The session's model and the results each tab keeps: which model a kept result belongs to.

A session holds its model's *name* (the picker's gr.State). Every tab that keeps a result (zero-shot
scores, the matrix batch, the map, the search index, the Evaluate study) records the name of the
model it was computed with. When the session's model changes, each tab says at once that what it
shows belongs to the previous model, and nothing is recomputed or mixed until the user asks.
"""

from __future__ import annotations


def same_model(kept: str | None, current: str | None, default: str) -> bool:
    """Whether a result computed with model `kept` belongs to the session's model `current` (names; empty = default)."""
    return (kept or default) == (current or default)


def model_notice(kept: str | None, current: str | None, default: str, redo: str) -> str:
    """'' when the result belongs to the session's model, else a one-paragraph warning naming both and what to press."""
    if same_model(kept, current, default):
        return ""
    return (f"⚠️ **This shows `{kept or default}`, not the session's model `{current or default}`.** "
            f"Nothing was recomputed: press **{redo}** to compute it with `{current or default}`.")
