"""Search tab: index a set of images, query it by text, by an image, or both, and see why a hit matched.

Indexing reuses the Embedding map's set building and encoding (demo.inputs.pairs.encoded_set), so
the same model and set hit the same cache entry in either tab; the session keeps a `SearchIndex`
that refers to that entry's embeddings and thumbnails. A query ("this image, but blue": a text and
an image mixed by a weight) is exact: one product over the whole index (core.search). The results
are a gallery of the top-k with their cosines and ranks, the histogram of every image's cosine with
the hits marked, and, for a picked hit, a saliency map of where it matches the query and the rank
of its own caption. The view logic is in demo/tabs/search/index.py, the saliency drawing in
demo/tabs/shared/saliency.py.
"""

from __future__ import annotations

import time

import gradio as gr

from core.receipts import receipt
from core.errors import UserInputError
from core.saliency import DEFAULT_METHOD
from demo.tabs.shared.api_examples import no_example
from demo.inputs.checks import at_most_chars, at_most_items, in_range, number
from demo.inputs.images import open_image
from demo.inputs.pairs import DEFAULT_SET, SOURCES, SourceSpec, encoded_set, set_key
from demo.platform.contract import Call, handler, listen, public_parameters, stop_button
from demo.platform.gpu import embed_images, embed_texts
from demo.platform.mcp import mcp_tool
from demo.platform.services import model_key
from demo.tabs.search.index import (
    HeldSet,
    SearchIndex,
    cosine_counts,
    gallery_items,
    histogram_figure,
    hit_image,
    hit_markdown,
    index_markdown,
    results_data,
    results_markdown,
    retrieval_markdown,
    retrieval_numbers,
    run_query,
)
from demo.tabs.shared.saliency import DEFAULT_OPACITY, compute, overlay, saliency_data, saliency_note
from demo.tabs.shared.saliency_panels import OPACITY, build_saliency_tool, method_dropdown, opacity_slider, reblend
from demo.tabs.shared.session_model import model_notice
from demo.tabs.shared.source_inputs import upload_and_dataset_inputs

MIN_N, MAX_N = 10, 10_000  # the map draws at most 5,000 pairs; search indexes twice as many
MAX_K = 50
QUERY_MAX_CHARS = 1000
DEFAULT_QUERY = "a red circle"
NOT_YET = "Search, then click a hit: where it matches the query shows here, and its caption's rank."


def index_spec(source, n, seed, split, files, dataset, dataset_split, image_column, text_column) -> SourceSpec:
    """The set the inputs describe (None means the input's default), as the map tab's SourceSpec."""
    source = source or DEFAULT_SET.source
    if source not in SOURCES:
        raise UserInputError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    n = number(n if n not in (None, "") else DEFAULT_SET.n, "N", MIN_N, MAX_N, integer=True)
    split = split or "eval"
    if split not in ("eval", "train"):
        raise UserInputError(f"the shapes-world split must be 'eval' or 'train', got {split!r}")
    return SourceSpec(source, n, number(seed or 0, "seed", 0, 2**31 - 1, integer=True), split, files,
                      (dataset or "").strip(), (dataset_split or "train").strip(), (image_column or "image").strip(),
                      (text_column or "text").strip())


def describe(spec: SourceSpec, n: int) -> str:
    """The indexed set in words."""
    if spec.source == "shapes world":
        return f"shapes world, {spec.split} split, seed {spec.seed}"
    if spec.source == "uploaded images":
        return f"{n} uploaded images"
    return f"{spec.dataset} [{spec.dataset_split}], {n} rows, seed {spec.seed}"


def build_index(ctx, clip, model_name: str, spec: SourceSpec, progress, job) -> SearchIndex:
    """The session's index of `spec` for `clip`: the map's cached set (or encoded now) and, for captioned
    sets, the retrieval report (cached beside it)."""
    key = set_key(spec)
    cached = (model_key(clip), key) in ctx.services.sets
    t0 = time.perf_counter()
    pairs, img, txt = encoded_set(ctx, clip, spec, progress, job)
    captioned = spec.source != "uploaded images"
    report = None
    if captioned:
        def ranks():
            numbers = retrieval_numbers(img, txt, job.reporter(progress, "ranking captions", "pairs"))
            return {**numbers, "distinct_captions": len(set(pairs.captions))}
        report = ctx.services.encoded_set(clip, ("search retrieval",) + key, ranks)[0]
    if (model_key(clip), key) not in ctx.services.sets:  # larger than the whole set cache: nothing would hold it
        raise UserInputError(f"{len(pairs):,} images are more than this server keeps in memory "
                             f"({ctx.config.set_cache_mb} MB of encoded sets): index fewer")
    files = tuple(str(getattr(f, "path", f)) for f in spec.files or []) if spec.source == "uploaded images" else ()
    return SearchIndex(model_name, model_key(clip), key, spec.source, describe(spec, len(pairs)),
                       HeldSet(pairs, img, txt if captioned else None), files, report, time.perf_counter() - t0, cached,
                       receipt(clip))


def same_model(index: SearchIndex, clip) -> None:
    """Refuse an index built with another model (or other weights of this one)."""
    if index.model_key != model_key(clip):
        raise UserInputError(f"the index was built with `{index.model}` ({index.model_key[1][:8] or 'other weights'}); "
                             "this session's model has changed: press Index to index the set again")


INDEX_CHECKS = {"n": in_range("N", MIN_N, MAX_N, integer=True, default=DEFAULT_SET.n),
                "seed": in_range("seed", 0, 2**31 - 1, integer=True, default=0), "files": at_most_items("images")}


@handler("search", checks=INDEX_CHECKS, uploads=("files",), cost="heavy")
def search_index(call: Call, source: str = DEFAULT_SET.source, n: float = DEFAULT_SET.n, seed: float = 0, split: str = "eval",
                 files: list | None = None, dataset: str | None = None, dataset_split: str = "train",
                 image_column: str = "image", text_column: str = "text", model_name: str | None = None):
    """Index a set of images for search (encoded once per model and set, and cached).

    Args:
        source: "shapes world", "uploaded images" or "datasets source".
        n: how many images for the shapes world or a dataset, 10 to 10,000.
        seed: the seed that picks the shapes-world samples or the dataset rows.
        split: the shapes-world split, "eval" (every colour-shape pair) or "train".
        files: image files, for source "uploaded images" (at most 64).
        dataset: a Hub dataset name or an allowed local folder, for source "datasets source".
        dataset_split: the dataset's split, e.g. "train".
        image_column: the dataset's image column.
        text_column: the dataset's caption column.

    Returns the index status and, for sets with captions (shapes world, datasets), retrieval
    R@1/5/10 both ways. The index stays in the session for the search and search_hit endpoints.
    """
    spec = index_spec(source, n, seed, split, files, dataset, dataset_split, image_column, text_column)
    clip = call.model(model_name)
    index = build_index(call.ctx, clip, model_name or call.config.default_model, spec, call.progress, call.job)
    return index_markdown(index), retrieval_markdown(index), index


SEARCH_CHECKS = {"text_query": at_most_chars("the query", QUERY_MAX_CHARS), "k": in_range("top-k", 1, MAX_K, integer=True, default=12),
                 "text_weight": in_range("the text weight", 0, 1, default=0.5)}


@handler("search", checks=SEARCH_CHECKS, uploads=("image",))
def search(call: Call, text_query: str = DEFAULT_QUERY, image: str | None = None, text_weight: float = 0.5, k: float = 12,
           model_name: str | None = None, index: SearchIndex | None = None):
    """Search the indexed images by a text, an image, or both ("this image, but blue"); exact, over the whole index.

    Args:
        text_query: the text to search for, e.g. "a red circle"; empty for an image-only query.
        image: a query image file (optional); with a text, the query mixes both.
        text_weight: with both a text and an image, the text's weight in the query, 0 to 1 (1 = text only).
        k: how many hits to return, 1 to 50.

    Without an index in the session, the default set (500 shapes-world images) is indexed first.
    Returns the top-k gallery (captions: rank · cosine), the histogram of every indexed
    image's cosine with the query, a summary, and JSON (every hit's rank, index, name, caption and
    cosine; the histogram's counts and edges; timings).
    """
    t0 = time.perf_counter()
    words = (text_query or "").strip()
    if not words and not image:
        raise UserInputError("give a text, an image, or both to search with")
    clip = call.model(model_name)
    notice = ""
    if index is None:
        index = build_index(call.ctx, clip, model_name or call.config.default_model, DEFAULT_SET, call.progress, call.job)
        notice = f"Nothing was indexed, so the default set was: {index_markdown(index)}  \n"
        t0 = time.perf_counter()  # the query's own time starts now
    same_model(index, clip)
    t1 = time.perf_counter()
    t_emb = embed_texts(clip, [words])[0] if words else None
    i_emb = embed_images(clip, [open_image(image)])[0] if image else None
    encode_ms = 1000 * (time.perf_counter() - t1)
    results, sims = run_query(index, t_emb, i_emb, text_weight, k, words)
    results.timings_ms["encode_query"] = encode_ms
    counts, edges = cosine_counts(sims)
    items, fig = gallery_items(index, results), histogram_figure(counts, edges, results, index.n)
    data = results_data(index, results, counts, edges)
    results.timings_ms["handler"] = 1000 * (time.perf_counter() - t0)  # all of this handler's work
    data["timings_ms"]["handler"] = round(results.timings_ms["handler"], 2)
    summary = notice + results_markdown(index, results, results.timings_ms["handler"])
    return items, fig, summary, data, results, index


@handler("search", checks={**INDEX_CHECKS, **SEARCH_CHECKS}, uploads=("image", "files"), cost="heavy")
def search_images(call: Call, text_query: str = DEFAULT_QUERY, image: str | None = None, text_weight: float = 0.5,
                  k: float = 12, source: str = DEFAULT_SET.source, n: float = DEFAULT_SET.n, seed: float = 0,
                  split: str = "eval", files: list | None = None, dataset: str | None = None, dataset_split: str = "train",
                  image_column: str = "image", text_column: str = "text", model_name: str | None = None):
    """Search a set of images by a text, an image, or both: the set is indexed (once per model and set, then
    cached) and queried exactly. Returns JSON: the query, every hit's rank, index, name, caption and cosine,
    the whole set's cosine histogram, and timings.

    Args:
        text_query: the text to search for, e.g. "a red circle"; empty for an image-only query.
        image: a query image file (optional); with a text, the query mixes both.
        text_weight: with both a text and an image, the text's weight in the query, 0 to 1 (1 = text only).
        k: how many hits to return, 1 to 50.
        source: the set: "shapes world", "uploaded images" or "datasets source".
        n: how many images for the shapes world or a dataset, 10 to 10,000.
        seed: the seed that picks the shapes-world samples or the dataset rows.
        split: the shapes-world split, "eval" or "train".
        files: image files, for source "uploaded images".
        dataset: a Hub dataset name or an allowed local folder, for source "datasets source".
        dataset_split: the dataset's split.
        image_column: the dataset's image column.
        text_column: the dataset's caption column.
        model_name: the model: a bundled name, an allowed local folder or a Hub id; omitted: the app's default.
    """
    spec = index_spec(source, n, seed, split, files, dataset, dataset_split, image_column, text_column)
    index = build_index(call.ctx, call.model(model_name), model_name or call.config.default_model, spec, call.progress, call.job)
    return search(call, text_query, image, text_weight, k, model_name, index)[3]


@handler("saliency", checks={"opacity": OPACITY})
def search_hit(call: Call, rank: float = 1, method: str = DEFAULT_METHOD, opacity: float = DEFAULT_OPACITY,
               model_name: str | None = None, index: SearchIndex | None = None, results=None):
    """Explain one hit of the last search: where in its image it matches the query, and its caption's rank.

    Args:
        rank: the hit's rank in the last search, 1 = the best.
        method: saliency method, "relevance" (the default), "patch_text", "rollout" or "centre".
        opacity: the heatmap's opacity where the map peaks, 0 to 1 (lower values cover less).

    Without a search in the session, the default query ("a red circle") is searched first.
    Returns the saliency overlay (the map of the query embedding over the hit's image), a summary
    (its cosine and, for captioned sets, the rank of its own caption among all captions and the
    captions closest to it), and the map as JSON (grid, values, peak).
    """
    if results is None or index is None or results.set_key != index.set_key:  # nothing searched yet in this session
        _, _, _, _, results, index = search(call, DEFAULT_QUERY, None, 0.5, 12, model_name, index)
    rank = number(rank if rank is not None else 1, "rank", 1, len(results.hits), integer=True)
    i = results.hits[rank - 1]
    clip = call.model(model_name)
    same_model(index, clip)
    view = compute(clip, hit_image(index, i), results.query, method, f"the query ({results.describe()})", index.names[i])
    return (overlay(view, opacity), hit_markdown(index, results, rank) + "  \n" + saliency_note(view),
            saliency_data(view), view)


@handler("saliency", checks={"opacity": OPACITY})
def rehit(call: Call, rank: float = 1, method: str = DEFAULT_METHOD, opacity: float = DEFAULT_OPACITY,
          model_name: str | None = None, index: SearchIndex | None = None, results=None, shown=None):
    """The picked hit again with another method (nothing to do before a hit is shown)."""
    if shown is None or results is None:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    return search_hit(call, rank, method, opacity, model_name, index, results)


@handler("search", turn=False)
def after_index(call: Call):
    """A new index: the last results and the hit panel no longer apply."""
    return None, [], None, None, "", NOT_YET, None, None, None


@handler("search", turn=False)
def after_search(call: Call, index: SearchIndex | None = None):
    """The status line (the query may have indexed the default set), a fresh hit panel, and no selection
    outline left in the gallery from the previous search."""
    if index is None:
        return [gr.skip()] * 7
    return (index_markdown(index), retrieval_markdown(index), None, NOT_YET, None, None,
            gr.Gallery(selected_index=None))


@handler("search", turn=False)
def picked_hit(call: Call, evt: gr.SelectData):
    """The rank of the clicked gallery item."""
    return evt.index + 1


@handler("search", turn=False)
def model_changed(call: Call, index: SearchIndex | None = None, model: str | None = None):
    """The session's model changed: the index status says whose index is kept (nothing is re-indexed)."""
    if index is None:
        return gr.skip()
    notice = model_notice(index.model, model, call.config.default_model, "Index")
    return "  \n".join(x for x in (notice, index_markdown(index)) if x)


def build_tab(ctx, model_state: gr.State) -> None:
    """The Search tab."""
    index_state = gr.State(None, time_to_live=3600)
    results_state = gr.State(None, time_to_live=3600)
    hit_view = gr.State(None, time_to_live=3600)
    status = gr.Markdown("Nothing indexed yet: pick a set and press **Index** (a query without an index indexes "
                         f"the default set: {DEFAULT_SET.n} shapes-world images).", label="Index status",
                         elem_id="search-status")
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            source = gr.Radio(list(SOURCES), value=DEFAULT_SET.source, label="Set to index", elem_id="search-source")
            n = gr.Slider(100, MAX_N, value=DEFAULT_SET.n, step=100, label="N images (shapes world / datasets)",
                          elem_id="search-n")
            with gr.Row():
                seed = gr.Number(DEFAULT_SET.seed, precision=0, label="seed")
                split = gr.Dropdown(["eval", "train"], value=DEFAULT_SET.split, label="shapes-world split")
            files, ds_name, ds_split, img_col, txt_col = upload_and_dataset_inputs()
            with gr.Row():
                index_btn = gr.Button("Index", variant="primary", elem_id="search-index", scale=3)
                stop = gr.Button("Stop", variant="stop", elem_id="search-stop", scale=1)
        with gr.Column(scale=1, min_width=300):
            query = gr.Textbox(DEFAULT_QUERY, label="Text query", max_lines=2, elem_id="search-text",
                               placeholder="a red circle · a hand-drawn star in the top left · …")
            query_image = no_example(gr.Image(None, type="filepath", height=200, sources=["upload", "clipboard"],
                                              label="Image query (optional: with a text, 'this image, but …')",
                                              elem_id="search-image"))
            weight = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="text weight (with both: 1 = text only, 0 = image only)",
                               elem_id="search-weight")
            k = gr.Slider(1, MAX_K, value=12, step=1, label="top-k", elem_id="search-k")
            run = gr.Button("Search", variant="primary", elem_id="search-run")
    retrieval = gr.Markdown(label="Retrieval R@K", elem_id="search-retrieval")
    info = gr.Markdown(label="Query summary", elem_id="search-info")
    with gr.Row():
        with gr.Column(scale=3, min_width=320):
            gallery = gr.Gallery(label="Top hits (rank · cosine); click one", columns=6, height=360,
                                 allow_preview=False, object_fit="contain", elem_id="search-gallery")
        with gr.Column(scale=2, min_width=280):
            hit_picture = gr.Image(None, type="pil", label="where the hit matches the query", interactive=False,
                                   height=300, elem_id="search-saliency", buttons=["download"])
            with gr.Row():
                method = method_dropdown("search-method")
                opacity = opacity_slider("search-opacity")
            hit_info = gr.Markdown(NOT_YET, label="The picked hit", elem_id="search-hit")
            hit_rank = gr.Number(1, precision=0, visible=False, label="hit rank")
    histogram = gr.Plot(label="Cosine histogram of the whole set", elem_id="search-histogram")
    with gr.Accordion("Results (JSON): the query, every hit, the histogram, timings", open=False):
        data = gr.JSON(label="search results (JSON)", elem_id="search-json")
    with gr.Accordion("The saliency map of the hit (JSON)", open=False):
        hit_data = gr.JSON(label="saliency map (JSON)", elem_id="search-hit-json")
    with gr.Accordion("Where does a text match in any image? (the /saliency endpoint)", open=False):
        build_saliency_tool(ctx, model_state)

    index_inputs = [source, n, seed, split, files, ds_name, ds_split, img_col, txt_col, model_state]
    indexing = listen(ctx, index_btn.click, search_index, index_inputs, [status, retrieval, index_state],
                      api_name="search_index", concurrency_id="search_index", concurrency_limit=2,
                      show_progress_on=[status])
    listen(ctx, indexing.success, after_index, [], [results_state, gallery, histogram, data, info, hit_info, hit_picture,
                                                    hit_data, hit_view])
    stop_button(ctx, stop, "search", [indexing])
    mcp_tool(ctx, search_images, [p.name for p in public_parameters(search_images)], pick=0, n_outputs=1)
    searching = listen(ctx, [run.click, query.submit], search, [query, query_image, weight, k, model_state, index_state],
                       [gallery, histogram, info, data, results_state, index_state], api_name="search",
                       show_progress_on=[gallery, info])
    listen(ctx, searching.success, after_search, [index_state],
           [status, retrieval, hit_picture, hit_info, hit_data, hit_view, gallery])
    hit_inputs = [hit_rank, method, opacity, model_state, index_state, results_state]
    hit_outputs = [hit_picture, hit_info, hit_data, hit_view]
    picked = listen(ctx, gallery.select, picked_hit, [], hit_rank)
    listen(ctx, picked.then, search_hit, hit_inputs, hit_outputs, api_name="search_hit", show_progress_on=[hit_picture])
    listen(ctx, method.input, rehit, hit_inputs + [hit_view], hit_outputs, show_progress_on=[hit_picture])
    listen(ctx, opacity.release, reblend, [hit_view, opacity], hit_picture)
    listen(ctx, model_state.change, model_changed, [index_state, model_state], status)
