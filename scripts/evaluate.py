"""Evaluate a CLIP model: zero-shot top-1/top-5/mean per-class recall, and retrieval recall@1/5/10.

Shapes world (fresh single-object eval images; colour, shape, colour×shape, held-out combinations):
    python scripts/evaluate.py --model shapes-tiny --n 2000 --templates shapes_world --json eval.json

Any datasets source with an image column plus a label and/or caption column:
    python scripts/evaluate.py --model openai/clip-vit-base-patch32 --data ./cifar_folder \
        --label-column label --classnames cifar10 --templates cifar
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.data import DataError, open_dataset  # noqa: E402
from core.evaluate import evaluate_dataset, evaluate_shapes, format_table  # noqa: E402
from core.model import ModelLoadError, load  # noqa: E402
from core.zeroshot import classname_presets, parse_classnames, parse_templates, template_presets  # noqa: E402


def _named_or_file(value: str, presets: dict[str, list[str]], what: str) -> list[str]:
    if value in presets:
        return presets[value]
    path = Path(value)
    if path.is_file():
        return path.read_text(encoding="utf-8").splitlines()
    raise ValueError(f"{what} {value!r} is neither a preset ({', '.join(presets)}) nor a file")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="shapes-tiny", help="bundled name, local HF directory or Hub id")
    p.add_argument("--data", default="shapes", help="'shapes' or a datasets source (folder, save_to_disk dir, Hub name)")
    p.add_argument("--split", default="test")
    p.add_argument("--n", type=int, default=2000, help="images to evaluate (shapes: fresh samples; datasets: the first n)")
    p.add_argument("--seed", type=int, default=1234, help="shapes world seed of the evaluation images")
    p.add_argument("--templates", default="single", help="template preset name or a file with one template per line")
    p.add_argument("--classnames", default=None, help="class-name preset or file (datasets only; default: the label names)")
    p.add_argument("--image-column", default="image")
    p.add_argument("--label-column", default="label")
    p.add_argument("--text-column", default="text")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, default=None, help="write the results here as JSON")
    a = p.parse_args(argv)
    try:
        templates = parse_templates(_named_or_file(a.templates, template_presets(), "template set"))
        clip = load(a.model, device=a.device)
        t0 = time.perf_counter()
        if a.data == "shapes":
            results = evaluate_shapes(clip, n=a.n, seed=a.seed, templates=templates)
        else:
            names = parse_classnames("\n".join(_named_or_file(a.classnames, classname_presets(), "class-name set"))) if a.classnames else None
            ds = open_dataset(a.data, split=a.split)
            results = evaluate_dataset(clip, ds, names, templates, a.image_column, a.label_column, a.text_column, limit=a.n)
    except (ModelLoadError, DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    meta = {"model": a.model, "data": a.data, "n": a.n, "seed": a.seed, "templates": a.templates,
            "seconds": round(time.perf_counter() - t0, 2)}
    print(format_table(results))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
