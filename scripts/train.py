"""Train or fine-tune a CLIP model with core's training loop.

From scratch on the shapes world (this is how the bundled model is made):
    python scripts/train.py --model tiny --steps 2800 --out runs/shapes-tiny

Fine-tune a Hub or local model on an image folder with a caption column:
    python scripts/train.py --model openai/clip-vit-base-patch32 --data ./my_images --text-column caption \
        --lr 1e-5 --lock-image --steps 500 --out runs/finetune

Resume after a crash or a kill: the same command plus --resume.

Several GPUs (or CPU processes with gloo): torchrun --nproc_per_node 4 scripts/train.py ... ;
--batch-size is the global batch, split evenly over the processes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.data import DataError  # noqa: E402
from core.model import ModelLoadError  # noqa: E402
from core.train import NonFiniteLossError, TrainConfig, train  # noqa: E402
from core.zeroshot import template_presets  # noqa: E402


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, bool]:
    defaults = TrainConfig(output_dir="")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run directory: checkpoints, metrics.jsonl, model/")
    p.add_argument("--model", default=defaults.model, help="preset (tiny, small, base) or a model to fine-tune: bundled name, local dir or Hub id")
    p.add_argument("--data", default=defaults.data, help="'shapes', an image folder, a save_to_disk dir, or a Hub dataset name")
    p.add_argument("--image-column", default=defaults.image_column)
    p.add_argument("--text-column", default=defaults.text_column)
    p.add_argument("--split", default=defaults.split)
    p.add_argument("--streaming", action="store_true", help="stream a Hub dataset instead of downloading it whole")
    p.add_argument("--hard-negatives", type=float, default=defaults.hard_negatives,
                   help="shapes data: share of each batch made of same-colour groups holding every shape")
    p.add_argument("--curriculum-steps", type=int, default=defaults.curriculum_steps,
                   help="shapes data: single objects start centred and may sit anywhere after this many steps (0: off)")
    p.add_argument("--group-loss", type=float, default=defaults.group_loss,
                   help="shapes data: weight of an extra contrastive loss inside each hard-negative group (0: off)")
    p.add_argument("--init-logit-scale", type=float, default=defaults.init_logit_scale,
                   help="from scratch: the logit scale exp(t) at step 0, still learned and clamped at 100 (0: the paper's 1/0.07)")
    p.add_argument("--steps", type=int, default=defaults.steps)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    p.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps)
    p.add_argument("--grad-clip", type=float, default=defaults.grad_clip)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--device", default=defaults.device, help="cpu, cuda, cuda:1, ...")
    p.add_argument("--precision", choices=["fp32", "bf16"], default=defaults.precision)
    p.add_argument("--loss", choices=["clip", "siglip"], default=defaults.loss,
                   help="clip: softmax InfoNCE (the paper); siglip: pairwise sigmoid with a learnable bias")
    p.add_argument("--local-loss", action="store_true",
                   help="under torchrun: each rank scores its own rows against all columns (O(n) memory per rank)")
    p.add_argument("--accum-freq", type=int, default=defaults.accum_freq,
                   help="split each batch into this many chunks; gradients stay exact for the whole batch (two passes)")
    p.add_argument("--grad-checkpointing", action="store_true", help="recompute activations in backward to save memory")
    p.add_argument("--compile", nargs="?", const="inductor", default=defaults.compile, metavar="BACKEND",
                   help="torch.compile the towers (default backend: inductor)")
    p.add_argument("--patch-dropout", type=float, default=defaults.patch_dropout,
                   help="FLIP: share of image patches dropped while training (0: off)")
    p.add_argument("--lock-image", action="store_true", help="freeze the image tower (LiT)")
    p.add_argument("--lock-text", action="store_true", help="freeze the text tower")
    p.add_argument("--eval-every", type=int, default=defaults.eval_every, help="steps between zero-shot evals (shapes data); 0 disables")
    p.add_argument("--eval-samples", type=int, default=defaults.eval_samples)
    p.add_argument("--eval-templates", default=defaults.eval_templates, choices=sorted(template_presets()),
                   help="template preset of the in-run zero-shot eval (default: %(default)s)")
    p.add_argument("--save-every", type=int, default=defaults.save_every)
    p.add_argument("--keep-checkpoints", type=int, default=defaults.keep_checkpoints)
    p.add_argument("--log-every", type=int, default=defaults.log_every)
    p.add_argument("--num-workers", type=int, default=defaults.num_workers)
    p.add_argument("--worker-nice", type=int, default=defaults.worker_nice,
                   help="lower the data workers' CPU priority by this much so that they yield to the trainer (0: off)")
    p.add_argument("--threads", type=int, default=defaults.threads, help="torch CPU threads (0: torch's default)")
    p.add_argument("--save-dtype", choices=["float32", "float16", "bfloat16"], default=defaults.save_dtype,
                   help="dtype of the exported model/ (float16 halves its size)")
    p.add_argument("--export", dest="export_dir", default="", help="write the final model here instead of --out/model")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--resume", action="store_true", help="continue from the latest complete checkpoint in --out")
    a = p.parse_args(argv)
    if a.init_logit_scale and not 1.0 <= a.init_logit_scale <= 100.0:
        p.error("--init-logit-scale must lie in [1, 100] (0 keeps the paper's 1/0.07)")
    if a.accum_freq < 1:
        p.error("--accum-freq must be >= 1")
    if not 0.0 <= a.patch_dropout < 1.0:
        p.error("--patch-dropout must lie in [0, 1)")
    if a.steps < 1 or a.batch_size < 2:
        p.error("--steps must be >= 1 and --batch-size >= 2 (a contrastive batch needs negatives)")
    cfg = TrainConfig(output_dir=a.out, progress=not a.no_progress,
                      **{f.name: getattr(a, f.name) for f in dataclasses.fields(TrainConfig)
                         if f.name not in ("output_dir", "progress") and hasattr(a, f.name)})
    return cfg, a.resume


def main(argv: list[str] | None = None) -> int:
    cfg, resume = parse_args(argv)
    try:
        train(cfg, resume=resume)
    except (ModelLoadError, DataError, NonFiniteLossError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if os.environ.get("RANK", "0") == "0":
        print(f"done: model saved to {cfg.export_dir or Path(cfg.output_dir) / 'model'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
