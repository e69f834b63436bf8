"""Tiny stand-ins of the other model families, built offline: a real transformers config of the
family with small towers, a tokenizer of the family's kind (SigLIP 2's Gemma BPE, MetaCLIP 2's XLM-R
Unigram) with a small vocabulary, its image processor, and random weights, saved as safetensors."""

from __future__ import annotations

import string
from pathlib import Path

import torch

WORDS = ["a", "photo", "of", "this", "is", "circle", "star", "square", "red", "blue", "green"]
TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


def _pil(name: str):
    import transformers

    return getattr(transformers, name + "Pil", None) or getattr(transformers, name)


def siglip2_standin(folder: Path, seed: int = 0, scale: float = 2.3, bias: float = -1.5) -> Path:
    """A fixed-resolution SigLIP 2 (model_type 'siglip', Gemma tokenizer) of 32-px images."""
    from transformers import GemmaTokenizer, SiglipConfig, SiglipModel

    vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"])}
    for b in range(256):  # byte fallback: every text has tokens
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for w in ["▁" + w for w in WORDS] + list(string.ascii_lowercase) + ["."]:
        vocab.setdefault(w, len(vocab))
    torch.manual_seed(seed)
    config = SiglipConfig(text_config=dict(vocab_size=len(vocab), max_position_embeddings=64, pad_token_id=0,
                                           eos_token_id=1, bos_token_id=2, **TOWER),
                          vision_config=dict(image_size=32, patch_size=8, **TOWER))
    model = SiglipModel(config)
    with torch.no_grad():
        model.logit_scale.fill_(scale)
        model.logit_bias.fill_(bias)
    model.save_pretrained(folder, safe_serialization=True)
    GemmaTokenizer(vocab=vocab, merges=[]).save_pretrained(folder)
    _pil("SiglipImageProcessor")(size={"height": 32, "width": 32}).save_pretrained(folder)
    return Path(folder)


def metaclip2_standin(folder: Path, seed: int = 0) -> Path:
    """A MetaCLIP 2 (model_type 'metaclip_2', XLM-R Unigram tokenizer) of 32-px images."""
    from transformers import MetaClip2Config, MetaClip2Model, XLMRobertaTokenizer

    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("▁" + w, -1.0) for w in WORDS] + [(c, -5.0) for c in string.ascii_lowercase + "."] + [("<mask>", 0.0)]
    torch.manual_seed(seed)
    config = MetaClip2Config(text_config=dict(vocab_size=len(pieces), max_position_embeddings=77, pad_token_id=1,
                                              bos_token_id=0, eos_token_id=2, **TOWER),
                             vision_config=dict(image_size=32, patch_size=8, **TOWER), projection_dim=16)
    MetaClip2Model(config).save_pretrained(folder, safe_serialization=True)
    XLMRobertaTokenizer(vocab=pieces).save_pretrained(folder)
    _pil("CLIPImageProcessor")(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return Path(folder)
