"""Embedding-map tab: where images and captions land in the shared space, and the modality gap.

A set of (image, caption) pairs, optionally with the zero-shot tab's class-prompt embeddings, is
projected with UMAP (cosine) or PCA to 2D/3D. Images are circles, captions diamonds, each image
linked to its caption. The modality gap (Liang et al. 2022) is measured, and the map can be
redrawn with each modality centred, which removes the gap.

The session keeps its projected map in a `MapState` (gr.State; logic in demo/tabs/map/maps.py).
"Draw map" projects; colour-by and the links redraw from the state at once; centring projects the
centred embeddings once per map and keeps them, so toggling back and forth is instant after the
first time. Changing what the map is made of (set, model, prompts, method, dims, UMAP settings)
marks the map stale until "Draw map". The handlers take their inputs by name; the settings that
make a map are `SETTINGS`.
"""

from __future__ import annotations

import gradio as gr

from core.receipts import receipt
from core.zeroshot import parse_templates
from demo.inputs.checks import at_most_chars, at_most_items, in_range
from demo.inputs.pairs import DEFAULT_SET, SOURCES, encoded_set
from demo.platform.contract import Call, handler, input_names, listen, stop_button
from demo.platform.mcp import mcp_tool
from demo.tabs.map.explore_view import build_view as build_explorer
from demo.tabs.map.maps import coordinates, gap_markdown, map_data, map_request, new_state, projection_message, prompt_embeddings, render
from demo.tabs.shared.map_figure import COLOUR_BY
from demo.tabs.shared.source_inputs import upload_and_dataset_inputs

# what a map is made of: a change of any marks the drawn map stale (the model too)
SETTINGS = ("source", "n", "seed", "split", "files", "dataset", "dataset_split", "image_column", "text_column",
            "use_prompts", "method", "dims", "n_neighbors", "min_dist", "classnames_text", "templates_text", "model_name")
CHECKS = {"n": in_range("N", 1, "max_map_pairs", integer=True, default=DEFAULT_SET.n),
          "seed": in_range("seed", 0, 2**31 - 1, integer=True, default=0), "files": at_most_items("images"),
          "dims": in_range("dims", 2, 3, integer=True, default=2),
          "n_neighbors": in_range("n_neighbors", 2, 100, integer=True, default=15),
          "min_dist": in_range("min_dist", 0, 0.99, default=0.1),
          "classnames_text": at_most_chars("the class names"), "templates_text": at_most_chars("the templates")}
NOT_DRAWN = "No map yet: pick a set and press **Draw map** (progress shows here)."


@handler("map", checks=CHECKS, uploads=("files",), cost="heavy")
def embedding_map(call: Call, source: str | None = None, n: float | None = None, seed: float | None = None,
                  split: str | None = None, files: list | None = None, dataset: str | None = None,
                  dataset_split: str | None = None, image_column: str | None = None, text_column: str | None = None,
                  use_prompts: bool | None = None, method: str | None = None, dims: float | None = None,
                  n_neighbors: float | None = None, min_dist: float | None = None, colour_by: str | None = None,
                  centred: bool | None = None, links: bool | None = None, classnames_text: str | None = None,
                  templates_text: str | None = None, model_name: str | None = None, map_state=None):
    """Project a set of (image, caption) pairs to a 2D/3D map and measure the modality gap.

    Args:
        source: where the pairs come from: "shapes world", "uploaded images" or "datasets source".
        n: number of pairs for the shapes world or a dataset (between the app's limits, 200 to 5,000 by default).
        seed: seed that picks the shapes-world samples or the dataset rows.
        split: shapes-world split, "eval" (every colour-shape pair) or "train".
        files: image files, for source "uploaded images" (captions come from the file names).
        dataset: a Hub dataset name or an allowed local folder, for source "datasets source".
        dataset_split: the dataset's split, e.g. "train".
        image_column: the dataset's image column.
        text_column: the dataset's caption column.
        use_prompts: also place the zero-shot class prompts (needs classnames_text and templates_text).
        method: projection, "UMAP" (cosine) or "PCA".
        dims: 2 or 3 dimensions (a number, or "2" / "3").
        n_neighbors: UMAP's n_neighbors, 2 to 100.
        min_dist: UMAP's min_dist, 0 to 0.99.
        colour_by: "modality" or a label of the pairs: shape, colour, combo, style, count, size, position, background, held_out.
        centred: draw the map of the centred embeddings (each modality minus its mean: the gap removed).
        links: draw a line from each image to its caption.
        classnames_text: class names, one per line or comma-separated (the zero-shot tab's box).
        templates_text: prompt templates, one per line, each with {} for the class name.
        model_name: the model: a bundled name, an allowed local folder or a Hub id; omitted: the app's default.

    Returns the map (plotly), the gap report (Markdown) and the map data (JSON: gap figures raw
    and centred, projection settings, every point's kind, pair index, caption and coordinates).
    """
    wanted, spec = map_request(call.ctx, model_name, source, n, seed, split, files, dataset, dataset_split,
                               image_column, text_column, use_prompts, method, dims, n_neighbors, min_dist,
                               classnames_text, templates_text)
    if map_state is None or map_state.request != wanted:
        clip = call.model(wanted.model)
        pairs, img, txt = encoded_set(call.ctx, clip, spec, call.progress, call.job)
        if use_prompts:
            call.say(0.55, "encoding the class prompts")
        p_emb, p_names = prompt_embeddings(call.ctx, clip, *wanted.prompts) if use_prompts else (None, None)
        map_state = new_state(wanted, pairs, img, txt, None if p_emb is None else p_emb.numpy(), p_names)
        map_state.receipt = receipt(clip, parse_templates(wanted.prompts[1]) if use_prompts else None)
    if bool(centred) not in map_state.coords:
        call.say(0.6, projection_message(wanted.config, 2 * map_state.n + len(map_state.prompt_names)))
        coordinates(map_state, bool(centred), call.check)  # a Stop ends UMAP between epochs
    fig = render(map_state, colour_by or "modality", bool(centred), links is not False)
    call.check()
    return fig, gap_markdown(map_state.gap, bool(centred)), map_data(map_state, bool(centred)), map_state


@handler("map", turn=False)
def redraw(call: Call, map_state=None, colour_by: str = "modality", centred: bool = False, links: bool = True):
    """Recolour or toggle the links of the drawn map, from the session's state (no projection)."""
    if map_state is None:
        return gr.skip()
    return render(map_state, colour_by, bool(centred), bool(links))


def is_stale(call: Call, map_state, settings: dict) -> bool:
    """Whether the drawn map was made of other settings (or another model) than the tab's now."""
    try:
        wanted, _ = map_request(call.ctx, **{k: settings.get(k) for k in SETTINGS})
    except Exception:  # settings that cannot be drawn are not the drawn ones
        return True
    return wanted != map_state.request


@handler("map", cost="heavy")
def centre(call: Call, map_state=None, colour_by: str = "modality", centred: bool = False, links: bool = True,
           **settings):
    """Show the raw or the centred map of the drawn set (projected once per map, then kept)."""
    if map_state is None:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    on = bool(centred)
    if on not in map_state.coords:
        call.say(0.3, projection_message(map_state.request.config, 2 * map_state.n + len(map_state.prompt_names),
                                         "centred " if on else "raw "))
        coordinates(map_state, on, call.check)
    fig = render(map_state, colour_by, on, bool(links))
    return fig, gap_markdown(map_state.gap, on, is_stale(call, map_state, settings)), map_data(map_state, on), map_state


@handler("map", turn=False)
def mark(call: Call, map_state=None, centred: bool = False, **settings):
    """Mark the drawn map stale (or not) after a change of what it is made of, the session's model included."""
    if map_state is None:
        return gr.skip()
    return gap_markdown(map_state.gap, bool(centred), is_stale(call, map_state, settings))


def build_tab(ctx, model_state: gr.State, classnames_box: gr.Textbox, templates_box: gr.Textbox) -> None:
    """The embedding-map tab (uses the zero-shot tab's class names and templates if asked)."""
    cfg = ctx.config
    state = gr.State(None, time_to_live=3600)
    status = gr.Markdown(NOT_DRAWN, label="Progress", elem_id="map-status")  # progress shows here, at the top of the tab
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            source = gr.Radio(list(SOURCES), value="shapes world", label="Set")
            n = gr.Slider(cfg.min_map_pairs, cfg.max_map_pairs, value=DEFAULT_SET.n, step=100,
                          label="N pairs (shapes world / datasets)")
            with gr.Row():
                seed = gr.Number(0, precision=0, label="seed")
                split = gr.Dropdown(["eval", "train"], value="eval", label="shapes-world split")
            files, ds_name, ds_split, img_col, txt_col = upload_and_dataset_inputs()
            prompts = gr.Checkbox(False, label="add the zero-shot tab's class prompts")
        with gr.Column(scale=1, min_width=300):
            method = gr.Radio(["UMAP", "PCA"], value="UMAP", label="Projection", elem_id="map-method")
            # a dropdown that takes 2, "2", 3 or "3": the contract's check refuses anything else with a message
            # (a radio would refuse an API call's int 2 with a bare HTTP 400 before any check of ours)
            dims = gr.Dropdown(["2", "3"], value="2", allow_custom_value=True, label="dimensions", elem_id="map-dims")
            neighbors = gr.Slider(2, 100, value=15, step=1, label="UMAP n_neighbors")
            min_dist = gr.Slider(0.0, 0.99, value=0.1, step=0.01, label="UMAP min_dist")
            colour_by = gr.Dropdown(list(COLOUR_BY), value="modality", label="colour by (redraws at once)",
                                    elem_id="map-colour-by")
            with gr.Row():
                centred = gr.Checkbox(False, label="centre each modality (remove the gap)", elem_id="map-centred")
                links = gr.Checkbox(True, label="link each image to its caption", elem_id="map-links")
            with gr.Row():
                run = gr.Button("Draw map", variant="primary", elem_id="map-run", scale=3)
                stop = gr.Button("Stop", variant="stop", elem_id="map-stop", scale=1)
    gap = gr.Markdown(label="Modality gap", elem_id="map-gap")
    plot = gr.Plot(label="Joint embedding map (hover a point for its caption and thumbnail)", elem_id="map-plot")
    with gr.Accordion("Map data (JSON): gap figures, settings, every point's coordinates", open=False):
        data = gr.JSON(label="All numbers (JSON)", elem_id="map-data")

    named = dict(source=source, n=n, seed=seed, split=split, files=files, dataset=ds_name, dataset_split=ds_split,
                 image_column=img_col, text_column=txt_col, use_prompts=prompts, method=method, dims=dims,
                 n_neighbors=neighbors, min_dist=min_dist, colour_by=colour_by, centred=centred, links=links,
                 classnames_text=classnames_box, templates_text=templates_box, model_name=model_state, map_state=state)
    drawn = listen(ctx, run.click, embedding_map, named, [plot, gap, data, state], api_name="embedding_map",
                   concurrency_id="map", concurrency_limit=1, show_progress_on=[status, plot])
    # a dropdown fires .input twice for one pick (on the pick and again on blur); .select fires once.
    # Redraws are quick but not free (a 5,000-pair figure): they queue in a group of their own
    view_group = dict(queue=True, concurrency_id="map_view", concurrency_limit=4)
    listen(ctx, [colour_by.select, links.input], redraw, named, [plot], **view_group)
    centring = listen(ctx, centred.input, centre, named, [plot, gap, data, state], concurrency_id="map",
                      concurrency_limit=1, show_progress_on=[status, plot])
    stop_button(ctx, stop, "map", [drawn, centring])
    mcp_tool(ctx, embedding_map, [n for n in input_names(embedding_map, named) if n not in ("map_state", "colour_by", "links")],
             pick=2, n_outputs=4)
    settings = (source, n, seed, split, ds_name, ds_split, img_col, txt_col, prompts, method, neighbors, min_dist)
    # dims is a dropdown: its change fires once per pick (its input twice)
    listen(ctx, [c.input for c in settings] + [dims.change, files.change, model_state.change], mark, named, [gap],
           **view_group)
    with gr.Accordion("Explore an embedding set: up to 200,000 pairs made by scripts/embed.py; lasso, gallery, search",
                      open=False, elem_id="atlas-accordion"):
        build_explorer(ctx, model_state)
