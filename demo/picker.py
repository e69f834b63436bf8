"""The model picker shared by all tabs. The session holds only the chosen model's name."""

from __future__ import annotations

import gradio as gr

from .common import get_model, user_errors


def describe_model(ctx, name: str) -> str:
    """A one-line Markdown description of a loaded model."""
    clip = get_model(ctx, name)
    params = sum(p.numel() for p in clip.model.parameters()) / 1e6
    return (f"**Model:** `{name}` · {params:.1f} M parameters · images {clip.image_size} px · "
            f"embedding {clip.embed_dim}-d · logit scale {clip.logit_scale:.1f}")


def load_model(ctx, name: str, current: str, progress=gr.Progress()) -> tuple[str, str]:
    """Load `name` into the shared cache and make it this session's model.

    On failure a gr.Error is raised, so the session keeps `current` (the picker is reset by the
    event's failure handler)."""
    name = (name or "").strip()
    progress(0.0, desc=f"loading {name}")
    get_model(ctx, name, progress)
    return name, describe_model(ctx, name)


def build_picker(ctx) -> gr.State:
    """The picker row; returns the per-session gr.State holding the model name."""
    default = ctx.config.default_model
    state = gr.State(default)
    with gr.Row(equal_height=True):
        dropdown = gr.Dropdown(ctx.models.choices(), value=default, label="Model", allow_custom_value=True,
                               info="bundled model, an allowed local folder, or a Hub id (Hub ids need network or the HF cache)",
                               scale=3, elem_id="model-picker")
        status = gr.Markdown(f"**Model:** `{default}` (loads on first use)", elem_id="model-status")

    @user_errors
    def on_pick(name, current, progress=gr.Progress()):
        return load_model(ctx, name, current, progress)

    event = dropdown.input(on_pick, inputs=[dropdown, state], outputs=[state, status], api_name="load_model",
                           concurrency_id="model_load", concurrency_limit=1)
    event.failure(lambda current: current, inputs=state, outputs=dropdown, api_name="revert_model_choice",
                  api_visibility="undocumented", queue=False)
    return state
