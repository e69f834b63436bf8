"""Real-size stand-ins of every model family core.load reads, in a Hugging Face cache layout that
core.load (and transformers) find offline: part of benchmarks/families_vs_pipeline.py.

    python benchmarks/family_standins.py --rss openai/clip-vit-base-patch32 google/siglip2-base-patch16-224

No Hub here, so each stand-in is the checkpoint's real config, a tokenizer of the same kind trained
offline on a small corpus (ImageNet-1k class names in a few templates, shapes-world captions; the
vocabulary is small, the config keeps the real vocab size, so the embedding table is real-size),
the family's image processor, and random weights (seed 0, fp32), saved as
`models--ORG--NAME/snapshots/<40 hex>/` plus `refs/main` under a Hub cache. Speed does not depend
on the weights' values; the accuracy of random weights means nothing.

| family | Hub id | config | tokenizer |
|---|---|---|---|
| CLIP | openai/clip-vit-base-patch32 | `core.model.PRESETS["base"]`, quick_gelu (benchmarks/standin.py) | the real CLIP BPE (assets/tokenizer) |
| SigLIP | google/siglip-base-patch16-224 | transformers' `SiglipConfig()` defaults, documented as this checkpoint: ViT-B/16 at 224 px, text 768 x 12, 64 positions, vocab 32,000 | `SiglipTokenizer`: a SentencePiece Unigram model (pad 0, eos 1, unk 2), lower-cased corpus; `input_ids` only, as the conversion script saves it |
| SigLIP 2 | google/siglip2-base-patch16-224 | the same with text vocab 256,000 (its config.json sets only that) | `GemmaTokenizer`: a byte-fallback BPE (pad 0, eos 1, bos 2, unk 3); no bos, eos added, right padding, `input_ids` only, as the conversion script sets it |
| MetaCLIP 2 | facebook/metaclip-2-worldwide-s16 (the smallest worldwide model) | facebookresearch/MetaCLIP `ViT-S-16-worldwide.json`: vision 384 x 12 layers, 6 heads, patch 16, 224 px; text 384 x 12, 6 heads, 77 positions, vocab 901,629 (XLM-V); embedding 384; GELU (not quick_gelu) | `XLMRobertaTokenizer`: a Unigram vocabulary (bos 0, pad 1, eos 2, unk 3), cased |

The two sigmoid stand-ins get exp(t) = 10 and bias 0 (SigLIP starts training at bias -10): random
embeddings then give probabilities near the sigmoid's steepest part, where a difference between two
implementations shows, rather than all near 0.

--rss: fresh processes (each model alone, then all together, in order); the resident memory after
`import core`, then after core.load of each model and after one zero-shot call on it (see
`rss_after_loads`: the weights are memory-mapped, so they count once a forward reads them).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import shutil
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HUB_IDS = {
    "clip": "openai/clip-vit-base-patch32",
    "siglip": "google/siglip-base-patch16-224",
    "siglip2": "google/siglip2-base-patch16-224",
    "metaclip_2": "facebook/metaclip-2-worldwide-s16",
}
FAMILY_OF = {hub_id: family for family, hub_id in HUB_IDS.items()}
TOKENIZER_VOCAB = 4000  # pieces the offline tokenizers learn (the configs keep the real vocab sizes)


# ---------------------------------------------------------------- configs


def real_config(family: str):
    """The checkpoint's config (see the module's table)."""
    from transformers import MetaClip2Config, SiglipConfig

    if family == "siglip":
        return SiglipConfig()  # documented as google/siglip-base-patch16-224
    if family == "siglip2":
        return SiglipConfig(text_config=dict(vocab_size=256_000, pad_token_id=0, eos_token_id=1, bos_token_id=2))
    if family == "metaclip_2":
        tower = dict(hidden_size=384, intermediate_size=4 * 384, num_hidden_layers=12, num_attention_heads=6,
                     hidden_act="gelu")
        return MetaClip2Config(text_config=dict(vocab_size=901_629, max_position_embeddings=77, bos_token_id=0,
                                                pad_token_id=1, eos_token_id=2, **tower),
                               vision_config=dict(image_size=224, patch_size=16, **tower), projection_dim=384)
    raise ValueError(f"no real config here for {family!r} (CLIP's is benchmarks/standin.py's)")


# ---------------------------------------------------------------- tokenizers, built offline


def corpus(lower: bool = False) -> list[str]:
    """Text the offline tokenizers learn from: ImageNet-1k names in four templates and shapes captions."""
    from core.shapes import ShapesWorld

    names = [x.strip() for x in (ROOT / "assets" / "classnames" / "imagenet1k.txt").read_text().splitlines() if x.strip()]
    templates = ["a photo of a {}.", "This is a photo of {}.", "a bad photo of the {}.", "a sketch of a {}."]
    lines = [t.replace("{}", n) for n in names for t in templates]
    lines += [s.caption for s in ShapesWorld(seed=0, split="train").take(500)]
    lines += [string.ascii_letters + string.digits]
    return [x.lower() for x in lines] if lower else lines


def sentencepiece_model(lower: bool, vocab_size: int = TOKENIZER_VOCAB) -> bytes:
    """A SentencePiece Unigram model trained on `corpus(lower)`: pad 0, eos 1, unk 2, no bos (SigLIP's ids)."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus(lower)), model_writer=model, vocab_size=vocab_size,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   hard_vocab_limit=False, character_coverage=1.0, minloglevel=2)
    return model.getvalue()


def siglip_tokenizer(tmp: Path):
    """SigLIP's `SiglipTokenizer` (SentencePiece; it lower-cases and drops punctuation itself)."""
    from transformers import SiglipTokenizer

    path = tmp / "spiece.model"
    path.write_bytes(sentencepiece_model(lower=True))
    return SiglipTokenizer(str(path), model_input_names=["input_ids"])


def gemma_tokenizer():
    """SigLIP 2's `GemmaTokenizer`: a byte-fallback BPE trained on the corpus, words as '▁word' pieces."""
    from tokenizers import pre_tokenizers, trainers
    from transformers import GemmaTokenizer

    vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"])}
    for b in range(256):  # byte fallback, as Gemma's: every text has tokens
        vocab[f"<0x{b:02X}>"] = len(vocab)
    backend = GemmaTokenizer(vocab=vocab, merges=[]).backend_tokenizer
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("▁", behavior="merged_with_next"),
                                                     pre_tokenizers.Punctuation()])  # for training only
    backend.train_from_iterator(corpus(), trainers.BpeTrainer(vocab_size=TOKENIZER_VOCAB, special_tokens=list(vocab),
                                                              show_progress=False))
    model = json.loads(backend.to_str())["model"]
    return GemmaTokenizer(vocab=model["vocab"], merges=[tuple(m) for m in model["merges"]], add_bos_token=False,
                          add_eos_token=True, padding_side="right", model_input_names=["input_ids"], model_max_length=64)


def xlmr_tokenizer(tmp: Path):
    """MetaCLIP 2's `XLMRobertaTokenizer` (a Unigram, as XLM-V's): the pieces and scores of a SentencePiece
    model trained on the cased corpus, behind XLM-R's special tokens."""
    import sentencepiece as spm
    from transformers import XLMRobertaTokenizer

    sp = spm.SentencePieceProcessor(model_proto=sentencepiece_model(lower=False))
    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [(sp.id_to_piece(i), sp.get_score(i)) for i in range(3, sp.get_piece_size())]
    pieces.append(("<mask>", 0.0))
    return XLMRobertaTokenizer(vocab=pieces, model_max_length=77)


# ---------------------------------------------------------------- the stand-ins


def siglip_image_processor(image_size: int):
    """SigLIP's preprocessing (a plain resize to image_size, mean and std 0.5), its PIL backend without torchvision."""
    import transformers

    cls = getattr(transformers, "SiglipImageProcessorPil", None) or transformers.SiglipImageProcessor
    return cls(size={"height": image_size, "width": image_size})


def revision(hub_id: str, seed: int = 0) -> str:
    """A fixed 40-hex commit id for a stand-in's snapshot folder."""
    return hashlib.sha1(f"clip-lab stand-in for {hub_id}, seed {seed}".encode()).hexdigest()


def snapshot_folder(hub_cache: str | os.PathLike, hub_id: str, seed: int = 0) -> Path:
    """An empty `models--ORG--NAME/snapshots/<sha>/` with `refs/main` naming it (core.model._download's
    snapshot_download(local_files_only=True) then returns this folder)."""
    repo = Path(hub_cache) / f"models--{hub_id.replace('/', '--')}"
    sha = revision(hub_id, seed)
    snapshot = repo / "snapshots" / sha
    if snapshot.exists():
        shutil.rmtree(snapshot)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(sha)
    return snapshot


def build_family_standin(family: str, hub_cache: str | os.PathLike, seed: int = 0) -> Path:
    """Save the family's stand-in as its Hub id in the cache; returns the snapshot folder."""
    if family == "clip":
        from benchmarks.standin import build_standin

        return build_standin(hub_cache, "base", seed)
    from transformers import MetaClip2Model, SiglipModel, SiglipProcessor

    from core.model import image_processor_for

    snapshot = snapshot_folder(hub_cache, HUB_IDS[family], seed)
    torch.manual_seed(seed)
    config = real_config(family)
    with tempfile.TemporaryDirectory() as tmp:
        if family == "metaclip_2":
            model = MetaClip2Model(config).eval()
            tokenizer, processor = xlmr_tokenizer(Path(tmp)), image_processor_for(config.vision_config.image_size)
        else:
            model = SiglipModel(config).eval()
            with torch.no_grad():  # see the module's docstring: probabilities away from 0
                model.logit_scale.fill_(math.log(10.0))
                model.logit_bias.fill_(0.0)
            tokenizer = siglip_tokenizer(Path(tmp)) if family == "siglip" else gemma_tokenizer()
            processor = siglip_image_processor(config.vision_config.image_size)
        model.save_pretrained(snapshot, safe_serialization=True)
        if family == "siglip":
            SiglipProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(snapshot)
        else:
            tokenizer.save_pretrained(snapshot)
            processor.save_pretrained(snapshot)
    return snapshot


def check_family_standin(family: str, snapshot: Path) -> dict:
    """core.load(hub id) offline must read the stand-in's snapshot and give the family and real sizes."""
    import core
    from core.model import weights_revision

    assert os.environ.get("HF_HUB_OFFLINE") == "1", "set HF_HUB_OFFLINE=1 (and HF_HUB_CACHE) before importing core"
    start = time.perf_counter()
    clip = core.load(HUB_IDS[family])
    load_s = time.perf_counter() - start
    assert clip.revision == weights_revision(snapshot), f"core.load({HUB_IDS[family]}) did not read the stand-in"
    assert clip.family.name == family, (family, clip.family.name)
    cfg = clip.model.config
    return {"clip": clip, "load_s": load_s, "checks": {
        "hub_id": HUB_IDS[family], "family": clip.family.name, "tokenizer": type(clip.tokenizer).__name__,
        "vocab_size": cfg.text_config.vocab_size, "tokenizer_pieces": len(clip.tokenizer),
        "vision": [cfg.vision_config.hidden_size, cfg.vision_config.num_hidden_layers, cfg.vision_config.patch_size,
                   cfg.vision_config.image_size],
        "text": [cfg.text_config.hidden_size, cfg.text_config.num_hidden_layers, cfg.text_config.num_attention_heads,
                 cfg.text_config.max_position_embeddings],
        "embed_dim": clip.embed_dim, "parameters_m": sum(p.numel() for p in clip.model.parameters()) / 1e6,
        "weights_mb": sum(f.stat().st_size for f in snapshot.glob("*.safetensors")) / 2**20,
        "tokens_of_a_photo_of_a_cat": clip.tokenizer("a photo of a cat.")["input_ids"],
    }}


# ---------------------------------------------------------------- resident memory


_RSS_CHILD = """
import json, sys
from PIL import Image
def mem():
    status = dict(line.split(':', 1) for line in open('/proc/self/status') if ':' in line)
    return {k: int(status[k].split()[0]) / 1024 for k in ('VmRSS', 'RssAnon', 'RssFile', 'VmHWM')}
import core
rows = [{'after': 'import core', **mem()}]
kept = []
for hub_id in sys.argv[1:]:
    kept.append(core.load(hub_id))
    rows.append({'after': 'core.load(' + hub_id + ')', **mem()})
    core.classify(kept[-1], [Image.new('RGB', (64, 64), 'red')], ['cat', 'dog'], ['a photo of a {}.'])
    rows.append({'after': 'a zero-shot call on ' + hub_id, **mem()})
print(json.dumps(rows))
"""


def rss_after_loads(hub_ids: list[str], env: dict) -> list[dict]:
    """Memory (MB) of a fresh process after `import core`, then after core.load of each model (all kept) and
    after one zero-shot call on it: VmRSS = RssAnon + RssFile, and the peak VmHWM. core.load maps the
    safetensors (file-backed pages): they count in RssFile once a forward has read them, and the rows of an
    embedding table that no token used are never read."""
    out = subprocess.run([sys.executable, "-c", _RSS_CHILD, *hub_ids], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rss", nargs="+", metavar="HUB_ID", required=True,
                   help=f"stand-ins to build and load in one fresh process, in order (any of {', '.join(HUB_IDS.values())})")
    a = p.parse_args(argv)
    unknown = [h for h in a.rss if h not in FAMILY_OF]
    if unknown:
        p.error(f"no stand-in for {', '.join(unknown)}")
    home = Path(tempfile.mkdtemp(prefix="clip-family-standins-"))
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    try:
        for hub_id in dict.fromkeys(a.rss):
            build_family_standin(FAMILY_OF[hub_id], home / "hub")
        results = {"alone": {h: rss_after_loads([h], env) for h in dict.fromkeys(a.rss)},
                   "together": rss_after_loads(a.rss, env)}
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
