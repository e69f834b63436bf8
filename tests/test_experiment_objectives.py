"""The objectives of the paper's Figure 2 and the verdict rules of the training experiments: each loss
and zero-shot rule against a hand computation, a toy task each objective must learn, the images-to-
threshold reading of a curve, and verdicts that follow the intervals."""

import math

import numpy as np
import pytest
import torch

from core.experiments import heads
from core.experiments.objectives import images_to_reach
from core.experiments.stats import interval, overall, part


def test_words_and_vocab_read_captions_as_lower_case_words():
    assert heads.words("A red Star, top-left.") == ["a", "red", "star", "top", "left"]
    v = heads.Vocab.of(["a red star", "a blue circle"])
    assert v.tokens[:3] == heads.SPECIALS and v.tokens[3:] == ("a", "blue", "circle", "red", "star")
    bag = v.bag(["a red red star", ""]).numpy()
    assert np.allclose(bag[0, [v.tokens.index(w) for w in ("a", "red", "star")]], 1 / 3) and bag[0].sum() == pytest.approx(1)
    assert bag[1].sum() == 0  # nothing known: no target
    seqs = v.sequences(["red star", "a"]).tolist()
    assert seqs == [[heads.BOS, v.tokens.index("red"), v.tokens.index("star"), heads.EOS],
                    [heads.BOS, v.tokens.index("a"), heads.EOS, heads.PAD]]


def test_bag_of_words_loss_and_score_match_a_hand_computation():
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5]])
    bags = torch.tensor([[0.0, 0.5, 0.0, 0.5]])  # two words, equal weight
    logp = logits[0].numpy() - math.log(np.exp(logits[0].numpy()).sum())
    assert heads.bag_of_words_loss(logits, bags).item() == pytest.approx(-(logp[1] + logp[3]) / 2, rel=1e-6)
    prompts = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.5, 0.0, 0.0, 0.5]])
    assert heads.bag_of_words_scores(logits, prompts).numpy()[0] == pytest.approx([logp[2], (logp[0] + logp[3]) / 2], rel=1e-6)


def test_caption_likelihood_sums_each_next_word_log_probability_and_skips_padding():
    seqs = torch.tensor([[heads.BOS, 3, heads.EOS], [heads.BOS, heads.EOS, heads.PAD]])
    logits = torch.randn(2, 2, 5)
    logp = torch.log_softmax(logits, -1).numpy()
    expected = [logp[0, 0, 3] + logp[0, 1, heads.EOS], logp[1, 0, heads.EOS]]
    assert heads.sequence_log_likelihood(logits, seqs).numpy() == pytest.approx(expected, rel=1e-5)
    assert heads.caption_loss(logits, seqs).item() == pytest.approx(-sum(expected) / 3, rel=1e-5)


def _toy(n_classes=4, width=16, seed=0):
    """A toy world: class c's 'image' is a noisy code vector, its caption 'a <colour_c> thing'."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randn(n_classes, width, generator=g)
    names = ["red", "blue", "green", "pink"][:n_classes]
    y = torch.randint(n_classes, (256,), generator=g)
    x = codes[y] + 0.1 * torch.randn(256, width, generator=g)
    return x, y, [f"a {names[c]} thing" for c in y.tolist()], [f"a {n} thing" for n in names]


def test_bag_of_words_learns_a_toy_task_and_its_rule_picks_the_right_prompt():
    torch.manual_seed(0)
    x, y, captions, prompts = _toy()
    vocab = heads.Vocab.of(captions)
    head = heads.BagOfWords(x.shape[1], len(vocab))
    opt = torch.optim.Adam(head.parameters(), 1e-2)
    for _ in range(200):
        opt.zero_grad()
        heads.bag_of_words_loss(head(x), vocab.bag(captions)).backward()
        opt.step()
    scores = heads.bag_of_words_scores(head(x), vocab.bag(prompts))  # [N, 4]
    assert (scores.argmax(1) == y).float().mean().item() == 1.0


def test_the_caption_decoder_learns_a_toy_task_and_its_likelihood_picks_the_right_prompt():
    torch.manual_seed(0)
    x, y, captions, prompts = _toy()
    vocab = heads.Vocab.of(captions)
    decoder = heads.CaptionDecoder(16, len(vocab), layers=1, heads=2)
    memory = x.unsqueeze(1)  # [N, 1, 16]: one image token
    seqs = vocab.sequences(captions)
    opt = torch.optim.Adam(decoder.parameters(), 3e-3)
    for _ in range(150):
        opt.zero_grad()
        heads.caption_loss(decoder(memory, seqs), seqs).backward()
        opt.step()
    with torch.no_grad():
        ll = torch.stack([heads.sequence_log_likelihood(decoder(memory, s.expand(len(x), -1)), s.expand(len(x), -1))
                          for s in (vocab.sequences([p]) for p in prompts)], 1)
    assert (ll.argmax(1) == y).float().mean().item() == 1.0
    # causal: the prediction at a position never reads a later word
    a, b = vocab.sequences(["a red thing"]), vocab.sequences(["a red red"])
    with torch.no_grad():
        assert torch.allclose(decoder(memory[:1], a)[0, :2], decoder(memory[:1], b)[0, :2], atol=1e-6)


def test_images_to_reach_interpolates_between_eval_points_and_says_never():
    curve = [{"images": 0, "accuracy": 0.1}, {"images": 1000, "accuracy": 0.5}, {"images": 2000, "accuracy": 0.9}]
    assert images_to_reach(curve, 0.7) == pytest.approx(1500)
    assert images_to_reach(curve, 0.5) == pytest.approx(1000)
    assert images_to_reach(curve, 0.95) is None
    assert images_to_reach([{"images": 0, "accuracy": 0.95}, {"images": 10, "accuracy": 0.96}], 0.9) == 0


def test_a_part_of_a_claim_is_judged_against_its_reference():
    assert part(interval([0.3, 0.32, 0.31], unit=""), "w", "l", reference=0.2, scale=1.0, unit="")[0] == "reproduced"
    assert part(interval([0.1, 0.12, 0.11], unit=""), "w", "l", reference=0.2, scale=1.0, unit="")[0] == "reversed"
    verdict, findings = overall([("reproduced", "a"), ("not reproduced at this scale", "b")])
    assert verdict == "not reproduced at this scale" and findings == ["reproduced: a", "not reproduced at this scale: b"]
