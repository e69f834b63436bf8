"""Zero-shot: core.zeroshot.classify against transformers' "zero-shot-image-classification" pipeline.

    python benchmarks/zeroshot_vs_pipeline.py [--repeats 5] [--json benchmarks/results/zeroshot_vs_pipeline.json]
                                              [--plot docs/zeroshot_scaling.png] [--quick]

Both sides run the same weights, tokenizer and image processor: the bundled `shapes-tiny`, and a
`base` preset (ViT-B/32-sized, seed 0) saved to a temporary folder that both open. Both use one
template, "a photo of a {}.", the first k ImageNet-1k class names (k = 10, 100, 1000), fp32 on CPU,
and the same 32 PIL images (64x64 shapes-world images, all the same size so that any subset
costs the same per image; the processors resize them to each model's input). Before timing, a check
asserts that the pipeline's probabilities equal softmax(exp(t) * our cosines) to 1e-4 (exp(t) is
the checkpoint's raw logit scale; core clamps it at 100, the pipeline does not) and that the top-1
labels agree.

Modes, per model and class count (a "cell"):
- single: one image per call. Ours is `classify(clip, [image], names)` with the head cached, as in
  the app's steady state; the pipeline is `pipe(image, candidate_labels=names)`, which tokenizes and
  encodes every label again for every image.
- batch32: one call with the 32 images. Ours is `classify(clip, images, names)`; the pipeline is
  `pipe(images, candidate_labels=names, batch_size=32)`, which encodes the labels once per batch.

Each cell runs `--repeats` (>= 5) repeats that alternate ours and the pipeline (the order flips
every repeat), and reports the median images/s of each side and the median of the per-repeat
ratios (ours images/s over pipeline images/s). In single mode, each side times as many images per
repeat as fit in about --repeat-seconds (from its warm-up call; 1 to 32), so the slow side (the
pipeline at 1,000 classes on `base` takes seconds per image) times a subset of the 32 images; the
JSON records how many images each side timed per repeat. Batch cells always time all 32. The cold
first call of ours (building the head with an empty cache, then classifying) is recorded once per
cell and is not in the ratio.

Scaling (bundled model): ours' cold first call, ours' warm call and the pipeline's call for one
image at 10-1,000 classes, medians over the repeats, plotted to --plot. --quick is a smoke test:
the bundled model, 10 classes, 1 repeat (0.2 s per side), outputs in the temp folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import transformers  # noqa: E402
from transformers import pipeline  # noqa: E402

from benchmarks.plotting import save_line_plot  # noqa: E402
from core.encode import encode_images  # noqa: E402
from core.model import ASSETS, MODELS_DIR, Clip, create, load, save_pretrained_atomic  # noqa: E402
from core.shapes import ShapesWorld  # noqa: E402
from core.zeroshot import build_classifier, classify, classify_embeddings  # noqa: E402

TEMPLATE = "a photo of a {}."
BATCH = 32
CLASS_COUNTS = (10, 100, 1000)
SCALING_COUNTS = (10, 30, 100, 300, 1000)
TARGETS = {10: 3.0, 1000: 30.0}  # the minimum ratio (ours / pipeline images per second)
ROOT = Path(__file__).resolve().parents[1]


def benchmark_images(n: int) -> list[Image.Image]:
    """n distinct 64x64 RGB shapes-world images (eval split, seed 0): every image costs the same to preprocess."""
    return [sample.image.convert("RGB") for sample in ShapesWorld(seed=0, split="eval").take(n)]


def imagenet_names(k: int) -> list[str]:
    """The first k ImageNet-1k class names from assets/classnames/imagenet1k.txt."""
    lines = (ASSETS / "classnames" / "imagenet1k.txt").read_text(encoding="utf-8").splitlines()
    return [name.strip() for name in lines if name.strip()][:k]


def open_pipeline(model_dir: Path):
    """The transformers pipeline on a model folder, fp32 on CPU (its default dtype would be the checkpoint's)."""
    return pipeline("zero-shot-image-classification", model=str(model_dir), device="cpu", dtype=torch.float32)


def check_agreement(label: str, clip: Clip, pipe, images: list[Image.Image], names: list[str]) -> dict:
    """Assert that the pipeline computes what we compute: same probabilities (raw logit scale), same top-1."""
    ours = classify(clip, images, names, (TEMPLATE,)).probs
    raw_scale = float(clip.model.logit_scale.detach().exp())
    unclamped = (raw_scale * encode_images(clip, images) @ build_classifier(clip, names, (TEMPLATE,)).T).softmax(-1)
    outputs = pipe(images, candidate_labels=names, hypothesis_template=TEMPLATE)
    theirs = torch.tensor([[{o["label"]: o["score"] for o in out}[n] for n in names] for out in outputs])
    diff_raw = float((theirs - unclamped).abs().max())
    diff_ours = float((theirs - ours).abs().max())
    assert diff_raw < 1e-4, f"{label}: pipeline and core disagree by {diff_raw:.2e}: not the same model?"
    assert torch.equal(theirs.argmax(-1), ours.argmax(-1)), f"{label}: top-1 labels differ"
    return {"model": label, "images": len(images), "classes": len(names), "raw_logit_scale": raw_scale,
            "core_logit_scale": clip.logit_scale, "max_abs_diff_vs_raw_scale": diff_raw,
            "max_abs_diff_vs_core_classify": diff_ours}


def seconds(fn) -> float:
    """Wall-clock seconds of one call of fn."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def per_repeat_count(fn, repeat_seconds: float) -> int:
    """Images to time per repeat in single mode: about repeat_seconds' worth, from one warm call (1 to BATCH)."""
    fn(0)  # warm-up: lazy initialisation, caches, allocator
    return max(1, min(BATCH, round(repeat_seconds / max(seconds(lambda: fn(1)), 1e-6))))


def measure_cell(clip: Clip, pipe, names: list[str], images: list[Image.Image], mode: str, repeats: int,
                 repeat_seconds: float) -> dict:
    """Alternate ours and the pipeline for `repeats` repeats in one mode; medians and per-repeat ratios."""
    head = []  # the head is built once and kept, as the app's services keep it

    def warm(batch):
        if not head:
            head.append(build_classifier(clip, names, (TEMPLATE,)))
        return classify_embeddings(encode_images(clip, batch), head[0], clip.logit_scale)

    if mode == "single":
        def ours(i: int):
            return warm([images[i % BATCH]])

        def reference(i: int):
            return pipe(images[i % BATCH], candidate_labels=names, hypothesis_template=TEMPLATE)
    else:
        def ours(i: int):
            return warm(images)

        def reference(i: int):
            return pipe(images, candidate_labels=names, hypothesis_template=TEMPLATE, batch_size=BATCH)
    cold_s = seconds(lambda: ours(0))  # builds the head, then classifies
    if mode == "single":
        n_ours, n_ref = per_repeat_count(ours, repeat_seconds), per_repeat_count(reference, repeat_seconds)
    else:
        ours(0), reference(0)  # warm-up
        n_ours = n_ref = 1  # calls per repeat, each of BATCH images
    per_call = 1 if mode == "single" else BATCH
    ours_ips, ref_ips, ratios = [], [], []
    for r in range(repeats):
        sides = [("ours", ours, n_ours), ("reference", reference, n_ref)]
        times = {}
        for name, fn, calls in (sides if r % 2 == 0 else sides[::-1]):
            times[name] = seconds(lambda: [fn(r * calls + i) for i in range(calls)])
        ours_ips.append(n_ours * per_call / times["ours"])
        ref_ips.append(n_ref * per_call / times["reference"])
        ratios.append(ours_ips[-1] / ref_ips[-1])
    target = TARGETS.get(len(names))
    ratio = statistics.median(ratios)
    return {"classes": len(names), "mode": mode, "ours_images_per_s": statistics.median(ours_ips),
            "pipeline_images_per_s": statistics.median(ref_ips), "median_ratio": ratio, "ratios": ratios,
            "target_ratio": target, "met": None if target is None else ratio >= target,
            "ours_images_per_repeat": n_ours * per_call, "pipeline_images_per_repeat": n_ref * per_call,
            "pipeline_timed_subset": n_ref * per_call < BATCH, "ours_cold_first_call_s": cold_s,
            "ours_cold_first_call_images": per_call}


def measure_scaling(clip: Clip, pipe, image: Image.Image, repeats: int, counts=SCALING_COUNTS) -> dict:
    """Per class count, median seconds of: ours cold (empty cache), ours warm, the pipeline, all on one image."""
    out = {"classes": list(counts), "ours_cold_s": [], "ours_warm_s": [], "pipeline_s": []}
    for k in counts:
        names = imagenet_names(k)
        pipe(image, candidate_labels=names, hypothesis_template=TEMPLATE)  # warm-up
        cold, warm, ref = [], [], []
        head = build_classifier(clip, names, (TEMPLATE,))
        for _ in range(repeats):
            cold.append(seconds(lambda: classify(clip, [image], names, (TEMPLATE,))))  # classify builds the head each call
            warm.append(seconds(lambda: classify_embeddings(encode_images(clip, [image]), head, clip.logit_scale)))
            ref.append(seconds(lambda: pipe(image, candidate_labels=names, hypothesis_template=TEMPLATE)))
        for key, values in (("ours_cold_s", cold), ("ours_warm_s", warm), ("pipeline_s", ref)):
            out[key].append(statistics.median(values))
    return out


def print_table(rows: list[dict]) -> None:
    """The results as a fixed-width table on stdout."""
    print(f"{'model':<12} {'classes':>7} {'mode':<8} {'ours img/s':>11} {'pipe img/s':>11} {'pipe n':>6} "
          f"{'ratio':>8} {'target':>7} {'met':>4} {'cold s':>7}")
    for r in rows:
        target = "-" if r["target_ratio"] is None else f"{r['target_ratio']:.0f}x"
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        print(f"{r['model']:<12} {r['classes']:>7} {r['mode']:<8} {r['ours_images_per_s']:>11.1f} "
              f"{r['pipeline_images_per_s']:>11.2f} {r['pipeline_images_per_repeat']:>6} {r['median_ratio']:>7.1f}x "
              f"{target:>7} {met:>4} {r['ours_cold_first_call_s']:>7.3f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="alternating repeats per cell (at least 5)")
    p.add_argument("--repeat-seconds", type=float, default=1.0, help="single mode: time per side per repeat")
    p.add_argument("--json", type=Path, default=None, help="default benchmarks/results/zeroshot_vs_pipeline.json")
    p.add_argument("--plot", type=Path, default=None, help="default docs/zeroshot_scaling.png")
    p.add_argument("--quick", action="store_true", help="smoke test: bundled model, 10 classes, 1 repeat of 0.2 s")
    a = p.parse_args(argv)
    if a.quick:
        a.repeats, a.repeat_seconds, class_counts, scaling_counts = 1, 0.2, (10,), (10,)
        out_dir = Path(tempfile.gettempdir())
        a.json = a.json or out_dir / "zeroshot_vs_pipeline_quick.json"
        a.plot = a.plot or out_dir / "zeroshot_scaling_quick.png"
    else:
        class_counts, scaling_counts = CLASS_COUNTS, SCALING_COUNTS
        a.json = a.json or ROOT / "benchmarks" / "results" / "zeroshot_vs_pipeline.json"
        a.plot = a.plot or ROOT / "docs" / "zeroshot_scaling.png"
        if a.repeats < 5:
            p.error("--repeats must be at least 5 (the benchmarks report medians over >= 5 repeats)")
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=UserWarning)
    images = benchmark_images(BATCH)
    rows, agreement, scaling = [], [], None
    with tempfile.TemporaryDirectory(prefix="zeroshot-bench-") as tmp:
        models = [("shapes-tiny", MODELS_DIR / "shapes-tiny")]
        if not a.quick:
            models.append(("base", save_pretrained_atomic(create("base", seed=0), Path(tmp) / "base")))
        for label, model_dir in models:
            clip, pipe = load(str(model_dir)), open_pipeline(model_dir)
            agreement.append(check_agreement(label, clip, pipe, images[:2], imagenet_names(10)))
            for k in class_counts:
                for mode in ("single", "batch32"):
                    row = {"model": label, **measure_cell(clip, pipe, imagenet_names(k), images, mode,
                                                          a.repeats, a.repeat_seconds)}
                    rows.append(row)
                    print(f"measured {label}, {k} classes, {mode}: {row['median_ratio']:.1f}x", flush=True)
            if label == "shapes-tiny":
                scaling = measure_scaling(clip, pipe, images[0], max(a.repeats, 3), scaling_counts)
            del clip, pipe
    print()
    print_table(rows)
    series = {"ours, first call (build head + classify)": (scaling["classes"], scaling["ours_cold_s"]),
              "ours, head cached (the app's steady state)": (scaling["classes"], scaling["ours_warm_s"]),
              "transformers pipeline": (scaling["classes"], scaling["pipeline_s"])}
    save_line_plot(a.plot, series, title="Zero-shot on shapes-tiny: seconds per image vs number of classes",
                   x_label="classes (first k ImageNet-1k names, one template)", y_label="seconds per image",
                   log_x=True, log_y=True)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({
        "torch": torch.__version__, "transformers": transformers.__version__, "threads": torch.get_num_threads(),
        "template": TEMPLATE, "batch": BATCH, "repeats": a.repeats, "repeat_seconds": a.repeat_seconds,
        "quick": a.quick, "agreement": agreement, "rows": rows, "scaling_shapes_tiny": scaling,
        "plot": str(a.plot),
        "notes": "single mode: each side times about repeat_seconds of one-image calls per repeat "
                 "(ours_images_per_repeat / pipeline_images_per_repeat); pipeline_timed_subset marks cells "
                 "where the pipeline timed fewer than the 32 images. batch32: one call with all 32 images "
                 "(pipeline batch_size=32, which encodes the labels once per batch).",
    }, indent=2))
    print(f"\nwrote {a.json} and {a.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
