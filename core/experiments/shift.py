"""Kind "shift" (the paper, §3.3: zero-shot models are much more robust to distribution shift; adapting
to one distribution raises accuracy there and lowers it under shift; few-shot probes are less robust
than zero-shot). In distribution: filled shapes on plain (white or light) backgrounds; shifted: the
other drawing styles on the other backgrounds. On the bundled model: zero-shot, logistic-regression
probes on k in-distribution images per class and on all of them, and the image tower fine-tuned on
the in-distribution images (cross-entropy over the zero-shot head, which stays fixed)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from .pool import eval_pool, order, train_pool
from .stats import interval, overall, part

IN_STYLES = ("filled",)
SHIFT_STYLES = ("outline", "hand-drawn", "pixelated")


@dataclass(frozen=True)
class Settings:
    """In-distribution training images, eval images per set, fine-tuning steps, batch and learning rate."""

    train_n: int = 1024
    eval_n: int = 500
    finetune_steps: int = 150
    batch_size: int = 32
    lr: float = 1e-4


def units(run) -> int:
    """Pieces of work per seed, each reported as it ends (the progress bar's unit)."""
    return 2


def finetune(clip, pool, head: torch.Tensor, labels: np.ndarray, s: Settings, seed: int, check):
    """A copy of the model whose image tower is trained on the pool with cross-entropy over the fixed head [C, D]."""
    from ..encode import image_features
    from ..train.config import TrainConfig
    from ..train.step import lr_at, make_optimizer

    model = copy.deepcopy(clip.model)
    model.text_model.requires_grad_(False)
    model.text_projection.requires_grad_(False)
    model.logit_scale.requires_grad_(False)
    cfg = TrainConfig.from_flat(steps=s.finetune_steps, lr=s.lr, warmup_steps=max(1, s.finetune_steps // 10),
                                batch_size=s.batch_size)
    optimizer = make_optimizer(model, cfg)
    y = torch.as_tensor(labels)
    model.train()
    for step, index in enumerate(order(len(pool), s.batch_size, s.finetune_steps, seed)):
        check()
        for g in optimizer.param_groups:
            g["lr"] = lr_at(step, cfg)
        feats = torch.nn.functional.normalize(image_features(model, pool.batch(index).pixels()), dim=-1)
        loss = torch.nn.functional.cross_entropy(model.logit_scale.exp() * feats @ head.T, y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    return model


def _embed(clip, model, pool) -> np.ndarray:
    import dataclasses

    from ..encode import encode_images

    return encode_images(dataclasses.replace(clip, model=model), pool.normalised()).numpy()


def run_seed(run, seed: int, ctx) -> dict:
    """Accuracy in distribution and under shift of zero-shot, each k's probe, the full probe and the fine-tuned model."""
    from ..probe import probe_accuracy
    from ..zeroshot import ensemble_head, template_embeddings, template_presets

    s = run.kind_settings()
    clip = ctx.model(run.model)
    size = clip.image_size
    train = train_pool(s.train_n, seed, IN_STYLES, plain_only=True, image_size=size)
    sets = {"in": eval_pool(s.eval_n, seed, IN_STYLES, plain_only=True, image_size=size),
            "shifted": eval_pool(s.eval_n, seed, SHIFT_STYLES, plain_only=None, image_size=size)}
    classes, y_train = train.targets(run.task)
    ys = {k: v.targets(run.task)[1] for k, v in sets.items()}
    head = ensemble_head(template_embeddings(clip, classes, template_presets()[run.templates]))
    x_train = _embed(clip, clip.model, train)
    xs = {k: _embed(clip, clip.model, v) for k, v in sets.items()}
    out = {"zero_shot": {k: float(((xs[k] @ head.numpy().T).argmax(1) == ys[k]).mean()) for k in sets}}
    rng = np.random.default_rng([seed, 11])
    fewest = int(np.bincount(y_train).min())
    if max(run.shots) > fewest:
        from ..errors import UserInputError

        raise UserInputError(f"train_n {s.train_n} gives a class only {fewest} images: too few for "
                             f"{max(run.shots)} per class; raise train_n or lower the shots")
    for k in [*run.shots, None]:
        accs = {name: [] for name in sets}
        for _ in range(run.probe_draws if k else 1):
            pick = np.arange(len(y_train)) if k is None else np.concatenate(
                [rng.choice(np.flatnonzero(y_train == c), k, replace=False) for c in np.unique(y_train)])
            draw = int(rng.integers(1 << 31))
            for name in sets:  # the same draw and the same validation carve: the same probe, scored twice
                accs[name].append(probe_accuracy(x_train[pick], y_train[pick], xs[name], ys[name],
                                                 np.random.default_rng(draw))[0])
            ctx.check()
        out[f"probe_{k or 'all'}"] = {name: float(np.mean(v)) for name, v in accs.items()}
    ctx.unit_done()
    tuned = finetune(clip, train, head, y_train, s, seed, ctx.check)
    out["fine_tuned"] = {k: float(((_embed(clip, tuned, v) @ head.numpy().T).argmax(1) == ys[k]).mean())
                         for k, v in sets.items()}
    ctx.unit_done()
    return {"methods": out}


def methods(run) -> list[str]:
    return ["zero_shot", *[f"probe_{k}" for k in run.shots], "probe_all", "fine_tuned"]


def summarise(run, per_seed: list[dict]) -> dict:
    """Each method's accuracy in and under shift, and the three effects of the claim."""
    out = {}
    for m in methods(run):
        for where in ("in", "shifted"):
            out[f"{m} {where}"] = interval([p["methods"][m][where] for p in per_seed])
    acc = lambda p, m, w: p["methods"][m][w]  # noqa: E731
    drop = lambda p, m: acc(p, m, "in") - acc(p, m, "shifted")  # noqa: E731
    probe = f"probe_{max(run.shots)}"
    out["fine_tuned_minus_zero_shot in"] = interval([acc(p, "fine_tuned", "in") - acc(p, "zero_shot", "in") for p in per_seed])
    out["fine_tuned_minus_zero_shot shifted"] = interval([acc(p, "fine_tuned", "shifted") - acc(p, "zero_shot", "shifted")
                                                         for p in per_seed])
    out[f"{probe}_drop_minus_zero_shot_drop"] = interval([drop(p, probe) - drop(p, "zero_shot") for p in per_seed])
    return out


def verdict(run, summary: dict) -> tuple[str, list[str]]:
    """Three parts: fine-tuning raises in-distribution accuracy; it lowers accuracy under shift; the few-shot
    probe loses more under shift than zero-shot does."""
    probe = f"probe_{max(run.shots)}"
    shifted = summary["fine_tuned_minus_zero_shot shifted"]
    lowered = part({**shifted, "mean": -shifted["mean"]}, "fine-tuning lowers accuracy under shift",
                   "fine-tuning raises accuracy under shift")  # the paper's side is below 0: read it negated
    return overall([part(summary["fine_tuned_minus_zero_shot in"], "fine-tuning raises in-distribution accuracy",
                         "fine-tuning lowers in-distribution accuracy"),
                    lowered,
                    part(summary[f"{probe}_drop_minus_zero_shot_drop"],
                         f"the {max(run.shots)}-shot probe loses more under shift than zero-shot does",
                         f"zero-shot loses more under shift than the {max(run.shots)}-shot probe")])
