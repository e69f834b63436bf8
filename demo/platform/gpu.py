"""Where the app's model forwards run: inside `@spaces.GPU` functions, so a ZeroGPU Space works.

Every forward the app makes (prompts for a zero-shot head, images and captions of a batch or a
map set) goes through `encode_texts` / `encode_images` here. On a ZeroGPU Space `spaces.GPU`
attaches a GPU slice for the call, for a duration estimated from the work; everywhere else
(a CPU Space, a GPU machine, this laptop) the decorator returns the function unchanged, and the
model runs on `config.device` (auto: CUDA when there is one).

On ZeroGPU the call runs in another process, so it receives the model's *name*, looked up in
the app's model cache, rather than the model itself, and progress and cancel callbacks stay in
this process: they are checked between GPU calls of `ZERO_GPU_*` items each. Elsewhere they run
after every batch of `CHUNK_*` items, so a Stop takes effect within about a second.
"""

from __future__ import annotations

import os
from typing import Callable

import torch

import core

try:  # `spaces` is Hugging Face's package for ZeroGPU; its decorator does nothing elsewhere
    import spaces
except ImportError:  # not installed: nothing to decorate for
    spaces = None

ZERO_GPU = os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "true")
CHUNK_TEXTS, CHUNK_IMAGES = 256, 16  # a batch takes about a second on 2 CPU cores with ViT-B/32
ZERO_GPU_TEXTS, ZERO_GPU_IMAGES = 8192, 1024  # per GPU call on ZeroGPU
_models = None  # the app's ModelCache (set by Services)


def use_models(models) -> None:
    """Tell the GPU functions which model cache to look models up in (the app's ModelCache)."""
    global _models
    _models = models


def on_gpu(duration: Callable[..., int]):
    """`spaces.GPU(duration=duration)` when `spaces` is installed (a no-op off ZeroGPU), else no decorator."""
    def decorate(fn):
        return fn if spaces is None else spaces.GPU(duration=duration)(fn)
    return decorate


def text_seconds(source: str, texts: list[str], *args, **kwargs) -> int:
    """ZeroGPU duration for encoding texts: 10 s plus about 1 s per 5,000 prompts (ViT-B/32 on a slice)."""
    return int(min(120, 10 + len(texts) / 5000))


def image_seconds(source: str, images: list, *args, **kwargs) -> int:
    """ZeroGPU duration for encoding images: 10 s plus about 1 s per 500 images."""
    return int(min(120, 10 + len(images) / 500))


def _resolve(model):
    """A Clip from a Clip (in this process) or a model name (on ZeroGPU, in the GPU worker)."""
    if not isinstance(model, str):
        return model
    if _models is None:
        raise RuntimeError("demo.platform.gpu.use_models was never called: no model cache to look models up in")
    return _models.get(model)


@on_gpu(text_seconds)
def encode_texts(model, texts: list[str], progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """L2-normalised embeddings [N, D] of `texts` (see core.encode_texts); `model` is a Clip or its name."""
    return core.encode_texts(_resolve(model), texts, batch_size=CHUNK_TEXTS, progress=progress)


@on_gpu(image_seconds)
def encode_images(model, images: list, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """L2-normalised embeddings [N, D] of PIL `images` (see core.encode_images); `model` is a Clip or its name."""
    return core.encode_images(_resolve(model), images, batch_size=CHUNK_IMAGES, progress=progress)


def embed_texts(clip, texts: list[str], progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Text embeddings [N, D] for the app: one GPU call off ZeroGPU (progress and cancel checked per
    batch of CHUNK_TEXTS), or GPU calls of ZERO_GPU_TEXTS prompts each on ZeroGPU (checked between calls)."""
    if not ZERO_GPU:
        return encode_texts(clip, texts, progress)
    return _chunked(encode_texts, clip.source, list(texts), ZERO_GPU_TEXTS, progress)


def embed_images(clip, images: list, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Image embeddings [N, D] for the app; as embed_texts, in GPU calls of ZERO_GPU_IMAGES on ZeroGPU."""
    if not ZERO_GPU:
        return encode_images(clip, images, progress)
    return _chunked(encode_images, clip.source, list(images), ZERO_GPU_IMAGES, progress)


def _chunked(encode, source: str, items: list, chunk: int, progress) -> torch.Tensor:
    if not items:
        return encode(source, items)
    parts = []
    for start in range(0, len(items), chunk):
        parts.append(encode(source, items[start:start + chunk]))
        if progress is not None:
            progress(min(start + chunk, len(items)), len(items))
    return torch.cat(parts)
