"""CLIP Lab: see CLIP work. `python app.py` serves on $GRADIO_SERVER_PORT (default 7860).

Also the Hugging Face Spaces entry point (sdk: gradio, app_file: app.py). Tabs live in demo/,
one module each with `build_tab(ctx)`; the model math lives in core/.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import warnings

try:  # ZeroGPU wants `spaces` imported before torch initialises CUDA; elsewhere it is inert
    import spaces  # noqa: F401
except ImportError:
    pass

if __name__ == "__main__" and "IPython" not in sys.modules:
    # A server process never uses gradio's notebook magics, and importing IPython for them costs
    # about 1 s of CPU before the first answer (IPython is not a requirement; it is often present).
    sys.modules["IPython"] = None

import gradio as gr  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from demo.inputs import pairs  # noqa: E402
from demo.platform.config import EXAMPLES_DIR, AppConfig
from demo.platform.context import AppContext  # noqa: E402
from demo.platform.contract import Call, endpoint, handler, listen  # noqa: E402
from demo.platform.guard import GuardMiddleware  # noqa: E402
from demo.platform.test_gate import add_test_gate  # noqa: E402
from demo.tabs.claims import tab as claims
from demo.tabs.compare import tab as compare
from demo.tabs.evaluate import tab as evaluate
from demo.tabs.map import tab as embedding_map
from demo.tabs.matrix import tab as similarity_matrix
from demo.tabs.search import tab as search  # noqa: E402
from demo.tabs.shared.hover import HOVER_JS  # noqa: E402
from demo.tabs.shared.picker import build_picker, show_model  # noqa: E402
from demo.tabs.train import tab as train_tab
from demo.tabs.zero_shot import tab as zero_shot  # noqa: E402

TITLE = "CLIP Lab"
CSS = """
.gradio-container {max-width: 1400px !important}
#zs-info p, #mx-figures p, #map-gap p {font-size: 0.95em}
/* small images (shapes-world samples are 64 px) are shown enlarged, with crisp pixels */
#zs-image img {width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated}
/* on a phone the matrix keeps readable cells and scrolls sideways instead of shrinking to a strip */
#mx-plot {overflow-x: auto}
#mx-plot .js-plotly-plot {min-width: 560px}
/* the model status never breaks a model name; on a narrow screen it goes under the picker */
#model-status {min-width: min(100%, 320px) !important}
#model-status code {white-space: nowrap}
"""


def build_app(ctx: AppContext | None = None) -> gr.Blocks:
    """The whole app: the model picker above eight tabs. Nothing is loaded until first use."""
    ctx = ctx or AppContext.create()
    # uploads and other temporary files are deleted upload_ttl_s after they arrive (checked 6 times as often)
    ttl = ctx.config.upload_ttl_s
    with gr.Blocks(title=TITLE, delete_cache=(max(5, ttl // 6), ttl)) as app:
        gr.Markdown("# CLIP Lab\nSee CLIP work: which prompt wins and why, how a batch's image–text matrix becomes "
                    "the contrastive loss, and where images and captions land in the shared embedding space.")
        model_state, model_status, picker = build_picker(ctx)
        # "wrap": on a phone the eight tab names wrap onto a second line instead of hiding behind "⋯"
        with gr.Tabs(overflow_behavior="wrap"):
            with gr.Tab("Zero-shot", id="zero-shot"):
                zs = zero_shot.build_tab(ctx, model_state)
            with gr.Tab("Compare models", id="compare"):
                compare_boxes = compare.build_tab(ctx, model_state)
            with gr.Tab("Similarity matrix", id="matrix"):
                similarity_matrix.build_tab(ctx, model_state)
            with gr.Tab("Embedding map", id="map"):
                embedding_map.build_tab(ctx, model_state, zs.classnames, zs.templates)
            with gr.Tab("Train", id="train"):
                train_tab.build_tab(ctx, model_state, picker, model_status)
            with gr.Tab("Evaluate", id="evaluate"):
                evaluate.build_tab(ctx, model_state, zs.templates, zs.template_preset, zs.saved_templates, zs)
            with gr.Tab("Search", id="search"):
                search.build_tab(ctx, model_state)
            with gr.Tab("Paper's claims", id="claims"):
                claims_name, claims_outputs = claims.build_tab(ctx)
        app.unload(endpoint(ctx, stop_jobs, [], 0))  # Blocks.unload takes the function alone
        if ctx.config.test_gate:
            add_test_gate()
        listen(ctx, app.load, zero_shot.fill_defaults, [model_state], zs.outputs())
        listen(ctx, app.load, compare.fill_defaults, [model_state], compare_boxes)
        listen(ctx, app.load, claims.show_claim, [claims_name], claims_outputs)
        listen(ctx, app.load, show_model, [model_state], model_status, queue=True, concurrency_id="model_load",
               show_progress="minimal")
    app.queue(max_size=ctx.config.queue_size, default_concurrency_limit=ctx.config.concurrency)
    return app


@handler("page", turn=False)
def stop_jobs(call: Call) -> None:
    """A closed page stops its session's jobs."""
    call.ctx.jobs.stop(call.session or None)


def start_warmup(ctx: AppContext) -> threading.Thread:
    """Warm the app up in a daemon thread, in the order users need it; returns the thread.

    First the default model (the first zero-shot answer needs it), then the CLIP_LAB_PRELOAD models. Then, once that answer is out or
    `ctx.config.warmup_delay` seconds have passed, UMAP's kernels (their own thread) and the default
    map set (500 pairs = 1,000 points). On 2 cores the map work (mostly GIL-bound imports, drawing,
    numba) would otherwise slow the first zero-shot answer by seconds; failures are only logged,
    since the first request reports them properly.
    """
    log = logging.getLogger("clip_lab")
    t0 = time.perf_counter()

    def run() -> None:
        for i, name in enumerate((ctx.config.default_model, *ctx.config.preload)):
            try:
                ctx.models.get(name)
            except Exception as e:
                log.warning("warm-up: loading %s failed: %s", name, e)
                if i == 0:
                    return
                continue
            log.info("warm-up: %s loaded on %s after %.1f s", name, ctx.config.torch_device(), time.perf_counter() - t0)
        answered = ctx.first_answer.wait(ctx.config.warmup_delay)
        log.info("warm-up: map part starts after %.1f s (%s)", time.perf_counter() - t0,
                 "first zero-shot answer out" if answered else "no request yet")
        threading.Thread(target=warm_umap, name="umap-warmup", daemon=True).start()
        try:
            pairs.prewarm(ctx)
            log.info("warm-up: default map set encoded after %.1f s", time.perf_counter() - t0)
        except Exception as e:
            log.warning("warm-up: encoding the default map set failed: %s", e)

    thread = threading.Thread(target=run, name="warmup", daemon=True)
    thread.start()
    return thread


def warm_umap(points: int = 300) -> None:
    """Compile (or load from numba's disk cache) UMAP's kernels with a tiny fit; failures only cost time later."""
    import numpy as np

    from core.projection import umap_project

    try:
        umap_project(np.random.default_rng(0).normal(size=(points, 16)).astype(np.float32), dims=2, n_neighbors=10,
                     n_epochs=20)
    except Exception as e:
        logging.getLogger("clip_lab").warning("warm-up: UMAP's kernels failed to compile: %s", e)


def main() -> None:
    """Build and serve the app (blocking)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # Gradio warns about every public endpoint with a gr.State input, hidden from MCP or not; the UI endpoints
    # with state are not tools here (demo/platform/mcp.py registers stateless ones)
    warnings.filterwarnings("ignore", message="This MCP server includes a tool that has a gr.State input")
    config = AppConfig.from_env()
    ctx = AppContext.create(config)
    if config.warm_umap:
        start_warmup(ctx)
    app = build_app(ctx)
    guard = Middleware(GuardMiddleware, ctx=ctx, max_body=config.max_request_kb << 10,
                       max_upload_body=config.max_upload_request_mb << 20, max_in_flight=config.max_in_flight_per_visitor,
                       rate_per_minute=config.rate_per_minute, burst=config.rate_burst)
    try:
        app.launch(server_name=config.server_name, app_kwargs={"middleware": [guard]},
                   server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                   max_file_size=config.max_file_size, max_threads=config.inference_threads() + 16, show_error=True, css=CSS,
                   js=HOVER_JS, mcp_server=True, allowed_paths=[str(EXAMPLES_DIR)], run_history=config.run_history,
                   theme=gr.themes.Soft(primary_hue="indigo"), footer_links=["api", "settings"])
    except KeyboardInterrupt:  # Ctrl-C while launch() was still starting up
        pass
    # launch() returns after Ctrl-C (or SIGTERM), the server closed. Daemon threads may be inside native code
    # (a warm-up's numba compile, a training step): finalising the interpreter under them aborted the process
    # ("terminate called without an active exception"). Nothing is left to flush but the logs.
    logging.getLogger("clip_lab").info("stopped")
    logging.shutdown()
    os._exit(0)


if __name__ == "__main__":
    main()
