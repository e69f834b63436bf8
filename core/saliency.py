"""Saliency maps: where in an image does a text match? For any Hugging Face CLIP ViT.

Methods (each gives a finite float32 map [grid, grid], grid = image_size // patch_size):

- "patch_text": training-free. The vision tower's last hidden state's patch tokens go through
  `post_layernorm` and `visual_projection` (the path the CLS token takes), are normalised, and
  each patch's cosine with the normalised text embedding is the map.
- "relevance": gradient-weighted attention relevance (Chefer, Gur and Wolf, ICCV 2021, "Generic
  Attention-model Explainability"). R starts as the identity [T, T]; for every vision layer
  R += mean_heads(clamp(dA ⊙ A, min=0)) @ R, where A are the layer's attention probabilities
  and dA the gradient of the image–text logit (logit_scale × cosine) w.r.t. A. The CLS row over
  the patch tokens is the map.
- "rollout": attention rollout (Abnar and Zuidema, ACL 2020): the product over layers of
  0.5 × mean_heads(A) + 0.5 × I, CLS row. It ignores the text: a reference for how much of the
  pointing game an "objectness" map wins, not an answer to "where does this text match".
- "centre": a Gaussian bump at the image centre, the baseline every map has to beat.

SigLIP has no CLS token: its image embedding is an attention-pooling head (a learned probe token
attending over every patch, then an MLP). "relevance" and "rollout" then end with that head's
attention in place of the CLS row (relevance weights it by its gradient, as every layer's); the
head's input is the post-LN patch tokens. "patch_text" needs CLIP's projected CLS path and is
refused for SigLIP with a message naming the methods that work.

The default is "relevance", chosen by the pointing game (core.pointing; 500 eval images each,
benchmarks/results/pointing_game.json; the peak located below the patch size, see
core.pointing.refined_peaks). On the bundled model: relevance 88% strict (63% with the plain
patch-centre peak), 100% within 4 px, and in 2-3 object scenes 88% on the named object vs 5% on
another; patch_text 10% (near the 11% chance: CLIP's patch tokens are never trained to match
texts; likely the background ones carry the global signal); rollout 95% on single objects but 37%
named vs 52% other in multi-object scenes, since it ignores the text, so it cannot answer "where
does this text match"; centre 47%.

Attention probabilities, and what transformers gives (checked on the installed 5.24.0): with the
default "sdpa" attention, `vision_model(..., output_attentions=True)` returns `attentions=()`
(an empty tuple, not None) and only logs "`sdpa` attention does not support
`output_attentions=True`". With `attn_implementation="eager"` it returns one [B, heads, T, T]
tensor per layer, in the autograd graph (the v5.0 regression, transformers#43618, was fixed by
#43657). `core.load` gives sdpa models, and switching a shared model to eager would slow every
other request and race with them, so "relevance" does not go through that API: it walks the
vision tower's own modules (embeddings, pre-LN, each layer's LN / q, k, v, out projections / MLP)
and computes the attention itself, eager-style. tests/test_search_saliency.py checks that walk
against the model's forward (same tokens) and against eager `output_attentions` (same attentions).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .encode import encode_texts, pixel_values
from .errors import UserInputError
from .model import Clip

METHODS = ("relevance", "patch_text", "rollout", "centre")
TEXT_FREE_METHODS = ("rollout", "centre")  # maps that do not depend on the text
DEFAULT_METHOD = "relevance"  # chosen by the pointing game: benchmarks/results/pointing_game.json


def attention_pooled(model) -> bool:
    """Whether the image embedding is an attention-pooling head's output (SigLIP), not a CLS token (CLIP)."""
    return getattr(model.vision_model, "head", None) is not None and getattr(model.vision_model, "use_head", True)


def grid_size(model) -> int:
    """Patches per side of a CLIPModel's vision tower: image_size // patch_size."""
    cfg = model.config.vision_config
    return int(cfg.image_size) // int(cfg.patch_size)


def _text_rows(text_emb: torch.Tensor, batch: int) -> torch.Tensor:
    """Normalised text embeddings [B, D] from [D] (shared by the batch) or [B, D]."""
    t = text_emb.detach().float().clone()  # clone: an inference-mode tensor cannot enter the autograd graph
    t = t.expand(batch, -1) if t.dim() == 1 else t
    if t.shape[0] != batch:
        raise ValueError(f"{t.shape[0]} text embeddings for {batch} images")
    return F.normalize(t, dim=-1)


def _to_grid(values: torch.Tensor, grid: int) -> torch.Tensor:
    """Per-patch values [B, grid * grid] -> maps [B, grid, grid] (row-major, as the patches are)."""
    return values.reshape(values.shape[0], grid, grid)  # shape = [B, grid, grid]


# ---------------------------------------------------------------- patch-text cosine


@torch.no_grad()
def patch_text_maps(model, pixels: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """Cosine of every projected patch token with the text: [B, grid, grid] float32.

    pixels [B, 3, S, S] (the model's preprocessing); text_emb [D] or [B, D].
    """
    if attention_pooled(model):
        raise UserInputError("patch_text needs a CLIP-family model (patch tokens on the CLS token's projected path); "
                             "SigLIP pools with an attention head: use relevance (the default) or rollout")
    vision = model.vision_model
    hidden = vision(pixel_values=pixels.to(model.device, model.dtype)).last_hidden_state  # [B, 1 + grid ** 2, width]
    patches = model.visual_projection(vision.post_layernorm(hidden[:, 1:]))  # [B, grid ** 2, D]
    patches = F.normalize(patches.float(), dim=-1)
    text = _text_rows(text_emb, len(pixels)).to(patches.device)
    cos = torch.einsum("bpd,bd->bp", patches, text)  # [B, grid ** 2]
    return _to_grid(cos, grid_size(model)).cpu()


# ---------------------------------------------------------------- gradient-weighted attention relevance


def _self_attention(attn, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A CLIPAttention computed eagerly from its own projections: (output [B, T, W], probs [B, H, T, T])."""
    b, t, w = h.shape
    heads, head_dim = attn.num_heads, attn.head_dim

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.view(b, t, heads, head_dim).transpose(1, 2)  # shape = [B, H, T, head_dim]

    q, k, v = split(attn.q_proj(h)), split(attn.k_proj(h)), split(attn.v_proj(h))
    probs = torch.softmax((q @ k.transpose(-1, -2)).float() * attn.scale, dim=-1).to(q.dtype)  # [B, H, T, T]
    context = (probs @ v).transpose(1, 2).reshape(b, t, w)  # shape = [B, T, W]
    return attn.out_proj(context), probs


def vision_forward_with_attentions(vision, pixels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The vision tower (CLIP's or SigLIP's) run module by module: the last layer's hidden state [B, T, W]
    (before the post-LN) and every layer's attention probabilities [B, H, T, T], both in the autograd graph
    when gradients are enabled. T is 1 + grid² for CLIP (the CLS token first), grid² for SigLIP.

    Same arithmetic as the model's forward whatever its attention implementation.
    """
    x = vision.embeddings(pixels)  # [B, T, W]
    if hasattr(vision, "pre_layrnorm"):  # CLIP's pre-LN; SigLIP has none
        x = vision.pre_layrnorm(x)
    attentions = []
    for layer in vision.encoder.layers:
        out, probs = _self_attention(layer.self_attn, layer.layer_norm1(x))
        attentions.append(probs)
        x = x + out
        x = x + layer.mlp(layer.layer_norm2(x))
    return x, attentions


def relevance_maps(model, pixels: torch.Tensor, text_emb: torch.Tensor, start_layer: int = 0) -> torch.Tensor:
    """Chefer et al.'s relevance of each patch for the image–text logit: [B, grid, grid] float32.

    pixels [B, 3, S, S]; text_emb [D] or [B, D]. Layers before start_layer are skipped (0: all;
    Chefer's CLIP demo uses only the last). Images of a batch do not interact, so one backward
    pass of the summed logits gives every image its own gradients. No parameter gradients are
    kept and the model's state (train/eval, attention implementation) is not touched.
    """
    layers = len(model.vision_model.encoder.layers)
    if not 0 <= start_layer < layers:
        raise ValueError(f"start_layer must lie in [0, {layers - 1}], got {start_layer}")
    device = model.device
    with torch.inference_mode(False), torch.enable_grad():
        x = pixels.detach().to(device, model.dtype).clone().requires_grad_(True)  # the graph exists even for frozen weights
        hidden, attentions = vision_forward_with_attentions(model.vision_model, x)
        image, pool = pooled_image(model, hidden)  # [B, D]; SigLIP: the head's attention [B, H, 1, T]
        text = _text_rows(text_emb, len(x)).to(device)
        scale = model.logit_scale.detach().exp()  # SigLIP's bias shifts every logit alike: it has no gradient
        scale = scale if pool is not None else scale.clamp(max=100.0)  # CLIP clamps its scale at 100
        logits = scale * (F.normalize(image.float(), dim=-1) * text).sum(-1)  # [B]
        used = attentions[start_layer:] + ([pool] if pool is not None else [])
        grads = torch.autograd.grad(logits.sum(), used)
    tokens = attentions[0].shape[-1]
    relevance = torch.eye(tokens, device=device).expand(len(x), tokens, tokens)  # [B, T, T]
    cams = [(g.detach().float() * a.detach().float()).clamp(min=0).mean(dim=1) for a, g in zip(used, grads)]
    for cam in cams[:len(attentions) - start_layer]:  # [B, T, T]: heads averaged
        relevance = relevance + cam @ relevance
    head = cams[-1] if pool is not None else None  # SigLIP: the pooling head's gradient-weighted attention [B, 1, T]
    return _to_grid(_cls_row(relevance, head), grid_size(model)).cpu()


def pooled_image(model, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The un-normalised image embedding [B, D] from the last hidden state [B, T, W], and for SigLIP the
    pooling head's attention over the patches [B, H, 1, T] (None for CLIP, which pools the CLS token)."""
    vision = model.vision_model
    if not attention_pooled(model):
        return model.visual_projection(vision.post_layernorm(hidden[:, 0])), None
    head, tokens = vision.head, vision.post_layernorm(hidden)
    pooled, weights = _probe_attention(head.attention, head.probe.expand(len(tokens), -1, -1), tokens)
    pooled = pooled + head.mlp(head.layernorm(pooled))
    return pooled[:, 0], weights


def _probe_attention(mha: torch.nn.MultiheadAttention, probe: torch.Tensor, tokens: torch.Tensor):
    """torch's MultiheadAttention(probe, tokens, tokens) computed eagerly, so that its probabilities are in the
    graph of its output (torch's own weights are computed beside a fused kernel): (output [B, 1, W],
    probabilities [B, H, 1, T])."""
    b, t, w = tokens.shape
    heads = mha.num_heads
    wq, wk, wv = mha.in_proj_weight.chunk(3)
    bq, bk, bv = mha.in_proj_bias.chunk(3)

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.view(b, -1, heads, w // heads).transpose(1, 2)  # [B, H, L, head_dim]

    q, k, v = split(F.linear(probe, wq, bq)), split(F.linear(tokens, wk, bk)), split(F.linear(tokens, wv, bv))
    probs = torch.softmax((q @ k.transpose(-1, -2)).float() / math.sqrt(w // heads), dim=-1).to(q.dtype)
    context = (probs @ v).transpose(1, 2).reshape(b, -1, w)  # [B, 1, W]
    return mha.out_proj(context), probs


def _cls_row(matrix: torch.Tensor, pool: torch.Tensor | None) -> torch.Tensor:
    """The row of a token-to-token matrix [B, T, T] that the image embedding reads: CLIP's CLS row over the
    patches [B, T - 1], or SigLIP's pooling head [B, 1, T] times the matrix [B, T]."""
    return matrix[:, 0, 1:] if pool is None else (pool @ matrix)[:, 0]


@torch.no_grad()
def rollout_maps(model, pixels: torch.Tensor) -> torch.Tensor:
    """Attention rollout, text-free: [B, grid, grid] float32 from pixels [B, 3, S, S]."""
    hidden, attentions = vision_forward_with_attentions(model.vision_model, pixels.to(model.device, model.dtype))
    tokens = attentions[0].shape[-1]
    eye = torch.eye(tokens, device=model.device)
    rollout = eye.expand(len(pixels), tokens, tokens)  # [B, T, T]
    for a in attentions:
        rollout = (0.5 * a.float().mean(dim=1) + 0.5 * eye) @ rollout  # the residual carries half of each token
    pool = pooled_image(model, hidden)[1] if attention_pooled(model) else None  # SigLIP: [B, H, 1, T]
    return _to_grid(_cls_row(rollout, None if pool is None else pool.float().mean(dim=1)), grid_size(model)).cpu()


# ---------------------------------------------------------------- baseline and helpers


def centre_map(grid: int, sigma: float = 0.25) -> torch.Tensor:
    """A Gaussian bump at the centre: [grid, grid] float32, width sigma × grid."""
    c = (grid - 1) / 2
    r = torch.arange(grid, dtype=torch.float32) - c
    return torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * (sigma * grid) ** 2))


def saliency_maps(model, pixels: torch.Tensor, text_emb: torch.Tensor, method: str = DEFAULT_METHOD) -> np.ndarray:
    """Maps of a batch by one method: float32 [B, grid, grid], every value finite.

    pixels [B, 3, S, S] (the model's preprocessing); text_emb [D] or [B, D] (unused by the
    text-free methods, which accept None).
    """
    if method == "patch_text":
        maps = patch_text_maps(model, pixels, text_emb)
    elif method == "relevance":
        maps = relevance_maps(model, pixels, text_emb)
    elif method == "rollout":
        maps = rollout_maps(model, pixels)
    elif method == "centre":
        maps = centre_map(grid_size(model)).expand(len(pixels), -1, -1)
    else:
        raise UserInputError(f"unknown saliency method {method!r}; choose one of {', '.join(METHODS)}")
    return np.nan_to_num(maps.numpy().astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def saliency_map(clip: Clip, image: Image.Image | torch.Tensor, text: str | torch.Tensor,
                 method: str = DEFAULT_METHOD) -> np.ndarray:
    """Where `text` matches in `image`: float32 [grid, grid].

    image: a PIL image (the model's preprocessing is applied) or pixel values [3, S, S];
    text: a string (encoded with the model) or an embedding [D]; ignored by the text-free methods.
    """
    if method not in METHODS:
        raise UserInputError(f"unknown saliency method {method!r}; choose one of {', '.join(METHODS)}")
    if method in TEXT_FREE_METHODS:
        text = None
    elif isinstance(text, str):
        if not text.strip():
            raise UserInputError("type a text to locate in the image")
        text = encode_texts(clip, [text])[0]
    pixels = image[None] if isinstance(image, torch.Tensor) else pixel_values(clip, [image])  # [1, 3, S, S]
    return saliency_maps(clip.model, pixels, text, method)[0]


def upsample(saliency: np.ndarray | torch.Tensor, size: int | Sequence[int]) -> np.ndarray:
    """A map [g, g] (or a batch [B, g, g]) resized bilinearly to size (int or (height, width)): float32."""
    if isinstance(saliency, torch.Tensor):
        t = saliency.detach().float().cpu()
    else:
        t = torch.from_numpy(np.ascontiguousarray(saliency, dtype=np.float32))
    batched = t.dim() == 3
    out = F.interpolate(t.reshape(-1, 1, *t.shape[-2:]),  # shape = [B, 1, g, g]
                        size=(size, size) if isinstance(size, int) else tuple(size), mode="bilinear", align_corners=False)
    return out[:, 0].numpy() if batched else out[0, 0].numpy()


def to_unit(saliency: np.ndarray) -> np.ndarray:
    """A map rescaled to [0, 1] for display (a constant map gives zeros)."""
    lo, hi = float(np.min(saliency)), float(np.max(saliency))
    if not math.isfinite(hi - lo) or hi - lo <= 0:
        return np.zeros_like(saliency, dtype=np.float32)
    return ((saliency - lo) / (hi - lo)).astype(np.float32)
