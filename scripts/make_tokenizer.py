"""Derive the CLIP BPE tokenizer files (vocab.json, merges.txt) that ship in assets/tokenizer/.

The source is OpenAI's MIT-licensed BPE merge list `bpe_simple_vocab_16e6.txt.gz`, which the
open_clip_torch wheel on PyPI carries. We only read that data file; no open_clip code is used.

    pip download --no-deps -d /tmp/oc open_clip_torch==3.3.0
    python scripts/make_tokenizer.py /tmp/oc/open_clip_torch-3.3.0-py3-none-any.whl

The result loads offline with `CLIPTokenizerFast.from_pretrained("assets/tokenizer")` and gives the
same ids as OpenAI's tokenizer ('a photo of a cat.' -> 49406 320 1125 539 320 2368 269 49407).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import zipfile
from pathlib import Path

N_MERGES = 49152 - 256 - 2  # the CLIP vocabulary keeps the first 48,894 merges
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def byte_alphabet() -> list[str]:
    """The 256 stand-in characters of byte-level BPE, in CLIP's vocabulary order.

    Printable bytes stand for themselves and come first; the other 34 bytes map to chr(256 + k)
    and follow, in byte order.
    """
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + k) for k in range(len(others))]


def read_merges(source: Path) -> list[tuple[str, str]]:
    """Read the merge list from the .txt.gz file itself or from a wheel that contains it."""
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            name = next(n for n in wheel.namelist() if n.endswith("bpe_simple_vocab_16e6.txt.gz"))
            raw = wheel.read(name)
    else:
        raw = source.read_bytes()
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]  # line 0 is a version header
    assert all(len(m) == 2 for m in merges), "unexpected merge file format"
    return merges  # type: ignore[return-value]


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Token -> id: bytes, bytes ending a word, every merge result, then the two special tokens."""
    alphabet = byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges] + [BOS, EOS]
    return {tok: i for i, tok in enumerate(tokens)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="open_clip_torch wheel or bpe_simple_vocab_16e6.txt.gz")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "assets" / "tokenizer")
    args = parser.parse_args(argv)
    if not args.source.exists():
        print(f"error: {args.source} does not exist", file=sys.stderr)
        return 2

    merges = read_merges(args.source)
    vocab = build_vocab(merges)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (args.out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")

    from transformers import CLIPTokenizerFast  # reload through transformers and save its own files too

    tok = CLIPTokenizerFast.from_pretrained(args.out, model_max_length=77)
    tok.save_pretrained(args.out)
    ids = tok("a photo of a cat.")["input_ids"]
    expected = [49406, 320, 1125, 539, 320, 2368, 269, 49407]
    if ids != expected:
        print(f"error: tokenizer check failed: {ids} != {expected}", file=sys.stderr)
        return 1
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {args.out}; check passed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
