"""The model picker shared by all tabs. The session holds only the chosen model's name."""

from __future__ import annotations

import gradio as gr

from demo.platform.contract import get_model, progress_callback, user_errors


def describe_model(ctx, name: str) -> str:
    """A one-line Markdown description of a loaded model (loading it if needed)."""
    clip = get_model(ctx, name)
    params = sum(p.numel() for p in clip.model.parameters()) / 1e6
    return (f"**Model:** `{name}` · loaded · {params:.1f} M parameters · images {clip.image_size} px · "
            f"embedding {clip.embed_dim}-d · logit scale {clip.logit_scale:.2f}")


def build_picker(ctx) -> tuple:
    """The picker row; returns (the per-session gr.State holding the model name, the status line,
    describe_model, the dropdown) so that app.py can fill the status line on page load and the
    Train tab can add a run's weights to the choices.

    One pick sends one request (a single `input` listener), and a failed load puts the previous
    choice back and rewrites the status line, so no stale error state stays on it.
    """
    default = ctx.config.default_model
    state = gr.State(default)
    with gr.Row(equal_height=True):
        dropdown = gr.Dropdown(ctx.models.choices(), value=default, label="Model", allow_custom_value=True,
                               info="bundled model, an allowed local folder, or a Hub id (Hub ids need network or the HF cache)",
                               scale=3, elem_id="model-picker")
        status = gr.Markdown(f"**Model:** `{default}`", label="Model status", elem_id="model-status")

    @user_errors
    def load_model(name: str, progress=gr.Progress()):
        """Load a CLIP model and make it this session's model for every tab.

        Args:
            name: a bundled model name ('shapes-tiny'), an allowed local folder, or a Hub id such as 'openai/clip-vit-base-patch32'.
        """
        name = (name or "").strip()
        if progress is not None:
            progress(0.0, desc=f"loading {name}")
        ctx.models.get(name, progress_callback(progress, 0.0, 0.9))  # an empty name is refused, not the default
        return name, describe_model(ctx, name)

    def keep_current(current):
        return current, describe_model(ctx, current)

    event = dropdown.input(load_model, inputs=[dropdown], outputs=[state, status], api_name="load_model",
                           concurrency_id="model_load", concurrency_limit=1, show_progress_on=[status])
    event.failure(keep_current, inputs=state, outputs=[dropdown, status], api_visibility="private", queue=False,
                  show_progress="hidden")
    return state, status, describe_model, dropdown
