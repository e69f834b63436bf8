"""Tiny stand-ins of the other model families, built offline: a real transformers config of the
family with small towers, a tokenizer of the family's kind (SigLIP's SentencePiece, SigLIP 2's Gemma
BPE, MetaCLIP 2's XLM-R Unigram) with a small vocabulary, its image processor, and random weights,
saved as safetensors."""

from __future__ import annotations

import string
from pathlib import Path

import torch

WORDS = ["a", "photo", "of", "this", "is", "circle", "star", "square", "red", "blue", "green"]
TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


def _pil(name: str):
    import transformers

    return getattr(transformers, name + "Pil", None) or getattr(transformers, name)


def _save_siglip(folder: Path, seed: int, scale: float, bias: float, **text) -> None:
    """Random tiny SigLIP weights (64 text positions, 32-px images) with the given scale and bias, saved to folder."""
    from transformers import SiglipConfig, SiglipModel

    torch.manual_seed(seed)
    config = SiglipConfig(text_config=dict(max_position_embeddings=64, **text, **TOWER),
                          vision_config=dict(image_size=32, patch_size=8, **TOWER))
    model = SiglipModel(config)
    with torch.no_grad():
        model.logit_scale.fill_(scale)
        model.logit_bias.fill_(bias)
    model.save_pretrained(folder, safe_serialization=True)


def siglip2_standin(folder: Path, seed: int = 0, scale: float = 2.3, bias: float = -1.5) -> Path:
    """A fixed-resolution SigLIP 2 (model_type 'siglip', Gemma tokenizer) of 32-px images."""
    from transformers import GemmaTokenizer

    vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"])}
    for b in range(256):  # byte fallback: every text has tokens
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for w in ["▁" + w for w in WORDS] + list(string.ascii_lowercase) + ["."]:
        vocab.setdefault(w, len(vocab))
    _save_siglip(folder, seed, scale, bias, vocab_size=len(vocab), pad_token_id=0, eos_token_id=1, bos_token_id=2)
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


def siglip_spiece(path: Path, vocab_size: int = 64, extra_words: tuple[str, ...] = ()) -> Path:
    """A small SentencePiece Unigram model with SigLIP's special ids (pad 0 '<pad>', eos 1 '</s>', unk 2
    '<unk>', no bos), trained offline on a generated corpus of WORDS (and extra_words) and the alphabet."""
    import io
    import random

    import sentencepiece as spm

    words = WORDS + list(extra_words)
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(words) for _ in range(6)) for _ in range(400)] + [" ".join(words)]
    corpus += [string.ascii_lowercase, string.digits]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=model, vocab_size=vocab_size,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   hard_vocab_limit=False, character_coverage=1.0, minloglevel=2)
    Path(path).write_bytes(model.getvalue())
    return Path(path)


def siglip_standin(folder: Path, seed: int = 0, scale: float = 2.3, bias: float = -1.5) -> Path:
    """A SigLIP (model_type 'siglip', SentencePiece `SiglipTokenizer`, which needs the sentencepiece and
    protobuf packages) of 32-px images, saved with a SiglipProcessor."""
    import tempfile

    from transformers import SiglipProcessor, SiglipTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        # input_ids only, as transformers' SigLIP conversion saves it: the model was trained without a mask
        tokenizer = SiglipTokenizer(str(siglip_spiece(Path(tmp) / "spiece.model")), model_input_names=["input_ids"])
    _save_siglip(folder, seed, scale, bias, vocab_size=len(tokenizer), pad_token_id=1, eos_token_id=1)
    image_processor = _pil("SiglipImageProcessor")(size={"height": 32, "width": 32})
    SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return Path(folder)
