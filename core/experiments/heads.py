"""The two non-contrastive objectives of the paper's Figure 2, on the same image encoder as CLIP's.

- Bag of words: a linear layer from the image embedding to the word vocabulary; the target is the
  caption's words, each with equal weight (cross-entropy against that distribution). Zero-shot: a
  class prompt scores the mean log-probability of its words.
- Caption: a small transformer decoder that reads the image's patch tokens (cross-attention) and
  predicts the caption word by word (teacher forcing). Zero-shot: a class prompt scores its
  log-likelihood given the image.

Words are lower-case letter runs (`words`); a `Vocab` is built from the pool's captions and the
prompts, so no prompt word is unknown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<bos>", "<eos>")


def words(text: str) -> list[str]:
    """The lower-case words of a caption or prompt: 'A red Star.' -> ['a', 'red', 'star']."""
    return re.findall(r"[a-z]+", text.lower())


@dataclass(frozen=True)
class Vocab:
    """Word <-> id: the three specials, then the words of `texts` in sorted order."""

    tokens: tuple[str, ...]

    @classmethod
    def of(cls, texts) -> "Vocab":
        return cls(SPECIALS + tuple(sorted({w for t in texts for w in words(t)})))

    def __len__(self) -> int:
        return len(self.tokens)

    @cached_property
    def index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    def ids(self, text: str) -> list[int]:
        """The ids of a text's known words (unknown words are dropped)."""
        return [self.index[w] for w in words(text) if w in self.index]

    def bag(self, texts: list[str]) -> torch.Tensor:
        """[B, V]: each text's distinct words, weighted equally (rows sum to 1; an empty text is all 0)."""
        out = torch.zeros(len(texts), len(self))
        for row, text in enumerate(texts):
            ids = sorted(set(self.ids(text)))
            if ids:
                out[row, ids] = 1.0 / len(ids)
        return out

    def sequences(self, texts: list[str]) -> torch.Tensor:
        """[B, L] ids of <bos> words <eos>, padded with <pad> to the longest."""
        seqs = [[BOS, *self.ids(t), EOS] for t in texts]
        out = torch.full((len(seqs), max(map(len, seqs))), PAD, dtype=torch.long)
        for row, s in enumerate(seqs):
            out[row, :len(s)] = torch.tensor(s)
        return out


def bag_of_words_loss(logits: torch.Tensor, bags: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between the word distribution softmax(logits) [B, V] and the caption bags [B, V]."""
    return -(bags * torch.log_softmax(logits, dim=-1)).sum(-1).mean()


def bag_of_words_scores(logits: torch.Tensor, prompt_bags: torch.Tensor) -> torch.Tensor:
    """[N, P]: each image's mean log-probability of each prompt's distinct words (bags [P, V] as Vocab.bag)."""
    return torch.log_softmax(logits, dim=-1) @ prompt_bags.T


def sequence_log_likelihood(logits: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
    """[B]: sum over positions of log p(next id) for seqs [B, L] given logits [B, L - 1, V] (pads skipped)."""
    target = seqs[:, 1:]
    logp = torch.log_softmax(logits, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)  # [B, L - 1]
    return (logp * (target != PAD)).sum(-1)


def caption_loss(logits: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
    """Mean next-word cross-entropy over the non-pad positions of seqs [B, L] (logits [B, L - 1, V])."""
    return -sequence_log_likelihood(logits, seqs).sum() / (seqs[:, 1:] != PAD).sum()


class BagOfWords(nn.Module):
    """The image embedding [B, D] -> word logits [B, V]."""

    def __init__(self, embed_dim: int, vocab_size: int):
        super().__init__()
        self.out = nn.Linear(embed_dim, vocab_size)

    def forward(self, image_emb: torch.Tensor) -> torch.Tensor:
        return self.out(image_emb)


class CaptionDecoder(nn.Module):
    """A causal transformer decoder over words that cross-attends to the image's tokens [B, P, W]."""

    def __init__(self, width: int, vocab_size: int, layers: int = 2, heads: int = 2, max_len: int = 48):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        self.position = nn.Parameter(torch.randn(max_len, width) * 0.02)
        layer = nn.TransformerDecoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, vocab_size)

    def forward(self, image_tokens: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
        """Logits [B, L - 1, V] of each next word of seqs [B, L] (the last position predicts nothing)."""
        inp = seqs[:, :-1]
        x = self.embed(inp) + self.position[: inp.shape[1]]
        causal = torch.ones(inp.shape[1], inp.shape[1], dtype=torch.bool, device=inp.device).triu(1)  # True: masked
        x = self.decoder(x, image_tokens, tgt_mask=causal, tgt_is_causal=True, tgt_key_padding_mask=inp == PAD)
        return self.out(self.norm(x))
