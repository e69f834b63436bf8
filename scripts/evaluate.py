"""Evaluate a CLIP model: zero-shot top-1/top-5/mean per-class recall, and retrieval recall@1/5/10.

Shapes world (fresh single-object eval images; colour, shape, colour×shape, held-out combinations):
    python scripts/evaluate.py --model shapes-tiny --n 2000 --templates shapes_world --json eval.json

The evaluation study (shapes world only, for now): per-template accuracy, the confusion table,
greedy forward selection of templates and the few-shot linear-probe curve against zero-shot, on
a stratified half/half split of the images (core/eval_study.py, core/probe.py):
    python scripts/evaluate.py --n 2000 --templates shapes_world --task shape --select-templates --linear-probe

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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.data import DataError, open_dataset  # noqa: E402
from core.encode import arrays_to_pixels, encode_images  # noqa: E402
from core.eval_study import Study, finite, run_study, shapes_task  # noqa: E402
from core.evaluate import evaluate_dataset, evaluate_shapes, format_table, shapes_eval_set  # noqa: E402
from core.model import ModelLoadError, load  # noqa: E402
from core.zeroshot import (classname_presets, parse_classnames, parse_templates, template_embeddings,  # noqa: E402
                           template_presets)


def _named_or_file(value: str, presets: dict[str, list[str]], what: str) -> list[str]:
    if value in presets:
        return presets[value]
    path = Path(value)
    if path.is_file():
        return path.read_text(encoding="utf-8").splitlines()
    raise ValueError(f"{what} {value!r} is neither a preset ({', '.join(presets)}) nor a file")


def _shots(text: str) -> tuple[int, ...]:
    try:
        shots = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError as e:
        raise ValueError(f"--shots must be comma-separated whole numbers, got {text!r}") from e
    if not shots or min(shots) < 1:
        raise ValueError(f"--shots must list whole numbers of at least 1, got {text!r}")
    return shots


def _study(clip, samples, templates: list[str], a, shots) -> Study:
    """Encode the samples and the filled templates, then run core.eval_study.run_study."""
    pixels = arrays_to_pixels(np.stack([np.asarray(s.image) for s in samples]), clip.processor.image_mean,
                              clip.processor.image_std)  # [N, 3, S, S]
    img = encode_images(clip, pixels)  # [N, D]
    names, y = shapes_task(samples, a.task)
    emb = template_embeddings(clip, names, templates)  # [T, C, D]
    return run_study(img, y, emb, templates, names, seed=a.study_seed, select=a.select_templates,
                     probe=a.linear_probe, ks=shots, seeds=a.probe_seeds)


def format_study(study: Study) -> str:
    """Plain-text tables of a core.eval_study.Study."""
    lines = ["", f"{'template':<32} {'alone':>7}"]
    lines += [f"{t[:32]:<32} {acc:7.2%}" for t, acc in zip(study.templates, study.template_accuracy)]
    lines += [f"{'ensemble of all':<32} {study.ensemble_accuracy:7.2%}", "",
              f"{'class':<16} {'n':>5} {'recall':>7} {'prec':>7}  top confusion (classes in confusion order)"]
    for i in study.order:
        r = study.per_class[i]
        conf = f"{r.top_confusion} ({r.top_confusion_share:.1%})" if r.top_confusion else "-"
        lines.append(f"{r.name[:16]:<16} {r.n:5d} {r.recall:7.2%} {r.precision:7.2%}  {conf}")
    s = study.selection
    if s is not None:
        lines += ["", f"forward selection (seed {s.seed}; selection half {s.n_selection}, held-out half {s.n_heldout})",
                  f"{'':<24} {'select':>7} {'held':>7}",
                  f"{'chosen':<24} {s.chosen_selection:7.2%} {s.chosen_heldout:7.2%}  {s.chosen_templates}",
                  f"{'best single':<24} {s.single_selection:7.2%} {s.single_heldout:7.2%}  {s.templates[s.best_single]!r}",
                  f"{'all templates':<24} {s.full_selection:7.2%} {s.full_heldout:7.2%}",
                  f"held-out gain: chosen - all {s.gain_over_full:+.2%}, chosen - single {s.gain_over_single:+.2%}, "
                  f"all - single {s.full_over_single:+.2%}"]
    pc = study.probe
    if pc is not None:
        lines += ["", f"linear probe ({pc.n_train_pool} training, {pc.n_test} test images, {pc.seeds} seeds)",
                  f"{'k':>5} {'n_train':>8} {'mean':>7} {'std':>7}  C"]
        for pt in pc.points:
            lines.append(f"{pt.label:>5} {pt.n_train:8d} {pt.mean:7.2%} {pt.std:7.2%}  "
                         + " ".join(f"{c:.3g}" for c in pt.cs))
        if pc.skipped_ks:
            lines.append(f"skipped k = {pc.skipped_ks}: some class has fewer training images")
        if pc.zero_shot is not None:
            lines.append(f"zero-shot (all templates) on the same test images: {pc.zero_shot:.2%}")
    return "\n".join(lines)


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
    study = p.add_argument_group("evaluation study (shapes world only)")
    study.add_argument("--select-templates", action="store_true",
                       help="greedy forward selection of templates on half the images, scored on the other half")
    study.add_argument("--linear-probe", action="store_true",
                       help="few-shot linear probes trained on half the images, tested on the other half, beside zero-shot")
    study.add_argument("--task", default="shape", choices=("colour", "shape", "combo"), help="what the study classifies")
    study.add_argument("--shots", default="1,2,4,8,16", help="examples per class of the probe curve, comma-separated")
    study.add_argument("--probe-seeds", type=int, default=3, help="draws of the k examples per class")
    study.add_argument("--study-seed", type=int, default=0, help="seed of the selection/held-out split")
    study.add_argument("--multilabel", action="store_true",
                       help="also score several labels per image on scenes of 2-3 objects (mAP, per-class F1; --task "
                            "shape or colour)")
    a = p.parse_args(argv)
    want_study = a.select_templates or a.linear_probe
    try:
        templates = parse_templates(_named_or_file(a.templates, template_presets(), "template set"))
        if (want_study or a.multilabel) and a.data != "shapes":
            raise ValueError("--select-templates, --linear-probe and --multilabel work on --data shapes only for now")
        if a.multilabel and a.task not in ("shape", "colour"):
            raise ValueError("--multilabel scores --task shape or colour")
        shots = _shots(a.shots) if a.linear_probe else ()
        if a.probe_seeds < 1:
            raise ValueError(f"--probe-seeds must be at least 1, got {a.probe_seeds}")
        clip = load(a.model, device=a.device)
        t0 = time.perf_counter()
        if a.data == "shapes":
            samples = shapes_eval_set(a.n, a.seed, clip.image_size)
            results = evaluate_shapes(clip, templates=templates, samples=samples)
            if want_study:
                t1 = time.perf_counter()
                found = _study(clip, samples, templates, a, shots)
                study_seconds = round(time.perf_counter() - t1, 2)
            if a.multilabel:
                from core.multilabel import evaluate_multilabel

                multi = evaluate_multilabel(clip, a.n, a.seed, a.task, templates)
        else:
            names = (parse_classnames("\n".join(_named_or_file(a.classnames, classname_presets(), "class-name set")))
                     if a.classnames else None)
            ds = open_dataset(a.data, split=a.split)
            results = evaluate_dataset(clip, ds, names, templates, a.image_column, a.label_column, a.text_column, limit=a.n)
    except (ModelLoadError, DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    meta = {"model": a.model, "data": a.data, "n": a.n, "seed": a.seed, "templates": a.templates,
            "seconds": round(time.perf_counter() - t0, 2)}
    print(format_table(results))
    out = {"meta": meta, "results": results}
    if want_study:
        meta.update(task=a.task, study_seed=a.study_seed, shots=list(shots), probe_seeds=a.probe_seeds,
                    study_seconds=study_seconds)
        print(format_study(found))
        out["study"] = finite(found.to_dict())
    if a.multilabel and a.data == "shapes":
        f1 = multi["mean_f1"]
        print(f"\nseveral labels per image ({a.task}, {multi['n_evaluation']:,} scenes of 2-3 objects, "
              f"{multi['labels_per_image']:.2f} labels each): mAP {multi['mAP']:.1%}, mean F1 {f1:.1%} ({multi['decision']})")
        out["multilabel"] = finite(multi)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=2))
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
