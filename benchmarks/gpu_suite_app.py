"""The GPU suite's app part (benchmarks/gpu_suite.py): apps side by side on the device and on the CPU, every
named endpoint called through gradio_client with its example inputs, each app's answers compared with the
CPU's (cosines within a tolerance, top-1 answers equal), and what each app says it serves."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


SKIP = {"/train_start", "/train_stop", "/train_status", "/train_resume", "/train_use_model", "/train_download",
        "/train_try", "/run_claim"}  # training runs and experiments: measured by the train part, not as requests
VOLATILE = ("time", "second", "elapsed", "_ms", "_s", "receipt", "device", "url", "path")


def endpoint_calls(info: dict, image: str) -> dict[str, dict]:
    """Each named endpoint's example inputs (a file example points at a local image: no network)."""
    from gradio_client import handle_file

    calls = {}
    for name, ep in info["named_endpoints"].items():
        if name in SKIP:
            continue
        args = {}
        for p in ep["parameters"]:
            value = p["parameter_default"] if p["parameter_has_default"] else p.get("example_input")
            if isinstance(value, dict) and str(value.get("path") or value.get("url") or "").startswith("http"):
                value = handle_file(image)
            args[p["parameter_name"]] = value
        calls[name] = args
    return calls


def numbers(value, path: str = "") -> dict[str, object]:
    """The cosines and top-1 answers in a JSON answer, by their key path."""
    found = {}
    if isinstance(value, dict):
        for k, v in value.items():
            found.update(numbers(v, f"{path}/{k}"))
    elif isinstance(value, list):
        for i, v in enumerate(value[:50]):
            found.update(numbers(v, f"{path}/{i}"))
    elif not any(w in path.lower() for w in VOLATILE):
        key = path.rsplit("/", 1)[-1].lower() if "/" in path else path.lower()
        parent = path.lower()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and "cos" in parent:
            found[path] = float(value)
        elif isinstance(value, str) and ("top1" in parent or "top-1" in parent or key in ("label", "predicted")):
            found[path] = value
    return found


def compare_answers(dev, cpu, tolerance: float = 1e-3) -> dict:
    """Cosines within `tolerance` and the same top-1 answers, over every JSON output of one endpoint."""
    a = {k: v for o in (dev or []) if isinstance(o, dict) for k, v in numbers(o).items()}
    b = {k: v for o in (cpu or []) if isinstance(o, dict) for k, v in numbers(o).items()}
    shared = sorted(set(a) & set(b))
    cos = [abs(a[k] - b[k]) for k in shared if isinstance(a[k], float)]
    same = [a[k] == b[k] for k in shared if isinstance(a[k], str)]
    return {"compared": len(shared), "max_cosine_diff": max(cos) if cos else None, "top1_equal": all(same),
            "ok": (not cos or max(cos) <= tolerance) and all(same)}


HALF_TOLERANCE = 2e-2  # a half-precision app's cosines against float32's (its embeddings keep cosine >= 0.99)


def app_sides(device: str) -> list[tuple[str, str, str]]:
    """(label, CLIP_LAB_DEVICE, CLIP_LAB_PRECISION) of each app; the last, the CPU in float32, is the reference.
    On CUDA: float32 (the device path, to 1e-3) and the default "auto" (bf16 where it qualifies); on a CPU
    the bf16 app, so that the smoke run serves every endpoint from a half-precision model."""
    if device == "cpu":
        return [("cpu bf16", "cpu", "bf16"), ("cpu", "cpu", "fp32")]
    return [(f"{device} fp32", device, "fp32"), (f"{device} auto", device, "auto"), ("cpu", "cpu", "fp32")]


def app_rows(device: str, q: dict, out: dict, tmp: Path) -> None:
    """The apps up side by side; every endpoint cold then warm (the quick run: cold only) on each; answers
    compared with the CPU's."""
    import urllib.request

    from gradio_client import Client

    from scripts.app_process import start_app, stop_app, wait_until_up
    from standin import test_images

    image = tmp / "star.png"
    test_images(1)[0].save(image)
    sides, apps = app_sides(device), {}
    try:
        for label, dev, precision in sides:
            slug = label.replace(" ", "-")
            env = {"CLIP_LAB_DEVICE": dev, "CLIP_LAB_PRECISION": precision, "CLIP_LAB_WARMUP": "0",
                   "HF_HUB_CACHE": os.environ["HF_HUB_CACHE"], "CLIP_LAB_CACHE_DIR": str(tmp / f"cache-{slug}"),
                   "PYTHONPATH": str(ROOT)}
            apps[label] = start_app(tmp / f"app-{slug}.log", env)
        for label, (proc, url) in apps.items():
            wait_until_up(url, proc, 240, tmp / f"app-{label.replace(' ', '-')}.log")
        with urllib.request.urlopen(apps[sides[0][0]][1] + "gradio_api/info", timeout=60) as r:
            calls = endpoint_calls(json.load(r), str(image))
        clients = {label: Client(u, verbose=False) for label, (_, u) in apps.items()}
        rows = []
        for name, args in sorted(calls.items()):
            row, answers = {"endpoint": name}, {}
            for label, client in clients.items():
                for attempt in q["attempts"]:
                    t = time.perf_counter()
                    try:
                        answers[label] = client.predict(api_name=name, **args)
                        answers[label] = answers[label] if isinstance(answers[label], (list, tuple)) else [answers[label]]
                    except Exception as e:  # an endpoint that needs an earlier step answers with its one line
                        row.setdefault("messages", {})[label] = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
                        answers[label] = None
                    row[f"{label}_{attempt}_s"] = time.perf_counter() - t
            for label, _, precision in sides[:-1]:
                if answers.get(label) is not None:
                    tolerance = 1e-3 if precision == "fp32" else HALF_TOLERANCE
                    row[label] = compare_answers(answers[label], answers["cpu"], tolerance)
            rows.append(row)
        out["app"] = rows
        out["app_sides"] = [{"label": label, "device": dev, "precision": precision,
                             "served": served_precisions(tmp / f"app-{label.replace(' ', '-')}.log")}
                            for label, dev, precision in sides]
    finally:
        for proc, _ in apps.values():
            stop_app(proc)


def served_precisions(log: Path) -> list[str]:
    """The app's log lines of core.precision's check (what each model is served in, and why)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return [line.split(" INFO ", 1)[-1].strip() for line in text.splitlines() if "probe images" in line]
