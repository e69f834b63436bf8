"""Embed a source once into an embedding set on disk (core/embedding_set.py), for the map to open many times.

    python scripts/embed.py --source shapes --rows 100000 --out sets/shapes-100k                # the bundled model
    python scripts/embed.py --model openai/clip-vit-base-patch32 --source ./my_images --out sets/mine
    python scripts/embed.py --source user/some-dataset --split train --caption-column caption --out sets/hub
    torchrun --nproc-per-node 8 scripts/embed.py --device cuda --source ... --out ...        # shards, then merges

A folder of images (with captions in a metadata.csv `text` column where present), a `datasets` folder or
a Hub name. The set is written chunk by chunk: after an interruption, the same command resumes it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.data import DataError, SourceUnavailable  # noqa: E402
from core.embedding_set import EmbedSource, SetError, embed_chunks, merge_parts  # noqa: E402
from core.model import DEFAULT_MODEL, ModelLoadError, load  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help="a bundled name, a local folder or a Hub id (default: %(default)s)")
    p.add_argument("--source", default="shapes", help="'shapes' (the synthetic world), an image or datasets folder, or a Hub dataset")
    p.add_argument("--split", default="train", help="the split (default: %(default)s)")
    p.add_argument("--rows", "--n", dest="n", type=int, default=None,
                   help="rows to embed (the shapes world needs it; default: all of a dataset). Under torchrun write "
                        "--rows: torchrun reads --n as an abbreviation of its own options")
    p.add_argument("--seed", type=int, default=0, help="the shapes world's seed (default: %(default)s)")
    p.add_argument("--image-column", default="image")
    p.add_argument("--caption-column", default="text", help="captions, where the source has them (default: %(default)s)")
    p.add_argument("--label-column", default="label")
    p.add_argument("--out", required=True, help="the set's folder (created; an unfinished one is resumed)")
    p.add_argument("--chunk-rows", type=int, default=2048, help="rows per chunk: the unit of resuming (default: %(default)s)")
    p.add_argument("--thumb-px", type=int, default=64, help="thumbnail side in pixels (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="cpu", help="cpu or cuda (under torchrun: one GPU per process)")
    return p.parse_args(argv)


def check(a: argparse.Namespace) -> None:
    if a.n is not None and not 1 <= a.n <= 10_000_000:
        raise ValueError(f"--rows must be between 1 and 10,000,000, got {a.n}")
    if not 16 <= a.chunk_rows <= 65_536:
        raise ValueError(f"--chunk-rows must be between 16 and 65,536, got {a.chunk_rows}")
    if not 16 <= a.thumb_px <= 256:
        raise ValueError(f"--thumb-px must be between 16 and 256, got {a.thumb_px}")


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    try:
        check(a)
        from core.train.distributed import init_from_env

        info, device = init_from_env(a.device)
        src = EmbedSource("shapes" if a.source == "shapes" else "dataset", a.source, a.split, a.n, a.seed,
                          a.image_column, a.caption_column, a.label_column)
        clip = load(a.model, device=device)
        start, shown = time.monotonic(), [0.0]

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if info.rank == 0 and (now - shown[0] > 2 or done == total):
                shown[0] = now
                rate = done / max(now - start, 1e-9)
                print(f"\r{done:,}/{total:,} rows on this rank ({rate:,.0f} rows/s)", end="", file=sys.stderr, flush=True)

        embed_chunks(clip, src, a.out, a.chunk_rows, a.thumb_px, info.rank, info.world_size, a.batch_size, progress)
        if info.world_size > 1:
            import torch.distributed as dist

            dist.barrier()
        if info.rank == 0:
            receipt = merge_parts(a.out)
            print(f"\n{receipt['rows']:,} rows of {a.source} embedded by {receipt['model']} in {a.out} "
                  f"({time.monotonic() - start:.0f} s)", file=sys.stderr)
        return 0
    except (ModelLoadError, DataError, SourceUnavailable, SetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nstopped: the finished chunks are kept; run the same command again to resume into {a.out}",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
