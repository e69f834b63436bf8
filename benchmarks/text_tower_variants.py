"""int8 dynamic quantization and ONNX Runtime for the text tower, against fp32: part of
benchmarks/space_latency.py."""

from __future__ import annotations

import copy
import statistics
import sys
import time
import types
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling modules: standin, text_tower_variants
HUB_ID = "openai/clip-vit-base-patch32"

from standin import lines, seconds, test_images  # noqa: E402


# ---------------------------------------------------------------- int8 and ONNX Runtime


@contextmanager
def text_tower(model, text_model, text_projection):
    """Swap a text tower into a CLIPModel for the duration (core's encode_texts then runs it)."""
    saved = model.text_model, model.text_projection
    model.text_model, model.text_projection = text_model, text_projection
    try:
        yield
    finally:
        model.text_model, model.text_projection = saved


def int8_tower(model):
    """(text_model, text_projection) with every Linear dynamically quantized to int8 (copies)."""
    holder = torch.nn.ModuleDict({"t": copy.deepcopy(model.text_model), "p": copy.deepcopy(model.text_projection)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.ao.quantization.quantize_dynamic(holder, {torch.nn.Linear}, dtype=torch.qint8)
    return q["t"], q["p"]


class OrtTextModel(torch.nn.Module):
    """The exported text tower (text model + projection) run by onnxruntime, shaped as CLIPTextModel's output."""

    def __init__(self, session):
        super().__init__()
        self.session = session

    def forward(self, input_ids, attention_mask=None):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        emb = self.session.run(None, {"input_ids": input_ids.cpu().numpy(), "attention_mask": attention_mask.cpu().numpy()})[0]
        return types.SimpleNamespace(pooler_output=torch.from_numpy(emb))


def onnx_tower(model, path: Path):
    """(OrtTextModel, Identity) for model's text tower exported to path, or None if onnxruntime is missing."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    from core.encode import text_features

    class Tower(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return text_features(self.m, input_ids, attention_mask)

    ids = torch.tensor([[49406, 320, 1125, 539, 320, 2368, 269, 49407]] * 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Tower(model).eval(), (ids, torch.ones_like(ids)), str(path), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "length"},
                                        "embedding": {0: "batch"}})
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return OrtTextModel(session), torch.nn.Identity()


def variant_rows(clip, tmp: Path, q: dict, out: dict) -> None:
    """int8 dynamic quantization and ONNX Runtime for the text tower: speed vs fp32 and agreement."""
    import core
    from core.encode import encode_images, encode_texts
    from core.evaluate import shapes_eval_set
    from core.shapes import colour_classnames, combo_classnames, shape_classnames
    from core.zeroshot import build_classifier

    names = lines("classnames", "ImageNet-1k")[: q["classes"]]
    prompts = [f"a photo of a {names[i * len(names) // q['variant_prompts']]}." for i in range(q["variant_prompts"])]
    variants = {"int8": int8_tower(clip.model)}
    export_t = time.perf_counter()
    ort_tower = onnx_tower(clip.model, tmp / "text.onnx")
    if ort_tower is not None:
        variants["onnxruntime"] = ort_tower
        out["onnx_export_s"] = time.perf_counter() - export_t
    out["onnxruntime"] = None if ort_tower is None else __import__("onnxruntime").__version__

    def run(name, fn):
        if name == "fp32":
            return fn()
        with text_tower(clip.model, *variants[name]):
            return fn()

    sides = ["fp32", *variants]
    ref = encode_texts(clip, prompts)
    emb = {n: run(n, lambda: encode_texts(clip, prompts)) for n in sides}  # also the warm-up
    times = {n: [] for n in sides}
    for r in range(q["repeats"]):
        order = sides[r % len(sides):] + sides[: r % len(sides)]
        for n in order:
            times[n].append(seconds(lambda n=n: run(n, lambda: encode_texts(clip, prompts))))
    # the stand-in's 1,000-class head (one template) over some images: same top-1?
    images = test_images(q["agree_images"], seed=7)
    img = encode_images(clip, images)
    heads = {n: run(n, lambda: build_classifier(clip, names, ["a photo of a {}."])) for n in sides}
    top1 = {n: (img @ heads[n].T).argmax(1) for n in sides}
    # the bundled (trained) model: shapes-world evaluation, predictions per image
    tiny = core.load("shapes-tiny")
    tiny_variants = {"int8": int8_tower(tiny.model)}
    if ort_tower is not None:
        tiny_variants["onnxruntime"] = onnx_tower(tiny.model, tmp / "tiny_text.onnx")
    samples = shapes_eval_set(q["eval_n"])
    tiny_img = encode_images(tiny, [s.image.convert("RGB") for s in samples])
    tasks = {"colour": colour_classnames(), "shape": shape_classnames(), "combo": combo_classnames()}
    truth = {"colour": [f"{s.labels['colour']} shape" for s in samples], "shape": [s.labels["shape"] for s in samples],
             "combo": [s.labels["combo"] for s in samples]}
    tiny_pred = {}
    for n in sides:
        def predict():
            return {t: (tiny_img @ build_classifier(tiny, list(c), ["a photo of a {}."]).T).argmax(1) for t, c in tasks.items()}
        if n == "fp32":
            tiny_pred[n] = predict()
        else:
            with text_tower(tiny.model, *tiny_variants[n]):
                tiny_pred[n] = predict()
    rows = {}
    for n in sides:
        acc = {t: float(np.mean([list(tasks[t])[int(k)] == y for k, y in zip(tiny_pred[n][t], truth[t])])) for t in tasks}
        rows[n] = {
            "texts_per_s": len(prompts) / statistics.median(times[n]), "seconds": statistics.median(times[n]),
            "samples_s": times[n],
            "speedup_vs_fp32": statistics.median([a / b for a, b in zip(times["fp32"], times[n])]),
            "min_cosine_vs_fp32": float(torch.nn.functional.cosine_similarity(emb[n], ref).min()),
            "standin_head_same_top1": float((top1[n] == top1["fp32"]).float().mean()),
            "bundled_eval_top1": acc,
            "bundled_eval_same_prediction": {t: float((tiny_pred[n][t] == tiny_pred["fp32"][t]).float().mean()) for t in tasks},
        }
        rows[n]["qualifies"] = (n != "fp32" and rows[n]["speedup_vs_fp32"] > 1.05 and rows[n]["min_cosine_vs_fp32"] >= 0.99
                                and rows[n]["standin_head_same_top1"] == 1.0
                                and all(v == 1.0 for v in rows[n]["bundled_eval_same_prediction"].values()))
    out["text_variants"] = {"prompts": len(prompts), "agree_images": len(images), "eval_n": len(samples), "rows": rows,
                            "qualifies_means": "faster than fp32 by > 5%, lowest cosine >= 0.99, same top-1 on every "
                                               "stand-in image and on every bundled-eval image"}
    for n, r in rows.items():
        print(f"text {n}: {r['texts_per_s']:.0f} texts/s ({r['speedup_vs_fp32']:.2f}x), cos {r['min_cosine_vs_fp32']:.5f}, "
              f"top-1 same {r['standin_head_same_top1']:.0%}, bundled same {r['bundled_eval_same_prediction']}", flush=True)
