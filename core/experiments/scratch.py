"""Train a small CLIP from scratch on a seed's pool, under one condition, and record its curve.

The step is the trainer's own (core.train.step.train_step: AdamW, warm-up and cosine, the
temperature learned and clamped at 100 unless fixed). At each eval point the curve records images
seen, the zero-shot accuracy of the task (the template ensemble), the logit scale, the loss, and the
modality gap between eval images and their captions with each modality's cone (the mean cosine
to its own centroid: core.projection.modality_gap).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from .pool import MICRO, Pool, eval_pool, order, train_pool


@dataclass(frozen=True)
class Condition:
    """One training condition: batch size, the logit scale at step 0 (0: the paper's 1/0.07) and whether
    it is learned, the weights' initialisation scale (transformers' initializer_factor), the learning rate."""

    label: str
    batch_size: int = 64
    logit_scale: float = 0.0
    learn_scale: bool = True
    init_factor: float = 1.0
    lr: float = 1e-3


def micro_clip(seed: int, init_factor: float = 1.0):
    """A freshly initialised small CLIP (pool.MICRO) with weights drawn under `seed`."""
    from transformers import CLIPModel

    from ..model import create

    clip = create(MICRO, seed=seed)
    if init_factor != 1.0:
        config = clip.model.config
        for c in (config, config.text_config, config.vision_config):
            c.initializer_factor = init_factor
        torch.manual_seed(seed)
        clip = dataclasses.replace(clip, model=CLIPModel(config))
    return clip


@torch.no_grad()
def embed_eval(clip, eval_set: Pool, task: str, templates: list[str]) -> dict:
    """Normalised image [n, D] and caption [n, D] embeddings of the eval set, the class head [C, D], labels [n]."""
    from ..encode import encode_images, encode_texts
    from ..zeroshot import ensemble_head, template_embeddings

    clip.model.eval()
    classes, y = eval_set.targets(task)
    img = encode_images(clip, eval_set.normalised()).numpy()
    txt = encode_texts(clip, eval_set.captions).numpy()
    head = ensemble_head(template_embeddings(clip, classes, templates)).numpy()
    return {"img": img, "txt": txt, "head": head, "y": y}


def curve_point(clip, eval_set: Pool, task: str, templates: list[str], images: int, loss: float | None) -> dict:
    """One eval point: images seen, zero-shot accuracy, caption retrieval R@1, logit scale, loss, modality gap."""
    from ..projection import modality_gap

    e = embed_eval(clip, eval_set, task, templates)
    gap = modality_gap(e["img"], e["txt"])
    return {"images": images, "accuracy": float(((e["img"] @ e["head"].T).argmax(1) == e["y"]).mean()),
            "retrieval_r1": retrieval_r1(e["img"], e["txt"]), "logit_scale": clip.logit_scale, "loss": loss,
            "gap": gap.gap, "paired_cosine": gap.paired_cosine, "image_cone": gap.image_spread,
            "text_cone": gap.text_spread}


def retrieval_r1(img: np.ndarray, txt: np.ndarray) -> float:
    """Image-to-caption recall@1 [n x n]: how often an image's own caption is its nearest (by cosine)."""
    return float(((img @ txt.T).argmax(1) == np.arange(len(img))).mean())


def train_condition(cond: Condition, pool: Pool, eval_set: Pool, images: int, seed: int, task: str,
                    templates: list[str], evals: int, check) -> dict:
    """Train one condition for `images` images (steps = images // batch size) from a model drawn under
    `seed`; the curve at `evals` + 1 evenly spaced points (step 0 included) and the final model."""
    from ..train.config import TrainConfig
    from ..train.data import TextTokens
    from ..train.step import TrainState, lr_at, train_step

    clip = micro_clip(seed, cond.init_factor)
    steps = max(1, images // cond.batch_size)
    cfg = TrainConfig.from_flat(steps=steps, lr=cond.lr, warmup_steps=max(1, steps // 10), batch_size=cond.batch_size,
                                learn_logit_scale=cond.learn_scale)
    if cond.logit_scale:
        with torch.no_grad():
            clip.model.logit_scale.fill_(math.log(cond.logit_scale))
    tokens = TextTokens.of(clip)
    state = TrainState.create(clip, cfg)
    at = {round(steps * i / evals) for i in range(evals + 1)}
    curve, loss = [], None
    for step, index in enumerate(order(len(pool), cond.batch_size, steps, seed), start=1):
        if step - 1 in at:
            curve.append(curve_point(clip, eval_set, task, templates, (step - 1) * cond.batch_size, loss))
            state.train_mode()
        check()
        loss = train_step(state, pool.batch(index).tokenized(tokens), lr_at(step - 1, cfg))["loss"]
    curve.append(curve_point(clip, eval_set, task, templates, steps * cond.batch_size, loss))
    return {"label": cond.label, "steps": steps, "curve": curve, "clip": clip}


@dataclass
class Trained:
    """One condition's run on a seed's pool: its curve (each point keeps only `keys`), steps and final model,
    and the eval set and templates it was measured on."""

    curve: list[dict]
    steps: int
    clip: object
    eval_set: Pool
    templates: list[str]


def train_conditions(run, seed: int, ctx, conditions: list[Condition], keys: tuple[str, ...]):
    """Yield (condition, Trained) for each condition, all on one seed's pool and eval set (the same images in
    the same order); ctx.unit_done() once the caller has taken each."""
    from ..zeroshot import template_presets

    s = run.kind_settings()
    templates = template_presets()[run.templates]
    pool, eval_set = train_pool(s.pool, seed), eval_pool(s.eval_n, seed)
    for cond in conditions:
        r = train_condition(cond, pool, eval_set, s.images, seed, run.task, templates, s.evals, ctx.check)
        yield cond, Trained([{k: p[k] for k in keys} for p in r["curve"]], r["steps"], r["clip"], eval_set, templates)
        ctx.unit_done()
