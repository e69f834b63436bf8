"""Embedding-map tab: where images and captions land in the shared space, and the modality gap.

A set of (image, caption) pairs, optionally with the zero-shot tab's class-prompt embeddings, is
projected with UMAP (cosine) or PCA to 2D/3D. Images are circles, captions diamonds, each image
linked to its caption. The modality gap (Liang et al. 2022) is measured, and the map can be
redrawn with each modality centred, which removes the gap.

The session keeps its projected map in a `MapState` (gr.State). "Draw map" projects; colour-by and
the links redraw from the state at once; centring projects the centred embeddings once per map and
keeps them, so toggling back and forth is instant after the first time. Changing what the map is
made of (set, model, prompts, method, dims, UMAP settings) marks the map stale until "Draw map".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import gradio as gr
import numpy as np
import torch

from core.errors import UserInputError
from core.projection import ProjectionConfig, centre_modalities, modality_gap, project, umap_compiled
from core.zeroshot import parse_classnames, parse_templates

from .common import get_model, running, stop_button, upload_and_dataset_inputs, user_errors
from .gpu import embed_images, embed_texts
from .limits import count_at_most, early_checks, number, text
from .map_figure import COLOUR_BY, Atlas, atlas_tile, label_values, map_figure, thumbnail_atlas
from .sources import SOURCES, Pairs, SourceSpec, build_pairs

DEFAULT_SET = SourceSpec("shapes world", 500, 0, "eval")  # 1,000 points
STALE = "**Settings changed: press Draw map.** The map below was drawn with the previous settings."


@dataclass(frozen=True)
class MapRequest:
    """What a projection is made of: the model, the set, the class prompts (or None), the projection."""

    model: str
    set_key: tuple
    prompts: tuple | None
    config: ProjectionConfig


@dataclass
class MapState:
    """A session's drawn map: per-pair data, embeddings, gap figures, and coordinates per centring.

    emb: images [n, D], captions [n, D], class prompts [P, D] (float32). coords[centred]: [2n + P, dims]
    (images, captions, prompts), filled lazily by `coordinates`.
    """

    request: MapRequest
    captions: list[str]
    names: list[str]
    labels: list[dict]
    atlas: Atlas
    prompt_names: list[str]
    emb: tuple[np.ndarray, np.ndarray, np.ndarray]
    gap: dict
    coords: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.captions)


def retrieval_top1(img: np.ndarray, txt: np.ndarray) -> float:
    """Share of images [N, D] whose most similar caption [N, D] is their own."""
    return float(((img @ txt.T).argmax(1) == np.arange(len(img))).mean())


def gap_figures(img: np.ndarray, txt: np.ndarray) -> dict:
    """The modality-gap figures of images [N, D] and captions [N, D], raw and with each modality centred."""
    out = {}
    ci, ct, _ = centre_modalities(img, txt)
    for name, (i, t) in (("raw", (img, txt)), ("centred", (ci, ct))):
        g = modality_gap(i, t)
        out[name] = {"gap": g.gap, "image_spread": g.image_spread, "text_spread": g.text_spread,
                     "paired_cosine": g.paired_cosine, "unpaired_cosine": g.unpaired_cosine,
                     "top1": retrieval_top1(i, t)}
    return {k: {m: round(v, 4) for m, v in d.items()} for k, d in out.items()}


def gap_markdown(gap: dict, centred: bool, stale: bool = False) -> str:
    """The modality-gap report of `gap_figures`, saying which map is shown (and whether it is stale)."""
    g, c = gap["raw"], gap["centred"]
    shown = "centred (gap removed)" if centred else "raw embeddings"
    return ((STALE + "  \n" if stale else "")
            + f"**Modality gap** ‖mean(images) − mean(captions)‖ = **{g['gap']:.3f}** (Liang et al. 2022 report ≈ 0.82 "
            f"for OpenAI's CLIP). Images sit in a cone (mean cosine to their centroid {g['image_spread']:.2f}), captions "
            f"in another ({g['text_spread']:.2f}). Cosine of an image with its own caption {g['paired_cosine']:.3f}, with "
            f"other captions {g['unpaired_cosine']:.3f}; image → caption top-1 {g['top1']:.1%}.  \n"
            f"**Centred** (each modality minus its centroid, renormalised): gap {c['gap']:.3f}, own-caption cosine "
            f"{c['paired_cosine']:.3f}, others {c['unpaired_cosine']:.3f}, top-1 {c['top1']:.1%}. Map shows: **{shown}**.")


def new_state(request: MapRequest, pairs: Pairs, img, txt, prompts=None, prompt_names=None) -> MapState:
    """A map state for pairs with image [n, D] and caption [n, D] embeddings (and class prompts [P, D]); not projected yet."""
    i_np, t_np = np.asarray(img, np.float32), np.asarray(txt, np.float32)
    p_np = np.asarray(prompts, np.float32) if prompts is not None and len(prompts) else np.zeros((0, i_np.shape[1]), np.float32)
    return MapState(request, list(pairs.captions), list(pairs.names), list(pairs.labels or []),
                    thumbnail_atlas(pairs.images, atlas_tile(len(pairs))), list(prompt_names or []), (i_np, t_np, p_np), gap_figures(i_np, t_np))


def coordinates(state: MapState, centred: bool) -> np.ndarray:
    """Map coordinates [2n + P, dims] of the raw or the centred embeddings: projected once per state and kept."""
    centred = bool(centred)
    if centred not in state.coords:
        img, txt, prm = state.emb
        if centred:
            img, txt, p = centre_modalities(img, txt, prm if len(prm) else None)
            prm = p if p is not None else prm
        t0 = time.perf_counter()
        state.coords[centred] = project(np.concatenate([img, txt, prm]), state.request.config)
        state.seconds[centred] = time.perf_counter() - t0
    return state.coords[centred]


def method_text(config: ProjectionConfig) -> str:
    """'UMAP 2D (cosine, n_neighbors 15, min_dist 0.1)' or 'PCA 3D'."""
    return f"{config.method.upper()} {config.dims}D" + (
        f" (cosine, n_neighbors {config.n_neighbors}, min_dist {config.min_dist})" if config.method == "umap" else "")


def render(state: MapState, colour_by: str, centred: bool, links: bool = True):
    """The map figure of a state, coloured by modality or a label (projects only if this centring is new)."""
    if colour_by not in COLOUR_BY:
        raise UserInputError(f"cannot colour by {colour_by!r}; choose one of {', '.join(COLOUR_BY)}")
    n, p = state.n, len(state.prompt_names)
    title = (f"{n} images + {n} captions{f' + {p} class prompts' if p else ''} · {method_text(state.request.config)}"
             + (" · each modality centred" if centred else ""))
    groups = None if colour_by == "modality" else label_values(state.labels, colour_by, n)
    return map_figure(coordinates(state, centred), n, state.captions, state.names, groups, colour_by,
                      state.prompt_names, state.atlas, bool(links), title)


def map_data(state: MapState, centred: bool) -> dict:
    """The structured result: set, projection settings, gap figures, and every point's coordinates (4 decimals)."""
    c = state.request.config
    xyz = np.round(coordinates(state, centred).astype(np.float64), 4)
    n = state.n
    kinds = [("image", i, state.captions[i]) for i in range(n)] + [("caption", i, state.captions[i]) for i in range(n)] \
        + [("class prompt", i, name) for i, name in enumerate(state.prompt_names)]
    axes = "xyz"[:c.dims]
    points = [{"kind": k, "index": i, "caption": cap, **dict(zip(axes, row))} for (k, i, cap), row in zip(kinds, xyz.tolist())]
    return {"model": state.request.model, "pairs": n, "class_prompts": len(state.prompt_names),
            "projection": {"method": c.method, "dims": c.dims, "n_neighbors": c.n_neighbors, "min_dist": c.min_dist,
                           "seed": c.seed, "n_epochs": c.n_epochs, "centred": bool(centred)},
            "gap": state.gap, "points": points}


def set_key(spec: SourceSpec) -> tuple:
    """A cache key for the encoded set that `spec` describes (Services adds the model's key)."""
    files = tuple(str(getattr(f, "path", f)) for f in spec.files or []) if spec.source == "uploaded images" else ()
    ds = (spec.dataset, spec.dataset_split, spec.image_column, spec.text_column) if spec.source == "datasets source" else ()
    n = spec.n if spec.source != "uploaded images" else len(files)
    return (spec.source, n, spec.seed, spec.split, files, ds)


def encoded_set(ctx, clip, spec: SourceSpec, progress=None, job=None) -> tuple[Pairs, torch.Tensor, torch.Tensor]:
    """The pairs and their image [N, D] and caption [N, D] embeddings, from ctx's services or computed now.

    A request for the set that the start-up warm-up is encoding waits for it instead of encoding
    it a second time beside it. `job` (demo.jobs.Job) stops the encoding when its Stop is pressed.
    """
    def build():
        if progress is not None:
            progress(0.1, desc=f"building {spec.n} pairs")
        pairs = build_pairs(spec, ctx.config.data_dirs, ctx.config.max_upload_images, ctx.services.dataset,
                            job.reporter(progress, "drawing shapes-world images", "images") if job else None)
        img = embed_images(clip, pairs.images, job.reporter(progress, "encoding images", "images") if job else None)
        txt = embed_texts(clip, pairs.captions, job.reporter(progress, "encoding captions", "captions") if job else None)
        for im in pairs.images:  # the cache keeps small thumbnails (for the map's hover cards), not decoded images
            im.thumbnail((64, 64))
        return pairs, img, txt

    return ctx.services.encoded_set(clip, set_key(spec), build)[0]


def prompt_embeddings(ctx, clip, classnames_text: str | None, templates_text: str | None) -> tuple[torch.Tensor, list[str]]:
    """The class embeddings [C, D] (template ensembles, from the services' head cache) and the class names."""
    if not (classnames_text or "").strip():
        raise UserInputError("the zero-shot tab has no class names: enter some there, or untick the class prompts")
    if not (templates_text or "").strip():
        raise UserInputError("the zero-shot tab has no templates: enter some there, or untick the class prompts")
    names = parse_classnames(classnames_text)
    if len(names) > ctx.config.max_map_class_prompts:
        raise UserInputError(f"{len(names)} class prompts would crowd the map; the limit is {ctx.config.max_map_class_prompts}")
    head, _ = ctx.services.zero_shot_head(clip, names, parse_templates(templates_text))
    return head.head, names


def projection_message(config: ProjectionConfig, points: int, what: str = "") -> str:
    """The progress line while projecting; says so when this is the process's first UMAP (its compile)."""
    text = f"{config.method.upper()} of {points:,} {what}points"
    if config.method == "umap" and not umap_compiled():
        text += (" · the first UMAP after a start compiles its kernels once (about 30 s on a fresh machine, "
                 "a few seconds from the disk cache); later maps skip this")
    return text


def prewarm(ctx) -> None:
    """Load the default model and encode the default map set (for a background thread at start)."""
    clip = ctx.models.get(ctx.config.default_model)
    encoded_set(ctx, clip, DEFAULT_SET)



INPUT_NAMES = ("source", "n", "seed", "split", "files", "dataset", "dataset_split", "image_column", "text_column",
               "use_prompts", "method", "dims", "n_neighbors", "min_dist", "colour_by", "centred", "links",
               "classnames_text", "templates_text", "model_name", "map_state")
REQUEST_NAMES = tuple(k for k in INPUT_NAMES if k not in ("colour_by", "centred", "links", "map_state"))


def map_request(ctx, model_name, source, n, seed, split, files, dataset, dataset_split, image_column, text_column,
                use_prompts, method, dims, n_neighbors, min_dist, classnames_text, templates_text) -> tuple[MapRequest, SourceSpec]:
    """The request and set spec that the tab's inputs describe (None means the input's default).

    Raises UserInputError for N outside the configured limits or projection settings out of range.
    """
    cfg = ctx.config
    source = source or DEFAULT_SET.source
    n = number(n if n not in (None, "") else DEFAULT_SET.n, "N", 1, 10**9, integer=True)
    if source != "uploaded images" and not cfg.min_map_pairs <= n <= cfg.max_map_pairs:
        raise UserInputError(f"N must be between {cfg.min_map_pairs} and {cfg.max_map_pairs}, got {n}")
    spec = SourceSpec(source, n, number(seed or 0, "seed", 0, 2**31 - 1, integer=True), split or "eval", files,
                      dataset or "", dataset_split or "train", image_column or "image", text_column or "text")
    config = ProjectionConfig(method=str(method or "UMAP").lower(), dims=int(number(dims or 2, "dims", 2, 3, integer=True)),
                              n_neighbors=number(n_neighbors if n_neighbors is not None else 15, "n_neighbors", 2, 100, integer=True),
                              min_dist=number(min_dist if min_dist is not None else 0.1, "min_dist", 0, 0.99))
    prompts = ((text(classnames_text, "the class names", cfg.max_text_chars), text(templates_text, "the templates", cfg.max_text_chars))
               if use_prompts else None)
    return MapRequest(model_name or cfg.default_model, set_key(spec), prompts, config), spec


def build_tab(ctx, model_state: gr.State, classnames_box: gr.Textbox, templates_box: gr.Textbox) -> None:
    """The embedding-map tab (uses the zero-shot tab's class names and templates if asked)."""
    cfg = ctx.config
    state = gr.State(None, time_to_live=3600)
    status = gr.Markdown("", label="Progress", elem_id="map-status")  # progress shows here, at the top of the tab
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
            dims = gr.Radio(["2", "3"], value="2", label="dimensions", elem_id="map-dims")
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

    @user_errors
    def embedding_map(source=None, n=None, seed=None, split=None, files=None, dataset=None, dataset_split=None,
                      image_column=None, text_column=None, use_prompts=None, method=None, dims=None, n_neighbors=None,
                      min_dist=None, colour_by=None, centred=None, links=None, classnames_text=None, templates_text=None,
                      model_name=None, map_state=None, request: gr.Request = None, progress=gr.Progress()):
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
            dims: "2" or "3" dimensions.
            n_neighbors: UMAP's n_neighbors, 2 to 100.
            min_dist: UMAP's min_dist, 0 to 0.99.
            colour_by: "modality" or a label of the pairs: shape, colour, combo, style, count, size, position, background, held_out.
            centred: draw the map of the centred embeddings (each modality minus its mean: the gap removed).
            links: draw a line from each image to its caption.
            classnames_text: class names, one per line or comma-separated (the zero-shot tab's box).
            templates_text: prompt templates, one per line, each with {} for the class name.

        Returns the map (plotly), the gap report (Markdown) and the map data (JSON: gap figures raw
        and centred, projection settings, every point's kind, pair index, caption and coordinates).
        """
        ctx.check_own_uploads(request, files)
        wanted, spec = map_request(ctx, model_name, source, n, seed, split, files, dataset, dataset_split,
                                    image_column, text_column, use_prompts, method, dims, n_neighbors, min_dist,
                                    classnames_text, templates_text)
        if map_state is None or map_state.request != wanted:
            clip = get_model(ctx, wanted.model, progress)
            with running(ctx, request, "map") as job:
                pairs, img, txt = encoded_set(ctx, clip, spec, progress, job)
            p_emb, p_names = prompt_embeddings(ctx, clip, *wanted.prompts) if use_prompts else (None, None)
            map_state = new_state(wanted, pairs, img.numpy(), txt.numpy(),
                                  None if p_emb is None else p_emb.numpy(), p_names)
        if bool(centred) not in map_state.coords and progress is not None:
            progress(0.6, desc=projection_message(wanted.config, 2 * map_state.n + len(map_state.prompt_names)))
        fig = render(map_state, colour_by or "modality", bool(centred), links is not False)
        return fig, gap_markdown(map_state.gap, bool(centred)), map_data(map_state, bool(centred)), map_state

    @user_errors
    def redraw(map_state, colour_by, centred, links):
        """Recolour or toggle the links of the drawn map, from the session's state (no projection)."""
        if map_state is None:
            return gr.skip()
        return render(map_state, colour_by, bool(centred), bool(links))

    def named(args) -> dict:  # the values of `inputs`, by their names in embedding_map's signature
        return dict(zip(INPUT_NAMES, args))

    def stale(kw: dict) -> bool:
        try:
            request, _ = map_request(ctx, **{k: kw[k] for k in REQUEST_NAMES})
        except Exception:  # settings that cannot be drawn are not the drawn ones
            return True
        return request != kw["map_state"].request

    @user_errors
    def centre(*args, progress=gr.Progress()):
        """Show the raw or the centred map of the drawn set (projected once per map, then kept)."""
        kw = named(args)
        map_state, on = kw["map_state"], bool(kw["centred"])
        if map_state is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        if on not in map_state.coords and progress is not None:
            progress(0.3, desc=projection_message(map_state.request.config, 2 * map_state.n + len(map_state.prompt_names),
                                                  "centred " if on else "raw "))
        fig = render(map_state, kw["colour_by"], on, bool(kw["links"]))
        return fig, gap_markdown(map_state.gap, on, stale(kw)), map_data(map_state, on), map_state

    def mark(*args):
        """Mark the drawn map stale (or not) after a change of what it is made of."""
        kw = named(args)
        if kw["map_state"] is None:
            return gr.skip()
        return gap_markdown(kw["map_state"].gap, bool(kw["centred"]), stale(kw))

    inputs = [source, n, seed, split, files, ds_name, ds_split, img_col, txt_col, prompts, method, dims, neighbors,
              min_dist, colour_by, centred, links, classnames_box, templates_box, model_state, state]
    checks = early_checks({1: lambda v: number(v if v is not None else DEFAULT_SET.n, "N", 1, cfg.max_map_pairs, integer=True),
                           2: lambda v: number(v or 0, "seed", 0, 2**31 - 1, integer=True),
                           4: count_at_most(cfg.max_upload_images, "images"),
                           12: lambda v: number(v if v is not None else 15, "n_neighbors", 2, 100, integer=True),
                           13: lambda v: number(v if v is not None else 0.1, "min_dist", 0, 0.99),
                           17: lambda v: text(v, "the class names", cfg.max_text_chars),
                           18: lambda v: text(v, "the templates", cfg.max_text_chars)})
    drawn = run.click(embedding_map, inputs, [plot, gap, data, state], api_name="embedding_map", concurrency_id="map",
                      validator=checks,
                      concurrency_limit=1, show_progress_on=[status, plot])
    # a dropdown fires .input twice for one pick (on the pick and again on blur); .select fires once
    gr.on([colour_by.select, links.input], redraw, [state, colour_by, centred, links], plot, api_visibility="private",
          concurrency_id="map_view", concurrency_limit=4)
    centring = centred.input(centre, inputs, [plot, gap, data, state], api_visibility="private", concurrency_id="map",
                             concurrency_limit=1, show_progress_on=[status, plot])
    stop_button(ctx, stop, "map", [drawn, centring])
    settings = (source, n, seed, split, ds_name, ds_split, img_col, txt_col, prompts, method, dims, neighbors, min_dist)
    gr.on([c.input for c in settings] + [files.change], mark, inputs, gap, api_visibility="private",
          concurrency_id="map_view", concurrency_limit=4, show_progress="hidden")
