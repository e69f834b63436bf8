"""Every model family core.load reads, ours beside transformers' pipeline and plain transformers calls.

    python benchmarks/families_vs_pipeline.py [--repeats 3] [--families clip,siglip,siglip2,metaclip_2]
                                              [--json benchmarks/results/families_vs_pipeline.json] [--quick]

Per family, the real-size stand-in of benchmarks/family_standins.py (the real config and vocab size,
a tokenizer of the same kind built offline, random weights) is saved as its Hub id in a temporary
Hugging Face cache with HF_HUB_OFFLINE=1, and both sides open that id: ours `core.load(id)`, the
reference `pipeline("zero-shot-image-classification", model=id, dtype=float32)`, whose model,
tokenizer and image processor also serve the plain transformers calls. CLIP ViT-B/32
(openai/clip-vit-base-patch32) is the reference family. fp32 on CPU, torch's default threads.

Rows (seconds; × is the reference's time over ours, so above 1 means ours is faster):

| row | ours | reference |
|---|---|---|
| load | `core.load(id)` | `pipeline(...)`; the two alternate which goes first from family to family |
| zero-shot cold | the first `core.classify(clip, [image], labels, [template])` after the load | the pipeline's first call after its load |
| zero-shot warm | the head built once and kept (the app's steady state): encode one image, `classify_embeddings` | `pipe(image, candidate_labels=labels, hypothesis_template=template)`, which encodes every label on every call |
| 16x16 matrix | `encode_images` + `encode_texts` + `core.similarity` (16 images, 16 captions) | tokenizer + image processor + `model(...)`: `logits_per_image`, then softmax or sigmoid |
| map, 500 pairs | `encode_images` + `encode_texts` | `get_image_features` / `get_text_features` (`.pooler_output`) in batches of 64 images and 256 texts, as ours |

Labels: the first 10 ImageNet-1k class names, lower-cased; template "this is a photo of {}."
(the pipeline's own, lower-cased, passed to both: SigLIP 2 reads lower-cased text, so core
lower-cases every text for it and the pipeline does not; with lower-case input both see the same
tokens). SigLIP texts are padded to 64 positions on both sides (the pipeline does so for
"siglip" model types; the plain calls pass padding="max_length"); the others to the longest.
Images: 64-px shapes-world images (eval split), resized by each model's processor.

Each timed row alternates ours and the reference for --repeats repeats (3; the map row
--map-repeats, 2), the order flipping every repeat, and reports the median time of each side and
the median of the per-repeat ratios. Cold calls happen once per process and side, so they are
single samples. The map row would take minutes per side at B/16 (0.3 s an image on 2 cores), so it
times 32 images and 64 captions per repeat and scales each to 500 (batched encoding is linear in
the count); its projection (UMAP on 1,000 points) is the same code for both sides and is timed
once, apart, on random unit vectors. The machine is shared: its fp32 matmul rate is recorded
before each family, so that a slow family can be told from a busy minute.

Agreement, in the same run: max |Δp| between our zero-shot probabilities and the pipeline's on 4
images, the 16x16 matrix's max |Δ logit| (ours scale · cos (+ bias) against `logits_per_image`),
and the map's max |Δ| between our normalised embeddings and the reference's. SigLIP 2 also records
the pipeline's difference with its default cased template ("This is a photo of {}."), which core
lower-cases and the pipeline does not.

--quick: a smoke test (1 repeat, 4 matrix pairs, 8 map images and captions), output in the temp folder.
Without --quick the run takes about 7 minutes on 2 idle vCPUs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_HOME: Path | None = None
if __name__ == "__main__":  # before huggingface_hub is imported: it reads these once, at import
    _HOME = Path(tempfile.mkdtemp(prefix="clip-families-hf-"))
    os.environ.update(HF_HOME=str(_HOME), HF_HUB_CACHE=str(_HOME / "hub"), HF_HUB_OFFLINE="1",
                      TRANSFORMERS_OFFLINE="1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.family_standins import HUB_IDS, build_family_standin, check_family_standin  # noqa: E402
from benchmarks.standin import matmul_rate  # noqa: E402

FAMILIES = ("clip", "siglip", "siglip2", "metaclip_2")
TITLES = {"clip": "CLIP ViT-B/32", "siglip": "SigLIP B/16", "siglip2": "SigLIP 2 B/16", "metaclip_2": "MetaCLIP 2 S/16"}
TEMPLATE = "this is a photo of {}."
PIPELINE_DEFAULT_TEMPLATE = "This is a photo of {}."
CLASSES = 10
MAP_PAIRS = 500
FULL = dict(matrix=16, map_images=32, map_captions=64, agreement_images=4)
QUICK = dict(matrix=4, map_images=8, map_captions=8, agreement_images=2)


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(ours, reference, repeats: int, last: dict | None = None) -> dict:
    """Alternate ours(r) and reference(r) for `repeats` repeats (order flips each repeat): medians and ratios.
    `last`, if given, receives each side's last result (for the agreement checks, at no extra cost)."""
    times = {"ours": [], "reference": []}
    for r in range(repeats):
        sides = [("ours", ours), ("reference", reference)]
        for name, fn in sides if r % 2 == 0 else sides[::-1]:
            start = time.perf_counter()
            result = fn(r)
            times[name].append(time.perf_counter() - start)
            if last is not None:
                last[name] = result
    ratios = [ref / own for own, ref in zip(times["ours"], times["reference"])]
    return {"ours_s": statistics.median(times["ours"]), "reference_s": statistics.median(times["reference"]),
            "ratio": statistics.median(ratios), "ours_samples": times["ours"], "reference_samples": times["reference"],
            "ratios": ratios}


def samples(n: int, start: int = 0):
    from core.shapes import ShapesWorld

    return ShapesWorld(seed=0, split="eval").take(n, start=start)


def labels() -> list[str]:
    names = (ROOT / "assets" / "classnames" / "imagenet1k.txt").read_text(encoding="utf-8").splitlines()
    return [n.strip().lower() for n in names if n.strip()][:CLASSES]


def text_inputs(pipe, family: str, texts: list[str]) -> dict:
    """The plain transformers call's tokens: SigLIP's padded to 64 positions, as its docs say; others to the longest."""
    if family in ("siglip", "siglip2"):
        return dict(pipe.tokenizer(texts, padding="max_length", max_length=64, truncation=True, return_tensors="pt"))
    return dict(pipe.tokenizer(texts, padding=True, return_tensors="pt"))


def pipeline_probs(pipe, images, names: list[str], template: str) -> torch.Tensor:
    outputs = pipe(images, candidate_labels=names, hypothesis_template=template)
    return torch.tensor([[{o["label"]: o["score"] for o in out}[n] for n in names] for out in outputs])


# ---------------------------------------------------------------- one family


def measure_family(family: str, hub_cache: Path, q: dict, repeats: int, map_repeats: int, load_ours_first: bool) -> dict:
    from transformers import pipeline

    import core
    from core.zeroshot import build_classifier, classify, classify_embeddings

    row: dict = {"family": family, "title": TITLES[family], "hub_id": HUB_IDS[family],
                 "matmul_gflops_before": matmul_rate(1024) / 1e9}  # the machine's speed now: it is shared
    row["build_s"] = seconds(lambda: row.update(snapshot=str(build_family_standin(family, hub_cache))))
    snapshot = Path(row["snapshot"])

    def load_ours():
        checked = check_family_standin(family, snapshot)
        row.update(ours_load_s=checked["load_s"], checks=checked["checks"])
        return checked["clip"]

    def load_pipeline():
        start = time.perf_counter()
        pipe = pipeline("zero-shot-image-classification", model=HUB_IDS[family], device="cpu", dtype=torch.float32)
        row["pipeline_load_s"] = time.perf_counter() - start
        return pipe

    if load_ours_first:
        clip, pipe = load_ours(), load_pipeline()
    else:
        pipe = load_pipeline()
        clip = load_ours()
    row["load_order"] = "ours first" if load_ours_first else "pipeline first"
    row["parameters_m"] = row["checks"]["parameters_m"]
    names = labels()
    images = [s.image.convert("RGB") for s in samples(max(q["agreement_images"], repeats) + 1)]

    # zero-shot: the first call of each side after its load, then the agreement, then warm calls
    cold = {"ours": seconds(lambda: classify(clip, [images[0]], names, [TEMPLATE])),
            "reference": seconds(lambda: pipe(images[0], candidate_labels=names, hypothesis_template=TEMPLATE))}
    agree = images[: q["agreement_images"]]
    ours_p = classify(clip, agree, names, [TEMPLATE]).probs
    theirs_p = pipeline_probs(pipe, agree, names, TEMPLATE)
    row["agreement"] = {"images": len(agree), "classes": len(names), "template": TEMPLATE,
                        "max_abs_dp": float((ours_p - theirs_p).abs().max()),
                        "top1_equal": bool(torch.equal(ours_p.argmax(-1), theirs_p.argmax(-1))),
                        "rows_sum_to_1": bool(torch.allclose(ours_p.sum(-1), torch.ones(len(agree)), atol=1e-4)),
                        "probability_range": [float(ours_p.min()), float(ours_p.max())]}
    if family == "siglip2":
        cased = pipeline_probs(pipe, agree, names, PIPELINE_DEFAULT_TEMPLATE)
        row["agreement"]["pipeline_default_cased_template_max_abs_dp"] = float((ours_p - cased).abs().max())
    head = build_classifier(clip, names, [TEMPLATE])
    rule, bias, scale = clip.family.rule, clip.logit_bias, clip.logit_scale

    def ours_warm(r):
        return classify_embeddings(core.encode_images(clip, [images[r % len(images)]]), head, scale, bias, rule)

    def reference_zero_shot(r):
        return pipe(images[r % len(images)], candidate_labels=names, hypothesis_template=TEMPLATE)

    warm = alternate(ours_warm, reference_zero_shot, repeats)
    uncached = alternate(lambda r: classify(clip, [images[r % len(images)]], names, [TEMPLATE]), reference_zero_shot,
                         repeats)
    row["zero_shot"] = {"classes": len(names), "cold_ours_s": cold["ours"], "cold_pipeline_s": cold["reference"],
                        "cold_ratio": cold["reference"] / cold["ours"], "warm": warm, "head_rebuilt_every_call": uncached}
    print(f"{family}: zero-shot cold {cold['ours']:.2f} / {cold['reference']:.2f} s, warm {warm['ours_s']:.3f} / "
          f"{warm['reference_s']:.3f} s, |dp| {row['agreement']['max_abs_dp']:.1e}", flush=True)

    # 16x16 matrix
    pairs = samples(q["matrix"], start=100)
    m_images, m_captions = [s.image.convert("RGB") for s in pairs], [s.caption for s in pairs]
    sigmoid = clip.family.rule == "sigmoid"

    def ours_matrix(_r=0):
        out = core.similarity(core.encode_images(clip, m_images), core.encode_texts(clip, m_captions), scale,
                              bias if sigmoid else None)
        return clip.family.probabilities(out.logits, bias), out.logits + (bias if sigmoid else 0.0)

    def reference_matrix(_r=0):
        with torch.inference_mode():
            pixels = pipe.image_processor(images=m_images, return_tensors="pt")["pixel_values"]
            logits = pipe.model(pixel_values=pixels, **text_inputs(pipe, family, m_captions)).logits_per_image
        return (logits.sigmoid() if sigmoid else logits.softmax(-1)), logits

    last: dict = {}
    matrix = alternate(ours_matrix, reference_matrix, repeats, last)
    matrix["pairs"] = len(pairs)
    matrix["max_abs_dlogit"] = float((last["ours"][1] - last["reference"][1]).abs().max())
    row["matrix"] = matrix
    print(f"{family}: matrix {matrix['ours_s']:.2f} / {matrix['reference_s']:.2f} s", flush=True)

    # map: encode images and captions (a subset, scaled to 500 pairs)
    drawn = samples(max(q["map_images"], q["map_captions"]), start=200)
    p_images = [s.image.convert("RGB") for s in drawn[: q["map_images"]]]
    p_captions = [s.caption for s in drawn[: q["map_captions"]]]

    def reference_images():
        with torch.inference_mode():
            out = [pipe.model.get_image_features(pixel_values=pipe.image_processor(images=p_images[i:i + 64],
                                                                                   return_tensors="pt")["pixel_values"])
                   .pooler_output for i in range(0, len(p_images), 64)]
        return F.normalize(torch.cat(out), dim=-1)

    def reference_texts():
        with torch.inference_mode():
            out = [pipe.model.get_text_features(**text_inputs(pipe, family, p_captions[i:i + 256])).pooler_output
                   for i in range(0, len(p_captions), 256)]
        return F.normalize(torch.cat(out), dim=-1)

    timed = {"ours_images": [], "ours_texts": [], "reference_images": [], "reference_texts": []}
    embeddings = {}

    def side(name, fn_images, fn_texts):
        def run(_r):
            for part, fn in (("images", fn_images), ("texts", fn_texts)):
                start = time.perf_counter()
                embeddings[f"{name}_{part}"] = fn()
                timed[f"{name}_{part}"].append(time.perf_counter() - start)
        return run

    alternate(side("ours", lambda: core.encode_images(clip, p_images), lambda: core.encode_texts(clip, p_captions)),
              side("reference", reference_images, reference_texts), map_repeats)
    scaled = {k: [t * MAP_PAIRS / (q["map_images"] if k.endswith("images") else q["map_captions"]) for t in v]
              for k, v in timed.items()}
    ours_500 = [a + b for a, b in zip(scaled["ours_images"], scaled["ours_texts"])]
    ref_500 = [a + b for a, b in zip(scaled["reference_images"], scaled["reference_texts"])]
    row["map"] = {
        "pairs": MAP_PAIRS, "timed_images": q["map_images"], "timed_captions": q["map_captions"],
        "ours_s": statistics.median(ours_500), "reference_s": statistics.median(ref_500),
        "ratio": statistics.median(r / o for o, r in zip(ours_500, ref_500)),
        "ours_images_500_s": statistics.median(scaled["ours_images"]),
        "ours_captions_500_s": statistics.median(scaled["ours_texts"]),
        "reference_images_500_s": statistics.median(scaled["reference_images"]),
        "reference_captions_500_s": statistics.median(scaled["reference_texts"]),
        "samples_s": timed,
        "repeats": map_repeats,
        "max_abs_d_image_embedding": float((embeddings["ours_images"] - embeddings["reference_images"]).abs().max()),
        "max_abs_d_text_embedding": float((embeddings["ours_texts"] - embeddings["reference_texts"]).abs().max()),
    }
    print(f"{family}: map of {MAP_PAIRS} pairs {row['map']['ours_s']:.1f} / {row['map']['reference_s']:.1f} s "
          f"(from {q['map_images']} images, {q['map_captions']} captions)", flush=True)
    return row  # the models go with this frame; main collects before the next family


def measure_projection(points: int = 2 * MAP_PAIRS, dim: int = 512) -> dict:
    """The map's projection, the same code for both sides: UMAP (core's default) and PCA on random unit vectors."""
    from core.projection import ProjectionConfig, import_umap, project

    x = F.normalize(torch.randn(points, dim, generator=torch.Generator().manual_seed(0)), dim=-1).numpy()
    out = {"points": points, "dim": dim, "import_umap_s": seconds(import_umap)}
    out["umap_first_s"] = seconds(lambda: project(x, ProjectionConfig()))
    out["umap_second_s"] = seconds(lambda: project(x, ProjectionConfig()))
    out["pca_s"] = seconds(lambda: project(x, ProjectionConfig(method="pca")))
    return out


# ---------------------------------------------------------------- output


def markdown_table(rows: list[dict]) -> str:
    def pair(own, ref, ratio, digits=2):
        return f"{own:.{digits}f} / {ref:.{digits}f} ({ratio:.1f}×)"

    lines = ["| family (stand-in of) | params | load s, ours / pipeline | zero-shot cold s, ours / pipeline (×) | "
             "zero-shot warm s, ours / pipeline (×) | 16×16 matrix s, ours / transformers (×) | "
             "map encode, 500 pairs s, ours / transformers (×) | max \\|Δp\\| |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        z, m, p = r["zero_shot"], r["matrix"], r["map"]
        lines.append(
            f"| {r['title']} (`{r['hub_id']}`) | {r['parameters_m']:.0f} M | {r['ours_load_s']:.2f} / {r['pipeline_load_s']:.2f} | "
            f"{pair(z['cold_ours_s'], z['cold_pipeline_s'], z['cold_ratio'])} | "
            f"{pair(z['warm']['ours_s'], z['warm']['reference_s'], z['warm']['ratio'], 3)} | "
            f"{pair(m['ours_s'], m['reference_s'], m['ratio'])} | {pair(p['ours_s'], p['reference_s'], p['ratio'], 1)} | "
            f"{r['agreement']['max_abs_dp']:.1e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="alternating repeats per timed row")
    p.add_argument("--map-repeats", type=int, default=2, help="alternating repeats of the map row (the longest)")
    p.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated, of {', '.join(FAMILIES)}")
    p.add_argument("--json", type=Path, default=None, help="default benchmarks/results/families_vs_pipeline.json")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 repeat, small counts, output in the temp folder")
    a = p.parse_args(argv)
    families = [f.strip() for f in a.families.split(",") if f.strip()]
    if unknown := [f for f in families if f not in FAMILIES]:
        p.error(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}")
    q = QUICK if a.quick else FULL
    if a.quick:
        a.repeats = a.map_repeats = 1
    a.json = a.json or (Path(tempfile.gettempdir()) / "families_vs_pipeline_quick.json" if a.quick
                        else ROOT / "benchmarks" / "results" / "families_vs_pipeline.json")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=UserWarning)
    started = time.perf_counter()
    hub_cache = Path(os.environ["HF_HUB_CACHE"])
    rows = []
    try:
        for i, family in enumerate(families):
            rows.append(measure_family(family, hub_cache, q, a.repeats, a.map_repeats, load_ours_first=i % 2 == 0))
            gc.collect()
    finally:  # the stand-ins, 4.2 GB of weights, in the temporary cache made at start (never another one)
        if _HOME is not None:
            shutil.rmtree(_HOME, ignore_errors=True)
    projection = measure_projection()
    print(f"projection (same code both sides): UMAP {projection['umap_second_s']:.1f} s on {projection['points']} "
          f"points (first {projection['umap_first_s']:.1f} s), PCA {projection['pca_s']:.3f} s", flush=True)
    table = markdown_table(rows)
    print()
    print(table)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "processor": platform.processor() or platform.machine(), "torch": torch.__version__,
        "transformers": transformers.__version__, "threads": torch.get_num_threads(), "repeats": a.repeats,
        "map_repeats": a.map_repeats,
        "quick": a.quick, "template": TEMPLATE, "classes": CLASSES, "counts": q, "rows": rows,
        "projection": projection, "total_s": time.perf_counter() - started, "markdown": table,
        "notes": "ratio = reference seconds / ours (above 1: ours faster); map rows time map_images images and "
                 "map_captions captions per repeat and scale each to 500; cold rows are single samples.",
    }, indent=2, default=str))
    print(f"\nwrote {a.json} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
