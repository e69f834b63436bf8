"""The model picker shared by all tabs. The session holds only the chosen model's name."""

from __future__ import annotations

import gradio as gr

from demo.platform.contract import Call, handler, listen


def describe_model(ctx, name: str) -> str:
    """A one-line Markdown description of a loaded model (loading it if needed)."""
    clip = ctx.models.get(name or ctx.config.default_model)
    params = sum(p.numel() for p in clip.model.parameters()) / 1e6
    return (f"**Model:** `{name}` · loaded · {params:.1f}\u00a0M parameters · images {clip.image_size}\u00a0px · "
            f"embedding {clip.embed_dim}\u2011d · logit scale {clip.logit_scale:.2f}")  # no break inside a figure


@handler("model", turn=False)
def load_model(call: Call, name: str):
    """Load a CLIP model and make it this session's model for every tab.

    Args:
        name: a bundled model name ('shapes-tiny'), an allowed local folder, or a Hub id such as 'openai/clip-vit-base-patch32'.
    """
    name = (name or "").strip()
    if call.progress is not None:
        call.progress(0.0, desc=f"loading {name}")
    call.ctx.models.get(name, lambda f, message: call.progress(0.9 * f, desc=message) if call.progress is not None else None)
    return name, describe_model(call.ctx, name)


@handler("model", turn=False)
def keep_current(call: Call, current: str):
    """After a failed load: the previous choice back in the picker, and its status line."""
    return current, describe_model(call.ctx, current)


@handler("model", turn=False)
def show_model(call: Call, name: str):
    """The status line of the session's model (on page load; loads it if needed)."""
    return describe_model(call.ctx, name)


def build_picker(ctx) -> tuple:
    """The picker row; returns (the per-session gr.State holding the model name, the status line, the
    dropdown) so that app.py can fill the status line on page load and the Train tab can add a run's
    weights to the choices.

    One pick sends one request: the listener is `change`, which fires once for a pick from the list
    and once for a typed name committed with Enter or Tab (a dropdown's `input` fires twice for a
    pick: on the pick and again on blur). A change made by the app (a failed load puts the previous
    choice back; the Train tab's "use this model") names a model already in memory: it answers at once.
    A failed load rewrites the status line, so no stale error state stays on it.
    """
    default = ctx.config.default_model
    state = gr.State(default)
    with gr.Row(equal_height=True):
        dropdown = gr.Dropdown(ctx.models.choices(), value=default, label="Model", allow_custom_value=True,
                               info="bundled model, an allowed local folder, or a Hub id (Hub ids need network or the HF cache)",
                               scale=3, elem_id="model-picker")
        status = gr.Markdown(f"**Model:** `{default}`", label="Model status", elem_id="model-status")
    # a model load runs in its own group of one (queued, so a slow download shows progress), not in a fair turn
    event = listen(ctx, dropdown.change, load_model, [dropdown], [state, status], api_name="load_model", queue=True,
                   concurrency_id="model_load", concurrency_limit=1, show_progress_on=[status], show_progress="full")
    listen(ctx, event.failure, keep_current, [state], [dropdown, status])
    return state, status, dropdown
