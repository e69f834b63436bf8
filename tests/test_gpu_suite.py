"""The GPU suite (benchmarks/gpu_suite.sh) runs end to end on this CPU at tiny sizes, so the script is known
to work before any GPU time is spent on it: every part answers, with the rows the docs' table reads."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_suite_runs_on_the_cpu_at_tiny_sizes(tmp_path):
    out = tmp_path / "suite.json"
    done = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "--device", "cpu", "--quick", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    result = json.loads(out.read_text())
    assert result["machine"]["device"] == "cpu" and not result.get("errors")
    app = {r["endpoint"]: r for r in result["app"]}
    assert {"/zero_shot", "/evaluate", "/build_batch", "/explore_set"} <= set(app)
    assert all(r["cpu_cold_s"] > 0 and r["cpu bf16_cold_s"] > 0 for r in app.values())  # the quick run: cold only
    assert "messages" not in app["/zero_shot"]  # the example call answered (no one-line refusal)
    # every endpoint answers the same from a bf16 model as from float32: no refusal of its own, top-1 equal
    half = [r for r in app.values() if "cpu bf16" in r]
    assert all(set(r.get("messages", {})) in (set(), {"cpu", "cpu bf16"}) for r in app.values()), app
    assert len(half) >= 8 and all(r["cpu bf16"]["ok"] for r in half), [r for r in half if not r["cpu bf16"]["ok"]]
    served = {side["label"]: side["served"] for side in result["app_sides"]}
    assert any("bf16 qualifies" in line and "serving bf16" in line for line in served["cpu bf16"]), served
    precision = {(r["model"], r["precision"]): r for r in result["precision"]}
    assert len(precision) == 6 and precision[("bundled", "fp32")]["min_cosine_vs_fp32"] > 0.9999
    assert precision[("bundled", "bf16")]["min_cosine_vs_fp32"] > 0.9  # bf16 keeps the direction
    assert result["train"] and result["train"][0]["ours_samples_per_s"] > 0
    split = result["step_split"]
    assert abs(sum(v for k, v in split.items() if k.endswith("_share")) - 1) < 1e-6
    assert split["host_waits_per_step"] == 0  # core's step reads nothing from the device
    assert result["quick_demo"]["returncode"] == 0
    assert "| endpoint |" in done.stdout and "Step split" in done.stdout
