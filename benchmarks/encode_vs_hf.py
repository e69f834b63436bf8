"""Encoding throughput: core's encoders against a plain transformers loop, text padding, fp32 vs bf16.

    python benchmarks/encode_vs_hf.py [--repeats 5] [--json benchmarks/results/encode_vs_hf.json]
    python benchmarks/encode_vs_hf.py --quick      # smoke test: bundled model, small counts, 1 round, 1 thread

It prints a table, writes JSON, and exits with status 1 when a row misses its target.

Models: the bundled `shapes-tiny` and a randomly initialised ViT-B/32-sized `base` preset (seed 0).
Inputs: shapes-world images (PIL, 64 px; the processor resizes them for `base`) and typical prompts,
"a photo of a {class}." over ImageNet class names spread evenly through the list.

Ours is `core.encode.encode_images` / `encode_texts`. The reference is the loop a plain user writes,
in batches of the same size: the model's processor, then `CLIPModel.get_image_features` under
`torch.no_grad`; or the tokenizer (padding="max_length", max_length=77, or padding="longest"), then
`get_text_features(**inputs)`; both L2-normalised. The padding row runs core's own steps (token ids,
length-sorted batches, `core.encode.text_features`) with every batch padded to the context length,
against `encode_texts`, which pads each batch to its longest text. The precision rows run `encode_*`
with precision="fp32" and "bf16" on the first few inputs.

Method. The functions of one comparison group run in the same process on the same inputs: one
warm-up call each (whose outputs give the agreement figures), then `--repeats` rounds in which every
function runs once, in an order rotated each round so that none always goes first. A row's ratio
for a round is the reference's time over ours (above 1: ours is faster; for precision rows, fp32's
time over bf16's), and the table gives the median over rounds, with the lowest and highest. The
text group times `encode_texts` once per round and shares that time between its three rows.
Agreement is the lowest cosine between the two sides' embeddings of the same input.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.encode import encode_images, encode_texts, pad_token_ids, text_features, token_ids  # noqa: E402
from core.model import ASSETS, Clip, create, load  # noqa: E402
from core.shapes import ShapesWorld  # noqa: E402

# Per model: inputs timed (images, texts), batch sizes, inputs of the precision rows. Sized so
# that a full run takes 3-4 minutes on 2 idle CPU cores (bf16 is 5-7x slower than fp32 there,
# so the precision rows take few inputs).
COUNTS = {
    "shapes-tiny": dict(images=64, texts=256, image_batch=32, text_batch=64, precision=32),
    "base": dict(images=32, texts=96, image_batch=16, text_batch=32, precision=16),
}
QUICK = dict(images=8, texts=32, image_batch=4, text_batch=16, precision=4)
SAME = 0.9999  # lowest cosine accepted between fp32 embeddings of the same inputs
BF16 = 0.99  # lowest cosine accepted between fp32 and bf16 embeddings (the house rule)


def load_model(name: str) -> Clip:
    """The bundled model by name, or a from-scratch preset ('base') with seed 0, in eval mode."""
    clip = load(name) if name == "shapes-tiny" else create(name, seed=0)
    clip.model.eval()
    return clip


def prompts(n: int) -> list[str]:
    """n typical prompts, "a photo of a {class}.", over ImageNet class names spread through the list."""
    lines = (ASSETS / "classnames" / "imagenet1k.txt").read_text().splitlines()
    names = [line.strip() for line in lines if line.strip()]
    return [f"a photo of a {names[i * len(names) // n]}." for i in range(n)]


def _features(out) -> torch.Tensor:
    """get_*_features gives a tensor (transformers 4) or an output whose pooler_output is the projection (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@torch.no_grad()
def hf_images(clip: Clip, images: list, batch: int) -> torch.Tensor:
    """The plain loop: processor -> get_image_features, L2-normalised."""
    chunks = []
    for start in range(0, len(images), batch):
        pixels = clip.processor(images=images[start : start + batch], return_tensors="pt")["pixel_values"]
        chunks.append(F.normalize(_features(clip.model.get_image_features(pixel_values=pixels)), dim=-1))
    return torch.cat(chunks)


@torch.no_grad()
def hf_texts(clip: Clip, texts: list[str], batch: int, padding: str) -> torch.Tensor:
    """The plain loop: tokenizer (padding 'max_length' to the context, or 'longest') -> get_text_features."""
    ctx = clip.context_length
    chunks = []
    for start in range(0, len(texts), batch):
        inputs = clip.tokenizer(texts[start : start + batch], padding=padding, max_length=ctx, truncation=True,
                                return_tensors="pt")
        chunks.append(F.normalize(_features(clip.model.get_text_features(**inputs)), dim=-1))
    return torch.cat(chunks)


@torch.inference_mode()
def core_texts_padded(clip: Clip, texts: list[str], batch: int, width: int) -> torch.Tensor:
    """encode_texts' steps (ids once, length-sorted batches, core's text_features), each batch padded to width."""
    ids = token_ids(clip, texts)
    order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
    pad = clip.tokenizer.pad_token_id if clip.tokenizer.pad_token_id is not None else clip.tokenizer.eos_token_id
    out = torch.empty(len(texts), clip.embed_dim)
    for start in range(0, len(texts), batch):
        idx = order[start : start + batch]
        enc = pad_token_ids(clip, [ids[i] for i in idx])
        extra = width - enc["input_ids"].shape[1]
        input_ids = F.pad(enc["input_ids"], (0, extra), value=pad)
        mask = F.pad(enc["attention_mask"], (0, extra), value=0)
        out[torch.as_tensor(idx)] = F.normalize(text_features(clip.model, input_ids, mask).float(), dim=-1)
    return out


def measure(fns: dict[str, Callable[[], torch.Tensor]], repeats: int) -> tuple[dict, dict]:
    """Warm up each function once (keeping its output), then time all of them once per round, rotating the order.

    Returns ({name: [seconds per round]}, {name: output of the warm-up call}).
    """
    outputs = {name: fn() for name, fn in fns.items()}
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times, outputs


def row(model: str, label: str, n: int, batch: int, times: dict, outputs: dict, ours: str, ref: str,
        target: float | None, cos_target: float) -> dict:
    """One comparison: median ratio ref/ours over rounds, throughputs, lowest cosine, and whether targets are met."""
    ratios = [r / o for o, r in zip(times[ours], times[ref])]
    median = statistics.median(ratios)
    cos = float((outputs[ours] * outputs[ref]).sum(1).min())
    met = (target is None or median >= target) and cos >= cos_target
    return {"model": model, "row": label, "n": n, "batch": batch, "ours": ours, "reference": ref,
            "ours_per_s": n / statistics.median(times[ours]), "reference_per_s": n / statistics.median(times[ref]),
            "median_ratio": median, "ratio_min": min(ratios), "ratio_max": max(ratios), "ratios": ratios,
            "target": target, "min_cosine": cos, "cosine_target": cos_target, "met": met}


def bench_model(name: str, counts: dict, repeats: int) -> tuple[list[dict], dict]:
    """All rows for one model: images vs the loop, texts vs the loop and padding, fp32 vs bf16."""
    clip = load_model(name)
    c = counts
    images = [s.image for s in ShapesWorld(seed=0, split="eval").take(c["images"])]
    texts = prompts(c["texts"])
    lengths = [len(ids) for ids in token_ids(clip, texts, warn=False)]
    info = {"counts": c, "mean_tokens": statistics.fmean(lengths), "max_tokens": max(lengths),
            "context_length": clip.context_length, "image_size": clip.image_size}
    rows = []

    ib = c["image_batch"]
    times, outs = measure({"core": lambda: encode_images(clip, images, batch_size=ib),
                           "hf loop": lambda: hf_images(clip, images, ib)}, repeats)
    rows.append(row(name, "images: core vs get_image_features loop", len(images), ib, times, outs,
                    "core", "hf loop", 1.0, SAME))

    tb, ctx = c["text_batch"], clip.context_length
    times, outs = measure({"core": lambda: encode_texts(clip, texts, batch_size=tb),
                           "hf loop, pad 77": lambda: hf_texts(clip, texts, tb, "max_length"),
                           "hf loop, pad longest": lambda: hf_texts(clip, texts, tb, "longest"),
                           "core, pad 77": lambda: core_texts_padded(clip, texts, tb, ctx)}, repeats)
    for ref, label, target in (("hf loop, pad 77", "texts: core vs get_text_features loop (pad 77)", 1.0),
                               ("hf loop, pad longest", "texts: core vs get_text_features loop (pad longest)", 1.0),
                               ("core, pad 77", "text padding: core longest vs core 77", 3.0)):
        rows.append(row(name, label, len(texts), tb, times, outs, "core", ref, target, SAME))

    p = c["precision"]
    for kind, encode, items in (("images", encode_images, images[:p]), ("texts", encode_texts, texts[:p])):
        times, outs = measure({"bf16": lambda: encode(clip, items, batch_size=p, precision="bf16"),
                               "fp32": lambda: encode(clip, items, batch_size=p, precision="fp32")}, repeats)
        rows.append(row(name, f"{kind}: core bf16 vs fp32 (speed-up of bf16)", len(items), p, times, outs,
                        "bf16", "fp32", None, BF16))
    return rows, info


def print_table(rows: list[dict]) -> None:
    """The results, one line per comparison."""
    head = (f"{'model':<11} {'comparison':<52} {'n':>4} {'ours/s':>9} {'ref/s':>9} {'ratio':>6} "
            f"{'[min, max]':>13} {'target':>6} {'min cos':>9} {'met?':>4}")
    print(head)
    print("-" * len(head))
    for r in rows:
        target = f">={r['target']:.1f}" if r["target"] is not None else "-"
        spread = f"[{r['ratio_min']:.2f}, {r['ratio_max']:.2f}]"
        met = "yes" if r["met"] else "NO"
        print(f"{r['model']:<11} {r['row']:<52} {r['n']:>4} {r['ours_per_s']:>9.1f} {r['reference_per_s']:>9.1f} "
              f"{r['median_ratio']:>6.2f} {spread:>13} {target:>6} {r['min_cosine']:>9.7f} {met:>4}")


def main(argv: list[str] | None = None) -> int:
    """Run the comparisons, print the table, write the JSON; exit status 1 when a target is missed."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(COUNTS), choices=list(COUNTS))
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per comparison (the rules ask for >= 5)")
    p.add_argument("--quick", action="store_true", help="smoke test: shapes-tiny, small counts, 1 round, 1 thread")
    p.add_argument("--json", type=Path, default=None,
                   help="where to write the results (default: benchmarks/results/encode_vs_hf.json; none with --quick)")
    a = p.parse_args(argv)
    if a.json is None and not a.quick:
        a.json = Path(__file__).resolve().parent / "results" / "encode_vs_hf.json"
    models, repeats = (["shapes-tiny"], 1) if a.quick else (a.models, a.repeats)
    if a.quick:  # a check that the code runs, not a measurement: one thread takes the least CPU time
        torch.set_num_threads(1)
    start = time.perf_counter()
    rows, info = [], {}
    for name in models:
        model_rows, info[name] = bench_model(name, QUICK if a.quick else COUNTS[name], repeats)
        rows += model_rows
    wall = time.perf_counter() - start
    print_table(rows)
    for name, i in info.items():
        print(f"{name}: {i['counts']['texts']} prompts of {i['mean_tokens']:.1f} tokens on average (longest "
              f"{i['max_tokens']}), context {i['context_length']}; images {i['image_size']} px after preprocessing")
    print(f"\nratio: reference time / ours (bf16 rows: fp32 time / bf16), median of {repeats} round(s); "
          f"min cos: lowest cosine between the two sides' embeddings; {wall:.0f} s in all")
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"torch": torch.__version__, "transformers": transformers.__version__,
                                      "threads": torch.get_num_threads(), "quick": a.quick, "repeats": repeats,
                                      "wall_s": wall, "models": info, "rows": rows}, indent=2))
        print(f"wrote {a.json}")
    return 0 if all(r["met"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
