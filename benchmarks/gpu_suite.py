"""The GPU path, measured in one run: the app on the device against the app on the CPU, inference precisions,
training throughput and MFU, the step's split, and the quick-demo recipe's time to colour >= 90%.

    bash benchmarks/gpu_suite.sh                       # on a CUDA machine: at most 8 minutes, no network
    bash benchmarks/gpu_suite.sh --device cpu --quick  # the same script end to end on a CPU, tiny sizes

Parts (each writes its rows into one JSON, benchmarks/results/gpu_suite[_quick].json, then a Markdown table):
- app (gpu_suite_app.py): `python app.py` side by side: on CUDA in float32, on CUDA at the default precision ("auto",
  bf16 where core.precision's check passes) and on the CPU in float32 (on a CPU run: a bf16 app beside the
  float32 one), with the bundled model and the ViT-B/32 stand-in (benchmarks/standin.py, in a temporary HF
  cache); every named endpoint called with its example inputs through gradio_client, cold then warm, on each;
  each app's answers checked against the CPU's (every cosine within 1e-3 in float32, 2e-2 in half precision,
  every top-1 equal: the numbers under keys naming them), and each app's log line of what it serves;
- precision: fp32, bf16 and fp16 inference on the device (the model cast, not autocast): the lowest cosine
  to fp32's embeddings, top-1 agreement on the bundled model's shapes-world evaluation and on the stand-in's
  1,000-class head, images/s; a precision qualifies with cosine >= 0.99 and every top-1 the same;
- train: core's training step for the `base` (B/32) and `small` presets, bf16 autocast (fp32 on a CPU), fused
  AdamW on CUDA, with and without torch.compile: samples/s and MFU (benchmarks/train_throughput.py's `compare`);
  and the split of one step into data, forward, backward and optimizer (each phase synchronised), and how
  often a step makes the host wait for the device (CUDA's sync debug mode; 0 is the aim);
- quick-demo: scripts/train.py --recipe quick-demo on the device; seconds to colour >= 90%.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpu_suite_app  # noqa: E402  (the app part: apps side by side, every endpoint, answers compared)

QUICK = {"presets": ["tiny"], "batch": 16, "steps": 3, "repeats": 3, "standin": "tiny", "eval_images": 64,
         "demo_steps": 25, "compile": False, "attempts": ["cold"]}
FULL = {"presets": ["base", "small"], "batch": 256, "steps": 10, "repeats": 5, "standin": "base", "eval_images": 1000,
        "demo_steps": 400, "compile": True, "attempts": ["cold", "warm"]}


def precision_rows(device: str, q: dict, out: dict) -> None:
    """fp32 / bf16 / fp16 inference on the device: agreement with fp32 and speed."""
    import copy

    import torch

    from core.encode import image_features
    from core.model import load
    from core.zeroshot import build_classifier, classname_presets
    from standin import HUB_ID, test_images

    rows = []
    for name, source, classes in (("bundled", None, None), ("B/32 stand-in", HUB_ID, "imagenet1k")):
        base = load(source) if source else load()
        if classes is None:
            from core.evaluate import shapes_eval_set

            images = [s.image for s in shapes_eval_set(q["eval_images"], seed=0)]
            names = classname_presets()["shapes_world_shapes"]
        else:
            images, names = test_images(min(q["eval_images"], 256)), classname_presets()[classes]
        pixels = base.processor(images=images, return_tensors="pt")["pixel_values"]
        ref = None
        for dtype in ("fp32", "bf16", "fp16"):
            clip = copy.deepcopy(base)
            clip.model.to(device=device, dtype={"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype])
            with torch.inference_mode():
                x = pixels.to(device=device, dtype=clip.model.dtype)
                sync(device)
                t = time.perf_counter()
                img = torch.nn.functional.normalize(image_features(clip.model, x).float(), dim=-1)
                sync(device)
                seconds = time.perf_counter() - t
                head = build_classifier(clip, names, ["a photo of a {}."]).to(device).float()
            top1 = (img @ head.T).argmax(1).cpu()
            emb = img.cpu()
            if ref is None:
                ref = (emb, top1)
            cos = float((emb * ref[0]).sum(1).min())
            agree = float((top1 == ref[1]).float().mean())
            rows.append({"model": name, "precision": dtype, "images": len(images), "min_cosine_vs_fp32": cos,
                         "top1_agreement": agree, "images_per_s": len(images) / seconds,
                         "qualifies": dtype == "fp32" or (cos >= 0.99 and agree == 1.0)})
    out["precision"] = rows


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def train_rows(device: str, q: dict, out: dict) -> None:
    """core's step: samples/s and MFU with and without torch.compile, then one step's split."""
    import torch

    from train_throughput import compare

    precision = "bf16" if device.startswith("cuda") else "fp32"  # a CPU without bf16 units runs bf16 slower
    rows = []
    for preset in q["presets"]:
        for backend in (["", "inductor"] if q["compile"] else [""]):
            rows.append(compare(preset, precision, q["batch"], q["steps"], q["repeats"], torch.device(device), backend,
                                warmup=3 if backend else 1))
    out["train"] = rows
    out["step_split"] = step_split(q["presets"][0], q["batch"], q["steps"], device, precision)
    out["step_split"]["host_waits_per_step"] = host_waits(q["presets"][0], q["batch"], device, precision)


def host_waits(preset: str, batch: int, device: str, precision: str, steps: int = 2) -> float:
    """How often one of core's training steps makes the host wait for the device: on CUDA the synchronising
    calls that torch.cuda.set_sync_debug_mode reports; on a CPU (where nothing waits) every Python-level read
    of a tensor's value, each of which would be one on a GPU. The batch is in pinned memory, as the loader
    puts it on CUDA."""
    import warnings

    import torch

    from core.model import PRESETS, create
    from core.train import ShapesPairs, TextTokens, TrainConfig, TrainState, Towers, make_optimizer, train_step

    cfg = TrainConfig.from_flat(model=preset, batch_size=batch, precision=precision, device=device, lr=1e-4)
    clip = create(preset, seed=0)
    clip.model.to(device).train()
    towers = Towers(clip.model).to(device)
    state = TrainState(clip, towers, make_optimizer(towers, cfg), cfg)
    src = ShapesPairs(seed=1, hard_negatives=0.0, image_size=PRESETS[preset].image_size, tokens=TextTokens.of(clip))
    b = src.batch(0, batch)
    if device.startswith("cuda"):
        b.pixel_values = b.pixel_values.pin_memory()
    train_step(state, b, 1e-4)  # warm-up
    sync(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if device.startswith("cuda"):
            torch.cuda.set_sync_debug_mode("warn")
            try:
                for _ in range(steps):
                    train_step(state, b, 1e-4)
            finally:
                torch.cuda.set_sync_debug_mode("default")
            return sum("synchroniz" in str(w.message) for w in caught) / steps
    reads = {"n": 0}
    real = {name: getattr(torch.Tensor, name) for name in ("item", "__bool__", "__float__", "__int__", "tolist")}

    def counted(fn):
        def read(self, *a, **k):
            reads["n"] += 1
            return fn(self, *a, **k)
        return read
    try:
        for name, fn in real.items():
            setattr(torch.Tensor, name, counted(fn))
        for _ in range(steps):
            train_step(state, b, 1e-4)
    finally:
        for name, fn in real.items():
            setattr(torch.Tensor, name, fn)
    return reads["n"] / steps


def step_split(preset: str, batch: int, steps: int, device: str, precision: str = "bf16") -> dict:
    """Seconds per step of each phase, each one synchronised: data (render + copy), forward (+ loss), backward,
    optimizer (clipping included)."""
    import math

    import torch

    from core.encode import autocast_context
    from core.loss import contrastive_loss
    from core.model import PRESETS, create
    from core.train import ShapesPairs, TextTokens, TrainConfig, Towers, make_optimizer

    cfg = TrainConfig.from_flat(model=preset, batch_size=batch, precision=precision, device=device, lr=1e-4)
    clip = create(preset, seed=0)
    clip.model.to(device).train()
    towers = Towers(clip.model).to(device)
    opt = make_optimizer(towers, cfg)
    src = ShapesPairs(seed=1, hard_negatives=0.0, image_size=PRESETS[preset].image_size, tokens=TextTokens.of(clip))
    phases = {"data": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0}

    def timed(name, fn):
        sync(device)
        t = time.perf_counter()
        value = fn()
        sync(device)
        phases[name] += time.perf_counter() - t
        return value

    for i in range(steps + 1):
        if i == 1:
            phases = dict.fromkeys(phases, 0.0)  # the first step warms up
        b = timed("data", lambda: src.batch(i, batch))
        pixels, ids = timed("data", lambda: (b.pixel_values.to(device), b.input_ids.to(device)))
        mask = b.attention_mask.to(device) if b.attention_mask is not None else None

        def forward():
            with autocast_context(torch.device(device), precision):
                img, txt = towers(pixels, ids, mask)
            return contrastive_loss(img.float(), txt.float(), clip.model.logit_scale)
        opt.zero_grad(set_to_none=True)
        loss = timed("forward", forward)
        timed("backward", loss.backward)

        def step():
            torch.nn.utils.clip_grad_norm_([p for p in towers.parameters() if p.requires_grad], cfg.optim.grad_clip)
            opt.step()
            with torch.no_grad():
                clip.model.logit_scale.clamp_(0, math.log(100))
        timed("optimizer", step)
    total = sum(phases.values())
    return {"preset": preset, "batch": batch, "steps": steps, "seconds_per_step": total / steps,
            **{f"{k}_share": v / total for k, v in phases.items()}}


def quick_demo(device: str, q: dict, out: dict, tmp: Path) -> None:
    """scripts/train.py --recipe quick-demo on the device: seconds into the loop at the first colour >= 90%."""
    run = tmp / "quick-demo"
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "--recipe", "quick-demo", "--device", device,
           "--steps", str(q["demo_steps"]), "--out", str(run), "--no-progress"]
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t
    row = {"steps": q["demo_steps"], "wall_s": wall, "returncode": done.returncode}
    if done.returncode != 0:
        row["error"] = done.stderr.strip().splitlines()[-1][:300] if done.stderr.strip() else "failed"
    else:
        elapsed = {}
        for line in (run / "metrics.jsonl").read_text().splitlines():
            m = json.loads(line)
            if "elapsed_s" in m:
                elapsed[m["step"]] = m["elapsed_s"]
            if "eval" in m and m["eval"].get("colour", 0) >= 0.9 and "colour_90_step" not in row:
                row["colour_90_step"] = m["step"]
        if "colour_90_step" in row:
            row["colour_90_s"] = elapsed.get(row["colour_90_step"])
    out["quick_demo"] = row


def machine(device: str) -> dict:
    import torch
    import transformers

    info = {"device": device, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}
    if device.startswith("cuda"):
        info.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                    gpu_memory_gib=torch.cuda.get_device_properties(0).total_memory / 2**30)
    return info


def percent(value) -> str:
    return "—" if value is None else f"{value:.1%}"


def table(out: dict) -> str:
    lines = [f"Machine: {out['machine'].get('gpu', out['machine']['device'])}, torch {out['machine']['torch']}", ""]
    if "app" in out:
        labels = [side["label"] for side in out.get("app_sides", [])]
        checked = labels[:-1]
        lines += ["| endpoint | " + " | ".join(f"{x} cold s | {x} warm s" for x in labels) + " | "
                  + " | ".join(f"{x} vs cpu" for x in checked) + " |", "|---" * (1 + 2 * len(labels) + len(checked)) + "|"]
        for r in out["app"]:
            times = " | ".join(f"{r.get(f'{x}_cold_s', 0):.2f} | " + (f"{r[f'{x}_warm_s']:.2f}" if f"{x}_warm_s" in r else "—")
                               for x in labels)
            checks = " | ".join(r.get("messages", {}).get(x, "")[:60] or (f"{'same' if r[x]['ok'] else 'DIFFER'} ({r[x]['compared']} "
                                f"numbers, max cos diff {r[x]['max_cosine_diff'] or 0:.1e})" if x in r else "—")
                                for x in checked)
            lines.append(f"| {r['endpoint']} | {times} | {checks} |")
        lines += [""] + [f"- {side['label']}: {line}" for side in out.get("app_sides", []) for line in side["served"]] + [""]
    if "precision" in out:
        lines += ["| model | precision | min cosine vs fp32 | top-1 agreement | images/s | qualifies |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['precision']} | {r['min_cosine_vs_fp32']:.4f} | {r['top1_agreement']:.1%} | "
                  f"{r['images_per_s']:,.0f} | {'yes' if r['qualifies'] else 'no'} |" for r in out["precision"]]
        lines.append("")
    if "train" in out:
        lines += ["| preset | precision | batch | compile | samples/s | vs open_clip-style | MFU |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['preset']} | {r['precision']} | {r['batch']} | {r['compile']} | {r['ours_samples_per_s']:,.0f} | "
                  f"{r['median_ratio_ours_over_reference']:.2f}× | {percent(r.get('mfu'))} |" for r in out["train"]]
        s = out["step_split"]
        lines += ["", f"Step split ({s['preset']}, batch {s['batch']}, {s['seconds_per_step'] * 1000:.0f} ms a step): "
                  + ", ".join(f"{k[:-6]} {v:.0%}" for k, v in s.items() if k.endswith("_share"))
                  + f"; the host waits for the device {s.get('host_waits_per_step', '—')} times a step", ""]
    if "quick_demo" in out:
        d = out["quick_demo"]
        lines.append(f"quick-demo ({d['steps']} steps): colour >= 90% at step {d.get('colour_90_step', '—')}, "
                     f"{d.get('colour_90_s') or '—'} s into the loop; the run took {d['wall_s']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes (the CPU smoke run)")
    p.add_argument("--parts", default="app,precision,train,quick_demo", help="comma-separated parts to run")
    p.add_argument("--json", default=None, help="where to write the JSON (default benchmarks/results/gpu_suite[_quick].json)")
    a = p.parse_args(argv)
    q = QUICK if a.quick else FULL
    tmp = Path(tempfile.mkdtemp(prefix="clip-lab-gpu-suite-"))
    hub = tmp / "hf-cache"
    os.environ["HF_HUB_CACHE"] = str(hub)
    os.environ["HF_HUB_OFFLINE"] = "1"
    from standin import build_standin

    build_standin(hub, q["standin"])
    out: dict = {"machine": machine(a.device), "quick": a.quick, "sizes": q}
    parts = [x.strip() for x in a.parts.split(",") if x.strip()]
    path = Path(a.json) if a.json else ROOT / "benchmarks" / "results" / f"gpu_suite{'_quick' if a.quick else ''}.json"
    for part in parts:
        t = time.perf_counter()
        try:
            {"app": lambda: gpu_suite_app.app_rows(a.device, q, out, tmp), "precision": lambda: precision_rows(a.device, q, out),
             "train": lambda: train_rows(a.device, q, out), "quick_demo": lambda: quick_demo(a.device, q, out, tmp)}[part]()
        except Exception as e:  # one part's failure is reported, the others still run
            out.setdefault("errors", {})[part] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        out.setdefault("part_seconds", {})[part] = time.perf_counter() - t
        print(f"{part}: {out['part_seconds'][part]:.0f} s", file=sys.stderr, flush=True)
        path.write_text(json.dumps(out, indent=1, default=str))  # after each part: a run cut by the time limit keeps its parts
    print(table(out))
    return 1 if out.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
