"""Exact search over an index of normalised image embeddings, and the numbers that judge it.

The index is a float32 matrix [N, D] of L2-normalised rows (what `encode_images` returns). A
query is one matrix–vector product and a top-k: exact, no approximate index. A query can mix a
text and an image ("this image, but blue"): the normalised weighted sum of the normalised parts.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UserInputError
from .evaluate import retrieval_metrics


class SearchError(UserInputError):
    """A search that cannot run as asked: no query, an empty index, a bad weight or k."""


def combined_query(text_emb: torch.Tensor | None, image_emb: torch.Tensor | None, text_weight: float = 0.5) -> torch.Tensor:
    """The query [D]: normalise(w · text/|text| + (1 − w) · image/|image|), w = text_weight in [0, 1].

    Either part may be None, and the query is then the other part, normalised (the weight is not used).
    """
    if text_emb is None and image_emb is None:
        raise SearchError("give a text, an image, or both to search with")
    if not 0.0 <= float(text_weight) <= 1.0:
        raise SearchError(f"the text weight must lie between 0 and 1, got {text_weight}")
    if text_emb is not None and image_emb is not None and text_emb.numel() != image_emb.numel():
        raise SearchError(f"text and image embeddings differ in width ({text_emb.numel()} vs {image_emb.numel()})")
    parts = [(e, w) for e, w in ((text_emb, float(text_weight)), (image_emb, 1.0 - float(text_weight))) if e is not None]
    if len(parts) == 1:
        parts = [(parts[0][0], 1.0)]
    query = sum(w * F.normalize(e.detach().float().reshape(-1), dim=0) for e, w in parts)  # [D]
    if float(query.norm()) < 1e-6:
        raise SearchError("the text and the image cancel out at this weight; move the weight")
    return F.normalize(query, dim=0)


def cosines(index: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Every indexed image's cosine with the query: [N] float32 (index rows and query normalised)."""
    if index.dim() != 2 or index.shape[0] == 0:
        raise SearchError("the index is empty; index some images first")
    if query.numel() != index.shape[1]:
        raise SearchError(f"the query has width {query.numel()} but the index {index.shape[1]}; were they made by the same model?")
    return index @ query.reshape(-1).to(index.dtype)  # [N]


def search(index: torch.Tensor, query: torch.Tensor, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest indexed images: (indices [k] int64, cosines [k] float32), best first.

    Exact: one product index [N, D] @ query [D] and a top-k; k larger than N gives all N.
    """
    if int(k) < 1:
        raise SearchError(f"ask for at least one result, got k={k}")
    sims = cosines(index, query)  # [N]
    top = sims.topk(min(int(k), len(sims)))  # sorted, best first
    return top.indices, top.values


def cosine_histogram(all_cosines: torch.Tensor | np.ndarray, bins: int = 40,
                     value_range: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Counts [bins] and bin edges [bins + 1] of the query's cosines with the whole index.

    value_range defaults to the cosines' own min and max (CLIP cosines crowd a narrow band).
    """
    values = all_cosines.detach().cpu().numpy() if isinstance(all_cosines, torch.Tensor) else np.asarray(all_cosines)
    if int(bins) < 1:
        raise SearchError(f"a histogram needs at least one bin, got {bins}")
    if values.size == 0:
        return np.zeros(int(bins), dtype=np.int64), np.linspace(-1.0, 1.0, int(bins) + 1)
    counts, edges = np.histogram(values.astype(np.float64), bins=int(bins), range=value_range)
    return counts, edges


def caption_rank(image_emb: torch.Tensor, text_emb: torch.Tensor, true_index: int) -> int:
    """Rank (1 = best) of caption true_index among captions text_emb [M, D] for one image [D].

    Ties count in the caption's favour: the rank is 1 + the number of captions strictly closer.
    """
    if not 0 <= int(true_index) < len(text_emb):
        raise SearchError(f"caption {true_index} is not among the {len(text_emb)} captions")
    sims = text_emb @ image_emb.reshape(-1).to(text_emb.dtype)  # [M]
    return int((sims > sims[int(true_index)]).sum()) + 1


def caption_ranks(image_emb: torch.Tensor, text_emb: torch.Tensor,
                  text_to_image: Sequence[int] | None = None) -> np.ndarray:
    """For each image [N, D], the best rank (1 = best) of any of its captions among text_emb [M, D]: int64 [N].

    text_to_image[j] is the image of caption j (default: caption j belongs to image j), as in
    `core.evaluate.retrieval_metrics`, so rank <= K exactly when that image counts in R@K.
    """
    owner = torch.as_tensor(list(text_to_image) if text_to_image is not None else range(len(text_emb)))
    sims = image_emb @ text_emb.T  # [N, M]
    mine = owner[None, :] == torch.arange(len(image_emb))[:, None]  # [N, M]: caption j is image i's
    if not bool(mine.any(1).all()):
        raise SearchError("every image needs at least one caption to be ranked")
    best = sims.masked_fill(~mine, float("-inf")).max(dim=1).values  # [N]: each image's closest own caption
    return ((sims > best[:, None]).sum(dim=1) + 1).numpy()


def retrieval_report(image_emb: torch.Tensor, text_emb: torch.Tensor, text_to_image: Sequence[int] | None = None,
                     ks: Sequence[int] = (1, 5, 10)) -> dict:
    """R@K both ways (`core.evaluate.retrieval_metrics`) plus the median and mean image->text caption rank."""
    ranks = caption_ranks(image_emb, text_emb, text_to_image)
    return {**retrieval_metrics(image_emb, text_emb, text_to_image, ks),
            "median_caption_rank": float(np.median(ranks)), "mean_caption_rank": float(ranks.mean()), "n": len(ranks)}
