"""The map tab's logic, free of Gradio: what a map is made of, its projection, gap report and data.

The session keeps its projected map in a `MapState`. Colour-by and the links redraw from the state
at once; centring projects the centred embeddings once per map and keeps them. A `MapRequest` says
what the map is made of (model, set, class prompts, projection), so a change of any of them marks
the map stale until it is drawn again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from core.errors import UserInputError
from core.projection import ProjectionConfig, centre_modalities, modality_gap, project, umap_compiled
from core.zeroshot import parse_classnames, parse_templates
from demo.inputs.checks import number, text
from demo.inputs.pairs import DEFAULT_SET, Pairs, SourceSpec, set_key
from demo.platform.weak_hold import WeakHold
from demo.tabs.shared.map_figure import COLOUR_BY, Atlas, atlas_tile, label_values, map_figure, thumbnail_atlas

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

    emb: images [n, D], captions [n, D], class prompts [P, D] (float32); the image and caption
    embeddings are the set cache's own tensors, held weakly (`held_embeddings`), so that sessions
    never keep an evicted set alive. coords[centred]: [2n + P, dims] (images, captions, prompts),
    filled lazily by `coordinates`.
    """

    request: MapRequest
    captions: list[str]
    names: list[str]
    labels: list[dict]
    atlas: Atlas
    prompt_names: list[str]
    held: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]]
    gap: dict
    coords: dict = field(default_factory=dict)
    receipt: dict = field(default_factory=dict)  # what made the embeddings (core.receipts.receipt)
    seconds: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.captions)

    @property
    def emb(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.held()


def held_embeddings(img, txt, prompts: np.ndarray) -> Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """A function giving (images [n, D], captions [n, D], prompts [P, D]) as float32 arrays, holding
    `img` and `txt` (a cache's tensors or arrays) weakly and the prompts strongly; once the cache let the
    set go it raises a UserInputError that asks for the map to be drawn again."""
    hold = WeakHold((img, txt), "this map's embeddings were dropped from memory to make room for other sets: "
                                "press Draw again")

    def get():
        i, t = hold.get()
        return np.asarray(i, np.float32), np.asarray(t, np.float32), prompts

    return get


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
                    thumbnail_atlas(pairs.images, atlas_tile(len(pairs))), list(prompt_names or []),
                    held_embeddings(img, txt, p_np), gap_figures(i_np, t_np))


def coordinates(state: MapState, centred: bool, check=None) -> np.ndarray:
    """Map coordinates [2n + P, dims] of the raw or the centred embeddings: projected once per state and kept.
    `check()` (a Stop) may end a UMAP fit between its epochs."""
    centred = bool(centred)
    if centred not in state.coords:
        img, txt, prm = state.emb
        if centred:
            img, txt, p = centre_modalities(img, txt, prm if len(prm) else None)
            prm = p if p is not None else prm
        t0 = time.perf_counter()
        state.coords[centred] = project(np.concatenate([img, txt, prm]), state.request.config, check)
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
            "gap": state.gap, "receipt": state.receipt or None, "points": points}


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
