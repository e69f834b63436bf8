"""Recipe search for the bundled shapes-world model, on a GPU, many configs side by side.

The bundled model must be trained on the 2-core CPU in at most 90 minutes (about 3,600 steps of
batch 128 for the `tiny` preset). Trying recipes there costs an hour and a half each, so this
script tries them on a GPU instead: it renders one pool of shapes-world data with every CPU core,
then trains several configs at once (one process each) on batches drawn from that pool, and
evaluates them on the same 2,000 fresh eval images as scripts/evaluate.py.

The pool stands in for the infinite stream of `core.data.ShapesPairs`: batches are composed the
same way (minimal-pair groups of seven, then ordinary samples), only drawn from a finite pool.

    python benchmarks/shapes_recipe_sweep.py --out /tmp/sweep --configs A,B,C --device cuda

A config is a name in CONFIGS below. Results: <out>/results.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.shapes import SHAPES, ShapesWorld  # noqa: E402

GROUP = 7  # shapes per minimal-pair group in the train split (one is held out per colour)


@dataclasses.dataclass
class Recipe:
    steps: int = 3600
    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 200
    weight_decay: float = 0.1
    hard_negatives: float = 0.5
    curriculum_steps: int = 0  # groups start centred, may sit anywhere after this many steps
    pos_init: str = "learned"  # or "sincos": 2-D sin-cos initial position embeddings
    arch: dict = dataclasses.field(default_factory=dict)  # overrides of the tiny Preset's fields
    supervised: bool = False  # a linear shape head on the image tower instead of the contrastive loss
    logit_scale_init: float = 1 / 0.07  # exp(t) at step 0; the paper's 1/0.07 is the default
    fixed_scale: bool = False  # keep exp(t) at logit_scale_init instead of learning it
    group_loss: float = 0.0  # weight of an extra InfoNCE inside each minimal-pair group
    eval_every: int = 600
    seed: int = 0


CONFIGS = {
    "A": Recipe(),
    "B": Recipe(pos_init="sincos"),
    "C": Recipe(lr=2e-3),
    "D": Recipe(hard_negatives=0.75),
    "E": Recipe(hard_negatives=1.0),
    "F": Recipe(curriculum_steps=1500),
    "G": Recipe(steps=12000, eval_every=1500),
    "H": Recipe(supervised=True),
    "I": Recipe(arch={"vision_width": 128, "vision_heads": 4}),
    "J": Recipe(pos_init="sincos", lr=2e-3, hard_negatives=0.75),
    # round 3: combine the round-2 winners (scale 100, centred groups first), then push further
    "Q": Recipe(logit_scale_init=100, curriculum_steps=1500, eval_every=1200),
    "R": Recipe(logit_scale_init=100, curriculum_steps=2500, batch_size=64, steps=5400, warmup_steps=300, eval_every=1350),
    "T": Recipe(logit_scale_init=100, curriculum_steps=1500, fixed_scale=True, eval_every=1200),
    "U": Recipe(logit_scale_init=100, curriculum_steps=1500, group_loss=1.0, eval_every=1200),
    "V": Recipe(logit_scale_init=100, curriculum_steps=1500, lr=5e-4, eval_every=1200),
    "X": Recipe(logit_scale_init=100, curriculum_steps=1900, arch={"vision_width": 128, "vision_heads": 4}, steps=4600, eval_every=1150),
    # round 4: the round-3 winner (U) with the lower learning rate of V, and a shorter run for the CPU budget
    "Y": Recipe(logit_scale_init=100, curriculum_steps=1500, group_loss=1.0, lr=5e-4, eval_every=1200),
    "Y3": Recipe(logit_scale_init=100, curriculum_steps=1250, group_loss=1.0, lr=5e-4, steps=3000, eval_every=1000),
    "Y4": Recipe(logit_scale_init=100, curriculum_steps=1500, group_loss=2.0, eval_every=1200),
    # round 2: escape the saddle where neither tower carries shape, with a sharper softmax
    "K": Recipe(logit_scale_init=50, eval_every=1200),
    "L": Recipe(logit_scale_init=100, eval_every=1200),
    "M": Recipe(logit_scale_init=50, arch={"vision_width": 128, "vision_heads": 4}, steps=4600, eval_every=1150),
    "N": Recipe(logit_scale_init=50, curriculum_steps=1500, eval_every=1200),
    "O": Recipe(logit_scale_init=50, lr=2e-3, warmup_steps=300, eval_every=1200),
    "P": Recipe(logit_scale_init=100, hard_negatives=0.75, eval_every=1200),
}


# ---- pool rendering ----------------------------------------------------------------------------

def _render(job):
    kind, start, stop, path, n_total, seed = job
    arr = np.lib.format.open_memmap(path, mode="r+")
    world = ShapesWorld(seed=seed, split="train")
    caps, labels, spreads = [], [], []
    for i in range(start, stop):
        if kind == "random":
            s = world[i]
            arr[i] = np.asarray(s.image)
            caps.append(s.caption)
            labels.append(SHAPES.index(s.objects[0].shape))
        else:  # groups; "curriculum" groups get a spread drawn per group
            spread = 1.0
            if kind == "curriculum":
                spread = float(np.random.default_rng([seed, 77, i]).uniform())
                world.spread = spread
            group = world.hard_negative_group(i + (10_000_000 if kind == "curriculum" else 0))
            for j, s in enumerate(group):
                arr[i * GROUP + j] = np.asarray(s.image)
                caps.append(s.caption)
                labels.append(SHAPES.index(s.objects[0].shape))
            spreads.append(spread)
    arr.flush()
    return kind, start, caps, labels, spreads


def render_pool(out: Path, n_random: int, n_groups: int, n_curriculum: int, workers: int, seed: int = 0) -> None:
    out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for kind, n, per in (("random", n_random, 1), ("groups", n_groups, GROUP), ("curriculum", n_curriculum, GROUP)):
        if n == 0:
            continue
        path = str(out / f"{kind}.npy")
        np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n * per, 64, 64, 3)).flush()
        chunk = max(1, 2000 // per)
        jobs += [(kind, a, min(n, a + chunk), path, n, seed) for a in range(0, n, chunk)]
    meta: dict = {}
    t0 = time.time()
    with mp.Pool(workers) as pool:
        for kind, start, caps, labels, spreads in pool.imap_unordered(_render, jobs):
            m = meta.setdefault(kind, {"captions": {}, "labels": {}, "spreads": {}})
            m["captions"][start], m["labels"][start], m["spreads"][start] = caps, labels, spreads
    for kind, m in meta.items():
        order = sorted(m["captions"])
        flat = {k: [x for s in order for x in m[k][s]] for k in ("captions", "labels", "spreads")}
        (out / f"{kind}.json").write_text(json.dumps(flat))
    print(f"rendered pool in {time.time() - t0:.1f}s: {n_random} random, {n_groups}+{n_curriculum} groups", flush=True)


# ---- training one config -----------------------------------------------------------------------

def sincos_positions(num_patches_side: int, dim: int) -> "torch.Tensor":  # noqa: F821 (torch is imported inside)
    """2-D sin-cos position table [1 + side*side, dim] (row 0, the CLS token, is zero)."""
    import torch

    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    ys, xs = torch.meshgrid(torch.arange(num_patches_side), torch.arange(num_patches_side), indexing="ij")
    out = [torch.sin(xs.flatten()[:, None] * omega), torch.cos(xs.flatten()[:, None] * omega),
           torch.sin(ys.flatten()[:, None] * omega), torch.cos(ys.flatten()[:, None] * omega)]
    table = torch.cat(out, dim=1)
    table = torch.nn.functional.pad(table, (0, dim - table.shape[1]))
    return torch.cat([torch.zeros(1, dim), table])


def train_config(name: str, pool: Path, out: Path, device: str) -> dict:
    import torch

    from core.evaluate import evaluate_shapes, shapes_eval_set
    from core.model import PRESETS, create
    from core.train import Batch, TextTokens, Towers, TrainConfig, TrainState, lr_at, make_optimizer, train_step
    from core.zeroshot import template_presets

    r = CONFIGS[name]
    torch.manual_seed(r.seed)
    preset = PRESETS["tiny"]
    if r.arch:
        preset = dataclasses.replace(preset, **r.arch)
    clip = create(preset, seed=r.seed)
    model = clip.model.to(device)
    if r.pos_init == "sincos":
        emb = model.vision_model.embeddings.position_embedding.weight
        side = int(math.isqrt(emb.shape[0] - 1))
        with torch.no_grad():
            emb.copy_(sincos_positions(side, emb.shape[1]).to(emb) * 0.5)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(r.logit_scale_init))
    if r.fixed_scale:
        model.logit_scale.requires_grad_(False)
    cfg = TrainConfig.from_flat(output_dir=str(out), steps=r.steps, batch_size=r.batch_size, lr=r.lr,
                                warmup_steps=r.warmup_steps, weight_decay=r.weight_decay, device=device,
                                group_loss=r.group_loss)
    head = None
    if r.supervised:
        head = torch.nn.Linear(model.config.projection_dim, len(SHAPES)).to(device)
        params = list(model.vision_model.parameters()) + list(model.visual_projection.parameters()) + list(head.parameters())
        optimizer = torch.optim.AdamW(params, lr=r.lr, betas=(0.9, 0.98), weight_decay=r.weight_decay)
    else:
        optimizer = make_optimizer(model, cfg)
        state = TrainState(clip, Towers(model), optimizer, cfg)
        tokens = TextTokens.of(clip)

    pools = {k: np.load(pool / f"{k}.npy", mmap_mode="r") for k in ("random", "groups", "curriculum") if (pool / f"{k}.npy").exists()}
    meta = {k: json.loads((pool / f"{k}.json").read_text()) for k in pools}
    n_groups = len(pools["groups"]) // GROUP
    cur_spread = np.array(meta["curriculum"]["spreads"]) if "curriculum" in meta else None
    mean = torch.tensor(clip.processor.image_mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(clip.processor.image_std, device=device).view(1, 3, 1, 1)
    templates = template_presets()["shapes_world"]
    eval_samples = shapes_eval_set(2000, seed=1234)
    history = []
    t0 = time.time()
    model.train()
    for step in range(r.steps):
        rng = np.random.default_rng([r.seed, step])
        imgs, caps, labels = [], [], []
        k = 0
        while k + len(SHAPES) <= r.hard_negatives * r.batch_size:  # same rule as ShapesPairs
            k += GROUP
        g = k // GROUP
        if g:
            if r.curriculum_steps and step < r.curriculum_steps and cur_spread is not None:
                allowed = np.flatnonzero(cur_spread <= step / r.curriculum_steps)
                if len(allowed) < 4 * g:  # early steps: the most centred groups
                    allowed = np.argsort(cur_spread)[: 4 * g]
                idx = rng.choice(allowed, g)
                src, m = pools["curriculum"], meta["curriculum"]
            else:
                idx = rng.integers(0, n_groups, g)
                src, m = pools["groups"], meta["groups"]
            rows = (idx[:, None] * GROUP + np.arange(GROUP)).ravel()
            imgs.append(src[np.sort(rows)])
            caps += [m["captions"][i] for i in np.sort(rows)]
            labels += [m["labels"][i] for i in np.sort(rows)]
        n_rand = r.batch_size - g * GROUP
        if n_rand:
            idx = np.sort(rng.integers(0, len(pools["random"]), n_rand))
            imgs.append(pools["random"][idx])
            caps += [meta["random"]["captions"][i] for i in idx]
            labels += [meta["random"]["labels"][i] for i in idx]
        x = torch.from_numpy(np.concatenate(imgs)).to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
        x = (x - mean) / std
        lr = lr_at(step, cfg)
        if head is None:  # the in-group term (cfg.group_loss) is core's: the groups lead the batch
            out_step = train_step(state, Batch(x, caps, g, GROUP).tokenized(tokens), lr)
        else:
            for grp in optimizer.param_groups:
                grp["lr"] = lr
            feats = model.visual_projection(model.vision_model(pixel_values=x).pooler_output)
            loss = torch.nn.functional.cross_entropy(head(feats), torch.tensor(labels, device=device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            out_step = {"loss": loss.item()}
        if (step + 1) % r.eval_every == 0 or step + 1 == r.steps:
            model.eval()
            if head is None:
                res = evaluate_shapes(clip, templates=templates, samples=eval_samples)
                row = {k: v["top1"] for k, v in res.items() if isinstance(v, dict) and "top1" in v}
            else:
                with torch.no_grad():
                    arr = np.stack([np.asarray(s.image) for s in eval_samples])
                    xe = (torch.from_numpy(arr).to(device).permute(0, 3, 1, 2).float() / 255 - mean) / std
                    pred = head(model.visual_projection(model.vision_model(pixel_values=xe).pooler_output)).argmax(1).cpu()
                y = torch.tensor([SHAPES.index(s.labels["shape"]) for s in eval_samples])
                row = {"shape": float((pred == y).float().mean())}
            row.update(step=step + 1, loss=round(out_step["loss"], 4), scale=round(model.logit_scale.exp().item(), 1),
                       elapsed_s=round(time.time() - t0, 1))
            history.append(row)
            print(name, json.dumps(row), flush=True)
            partial = {"config": name, "recipe": dataclasses.asdict(r), "history": history,
                       "s_per_step": (time.time() - t0) / (step + 1)}
            (out / f"{name}.json").write_text(json.dumps(partial, indent=1))
            model.train()
    result = {"config": name, "recipe": dataclasses.asdict(r), "history": history,
              "s_per_step": (time.time() - t0) / r.steps}
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--configs", default="A")
    p.add_argument("--device", default="cuda")
    p.add_argument("--n-random", type=int, default=250_000)
    p.add_argument("--n-groups", type=int, default=30_000)
    p.add_argument("--n-curriculum", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--only", help="(internal) train this one config")
    p.add_argument("--skip-render", action="store_true")
    a = p.parse_args(argv)
    out = Path(a.out)
    pool = out / "pool"
    if a.only:
        train_config(a.only, pool, out, a.device)
        return 0
    if not a.skip_render:
        render_pool(pool, a.n_random, a.n_groups, a.n_curriculum, a.workers)
    names = [c for c in a.configs.split(",") if c]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        p.error(f"unknown configs {unknown}; known: {', '.join(CONFIGS)}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen([sys.executable, __file__, "--out", a.out, "--device", a.device, "--only", c], env=env)
             for c in names]
    codes = [q.wait() for q in procs]
    results = [json.loads((out / f"{c}.json").read_text()) for c in names if (out / f"{c}.json").exists()]
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\n{'config':<7}{'step':>6}{'colour':>8}{'shape':>8}{'combo':>8}{'held':>8}  s/step")
    for res in results:
        for h in res["history"]:
            print(f"{res['config']:<7}{h['step']:>6}{h.get('colour', float('nan')):>8.3f}{h['shape']:>8.3f}"
                  f"{h.get('combo', float('nan')):>8.3f}{h.get('held_out', float('nan')):>8.3f}  {res['s_per_step']:.3f}")
    return max(codes) if codes else 0


if __name__ == "__main__":
    raise SystemExit(main())
