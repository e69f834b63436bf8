"""Encoding: normalised outputs, padding to the longest text, truncation, order, known token ids."""

import pytest
import torch

from core.encode import encode_images, encode_texts, tokenize
from core.model import load_tokenizer
from core.shapes import ShapesWorld


def test_tokenizer_gives_openai_ids():
    tok = load_tokenizer()
    assert tok("a photo of a cat.")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 269, 49407]


def test_texts_pad_to_longest_not_to_context(micro):
    batch = tokenize(micro, ["a cat", "a photo of a small red star"])
    assert batch["input_ids"].shape[1] == 9  # 7 words + BOS + EOS, far below 77
    assert batch["attention_mask"][0].sum() == 4


def test_long_text_is_truncated_with_warning(micro):
    long_text = "red " * 200
    with pytest.warns(UserWarning, match="truncated"):
        batch = tokenize(micro, [long_text])
    ids = batch["input_ids"][0]
    assert len(ids) == micro.context_length and ids[-1] == micro.tokenizer.eos_token_id
    with pytest.warns(UserWarning):
        emb = encode_texts(micro, [long_text, "a cat"])
    assert torch.isfinite(emb).all()


def test_text_embeddings_are_normalised_and_order_independent(micro):
    texts = ["a very long caption about a small blue hexagon in the corner", "cat", "two shapes: a red star"]
    emb = encode_texts(micro, texts, batch_size=2)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    alone = torch.cat([encode_texts(micro, [t]) for t in texts])
    torch.testing.assert_close(emb, alone, atol=1e-5, rtol=1e-4)


def test_image_embeddings_batched_equal_single(micro):
    images = [s.image for s in ShapesWorld(seed=1).take(5)]
    emb = encode_images(micro, images, batch_size=2)
    assert emb.shape == (5, micro.embed_dim)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(emb[3:4], encode_images(micro, images[3:4]), atol=1e-5, rtol=1e-4)


def test_encoders_accept_empty_input(micro):
    assert encode_texts(micro, []).shape == (0, micro.embed_dim)
    assert encode_images(micro, []).shape == (0, micro.embed_dim)


def test_bf16_embeddings_agree_with_fp32(micro):
    texts = ["a red circle", "a blue star"]
    a, b = encode_texts(micro, texts), encode_texts(micro, texts, precision="bf16")
    assert (a * b).sum(1).min() > 0.99
    with pytest.raises(ValueError):
        encode_texts(micro, texts, precision="fp8")
