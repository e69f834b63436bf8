"""The pointing game for every saliency method on the bundled model, and the time of one map at B/32 size.

    OMP_NUM_THREADS=1 python benchmarks/pointing_game.py [--n 500] [--seed 1234] [--threads 1] \
        [--skip-timing] [--json benchmarks/results/pointing_game.json]

Scores (core.pointing.pointing_game, the same eval-split images for every method; the peak is
refined below the patch size, core.pointing.refined_peaks, except in "cell peak"):
  single        1 object, text "a {colour} {shape}", strict: the peak inside the silhouette;
  cell peak     the same maps, the plain maximum of the bilinearly upsampled map (a patch centre);
  single, 4 px  the same maps, a peak within 4 px of the silhouette (Zhang et al.'s 15 px at ~224 px);
  shape only    1 object, text "{shape}", strict;
  multi         2-3 objects, the text naming the first, strict; "other" = peak on another object.
Chance is the mean area the named object covers. Timing: one `saliency_map` (PIL image in, text
string in, so preprocessing and text encoding included) on a random-weight CLIPModel of ViT-B/32
sizes (core.model.PRESETS["base"]: vision 768 x 12, patch 32, 224 px; text 512 x 12; projection 512),
median of 5 after a warm-up, and the same given the text's embedding.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_io import machine_info, write_json  # noqa: E402


def median_s(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def standin_timing(repeats: int = 5) -> dict:
    """Seconds per map on a B/32-sized random CLIP, per method."""
    import numpy as np
    from PIL import Image

    from core.encode import encode_texts
    from core.model import create
    from core.saliency import METHODS, saliency_map

    clip = create("base", seed=0)
    clip.model.eval()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    text = "a photo of a red circle"
    emb = encode_texts(clip, [text])[0]
    out = {"config": {"vision": [768, 12, 32, 224], "text": [512, 12], "projection": 512, "grid": 7}}
    for method in METHODS:
        out[method] = {"with_text_s": median_s(lambda: saliency_map(clip, image, text, method), repeats),
                       "given_embedding_s": median_s(lambda: saliency_map(clip, image, emb, method), repeats)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/pointing_game.json"))
    args = parser.parse_args()

    import torch

    import core
    from core.pointing import chance_rate, pointing_game
    from core.saliency import DEFAULT_METHOD, METHODS, TEXT_FREE_METHODS

    torch.set_num_threads(args.threads)
    clip = core.load(core.DEFAULT_MODEL)
    runs = {"single": dict(), "single_cell_peak": dict(refine=False), "single_4px": dict(tolerance=4.0),
            "shape_only": dict(prompt="{shape}"),
            "multi": dict(max_objects=3)}
    scores: dict[str, dict] = {m: {} for m in METHODS}
    for name, kwargs in runs.items():
        for r in pointing_game(clip, METHODS, n=args.n, seed=args.seed, **kwargs):
            entry = {"accuracy": r.accuracy, "hits": r.hits, "n": r.n, "prompt": r.prompt, "objects": r.objects,
                     "tolerance_px": r.tolerance, "refined_peak": r.refine, "by_style": r.by_style, "maps_s": r.seconds}
            if name == "multi":
                entry["other_object_rate"] = r.other_rate
            scores[r.method][name] = entry
    chance = {"single": chance_rate(args.n, args.seed), "multi": chance_rate(args.n, args.seed, max_objects=3)}

    header = (f"{'method':<12} {'single':>8} {'cell peak':>10} {'single 4px':>11} {'shape only':>11} {'multi named':>12} "
              f"{'multi other':>12}")
    lines = [header, "-" * len(header)]
    for m in METHODS:
        s = scores[m]
        tag = " (default)" if m == DEFAULT_METHOD else (" (text-free)" if m in TEXT_FREE_METHODS else "")
        lines.append(f"{m:<12} {s['single']['accuracy']:8.1%} {s['single_cell_peak']['accuracy']:10.1%} "
                     f"{s['single_4px']['accuracy']:11.1%} "
                     f"{s['shape_only']['accuracy']:11.1%} {s['multi']['accuracy']:12.1%} "
                     f"{s['multi']['other_object_rate']:12.1%}{tag}")
    lines.append(f"{'chance':<12} {chance['single']:8.1%} {chance['single']:10.1%} {'':>11} {chance['single']:11.1%} "
                 f"{chance['multi']:12.1%}")
    print(f"pointing game, {core.DEFAULT_MODEL}, n={args.n} per column, seed {args.seed}")
    print("\n".join(lines))

    timing = None
    if not args.skip_timing:
        timing = standin_timing()
        print("one map at B/32 size (random weights):")
        for m in METHODS:
            t = timing[m]
            print(f"  {m:<12} {t['with_text_s']:.3f} s with text encoding, {t['given_embedding_s']:.3f} s given the embedding")

    write_json(args.json, {**machine_info(), "model": core.DEFAULT_MODEL, "n": args.n, "seed": args.seed,
                           "default_method": DEFAULT_METHOD, "text_free_methods": list(TEXT_FREE_METHODS),
                           "peak": "refined: the maximal cell moved to the centroid of the excess over the map's median "
                                   "in its 3x3 cells (core.pointing.refined_peaks); cell peak: maximum of the bilinear "
                                   "upsampling to 64x64",
                           "scores": scores, "chance": chance, "table": lines, "b32_standin_map_s": timing})


if __name__ == "__main__":
    main()
