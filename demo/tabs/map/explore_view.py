"""The map tab's "Explore an embedding set" view: a set made by scripts/embed.py (core/embedding_set.py),
opened from an allowed folder, drawn with WebGL, lassoed, searched.

gr.Plot has no selection event. A gr.HTML bridge (its `js_on_load`, demo/tabs/map/explore.js) draws the
lasso itself (plotly's recomputes its selection at every mouse move: seconds at 200,000 points), listens to
plotly's box select and clicks, and sends the polygon, the box or the clicked row to Python with
`trigger('select' | 'click', data)`; the server decides which points lie inside (explore.inside), so what
the gallery shows is exactly what the polygon holds. Its `server_functions` give the hover card one
thumbnail at a time.
"""

from __future__ import annotations

import base64
from dataclasses import replace
from pathlib import Path

import gradio as gr
import numpy as np

from core.embedding_set import SetError, check_model, open_set, read_receipt
from core.errors import UserInputError
from core.set_projection import SetProjection, nearest_images, place_query, project_set
from demo.inputs.checks import at_most_chars, in_range
from demo.platform.contract import Call, handler, listen, stop_button
from demo.tabs.map.explore import (GALLERY_CSS, Explored, allowed_set_folder, atlas_figure, find_sets, gallery_html,
                                   inside, quantise, selection_markdown)

JS = (Path(__file__).with_name("explore.js")).read_text()
OPEN_CHECKS = {"n_neighbors": in_range("n_neighbors", 2, 100, integer=True, default=15),
               "min_dist": in_range("min_dist", 0, 0.99, default=0.1)}
SEARCH_CHECKS = {"k": in_range("k", 1, 500, integer=True, default=50), "query_text": at_most_chars("the query")}


def the_set(call: Call, folder: str):
    """The opened set from the app's shared cache (one copy whoever opens it), within the row limit."""
    path = allowed_set_folder(folder, call.config.data_dirs)
    receipt = read_receipt(path)
    if receipt["rows"] > call.config.max_explore_rows:
        raise UserInputError(f"this set has {receipt['rows']:,} rows; this app opens at most {call.config.max_explore_rows:,}")
    return call.ctx.services.sets.get_or_compute(("embedding-set", str(path), receipt["created"]), lambda: open_set(path))[0]


def settings_of(method: str | None, n_neighbors, min_dist) -> SetProjection:
    return SetProjection((method or "UMAP").lower(), int(n_neighbors or 15), float(min_dist if min_dist is not None else 0.1))


@handler("explore", checks=OPEN_CHECKS, cost="heavy")
def open_embedding_set(call: Call, folder: str | None = None, method: str | None = None, n_neighbors: float | None = None,
                       min_dist: float | None = None, model: str | None = None):
    """Open an embedding set and draw its map (projected once per set and settings, then read from the set's folder).

    Args:
        folder: the set's folder (made by scripts/embed.py), inside an allowed folder.
        method: "UMAP" (after PCA to 50 dimensions) or "PCA".
        n_neighbors: UMAP's n_neighbors, 2 to 100.
        min_dist: UMAP's min_dist, 0 to 0.99.
        model: the session's model: the set must have been embedded by it (its receipt says which).
    """
    es = the_set(call, folder or "")
    clip = call.model(model)
    check_model(es.receipt, clip)
    settings = settings_of(method, n_neighbors, min_dist)
    xy, cached = project_set(es, settings, progress=lambda f, what: call.say(min(f, 0.99), what))
    ex = Explored(str(es.folder), es.receipt["created"], settings, len(es), len(xy))
    fig = atlas_figure(es, xy, ex)
    summary = (f"**{es.folder.name}**: {len(es):,} images and {int(es.has_caption.sum()):,} captions embedded by "
               f"`{es.receipt['model']}` on {es.receipt['created'][:10]} ({es.receipt['source']['name']}); map "
               f"{settings.key()} {'read from the set' if cached else 'made now and stored with the set'}. "
               "Drag a lasso (or pick the box tool) to select; click a point for its neighbours.")
    return fig, summary, ex, "", ""


@handler("explore", turn=False)
def model_changed(call: Call, ex: Explored | None = None, model: str | None = None) -> str:
    """Whose space the drawn map shows: '' while the set was embedded by the session's model, else a warning
    naming both (the map, a selection and a click still read the set; a search needs the set's model)."""
    if ex is None:
        return ""
    es = the_set(call, ex.folder)
    try:
        check_model(es.receipt, call.model(model))
        return ""
    except SetError:
        return (f"⚠️ **This map shows the space of `{es.receipt['model']}`, which embedded the set, not the session's "
                f"model `{model or call.config.default_model}`.** Selections and neighbours still read the set; a "
                f"search needs `{es.receipt['model']}`: pick it again, or embed the set with this model.")


def shown(call: Call, ex: Explored | None):
    if ex is None:
        raise UserInputError("open an embedding set first")
    es = the_set(call, ex.folder)
    xy, _ = project_set(es, ex.settings)
    return es, xy


@handler("explore", turn=False)
def selected(call: Call, ex: Explored | None = None, model: str | None = None, evt: gr.EventData = None):
    """The images inside a lasso or box: gallery, label counts, class prompts nearest to their centroid. The map
    itself is redrawn afterwards (`selection_links`), so the gallery does not wait for a figure of every point."""
    es, xy = shown(call, ex)
    data = getattr(evt, "_data", None) or {}
    q, _ = quantise(xy)
    hit = inside(q, data.get("lasso"), data.get("box"))
    rows = np.flatnonzero(hit[: len(es)])
    ex = replace(ex, selected=rows, highlight=np.zeros(0, np.int64), query_xy=None)
    prompts = nearest_prompts(call, es, rows, model)
    md = selection_markdown(es, rows, int(hit[len(es):].sum()), prompts)
    if not prompts and len(rows):
        md += (f"  \nℹ️ No class prompts: they are compared in the space of `{es.receipt['model']}`, which embedded "
               "this set; the session's model is another one.")
    return gallery_html(es, rows, "Selected images"), md, ex


@handler("explore", turn=False)
def selection_links(call: Call, ex: Explored | None = None):
    """The map again, the selection's images linked to their captions and the rest dimmed."""
    if ex is None or not len(ex.selected):
        return gr.skip()
    es, xy = shown(call, ex)
    return atlas_figure(es, xy, ex)


def nearest_prompts(call: Call, es, rows: np.ndarray, model: str | None, top: int = 5) -> list[tuple[str, float]]:
    """The set's own labels as 'a photo of a {}.' prompts, nearest first to the selection's image centroid."""
    names = sorted({lab for lab in es.labels if lab})[: call.config.max_prompts]
    if not len(rows) or not names:
        return []
    clip = call.model(model)
    try:
        check_model(es.receipt, clip)  # another model's text embeddings would be compared with this set's images
    except SetError:
        return []
    head, _ = call.ctx.services.zero_shot_head(clip, names, ["a photo of a {}."])
    centre = es.image_emb[rows].mean(0)
    cos = head.head.numpy() @ (centre / max(np.linalg.norm(centre), 1e-12))
    order = np.argsort(-cos)[:top]
    return [(names[i], float(cos[i])) for i in order]


@handler("explore", checks=SEARCH_CHECKS, uploads=("query_image",))
def search_map(call: Call, query_text: str | None = None, query_image: str | None = None, k: float = 50,
               ex: Explored | None = None, model: str | None = None):
    """Rank the set's images against a text or an image query (exact cosine), ring them, place the query."""
    es, xy = shown(call, ex)
    clip = call.model(model)
    check_model(es.receipt, clip)
    from core.encode import encode_images, encode_texts

    if query_image:
        from demo.inputs.images import open_image

        query, what = encode_images(clip, [open_image(query_image)])[0].numpy(), "the image"
    elif (query_text or "").strip():
        query, what = encode_texts(clip, [query_text.strip()])[0].numpy(), query_text.strip()
    else:
        raise UserInputError("type a text or drop an image to search the map")
    return _highlight(es, xy, ex, query, what, int(k))


@handler("explore", checks={"k": SEARCH_CHECKS["k"]})
def search_near_selection(call: Call, k: float = 50, ex: Explored | None = None):
    """The images nearest to the selection's centroid."""
    es, xy = shown(call, ex)
    if not len(ex.selected):
        raise UserInputError("select some points first (a lasso or a box on the map)")
    centre = es.image_emb[ex.selected].mean(0)
    return _highlight(es, xy, ex, centre / max(np.linalg.norm(centre), 1e-12), "the selection's centroid", int(k or 50))


def _highlight(es, xy, ex: Explored, query: np.ndarray, what: str, k: int):
    rows, cos = nearest_images(es, query, k)
    ex = replace(ex, highlight=rows, query_xy=place_query(xy, rows, cos), query_text=what, selected=np.zeros(0, np.int64))
    md = (f"**{len(rows)} images nearest to {what}** (exact cosine over all {len(es):,}; best {cos[0]:.3f}, "
          f"{len(rows)}th {cos[-1]:.3f}). The star is drawn at their mean position weighted by cosine.")
    return atlas_figure(es, xy, ex), gallery_html(es, rows, f"Nearest to {what}", cos), md, ex


@handler("explore", turn=False)
def clicked(call: Call, ex: Explored | None = None, evt: gr.EventData = None):
    """A clicked point's nearest images (its own image embedding as the query)."""
    es, _ = shown(call, ex)
    row = int((getattr(evt, "_data", None) or {}).get("row", -1))
    if not 0 <= row < len(es):
        return gr.skip(), gr.skip()
    rows, cos = nearest_images(es, es.image_emb[row], 13)
    return (gallery_html(es, rows[1:], f"Neighbours of row {es.ids[row]} ({es.labels[row]})", cos[1:]),
            f"**Row {es.ids[row]}**: {es.labels[row]}; caption: {es.captions[row] or '(none)'}")


def hover_card(ctx, folder: str, row) -> dict:
    """One point's thumbnail (data URI), label and caption for the hover card: a server function of the bridge,
    answered only for a set that some session opened (it is in the shared cache)."""
    try:
        path = allowed_set_folder(str(folder), ctx.config.data_dirs)
        es = ctx.services.sets.get(("embedding-set", str(path), read_receipt(path)["created"]))
        row = int(row)
    except (UserInputError, SetError, TypeError, ValueError):
        return {}
    if es is None or not 0 <= row < len(es):
        return {}
    thumb = es.thumbs([row])[0]
    return {"uri": "data:image/webp;base64," + base64.b64encode(thumb).decode(), "label": es.labels[row],
            "caption": es.captions[row][:200], "row": row}


def build_view(ctx, model_state: gr.State) -> None:
    """The explorer: pick a set, draw it, select, search; everything keyed to the session's model."""
    cfg = ctx.config
    state = gr.State(None, time_to_live=3600)
    status = gr.Markdown("Open an embedding set made by `python scripts/embed.py` (inside an allowed data folder).",
                         label="The set", elem_id="atlas-status")
    with gr.Row():
        folder = gr.Dropdown(find_sets(cfg.data_dirs), value=None, allow_custom_value=True, scale=3, elem_id="atlas-set",
                             label="Embedding set (a folder made by scripts/embed.py, inside an allowed folder)")
        method = gr.Radio(["UMAP", "PCA"], value="UMAP", label="Projection (stored with the set)", scale=1)
        neighbors = gr.Slider(2, 100, value=15, step=1, label="UMAP n_neighbors", scale=1)
        min_dist = gr.Slider(0.0, 0.99, value=0.1, step=0.01, label="UMAP min_dist", scale=1)
    with gr.Row():
        draw = gr.Button("Open and draw", variant="primary", elem_id="atlas-run", scale=3)
        stop = gr.Button("Stop", variant="stop", elem_id="atlas-stop", scale=1)
    notice = gr.Markdown("", elem_id="atlas-notice")
    plot = gr.Plot(label="The set's map: images ●, captions ◆ (drag a lasso to select; hover for the thumbnail)",
                   elem_id="atlas-plot")
    def hover(args: list) -> dict:
        """The hover card of one point: server.hover(set folder, row) in the bridge's JS (Gradio passes a server
        function its JS arguments as one list)."""
        if not isinstance(args, (list, tuple)) or len(args) != 2:
            return {}
        return hover_card(ctx, *args)

    bridge = gr.HTML("", js_on_load=JS, elem_id="atlas-bridge", server_functions=[hover])
    with gr.Row():
        query_text = gr.Textbox(label="Search the map: a text", placeholder="a red circle", elem_id="atlas-query", scale=3)
        query_image = gr.Image(type="filepath", label="…or an image", height=120, elem_id="atlas-query-image", scale=1)
        k = gr.Slider(1, 500, value=50, step=1, label="nearest images to ring", scale=1)
    with gr.Row():
        search = gr.Button("Search", elem_id="atlas-search")
        near = gr.Button("Search near the selection", elem_id="atlas-near")
    summary = gr.Markdown(label="Selection or search", elem_id="atlas-summary")
    gallery = gr.HTML("", label="Gallery", css_template=GALLERY_CSS, elem_id="atlas-gallery")

    opened = listen(ctx, draw.click, open_embedding_set, [folder, method, neighbors, min_dist, model_state],
                    [plot, status, state, summary, gallery], api_name="explore_set", concurrency_id="explore",
                    concurrency_limit=1, show_progress_on=[status, plot])
    stop_button(ctx, stop, "explore", [opened])
    for event in (opened.success, model_state.change):  # whose space the drawn map shows
        listen(ctx, event, model_changed, [state, model_state], [notice], api_name=False)
    view = dict(concurrency_id="explore_view", concurrency_limit=4)
    picked = listen(ctx, bridge.select, selected, [state, model_state], [gallery, summary, state], api_name=False, **view)
    listen(ctx, picked.then, selection_links, [state], [plot], api_name=False, **view)
    listen(ctx, bridge.click, clicked, [state], [gallery, summary], api_name=False, **view)
    listen(ctx, [search.click, query_text.submit], search_map, [query_text, query_image, k, state, model_state],
           [plot, gallery, summary, state], api_name="explore_search", **view)
    listen(ctx, near.click, search_near_selection, [k, state], [plot, gallery, summary, state], api_name=False, **view)
