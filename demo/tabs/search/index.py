"""The Search tab's logic, free of Gradio: the session's index, a query, and everything shown for it.

The index is the embedding map's encoded set (demo.tabs.map.tab.encoded_set: the same cache entry
for the same model and set), held in the session by weak reference (`HeldSet`): embeddings [N, D],
captions, names and the cache's 64-px thumbnails, never decoded full images; the cache alone
decides how long they stay. A query is core.search's exact
search: one matrix product [N, D] @ [D], a top-k and a 40-bin histogram; everything else here is
O(k), so its time does not grow with N beyond that product.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import plotly.graph_objects as go
import torch
from PIL import Image

from core.errors import UserInputError
from core.search import caption_rank, combined_query, cosine_histogram, cosines, retrieval_report
from demo.inputs.images import open_image
from demo.platform.weak_hold import WeakHold

KS = (1, 5, 10)
DIRECT_MAX = 2048  # up to this many pairs the retrieval report is core.search.retrieval_report itself
CHUNK = 1024  # beyond, it runs in blocks of this many rows (a 10,000 x 10,000 matrix would be 400 MB)
GALLERY_SIDE = 128  # hits smaller than this are enlarged (crisp pixels) for the gallery
HISTOGRAM_BINS = 40


class HeldSet(WeakHold):
    """The encoded set an index searches, held *weakly* (demo.platform.weak_hold): get() gives
    (pairs, image_emb [N, D], text_emb [N, D] or None). `strong=True` keeps it (tests)."""

    def __init__(self, pairs, image_emb: torch.Tensor, text_emb: torch.Tensor | None, strong: bool = False):
        super().__init__((pairs, image_emb, text_emb),
                         "this index was dropped from memory to make room for other sets: press Index again", strong)
        self.n, self.dim = int(image_emb.shape[0]), int(image_emb.shape[1])
        self.mb = image_emb.element_size() * image_emb.nelement() / 2**20


@dataclass
class SearchIndex:
    """A session's indexed set: what it is and, held weakly (`HeldSet`), the cached tensors
    image_emb [N, D] and text_emb [N, D] (float32, normalised; text_emb None for uploads, which have
    no real captions), captions, names and the cache's thumbnails; files are the uploads' paths."""

    model: str
    model_key: tuple
    set_key: tuple
    source: str
    description: str
    held: HeldSet
    files: tuple[str, ...] = ()
    report: dict | None = None
    seconds: float = 0.0
    cached: bool = False
    receipt: dict = field(default_factory=dict)  # what made the embeddings (core.receipts.receipt)

    @property
    def n(self) -> int:
        return self.held.n

    @property
    def image_emb(self) -> torch.Tensor:
        return self.held.get()[1]

    @property
    def text_emb(self) -> torch.Tensor | None:
        return self.held.get()[2]

    @property
    def captions(self) -> list[str]:
        return self.held.get()[0].captions

    @property
    def names(self) -> list[str]:
        return self.held.get()[0].names

    @property
    def thumbs(self) -> list:
        return self.held.get()[0].images


@dataclass
class SearchResults:
    """One query's answer: the query vector [D], the hits (set indices, best first) and their cosines."""

    query: torch.Tensor
    text: str
    has_image: bool
    text_weight: float
    hits: list[int]
    scores: list[float]
    set_key: tuple
    timings_ms: dict = field(default_factory=dict)

    def describe(self) -> str:
        """The query in words: 'the text "a red circle"', 'the image', or both with the weight."""
        if self.text and self.has_image:
            return f'the image and the text "{self.text}" (text weight {self.text_weight:.2f})'
        return f'the text "{self.text}"' if self.text else "the query image"


def retrieval_numbers(image_emb: torch.Tensor, text_emb: torch.Tensor, progress=None, chunk: int = CHUNK,
                      direct_max: int = DIRECT_MAX) -> dict:
    """R@1/5/10 both ways and the caption ranks of N pairs (caption i is image i's), as retrieval_report.

    Up to direct_max pairs this is retrieval_report; beyond, the same numbers block by block (rows of
    `chunk`), so memory stays at chunk x N. progress(done, total) is called after each block.
    """
    n = len(image_emb)
    if n <= direct_max:
        return retrieval_report(image_emb, text_emb, ks=KS)
    hits_i2t, hits_t2i = {k: 0 for k in KS}, {k: 0 for k in KS}
    ranks = np.empty(n, np.int64)
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(start + chunk, n))
        for queries, keys, hits in ((image_emb, text_emb, hits_i2t), (text_emb, image_emb, hits_t2i)):
            sims = queries[rows] @ keys.T  # [b, N]
            top = sims.topk(min(max(KS), n), dim=1).indices  # [b, 10], as retrieval_metrics picks them
            for k in KS:
                hits[k] += int((top[:, :k] == rows[:, None]).any(1).sum())
            if hits is hits_i2t:  # 1 + captions strictly closer than the image's own (core.search.caption_ranks)
                own = sims[torch.arange(len(rows)), rows]
                ranks[rows.numpy()] = ((sims > own[:, None]).sum(1) + 1).numpy()
        if progress is not None:
            progress(int(rows[-1]) + 1, n)
    out = {}
    for k in KS:
        out[f"image_to_text_R@{k}"] = hits_i2t[k] / n
        out[f"text_to_image_R@{k}"] = hits_t2i[k] / n
    return {**out, "median_caption_rank": float(np.median(ranks)), "mean_caption_rank": float(ranks.mean()), "n": n}


def index_markdown(index: SearchIndex) -> str:
    """The index status line: what is indexed, with which model, how fast, and whether the cache had it."""
    d, mb = index.held.dim, index.held.mb
    how = ("from the shared cache (the Embedding map tab uses the same entry)" if index.cached
           else f"encoded in {index.seconds:.1f} s and cached (the Embedding map tab shares it)")
    return (f"**Indexed {index.n:,} images** ({index.description}) with `{index.model}`, {how}. "
            f"{d}-d embeddings, {mb:.1f} MB; a query is one exact product over all of them.")


def retrieval_markdown(index: SearchIndex) -> str:
    """R@1/5/10 both ways as a table, or why there is none."""
    r = index.report
    if r is None:
        return ("**Retrieval R@K:** not shown: uploaded images have no captions of their own (the file names "
                "are not captions). The shapes world and `datasets` sources have them.")
    head = "| | R@1 | R@5 | R@10 |\n|---|---|---|---|\n"
    rows = "".join(f"| {label} | " + " | ".join(f"{r[f'{key}_R@{k}']:.1%}" for k in KS) + " |\n"
                   for label, key in (("image → its caption", "image_to_text"), ("caption → its image", "text_to_image")))
    distinct = r.get("distinct_captions")
    dup = (f" {distinct:,} of the {r['n']:,} captions are distinct: a caption shared by several images cannot single "
           "out one of them, which caps caption → image R@1." if distinct is not None and distinct < r["n"] else "")
    return (f"**Retrieval over the {r['n']:,} pairs** (each image with its own caption among all of them):\n\n"
            f"{head}{rows}\nMedian rank of an image's own caption: **{r['median_caption_rank']:g}** "
            f"(mean {r['mean_caption_rank']:.1f}).{dup}")


def run_query(index: SearchIndex, text_emb: torch.Tensor | None, image_emb: torch.Tensor | None, text_weight: float,
              k: int, text: str = "") -> tuple[SearchResults, torch.Tensor]:
    """(results, every image's cosine [N]): the combined query, one product and a top-k (core.search.search,
    with the cosines kept for the histogram)."""
    if index.n == 0:
        raise UserInputError("the index is empty; index some images first")
    t0 = time.perf_counter()
    query = combined_query(text_emb, image_emb, text_weight)  # [D]
    sims = cosines(index.image_emb, query)  # [N]
    top = sims.topk(min(int(k), len(sims)))  # best first, as core.search.search
    ms = {"product_topk": 1000 * (time.perf_counter() - t0)}
    return SearchResults(query, text, image_emb is not None, float(text_weight), top.indices.tolist(),
                         top.values.tolist(), index.set_key, ms), sims


def hit_caption(rank: int, cosine: float) -> str:
    """A gallery caption, short enough for a thumbnail: '#1 · 0.412' (the image's name is in the hit panel)."""
    return f"#{rank} · {cosine:.3f}"


def gallery_items(index: SearchIndex, results: SearchResults) -> list[tuple[Image.Image, str]]:
    """(thumbnail, caption) per hit, best first; thumbnails under GALLERY_SIDE enlarged with crisp pixels."""
    items = []
    for rank, (i, c) in enumerate(zip(results.hits, results.scores), 1):
        im = index.thumbs[i]
        if max(im.size) < GALLERY_SIDE:
            f = -(-GALLERY_SIDE // max(im.size))  # a whole factor keeps pixels square
            im = im.resize((im.width * f, im.height * f), Image.NEAREST)
        items.append((im, hit_caption(rank, c)))
    return items


def cosine_counts(sims: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Counts [40] and edges [41] of every indexed image's cosine with the query (core.search.cosine_histogram)."""
    return cosine_histogram(sims, bins=HISTOGRAM_BINS)


def histogram_figure(counts: np.ndarray, edges: np.ndarray, results: SearchResults, n: int) -> go.Figure:
    """The histogram of `cosine_counts` as bars on a log scale, with the hits marked and the k-th cosine as a line.

    Built in one constructor call (plotly validates each later update separately: 28 ms against 3 ms)."""
    centres, width = (edges[:-1] + edges[1:]) / 2, float(edges[1] - edges[0])
    hit_bins = np.clip(np.searchsorted(edges, results.scores, side="right") - 1, 0, len(counts) - 1)
    ranks, kth = list(range(1, len(results.hits) + 1)), results.scores[-1]
    bars = go.Bar(x=centres, y=counts, width=width, marker_color="#a5b4fc", name=f"all {n:,} images",
                  hovertemplate="cosine %{x:.3f}: %{y} images<extra></extra>")
    hits = go.Scatter(x=results.scores, y=counts[hit_bins] * 1.8, mode="markers+text", name=f"top-{len(ranks)} hits",
                      text=[str(r) if r <= 3 else "" for r in ranks], textposition="top center", customdata=ranks,
                      marker=dict(symbol="triangle-down", size=11, color="#e11d48"),
                      hovertemplate="hit #%{customdata}: cosine %{x:.4f}<extra></extra>")
    top = max(1, int(counts.max()) * 2)
    ticks = [m * 10**e for e in range(len(str(top))) for m in (1, 2, 5) if m * 10**e <= top]  # 1, 2, 5, 10, 20, …
    cut = dict(type="line", x0=kth, x1=kth, y0=0, y1=1, yref="paper", line=dict(dash="dash", color="#e11d48", width=1))
    return go.Figure([bars, hits], layout=dict(
        title=dict(text=f"Cosine of every indexed image with the query · top-{len(ranks)} from {kth:.3f} up", x=0.01,
                   font=dict(size=14)),
        xaxis=dict(title=dict(text="cosine with the query")),
        yaxis=dict(type="log", title=dict(text="images (log scale)"), tickvals=ticks, ticktext=[f"{t:,}" for t in ticks]),
        height=320, margin=dict(l=10, r=10, t=50, b=40), bargap=0.05, shapes=[cut],
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1)))


def results_markdown(index: SearchIndex, results: SearchResults, server_ms: float) -> str:
    """One paragraph on the query: what was asked, the best cosine, and the time it took."""
    best = results.scores[0]
    return (f"**Top {len(results.hits)} of {index.n:,}** for {results.describe()}: best cosine {best:.3f}, "
            f"#{len(results.hits)} {results.scores[-1]:.3f}. Exact search: the product over all {index.n:,} embeddings "
            f"and the top-k took {results.timings_ms['product_topk']:.1f} ms; the whole query {server_ms:.0f} ms on "
            "the server (text encoding included). Click a hit to see where it matches and, for captioned sets, "
            "the rank of its own caption.")


def results_data(index: SearchIndex, results: SearchResults, counts: np.ndarray, edges: np.ndarray) -> dict:
    """The structured answer: the query, every hit (rank, set index, name, caption, cosine), the histogram, timings."""
    return {"model": index.model, "indexed": index.n, "set": index.description, "query": {
                "text": results.text, "image": results.has_image, "text_weight": results.text_weight},
            "hits": [{"rank": r, "index": i, "name": index.names[i], "caption": index.captions[i], "cosine": round(c, 6)}
                     for r, (i, c) in enumerate(zip(results.hits, results.scores), 1)],
            "histogram": {"counts": counts.tolist(), "edges": np.round(edges, 6).tolist()},
            "timings_ms": {k: round(v, 2) for k, v in results.timings_ms.items()}, "receipt": index.receipt or None}


def hit_markdown(index: SearchIndex, results: SearchResults, rank: int) -> str:
    """A hit in words: its cosine, its caption and, for captioned sets, that caption's rank both ways."""
    i, c = results.hits[rank - 1], results.scores[rank - 1]
    head = f"**Hit #{rank}** · {index.names[i]} · cosine {c:.4f} with {results.describe()}."
    if index.text_emb is None:
        return head
    img, txt = index.image_emb[i], index.text_emb
    r_i2t = caption_rank(img, txt, i)  # its own caption among all N
    r_t2i = caption_rank(txt[i], index.image_emb, i)  # it, among all N images, for its own caption
    closest = (txt @ img).topk(min(3, index.n)).indices.tolist()
    shown = "; ".join(f'"{index.captions[j]}"' + (" (its own)" if j == i else "") for j in closest)
    return (f"{head}  \nIts caption: **\"{index.captions[i]}\"**, ranked **{r_i2t:,}** of {index.n:,} captions "
            f"for this image (1 = best); for that caption the image ranks {r_t2i:,} of {index.n:,}.  \n"
            f"The captions closest to it: {shown}.")


def hit_image(index: SearchIndex, i: int) -> Image.Image:
    """The image to explain: an upload read again from its file (while it lasts), else the kept thumbnail
    (the shapes world's 64-px images are kept whole; a dataset's rows are 64-px thumbnails)."""
    if index.files and i < len(index.files):
        try:
            return open_image(index.files[i])
        except (UserInputError, OSError):
            pass  # deleted after the upload TTL: the thumbnail still shows where it matches
    return index.thumbs[i]
