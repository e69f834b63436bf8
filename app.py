"""CLIP Lab: see CLIP work. `python app.py` serves on $GRADIO_SERVER_PORT (default 7860).

Also the Hugging Face Spaces entry point (sdk: gradio, app_file: app.py). Tabs live in demo/,
one module each with `build_tab(ctx)`; the model math lives in core/.
"""

from __future__ import annotations

import logging
import os
import threading

import gradio as gr

from demo import embedding_map, similarity_matrix, zero_shot
from demo.context import AppConfig, AppContext
from demo.hover import HOVER_JS
from demo.picker import build_picker

TITLE = "CLIP Lab"
CSS = """
.gradio-container {max-width: 1400px !important}
#zs-info p, #mx-figures p, #map-gap p {font-size: 0.95em}
"""


def build_app(ctx: AppContext | None = None) -> gr.Blocks:
    """The whole app: the model picker above three tabs. Nothing is loaded until first use."""
    ctx = ctx or AppContext.create()
    with gr.Blocks(title=TITLE) as app:
        gr.Markdown("# CLIP Lab\nSee CLIP work: which prompt wins and why, how a batch's image–text matrix becomes "
                    "the contrastive loss, and where images and captions land in the shared embedding space.")
        build_picker(ctx)
        with gr.Tabs():
            with gr.Tab("Zero-shot", id="zero-shot"):
                zero_shot.build_tab(ctx)
            with gr.Tab("Similarity matrix", id="matrix"):
                similarity_matrix.build_tab(ctx)
            with gr.Tab("Embedding map", id="map"):
                embedding_map.build_tab(ctx)
    app.queue(max_size=ctx.config.queue_size, default_concurrency_limit=ctx.config.concurrency)
    app.clip_ctx = ctx
    return app


def _prewarm(ctx: AppContext) -> None:
    try:
        embedding_map.prewarm(ctx)
    except Exception as e:  # the first request will report the problem properly
        logging.getLogger("clip_lab").warning("prewarm failed: %s", e)


def main() -> None:
    """Build and serve the app (blocking)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = AppConfig.from_env()
    if config.warm_umap:
        from core.projection import start_umap_warmup

        start_umap_warmup()
    ctx = AppContext.create(config)
    if config.warm_umap:  # load the default model and encode the default map set while nobody waits
        threading.Thread(target=_prewarm, args=(ctx,), name="prewarm", daemon=True).start()
    app = build_app(ctx)
    app.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
               server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
               max_file_size=config.max_file_size, show_error=True, css=CSS, js=HOVER_JS,
               theme=gr.themes.Soft(primary_hue="indigo"), footer_links=["api", "settings"])


if __name__ == "__main__":
    main()
