"""Embedding-map tab: where images and captions land in the shared space, and the modality gap.

A set of (image, caption) pairs, optionally with the zero-shot tab's class-prompt embeddings, is
projected with UMAP (cosine) or PCA to 2D/3D. Images are circles, captions diamonds, each image
linked to its caption. The modality gap (Liang et al. 2022) is measured, and the map can be
redrawn with each modality centred, which removes the gap.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import numpy as np
import plotly.graph_objects as go
import torch

from core.errors import UserInputError
from core.encode import encode_images, encode_texts
from core.projection import ProjectionConfig, centre_modalities, modality_gap, project
from core.zeroshot import build_classifier, parse_classnames, parse_templates

from .common import get_model, upload_and_dataset_inputs, user_errors
from .images import thumbnail_uri
from .sources import LABEL_KEYS, SOURCES, Pairs, SourceSpec, build_pairs

COLOUR_BY = ("modality",) + LABEL_KEYS
MIN_N, MAX_N = 200, 5000
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#17becf")
MAX_PROMPTS = 200


@dataclass
class MapResult:
    """The figure and the modality-gap report."""

    figure: go.Figure
    gap_md: str
    coords: np.ndarray


def retrieval_top1(img: np.ndarray, txt: np.ndarray) -> float:
    """Share of images whose most similar caption is their own."""
    return float(((img @ txt.T).argmax(1) == np.arange(len(img))).mean())


def gap_markdown(img: np.ndarray, txt: np.ndarray, centred: bool) -> str:
    """The modality-gap report, before and after centring each modality."""
    g = modality_gap(img, txt)
    ci, ct, _ = centre_modalities(img, txt)
    g2 = modality_gap(ci, ct)
    shown = "centred (gap removed)" if centred else "raw embeddings"
    return (f"**Modality gap** ‖mean(images) − mean(captions)‖ = **{g.gap:.3f}** (Liang et al. 2022 report ≈ 0.82 for "
            f"OpenAI's CLIP). Images sit in a cone (mean cosine to their centroid {g.image_spread:.2f}), captions in another "
            f"({g.text_spread:.2f}). Cosine of an image with its own caption {g.paired_cosine:.3f}, with other captions "
            f"{g.unpaired_cosine:.3f}; image → caption top-1 {retrieval_top1(img, txt):.1%}.  \n"
            f"**Centred** (each modality minus its centroid, renormalised): gap {g2.gap:.3f}, own-caption cosine "
            f"{g2.paired_cosine:.3f}, others {g2.unpaired_cosine:.3f}, top-1 {retrieval_top1(ci, ct):.1%}. Map shows: **{shown}**.")


def _labels_for(pairs: Pairs, key: str) -> list[str]:
    return [str(lab.get(key, "n/a")) if lab else "n/a" for lab in (pairs.labels or [{}] * len(pairs))]


def map_figure(coords: np.ndarray, pairs: Pairs, colour_by: str, prompt_names: list[str], dims: int,
               show_links: bool = True, title: str = "") -> go.Figure:
    """Scatter of images (circles) and captions (diamonds), linked pairwise, plus class prompts (stars)."""
    n = len(pairs)
    img_xy, txt_xy, prm_xy = coords[:n], coords[n:2 * n], coords[2 * n:]
    three = dims == 3
    Scatter = go.Scatter3d if three else (go.Scattergl if n > 2500 else go.Scatter)
    thumb = 48 if n <= 1000 else 32
    thumbs = [thumbnail_uri(im, thumb) for im in pairs.images]

    def xyz(a):
        return dict(x=a[:, 0], y=a[:, 1], **({"z": a[:, 2]} if three else {}))

    fig = go.Figure()
    if show_links and n:
        link = np.full((3 * n, dims), np.nan, np.float32)
        link[0::3], link[1::3] = img_xy, txt_xy
        fig.add_trace(Scatter(**xyz(link), mode="lines", name="image–caption link", hoverinfo="skip",
                              line=dict(color=f"rgba(110,110,110,{min(0.35, 40 / n):.3f})", width=1)))
    groups = ["image"] * n if colour_by == "modality" else _labels_for(pairs, colour_by)
    values = list(dict.fromkeys(groups))
    size = (6 if n <= 1000 else 4) if not three else 3
    for k, value in enumerate(values):
        idx = np.array([i for i, g in enumerate(groups) if g == value])
        colour_i = "#4e79a7" if colour_by == "modality" else PALETTE[k % len(PALETTE)]
        colour_t = "#f28e2b" if colour_by == "modality" else colour_i
        for kind, xy, symbol, colour in (("image", img_xy, "circle", colour_i), ("caption", txt_xy, "diamond", colour_t)):
            name = kind + "s" if colour_by == "modality" else f"{value} · {kind}"
            custom = [[kind, pairs.captions[i], thumbs[i], pairs.names[i]] for i in idx]
            fig.add_trace(Scatter(**xyz(xy[idx]), mode="markers", name=name, legendgroup=str(value),
                                  marker=dict(symbol=symbol if not three or symbol != "diamond" else "diamond",
                                              size=size, color=colour, opacity=0.85 if kind == "image" else 0.6,
                                              line=dict(width=0.5, color="white") if not three else None),
                                  customdata=custom,
                                  hovertemplate="<b>%{customdata[0]}</b> %{customdata[3]}<br>%{customdata[1]}<extra></extra>"))
    if len(prm_xy):
        fig.add_trace(Scatter(**xyz(prm_xy), mode="markers+text", name="class prompts", text=prompt_names,
                              textposition="top center", textfont=dict(size=10, color="#222"),
                              marker=dict(symbol="diamond-open" if three else "star", size=12 if not three else 6, color="#111"),
                              customdata=[["class prompt", p, "", ""] for p in prompt_names],
                              hovertemplate="<b>class prompt</b><br>%{customdata[1]}<extra></extra>"))
    fig.update_layout(title=dict(text=title, x=0.01), height=640, margin=dict(l=10, r=10, t=50, b=10),
                      legend=dict(itemsizing="constant", font=dict(size=11)), hoverlabel=dict(align="left"))
    if not three:
        fig.update_xaxes(showticklabels=False, title="")
        fig.update_yaxes(showticklabels=False, title="", scaleanchor="x")
    return fig


def compute_map(img: torch.Tensor, txt: torch.Tensor, pairs: Pairs, config: ProjectionConfig, colour_by: str,
                centred: bool = False, prompts: torch.Tensor | None = None, prompt_names: list[str] | None = None,
                show_links: bool = True) -> MapResult:
    """Project images, captions (and class prompts) together and draw the map with the gap report."""
    if colour_by not in COLOUR_BY:
        raise UserInputError(f"cannot colour by {colour_by!r}; choose one of {', '.join(COLOUR_BY)}")
    i_np, t_np = img.numpy(), txt.numpy()
    p_np = prompts.numpy() if prompts is not None and len(prompts) else np.zeros((0, i_np.shape[1]), np.float32)
    if centred:
        i_show, t_show, p_show = centre_modalities(i_np, t_np, p_np if len(p_np) else None)
        p_show = p_show if p_show is not None else p_np
    else:
        i_show, t_show, p_show = i_np, t_np, p_np
    coords = project(np.concatenate([i_show, t_show, p_show]), config)
    method = f"{config.method.upper()} {config.dims}D" + (f" (cosine, n_neighbors {config.n_neighbors}, min_dist {config.min_dist})"
                                                          if config.method == "umap" else "")
    title = f"{len(pairs)} images + {len(pairs)} captions{f' + {len(p_np)} class prompts' if len(p_np) else ''} · {method}" \
            + (" · each modality centred" if centred else "")
    fig = map_figure(coords, pairs, colour_by, list(prompt_names or []), config.dims, show_links, title)
    return MapResult(fig, gap_markdown(i_np, t_np, centred), coords)


def prompt_embeddings(clip, classnames_text: str, templates_text: str) -> tuple[torch.Tensor, list[str]]:
    """The zero-shot heads' class embeddings [C, D] (template ensembles) and class names."""
    names = parse_classnames(classnames_text)
    if len(names) > MAX_PROMPTS:
        raise UserInputError(f"{len(names)} class prompts would crowd the map; the limit is {MAX_PROMPTS}")
    return build_classifier(clip, names, parse_templates(templates_text)), names  # TODO services head


def set_key(spec: SourceSpec) -> tuple:
    """A cache key for the encoded set that `spec` describes (Services adds the model's key)."""
    files = tuple(str(getattr(f, "path", f)) for f in spec.files or []) if spec.source == "uploaded images" else ()
    ds = (spec.dataset, spec.dataset_split, spec.image_column, spec.text_column) if spec.source == "datasets source" else ()
    n = spec.n if spec.source != "uploaded images" else len(files)
    return (spec.source, n, spec.seed, spec.split, files, ds)


def encoded_set(ctx, clip, spec: SourceSpec, progress=None) -> tuple[Pairs, torch.Tensor, torch.Tensor]:
    """The pairs and their image and caption embeddings, from ctx's LRU or computed now.

    A request for the set that the start-up warm-up is encoding waits for it instead of encoding
    it a second time beside it.
    """
    def build():
        if progress is not None:
            progress(0.1, desc=f"building {spec.n} pairs")
        pairs = build_pairs(spec, ctx.config.data_dirs, ctx.config.max_map_pairs, ctx.services.dataset)
        if progress is not None:
            progress(0.3, desc=f"encoding {len(pairs)} images and captions")
        return pairs, encode_images(clip, pairs.images), encode_texts(clip, pairs.captions)

    return ctx.services.encoded_set(clip, set_key(spec), build)[0]


DEFAULT_SET = SourceSpec("shapes world", 500, 0, "eval")  # 1,000 points


def prewarm(ctx) -> None:
    """Load the default model and encode the default map set (for a background thread at start)."""
    clip = ctx.models.get(ctx.config.default_model)
    encoded_set(ctx, clip, DEFAULT_SET)


def build_tab(ctx, model_state: gr.State, classnames_box: gr.Textbox, templates_box: gr.Textbox) -> None:
    """The embedding-map tab (uses the zero-shot tab's class names and templates if asked)."""
    cfg = ctx.config
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            source = gr.Radio(list(SOURCES), value="shapes world", label="Set")
            n = gr.Slider(MIN_N, MAX_N, value=DEFAULT_SET.n, step=100, label="N pairs (shapes world / datasets)")
            with gr.Row():
                seed = gr.Number(0, precision=0, label="seed")
                split = gr.Dropdown(["eval", "train"], value="eval", label="shapes-world split")
            files, ds_name, ds_split, img_col, txt_col = upload_and_dataset_inputs()
            prompts = gr.Checkbox(False, label="add the zero-shot tab's class prompts")
        with gr.Column(scale=1, min_width=300):
            method = gr.Radio(["UMAP", "PCA"], value="UMAP", label="Projection", elem_id="map-method")
            dims = gr.Radio([2, 3], value=2, label="dimensions")
            neighbors = gr.Slider(2, 100, value=15, step=1, label="UMAP n_neighbors")
            min_dist = gr.Slider(0.0, 0.99, value=0.1, step=0.01, label="UMAP min_dist")
            colour_by = gr.Dropdown(list(COLOUR_BY), value="modality", label="colour by")
            with gr.Row():
                centred = gr.Checkbox(False, label="centre each modality (remove the gap)")
                links = gr.Checkbox(True, label="link each image to its caption")
            run = gr.Button("Draw map", variant="primary", elem_id="map-run")
    gap = gr.Markdown(elem_id="map-gap")
    plot = gr.Plot(label="Joint embedding map (hover a point for its caption and thumbnail)", elem_id="map-plot")

    @user_errors
    def on_map(source, n, seed, split, files, ds_name, ds_split, img_col, txt_col, use_prompts, method, dims,
               neighbors, min_dist, colour_by, centred, links, classnames_text, templates_text, model_name,
               progress=gr.Progress()):
        clip = get_model(ctx, model_name, progress)
        n = int(n or MIN_N)
        if source != "uploaded images" and not MIN_N <= n <= MAX_N:
            raise UserInputError(f"N must be between {MIN_N} and {MAX_N}, got {n}")
        spec = SourceSpec(source, n, int(seed or 0), split, files, ds_name, ds_split, img_col, txt_col)
        pairs, img, txt = encoded_set(ctx, clip, spec, progress)
        p_emb, p_names = (prompt_embeddings(clip, classnames_text or "", templates_text or "{}")
                          if use_prompts else (None, None))
        config = ProjectionConfig(method=str(method).lower(), dims=int(dims), n_neighbors=int(neighbors),
                                  min_dist=float(min_dist))
        progress(0.6, desc=f"{method} of {2 * len(pairs) + (len(p_names) if p_names else 0)} points")
        r = compute_map(img, txt, pairs, config, colour_by, bool(centred), p_emb, p_names, bool(links))
        return r.figure, r.gap_md

    inputs = [source, n, seed, split, files, ds_name, ds_split, img_col, txt_col, prompts, method, dims, neighbors,
              min_dist, colour_by, centred, links, classnames_box, templates_box, model_state]
    run.click(on_map, inputs, [plot, gap], api_name="embedding_map", concurrency_id="map", concurrency_limit=1)
