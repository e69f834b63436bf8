"""The B/32 stand-in checkpoint (real config and tokenizer, random weights, in a Hugging Face cache
layout that core.load finds offline) and the FLOP bounds: part of benchmarks/space_latency.py."""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
HUB_ID = "openai/clip-vit-base-patch32"


# ---------------------------------------------------------------- the stand-in checkpoint


def standin_revision(preset_name: str) -> str:
    """A fixed 40-hex commit id for the stand-in's snapshot folder."""
    return hashlib.sha1(f"clip-lab stand-in for {HUB_ID}, preset {preset_name}, seed 0".encode()).hexdigest()


def build_standin(hub_cache: str | os.PathLike, preset_name: str = "base", seed: int = 0) -> Path:
    """Save a random-weight CLIP with the real config, tokenizer and processor as the Hub cache's
    `openai/clip-vit-base-patch32` (snapshot + refs/main). Returns the snapshot folder."""
    from transformers import CLIPModel

    from core.model import PRESETS, image_processor_for, load_tokenizer

    preset = PRESETS[preset_name]
    torch.manual_seed(seed)
    config = preset.to_config()
    config.text_config.hidden_act = config.vision_config.hidden_act = "quick_gelu"  # as OpenAI's checkpoint
    model = CLIPModel(config).eval()
    tokenizer = load_tokenizer()
    tokenizer.model_max_length = preset.context_length
    repo = Path(hub_cache) / f"models--{HUB_ID.replace('/', '--')}"
    sha = standin_revision(preset_name)
    snapshot = repo / "snapshots" / sha
    if snapshot.exists():
        shutil.rmtree(snapshot)
    snapshot.mkdir(parents=True)
    model.save_pretrained(snapshot, safe_serialization=True)
    tokenizer.save_pretrained(snapshot)
    image_processor_for(preset.image_size).save_pretrained(snapshot)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(sha)
    return snapshot


def check_standin(snapshot: Path, preset_name: str) -> dict:
    """core.load(HUB_ID) offline: it must resolve to the stand-in's snapshot, with its config and tokenizer."""
    import core
    from core.model import PRESETS

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    t = time.perf_counter()
    clip = core.load(HUB_ID)
    load_s = time.perf_counter() - t
    cfg, preset = clip.model.config, PRESETS[preset_name]
    ids = clip.tokenizer("a photo of a cat.")["input_ids"]
    checks = {
        "source": clip.source, "revision": clip.revision, "load_s": load_s,
        "weights_path_is_snapshot": clip.revision == core.model.weights_revision(snapshot),
        "vision": [cfg.vision_config.hidden_size, cfg.vision_config.num_hidden_layers, cfg.vision_config.patch_size,
                   cfg.vision_config.image_size],
        "text": [cfg.text_config.hidden_size, cfg.text_config.num_hidden_layers, cfg.text_config.num_attention_heads,
                 cfg.text_config.max_position_embeddings],
        "projection_dim": cfg.projection_dim, "tokens_of_a_photo_of_a_cat": ids,
        "processor_crop": clip.processor.crop_size,
        "parameters_m": sum(p.numel() for p in clip.model.parameters()) / 1e6,
    }
    assert checks["weights_path_is_snapshot"], "core.load did not read the stand-in's snapshot"
    assert checks["vision"] == [preset.vision_width, preset.vision_layers, preset.patch_size, preset.image_size]
    assert checks["text"] == [preset.text_width, preset.text_layers, preset.text_heads, preset.context_length]
    assert ids == [49406, 320, 1125, 539, 320, 2368, 269, 49407], ids
    return {"clip": clip, "checks": checks}


# ---------------------------------------------------------------- bounds


def matmul_rate(n: int = 2048, repeats: int = 5, clock=time.perf_counter) -> float:
    """fp32 FLOP/s of torch.matmul of two n x n matrices on this CPU: median of `repeats` after a warm-up.

    clock=time.process_time gives FLOPs per second of this process's CPU time (all threads): on a
    shared machine wall time counts the seconds other processes hold the cores; CPU time does not,
    so work in CPU seconds against that rate stays comparable when the load changes."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    times = []
    for _ in range(repeats):
        t = clock()
        torch.matmul(a, b)
        times.append(clock() - t)
    return 2 * n ** 3 / statistics.median(times)


def matmul_cpu_rate(n: int = 2048, repeats: int = 5) -> float:
    """matmul_rate in FLOPs per CPU second (see matmul_rate)."""
    return matmul_rate(n, repeats, clock=time.process_time)


def text_flops(clip, lengths) -> float:
    """FLOPs of the text tower for prompts of these token lengths (each at its own length, no padding)."""
    c = clip.model.config.text_config
    w, layers, d = c.hidden_size, c.num_hidden_layers, clip.embed_dim
    L = np.asarray(lengths, dtype=np.float64)
    return float((layers * (24 * L * w * w + 4 * L * L * w)).sum() + len(L) * 2 * w * d)


def image_flops(clip, n: int) -> float:
    """FLOPs of the image tower for n images: patch embedding, the layers, the projection."""
    c = clip.model.config.vision_config
    w, layers, p, s = c.hidden_size, c.num_hidden_layers, c.patch_size, c.image_size
    patches = (s // p) ** 2
    tokens = patches + 1
    per = 2 * patches * 3 * p * p * w + layers * (24 * tokens * w * w + 4 * tokens * tokens * w) + 2 * w * clip.embed_dim
    return float(n * per)


def counted_flops(fn) -> float:
    """FLOPs of one call as torch.utils.flop_counter counts them (a cross-check of the formulas)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def prompt_lengths(clip, prompts: list[str]) -> list[int]:
    from core.encode import token_ids

    return [len(ids) for ids in token_ids(clip, prompts, warn=False)]


# ---------------------------------------------------------------- helpers


def seconds(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def wall_and_cpu(fn) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds over all threads) of one call of fn."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def lines(kind: str, name: str) -> list[str]:
    from demo.inputs.presets import preset_text

    return [x for x in preset_text(kind, name).splitlines() if x.strip()]


def test_images(n: int, seed: int = 0):
    """n distinct 64 px shapes-world images (the processor resizes them to 224)."""
    from core.shapes import ShapesWorld

    return [s.image.convert("RGB") for s in ShapesWorld(seed=seed, split="eval").take(n)]


def app_context(cache_dir: Path, max_prompts: int = 20_000):
    """A fresh AppContext (empty in-memory caches) whose disk cache of heads is cache_dir."""
    from demo.platform.config import AppConfig
    from demo.platform.context import AppContext

    return AppContext.create(AppConfig(default_model=HUB_ID, cache_dir=cache_dir, max_prompts=max_prompts,
                                       warm_umap=False, device="cpu"))


def zero_shot_call(ctx, clip, image, classnames, templates):
    """What the app's /zero_shot does on the server: the head (cached or built), one image scored, the view."""
    from demo.tabs.shared.zero_shot_scores import render, score

    head, cached = ctx.services.zero_shot_head(clip, classnames, templates)
    s = score(clip, head, [image], ["image"], HUB_ID, [])
    render(s, 5, s.model_scale)
    return cached
