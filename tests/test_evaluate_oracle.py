"""The metrics behind the model card against hand-worked answers and an independent NumPy computation:
top-1, top-5, mean per-class recall, and retrieval recall@K with several captions per image."""

import numpy as np
import pytest
import torch

from core.evaluate import retrieval_metrics, zero_shot_metrics


def _probs_with_ranks(true: list[int], ranks: list[int], c: int) -> torch.Tensor:
    """Rows of probabilities [N, C] in which class true[i] sits at 1-based rank ranks[i]."""
    rows = []
    for t, r in zip(true, ranks):
        order = [k for k in range(c) if k != t]
        order.insert(r - 1, t)  # order[0] gets the highest probability
        scores = np.empty(c)
        scores[order] = np.arange(c, 0, -1, dtype=float)
        rows.append(np.exp(scores) / np.exp(scores).sum())
    return torch.tensor(np.array(rows), dtype=torch.float32)


def test_zero_shot_metrics_on_a_case_worked_by_hand():
    y = [0, 0, 0, 1, 2, 3, 4, 5]  # unbalanced: class 0 has three images
    ranks = [1, 2, 1, 6, 5, 1, 3, 1]
    m = zero_shot_metrics(_probs_with_ranks(y, ranks, 6), y, 6)
    assert m["n"] == 8
    assert m["top1"] == pytest.approx(4 / 8)  # ranks equal to 1
    assert m["top5"] == pytest.approx(7 / 8)  # every rank but the 6
    # recall per class: 2/3, 0, 0, 1, 0, 1 -> mean 4/9, not the top-1 of 1/2
    assert m["mean_per_class_recall"] == pytest.approx((2 / 3 + 0 + 0 + 1 + 0 + 1) / 6)


def test_retrieval_with_several_captions_per_image_worked_by_hand():
    # sim[i, j]: image i against caption j; captions 0, 1 belong to image 0, caption 2 to image 1, 3 and 4 to image 2
    sim = np.array([[0.9, 0.1, 0.8, 0.2, 0.3],
                    [0.7, 0.2, 0.1, 0.6, 0.5],
                    [0.1, 0.25, 0.3, 0.4, 0.9]])
    image_emb = torch.eye(3, 5)
    text_emb = torch.zeros(5, 5)
    text_emb[:, :3] = torch.tensor(sim.T, dtype=torch.float32)  # so image_emb @ text_emb.T == sim
    r = retrieval_metrics(image_emb, text_emb, text_to_image=[0, 0, 1, 2, 2], ks=(1, 2, 5))
    # image -> text: image 0 finds caption 0 first; image 1's caption is its 5th; image 2 finds caption 4 first
    assert r["image_to_text_R@1"] == pytest.approx(2 / 3) and r["image_to_text_R@2"] == pytest.approx(2 / 3)
    assert r["image_to_text_R@5"] == pytest.approx(1.0)
    # text -> image: ranks of the right image are 1, 3, 3, 2, 1
    assert r["text_to_image_R@1"] == pytest.approx(2 / 5) and r["text_to_image_R@2"] == pytest.approx(3 / 5)
    assert r["text_to_image_R@5"] == pytest.approx(1.0)


def _numpy_zero_shot(p: np.ndarray, y: np.ndarray) -> dict:
    rank = (p > p[np.arange(len(y)), y][:, None]).sum(1) + 1  # 1-based rank of the true class
    recalls = [np.mean(rank[y == k] == 1) for k in np.unique(y)]
    return {"top1": np.mean(rank == 1), "top5": np.mean(rank <= 5), "mean_per_class_recall": np.mean(recalls)}


def _numpy_recall(sim: np.ndarray, owner: np.ndarray, k: int) -> tuple[float, float]:
    i2t = [owner[np.argsort(-sim[i])[:k]].tolist().count(i) > 0 for i in range(sim.shape[0])]
    t2i = [owner[j] in np.argsort(-sim[:, j])[:k] for j in range(sim.shape[1])]
    return float(np.mean(i2t)), float(np.mean(t2i))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_an_independent_numpy_computation(seed):
    rng = np.random.default_rng(seed)
    n, c = 200, 12
    logits = rng.normal(size=(n, c))
    y = rng.integers(0, c, n)
    logits[np.arange(n), y] += rng.uniform(0, 2, n)  # better than chance, not perfect
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    got = zero_shot_metrics(torch.tensor(p, dtype=torch.float64), y.tolist(), c)
    for key, value in _numpy_zero_shot(p, y).items():
        assert got[key] == pytest.approx(value), key

    images, per = 40, 3  # three captions per image, shuffled
    owner = rng.permutation(np.repeat(np.arange(images), per))
    img = rng.normal(size=(images, 16))
    txt = img[owner] + rng.normal(scale=1.5, size=(len(owner), 16))
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    got = retrieval_metrics(torch.tensor(img), torch.tensor(txt), owner.tolist(), ks=(1, 5, 10))
    for k in (1, 5, 10):
        i2t, t2i = _numpy_recall(img @ txt.T, owner, k)
        assert got[f"image_to_text_R@{k}"] == pytest.approx(i2t) and got[f"text_to_image_R@{k}"] == pytest.approx(t2i)
