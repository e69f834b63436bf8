"""Training throughput: core's train_step against an open_clip-style reference step, side by side.

    python benchmarks/train_throughput.py                                    # CPU: tiny and small, fp32 and bf16
    python benchmarks/train_throughput.py --device cuda --presets base --precisions bf16 --compile inductor \\
        --batch-size 256 --max-batch --json benchmarks/results/train_throughput_gpu.json

Both sides train the same preset from the same initial weights on the same pre-rendered shapes-world
batches, with the same AdamW, autocast and gradient clipping. Data loading is left out of this
comparison (it is measured by `--loader-steps`, below). For each repeat the two sides run `--steps`
steps each, in alternating order; the table gives the median samples/s of each and the median of the
per-repeat ratios (ours / reference; above 1 means core is faster).

The reference is a re-implementation of open_clip's training step (open_clip cannot be imported
here: it needs torchvision). It does what open_clip's `train_one_epoch` + `ClipLoss` do for one
process: captions tokenized ahead of time and padded to the context length (77 for `base`), as
open_clip's tokenizer does in its data loader; `model.get_image_features` / `get_text_features`,
L2-normalised; logits = exp(t) * I @ T^T and its transpose; cross-entropy over both, averaged;
backward; clip_grad_norm; AdamW step; logit scale clamped to ln 100; no attention mask (open_clip's text
tower is causal and masks nothing else) and no read of the loss on the host (open_clip reads it only on
logging steps). Core's captions are tokenized
ahead too, as its data workers do (to the longest caption of the batch), so neither side's time
includes tokenizing (results measured before that move timed core's step with it).

On CUDA the script also reports model FLOPs utilisation (MFU: FLOPs of one step counted by
torch.utils.flop_counter, divided by step time and the GPU's dense bf16 peak), peak memory, and with
`--max-batch` the largest batch (powers of two) that fits. `--loader-steps N` runs core.train.train
for N steps with its real data workers and reports samples/s, the share of time spent waiting on
data, and the peak RSS of that process.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.encode import autocast_context  # noqa: E402
from core.model import PRESETS, create  # noqa: E402
from core.train import (Batch, ShapesPairs, TextTokens, Towers, TrainConfig, TrainState, make_optimizer,  # noqa: E402
                        train_step, wrap_towers)

# Dense bf16 tensor-core peaks (FLOP/s), from the vendors' data sheets.
PEAK_BF16 = {"H100 80GB HBM3": 989.4e12, "H100 SXM": 989.4e12, "H100 PCIe": 756.0e12, "H100 NVL": 835.0e12,
             "H200": 989.4e12, "A100": 312.0e12, "L4": 121.0e12, "A10G": 70.0e12, "T4": 65.0e12}


def peak_flops(device: torch.device) -> float | None:
    """The GPU's dense bf16 peak, matched on its name; None on CPU or for an unknown GPU."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in sorted(PEAK_BF16.items(), key=lambda kv: -len(kv[0])):
        if key in name:
            return value
    return None


def make_batches(preset: str, batch: int, n: int, device: torch.device, tokens: TextTokens) -> list[Batch]:
    """n shapes-world batches [batch, 3, S, S] with captions and token ids (the trainer's data
    workers tokenize), rendered once, pixels on the device."""
    src = ShapesPairs(seed=1, hard_negatives=0.0, image_size=PRESETS[preset].image_size, tokens=tokens)
    out = []
    for i in range(n):
        b = src.batch(i, batch)
        b.pixel_values = b.pixel_values.to(device)
        out.append(b)
    return out


class ReferenceStep:
    """open_clip's training step for one process (see the module docstring), on a CLIPModel."""

    def __init__(self, clip, cfg: TrainConfig):
        self.clip, self.cfg, self.model = clip, cfg, clip.model
        self.opt = make_optimizer(self.model, cfg)
        self.device = clip.device

    def tokens(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Done in open_clip's data loader, so outside the timed step: padded to the context length."""
        t = self.clip.tokenizer(captions, padding="max_length", truncation=True,
                                max_length=self.clip.context_length, return_tensors="pt")
        return t["input_ids"].to(self.device), t["attention_mask"].to(self.device)

    def __call__(self, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=True)
        with autocast_context(self.device, self.cfg.runtime.precision):
            img = F.normalize(_features(self.model.get_image_features(pixel_values=pixels)), dim=-1)
            txt = F.normalize(_features(self.model.get_text_features(input_ids=ids)), dim=-1)  # causal: no mask
            scale = self.model.logit_scale.exp()
            logits_per_image = scale * img @ txt.T
            logits_per_text = scale * txt @ img.T
            labels = torch.arange(img.shape[0], device=self.device)
            loss = (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.opt.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, math.log(100))
        return loss.detach()


def _features(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output  # transformers 5 may return an output object


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_flops(clip, cfg: TrainConfig, batch: Batch) -> float:
    """FLOPs of one of core's training steps (forward + backward), counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    probe = copy.deepcopy(clip)
    towers = Towers(probe.model)
    state = TrainState(probe, towers, make_optimizer(towers, cfg), cfg)
    with FlopCounterMode(display=False) as counter:
        train_step(state, batch, cfg.optim.lr)
    return float(counter.get_total_flops())


def compare(preset: str, precision: str, batch: int, steps: int, repeats: int, device: torch.device,
            compile_backend: str, warmup: int) -> dict:
    """Ours vs reference on one preset and precision: alternating repeats, median samples/s and ratio."""
    cfg = TrainConfig.from_flat(model=preset, batch_size=batch, precision=precision, device=str(device),
                                compile=compile_backend, lr=1e-4)
    ours = create(preset, seed=0)
    ours.model.to(device).train()
    ref = copy.deepcopy(ours)
    towers = Towers(ours.model).to(device)
    runner = wrap_towers(towers, cfg)
    state = TrainState(ours, towers, make_optimizer(towers, cfg), cfg, runner=runner)
    reference = ReferenceStep(ref, cfg)
    batches = make_batches(preset, batch, max(steps, 2), device, TextTokens.of(ours))
    ref_tokens = [reference.tokens(b.captions) for b in batches]

    def run_ours(n: int) -> float:
        _sync(device)
        t = time.perf_counter()
        for i in range(n):
            train_step(state, batches[i % len(batches)], cfg.optim.lr)
        _sync(device)
        return time.perf_counter() - t

    def run_ref(n: int) -> float:
        _sync(device)
        t = time.perf_counter()
        for i in range(n):
            pixels = batches[i % len(batches)].pixel_values
            reference(pixels, *ref_tokens[i % len(batches)])
        _sync(device)
        return time.perf_counter() - t

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    run_ours(warmup)  # compile, allocator and thread-pool warm-up
    run_ref(warmup)
    t_ours, t_ref, ratios = [], [], []
    for r in range(repeats):
        first_ours = r % 2 == 0
        a = run_ours(steps) if first_ours else None
        b = run_ref(steps)
        a = a if a is not None else run_ours(steps)
        t_ours.append(a), t_ref.append(b), ratios.append(b / a)
    row = {"preset": preset, "precision": precision, "batch": batch, "compile": compile_backend or "off",
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "steps_per_repeat": steps, "repeats": repeats,
           "ours_samples_per_s": batch * steps / statistics.median(t_ours),
           "reference_samples_per_s": batch * steps / statistics.median(t_ref),
           "median_ratio_ours_over_reference": statistics.median(ratios)}
    if device.type == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        peak = peak_flops(device)
        flops = step_flops(ours, cfg.replace(compile=""), batches[0])  # count eagerly
        row["flops_per_step"] = flops
        if peak:
            row["mfu"] = flops * row["ours_samples_per_s"] / batch / peak
            row["reference_mfu"] = flops * row["reference_samples_per_s"] / batch / peak
    return row


def largest_batch(preset: str, precision: str, device: torch.device, start: int, grad_checkpointing: bool) -> dict:
    """Double the batch until a training step runs out of GPU memory; report the last that fit."""
    from core.train import enable_checkpointing

    fits, b = 0, start
    peak = 0.0
    while b <= 65536:
        try:
            clip = create(preset, seed=0)
            clip.model.to(device).train()
            if grad_checkpointing:
                enable_checkpointing(clip.model)
            cfg = TrainConfig.from_flat(model=preset, batch_size=b, precision=precision, device=str(device))
            towers = Towers(clip.model)
            opt = make_optimizer(towers, cfg)
            state = TrainState(clip, towers, opt, cfg)
            s = PRESETS[preset].image_size
            pixels = torch.randn(b, 3, s, s, device=device)
            captions = ["a small red star in the top left and a big blue circle"] * b
            batch = Batch(pixels, captions).tokenized(TextTokens.of(clip))
            torch.cuda.reset_peak_memory_stats(device)
            for _ in range(2):
                train_step(state, batch, 1e-4)
            torch.cuda.synchronize()
            fits, peak = b, torch.cuda.max_memory_allocated(device) / 2**30
            b *= 2
        except torch.OutOfMemoryError:
            break
        finally:
            clip = opt = pixels = state = towers = batch = None
            torch.cuda.empty_cache()
    return {"preset": preset, "precision": precision, "grad_checkpointing": grad_checkpointing,
            "largest_batch": fits, "peak_memory_gib_at_largest": peak,
            "total_memory_gib": torch.cuda.get_device_properties(device).total_memory / 2**30}


def bare_towers(preset: str, batch: int, device: torch.device, compile_backend: str, steps: int, repeats: int,
                profile: bool) -> dict:
    """The ceiling of any training step: the two towers' forward + backward alone (bf16 autocast, no
    tokenizer, loss, optimizer or host sync inside the loop), timed and counted the same way."""
    from torch.utils.flop_counter import FlopCounterMode

    clip = create(preset, seed=0)
    clip.model.to(device).train()
    towers = Towers(clip.model).to(device)
    runner = torch.compile(towers, backend=compile_backend) if compile_backend else towers
    s = PRESETS[preset].image_size
    pixels = torch.randn(batch, 3, s, s, device=device)
    t = clip.tokenizer(["a small red star in the top left and a big blue circle"] * batch, return_tensors="pt")
    ids, mask = t["input_ids"].to(device), t["attention_mask"].to(device)

    def one() -> None:
        with autocast_context(device, "bf16"):
            img, txt = runner(pixels, ids, mask)
        (img.float().sum() + txt.float().sum()).backward()

    with FlopCounterMode(display=False) as counter:
        with autocast_context(device, "bf16"):
            img, txt = towers(pixels, ids, mask)
        (img.float().sum() + txt.float().sum()).backward()
    flops = float(counter.get_total_flops())
    for _ in range(3):
        one()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            one()
        _sync(device)
        times.append((time.perf_counter() - t0) / steps)
    row = {"preset": preset, "batch": batch, "compile": compile_backend or "off", "text_tokens": ids.shape[1],
           "step_s": statistics.median(times), "flops_per_step": flops}
    peak = peak_flops(device)
    if peak:
        row["mfu"] = flops / row["step_s"] / peak
    if profile:
        from torch.profiler import ProfilerActivity, profile as prof
        with prof(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
            one()
            _sync(device)
        print(p.key_averages().table(sort_by="cuda_time_total", row_limit=15, max_name_column_width=60))
    return row


def loader_run(preset: str, precision: str, batch: int, steps: int, workers: int, device: str) -> dict:
    """core.train.train for `steps` steps with real shapes-world workers, in a child process."""
    with tempfile.TemporaryDirectory() as out:
        code = (
            "import json, resource, sys; sys.path.insert(0, '.');"
            "from core.train import TrainConfig, train;"
            f"cfg = TrainConfig.from_flat(output_dir={out!r}, model={preset!r}, steps={steps}, batch_size={batch}, "
            f"precision={precision!r}, device={device!r}, num_workers={workers}, eval_every=0, save_every=0, "
            f"log_every={max(1, steps // 4)}, progress=False, export_dir={out + '/model'!r});"
            "train(cfg);"
            "print('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
        )
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             cwd=str(Path(__file__).resolve().parents[1]))
        if res.returncode:
            raise RuntimeError(res.stderr[-2000:])
        rss_kib = int(res.stdout.split("RSS")[-1].split()[0])
        logs = [json.loads(line) for line in Path(out, "metrics.jsonl").read_text().splitlines()]
    first, last = logs[0], logs[-1]  # steady state: from the first log line (past the workers' start-up) to the end
    span = last["elapsed_s"] - first["elapsed_s"]
    waited = last["data_wait_share"] * last["elapsed_s"] - first["data_wait_share"] * first["elapsed_s"]
    return {"preset": preset, "precision": precision, "batch": batch, "steps": steps, "workers": workers,
            "samples_per_s_whole_run": last["samples_per_s"], "data_wait_share_whole_run": last["data_wait_share"],
            "samples_per_s_steady": (last["step"] - first["step"]) * batch / span,
            "data_wait_share_steady": waited / span, "peak_rss_mib_trainer": rss_kib / 1024}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--presets", nargs="+", default=["tiny", "small"], choices=list(PRESETS))
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=3, help="steps per side per repeat")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--compile", nargs="?", const="inductor", default="", help="also time core's step torch.compile'd")
    p.add_argument("--max-batch", action="store_true", help="CUDA: find the largest batch that fits")
    p.add_argument("--loader-steps", type=int, default=0, help="also run core.train.train for this many steps with real data")
    p.add_argument("--loader-workers", type=int, default=1)
    p.add_argument("--loader-only", action="store_true", help="run only the real-data loader measurement")
    p.add_argument("--bare", nargs="*", type=int, default=None,
                   help="CUDA: also time the towers' forward + backward alone at these batch sizes (the MFU ceiling)")
    p.add_argument("--profile", action="store_true", help="with --bare: print the top CUDA kernels")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    device = torch.device(a.device)
    rows, extra = [], {"max_batch": [], "loader": [], "bare": []}
    for preset in a.presets if a.bare else []:
        for b in a.bare:
            for backend in [""] + ([a.compile] if a.compile else []):
                extra["bare"].append(bare_towers(preset, b, device, backend, a.steps or 5, a.repeats, a.profile))
                print(json.dumps(extra["bare"][-1]), flush=True)
    if a.bare and not a.steps:  # the ceiling alone
        if a.json:
            a.json.parent.mkdir(parents=True, exist_ok=True)
            a.json.write_text(json.dumps(extra, indent=2))
        return 0
    for preset in a.presets:
        for precision in a.precisions:
            for backend in ([""] + ([a.compile] if a.compile else [])) if not a.loader_only else []:
                row = compare(preset, precision, a.batch_size, a.steps, a.repeats, device, backend, a.warmup)
                rows.append(row)
                print(json.dumps(row), flush=True)
            if a.max_batch and device.type == "cuda":
                for gc in (False, True):
                    extra["max_batch"].append(largest_batch(preset, precision, device, a.batch_size, gc))
                    print(json.dumps(extra["max_batch"][-1]), flush=True)
            if a.loader_steps and precision == a.precisions[0]:  # the loader is the same at either precision
                extra["loader"].append(loader_run(preset, precision, a.batch_size, a.loader_steps, a.loader_workers, a.device))
                print(json.dumps(extra["loader"][-1]), flush=True)
    print(f"\n{'preset':<6} {'prec':<5} {'compile':<9} {'batch':>5} {'ours/s':>9} {'ref/s':>9} {'ratio':>6} {'MFU':>6}")
    for r in rows:
        mfu = f"{r['mfu']:.1%}" if "mfu" in r else "-"
        print(f"{r['preset']:<6} {r['precision']:<5} {r['compile']:<9} {r['batch']:>5} {r['ours_samples_per_s']:>9.1f} "
              f"{r['reference_samples_per_s']:>9.1f} {r['median_ratio_ours_over_reference']:>6.2f} {mfu:>6}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"rows": rows, **extra}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
