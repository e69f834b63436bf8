"""Batched, L2-normalised image and text embeddings.

Texts are padded to the longest text of each batch (never to 77), sorted by length so that a
batch holds texts of similar length. Texts longer than the model's context are truncated, keeping
the end-of-text token, with a warning. Images go through the model's own `CLIPImageProcessor`.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import families
from .model import Clip


def autocast_context(device: torch.device, precision: str):
    """bf16 autocast on the given device when precision == 'bf16', else a no-op context."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    return contextlib.nullcontext()


def image_features(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """Un-normalised image embeddings [B, D] from pixel_values [B, 3, H, W] (core.families: projected for
    CLIP, the attention-pool head for SigLIP)."""
    return families.image_features(model, pixel_values)


def text_features(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Un-normalised text embeddings [B, D] (core.families: the end-of-text token projected for CLIP, the
    text head at the last of 64 positions for SigLIP)."""
    return families.text_features(model, input_ids, attention_mask)


def family_of(clip) -> families.Family:
    """The family of a Clip, or CLIP for what only tokenizes like one (the trainer's TextTokens)."""
    return getattr(clip, "family", families.CLIP)


def tokenize(clip: Clip, texts: Sequence[str], warn: bool = True) -> dict[str, torch.Tensor]:
    """Token ids [B, L] and attention mask [B, L], padded to the longest text (L <= context length).

    Texts longer than the context keep their first (context - 1) tokens plus end-of-text.
    """
    return pad_token_ids(clip, token_ids(clip, texts, warn))


def token_ids(clip: Clip, texts: Sequence[str], warn: bool = True) -> list[list[int]]:
    """Unpadded token ids of each text (start- and end-of-text included), cut to the context length."""
    tok = clip.tokenizer
    ctx = clip.context_length
    texts = [t.lower() for t in texts] if family_of(clip).lowercase else list(texts)  # SigLIP 2 learned lower case
    ids = tok(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    eos = tok.eos_token_id
    too_long = [i for i, seq in enumerate(ids) if len(seq) > ctx]
    if too_long:
        if warn:
            warnings.warn(f"{len(too_long)} text(s) longer than the {ctx}-token context were truncated "
                          f"(first: {texts[too_long[0]][:60]!r}...)", stacklevel=3)
        for i in too_long:
            ids[i] = ids[i][: ctx - 1] + [eos]
    return ids


def pad_token_ids(clip: Clip, ids: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
    """Pad token id lists to the longest one: input_ids and attention_mask [B, L] (int64)."""
    tok = clip.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    lengths = np.array([len(seq) for seq in ids])
    family = family_of(clip)
    width = family.pad_to or int(lengths.max())  # SigLIP: always 64 positions, the last one pooled
    input_ids = np.full((len(ids), width), pad, dtype=np.int64)
    left = family.pad_to and getattr(tok, "padding_side", "right") == "left"  # as the tokenizer pads
    for i, seq in enumerate(ids):
        if left:
            input_ids[i, width - len(seq):] = seq
        else:
            input_ids[i, : len(seq)] = seq
    if family.pad_to and "attention_mask" not in getattr(tok, "model_input_names", ()):
        return {"input_ids": torch.from_numpy(input_ids), "attention_mask": None}  # SigLIP: the pads are read too
    positions = np.arange(input_ids.shape[1])
    mask = (positions >= width - lengths[:, None]) if left else (positions < lengths[:, None])
    mask = mask.astype(np.int64)
    return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}


def pixel_values(clip: Clip, images: Sequence[Image.Image]) -> torch.Tensor:
    """The model's preprocessing of PIL images: [B, 3, S, S] float32."""
    rgb = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
    return clip.processor(images=rgb, return_tensors="pt")["pixel_values"]


def arrays_to_pixels(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Fast path for uint8 images already at model size: [B, S, S, 3] uint8 -> [B, 3, S, S] float32.

    Same arithmetic as CLIPImageProcessor (rescale by 1/255, then normalise), minus the resize.
    """
    return normalise_uint8(torch.from_numpy(images).permute(0, 3, 1, 2), mean, std)


def normalise_uint8(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 pixels [B, 3, S, S] -> float32 [B, 3, S, S] on the same device: rescale by 1/255, then
    normalise per channel, the arithmetic of CLIPImageProcessor."""
    x = pixels.float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


@torch.inference_mode()
def encode_texts(clip: Clip, texts: Sequence[str], batch_size: int = 256, precision: str = "fp32",
                 progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """L2-normalised text embeddings [N, D] (float32, CPU), in the order of `texts`.

    progress(done, total) is called after each batch; an exception it raises (a cancel) stops the work.
    """
    texts = list(texts)
    if not texts:
        return torch.empty(0, clip.embed_dim)
    ids = token_ids(clip, texts)  # tokenized once, for the sort and the batches
    order = np.argsort([len(seq) for seq in ids], kind="stable")  # similar lengths share a batch: less padding
    out = torch.empty(len(texts), clip.embed_dim)
    device = clip.device
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        batch = pad_token_ids(clip, [ids[i] for i in idx])
        with autocast_context(device, precision):
            mask = batch["attention_mask"]
            feats = text_features(clip.model, batch["input_ids"].to(device), None if mask is None else mask.to(device))
        out[torch.as_tensor(idx)] = F.normalize(feats.float(), dim=-1).cpu()
        if progress is not None:
            progress(min(start + batch_size, len(texts)), len(texts))
    return out


@torch.inference_mode()
def encode_images(clip: Clip, images: Sequence[Image.Image] | torch.Tensor, batch_size: int = 64,
                  precision: str = "fp32", progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """L2-normalised image embeddings [N, D] (float32, CPU).

    images: PIL images (preprocessed with the model's processor) or pixel values [N, 3, S, S].
    progress(done, total) is called after each batch; an exception it raises (a cancel) stops the work.
    """
    n = len(images)
    if n == 0:
        return torch.empty(0, clip.embed_dim)
    device = clip.device
    chunks = []
    for start in range(0, n, batch_size):
        batch = images[start : start + batch_size]
        pixels = batch if isinstance(batch, torch.Tensor) else pixel_values(clip, batch)
        with autocast_context(device, precision):
            feats = image_features(clip.model, pixels.to(device))
        chunks.append(F.normalize(feats.float(), dim=-1).cpu())
        if progress is not None:
            progress(min(start + batch_size, n), n)
    return torch.cat(chunks)
