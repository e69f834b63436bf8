"""fp32 vs bf16 autocast for core's image and text encoders on this machine's CPU.

    python benchmarks/encode_precision.py [--repeats 5] [--json benchmarks/results/encode_precision.json]

For each preset, alternates fp32 and bf16 runs on the same inputs, reports the median time of
each, the median ratio (fp32 / bf16: above 1 means bf16 is faster) and the lowest cosine between
the two precisions' embeddings. CLIP Lab keeps bf16 only where it is faster and agrees >= 0.99.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.encode import encode_images, encode_texts  # noqa: E402
from core.model import PRESETS, create  # noqa: E402


def _time(fn) -> tuple[float, torch.Tensor]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["tiny", "base"], choices=list(PRESETS))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    rows = []
    for name in a.presets:
        clip = create(name, seed=0)
        clip.model.eval()
        s = PRESETS[name].image_size
        pixels = torch.randn(a.batch, 3, s, s)
        texts = [f"a photo of a small red star number {i}" for i in range(a.batch)]
        for kind, fn in (("image", lambda prec: encode_images(clip, pixels, batch_size=a.batch, precision=prec)),
                         ("text", lambda prec: encode_texts(clip, texts, batch_size=a.batch, precision=prec))):
            fn("fp32"), fn("bf16")  # warm-up
            t32, t16, ratios, agree = [], [], [], 1.0
            for _ in range(a.repeats):
                ta, ea = _time(lambda: fn("fp32"))
                tb, eb = _time(lambda: fn("bf16"))
                t32.append(ta), t16.append(tb), ratios.append(ta / tb)
                agree = min(agree, float((ea * eb).sum(1).min()))
            rows.append({"preset": name, "encoder": kind, "batch": a.batch, "fp32_s": statistics.median(t32),
                         "bf16_s": statistics.median(t16), "median_ratio_fp32_over_bf16": statistics.median(ratios),
                         "min_cosine_fp32_vs_bf16": agree})
    print(f"{'preset':<6} {'encoder':<7} {'fp32 s':>8} {'bf16 s':>8} {'fp32/bf16':>10} {'min cos':>8}")
    for r in rows:
        print(f"{r['preset']:<6} {r['encoder']:<7} {r['fp32_s']:8.3f} {r['bf16_s']:8.3f} "
              f"{r['median_ratio_fp32_over_bf16']:10.2f} {r['min_cosine_fp32_vs_bf16']:8.4f}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
