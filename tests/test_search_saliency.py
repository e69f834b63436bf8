"""Search and saliency: exact search against a NumPy ranking, the combined query, caption ranks
against retrieval_metrics, the pointing game on known answers, and saliency maps on two grids."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel

from core.errors import UserInputError
from core.evaluate import retrieval_metrics
from core.pointing import peaks, pointing_game, pointing_hits
from core.saliency import (DEFAULT_METHOD, METHODS, centre_map, grid_size, saliency_map, saliency_maps, upsample,
                           vision_forward_with_attentions)
from core.search import caption_rank, caption_ranks, combined_query, cosine_histogram, retrieval_report, search
from core.shapes import ShapesWorld, object_mask


def _unit_rows(n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=-1)


# ---------------------------------------------------------------- search


def test_search_equals_numpy_ranking():
    index, query = _unit_rows(500, 32), _unit_rows(1, 32, seed=1)[0]
    idx, cos = search(index, query, k=7)
    sims = index.numpy() @ query.numpy()
    order = np.argsort(-sims)[:7]
    assert idx.tolist() == order.tolist()
    np.testing.assert_allclose(cos.numpy(), sims[order], rtol=1e-5, atol=1e-6)
    assert len(search(index[:3], query, k=10)[0]) == 3  # k beyond N gives all N


def test_search_rejects_bad_input():
    index = _unit_rows(4, 8)
    with pytest.raises(UserInputError):
        search(index, _unit_rows(1, 8)[0], k=0)
    with pytest.raises(UserInputError):
        search(index, _unit_rows(1, 16)[0])  # another model's width
    with pytest.raises(UserInputError):
        search(torch.empty(0, 8), _unit_rows(1, 8)[0])


def test_combined_query_is_the_normalised_weighted_sum():
    t, i = torch.randn(16) * 3, torch.randn(16) * 0.2  # un-normalised on purpose
    q = combined_query(t, i, text_weight=0.3)
    expected = 0.3 * t / t.norm() + 0.7 * i / i.norm()
    torch.testing.assert_close(q, expected / expected.norm())
    torch.testing.assert_close(q.norm(), torch.tensor(1.0))
    torch.testing.assert_close(combined_query(t, None, 0.0), t / t.norm())
    torch.testing.assert_close(combined_query(None, i, 1.0), i / i.norm())
    torch.testing.assert_close(combined_query(t, i, 1.0), t / t.norm())
    for bad in (dict(text_emb=None, image_emb=None), dict(text_emb=t, image_emb=i, text_weight=1.5),
                dict(text_emb=t, image_emb=-t, text_weight=0.5), dict(text_emb=t, image_emb=torch.randn(8))):
        with pytest.raises(UserInputError):
            combined_query(**{"text_weight": 0.5, **bad})


def test_cosine_histogram_counts_every_cosine():
    sims = _unit_rows(1000, 16) @ _unit_rows(1, 16, seed=3)[0]
    counts, edges = cosine_histogram(sims, bins=20)
    assert counts.sum() == 1000 and len(edges) == 21
    assert edges[0] == pytest.approx(float(sims.min())) and edges[-1] == pytest.approx(float(sims.max()))
    counts, edges = cosine_histogram(sims, bins=4, value_range=(-1, 1))
    assert edges.tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]


def test_caption_ranks_agree_with_retrieval_metrics():
    images = _unit_rows(60, 8, seed=4)
    owner = [j // 2 for j in range(120)]  # two captions per image
    captions = F.normalize(images[owner] + 0.9 * _unit_rows(120, 8, seed=5), dim=-1)
    ranks = caption_ranks(images, captions, owner)
    metrics = retrieval_metrics(images, captions, owner)
    for k in (1, 5, 10):
        assert np.mean(ranks <= k) == pytest.approx(metrics[f"image_to_text_R@{k}"])
    sims = captions.numpy() @ images[7].numpy()
    assert caption_rank(images[7], captions, 14) == int(np.where(np.argsort(-sims) == 14)[0][0]) + 1
    report = retrieval_report(images, captions, owner)
    assert report["image_to_text_R@5"] == metrics["image_to_text_R@5"] and report["n"] == 60
    with pytest.raises(UserInputError):
        caption_rank(images[0], captions, 500)


# ---------------------------------------------------------------- the pointing game


def test_pointing_game_scores_known_peaks():
    masks = np.zeros((3, 64, 64), bool)
    masks[:, 32:48, 0:16] = True  # the object is grid cell (row 2, col 0) of a 4x4 map (16 px per cell)
    maps = np.zeros((3, 4, 4), np.float32)
    maps[0, 2, 0] = 1.0  # peak on the object
    maps[1, 0, 3] = 1.0  # peak far away
    maps[2, 1, 0] = 1.0  # peak one cell above: pixel row 23 or 24, 8 px above the object
    for refine in (True, False):
        rows, cols = peaks(maps, 64, refine)
        assert rows[0] in (39, 40) and 0 <= cols[0] <= 8  # the cell's centre (bilinear: its border plateau's)
        assert pointing_hits(maps, masks, refine=refine).tolist() == [True, False, False]
        assert pointing_hits(maps, masks, tolerance=9, refine=refine).tolist() == [True, False, True]


def test_the_refined_peak_finds_an_object_that_straddles_two_patches():
    mask = np.zeros((1, 64, 64), bool)
    mask[0, 36:44, 12:20] = True  # 8 px wide, across the border of cells (2, 0) and (2, 1)
    maps = np.full((1, 4, 4), 0.1, np.float32)
    maps[0, 2, 0], maps[0, 2, 1] = 1.0, 0.8  # both cells see it, the first a little more
    rows, cols = peaks(maps, 64, refine=True)
    # centroid of the excess over the median (0.1): col (0 * 0.9 + 1 * 0.7) / 1.6 = 0.4375 cells -> 14.5 px
    assert rows[0] == 40 and cols[0] in (14, 15)
    assert pointing_hits(maps, mask).tolist() == [True]
    assert pointing_hits(maps, mask, refine=False).tolist() == [False]  # the plain maximum: cell 0's centre, px 7-8


def test_centre_baseline_peaks_in_the_middle():
    for grid in (4, 7, 8):
        for refine in (True, False):
            rows, cols = peaks(centre_map(grid)[None].numpy(), 64, refine)
            assert abs(int(rows[0]) - 31.5) <= 1 and abs(int(cols[0]) - 31.5) <= 1, (grid, refine)


def test_object_mask_matches_the_drawn_filled_shapes():
    world = ShapesWorld(seed=3, split="eval", min_objects=1, max_objects=1, styles=("filled",))
    checked = 0
    for s in world.take(40):
        if s.background != "white":
            continue
        drawn = np.abs(np.asarray(s.image).astype(int) - 255).sum(-1) > 60  # [64, 64] coloured pixels
        mask = object_mask(s.objects[0])
        assert (drawn & mask).sum() / (drawn | mask).sum() > 0.8
        checked += 1
    assert checked >= 3
    assert object_mask(s.objects[0], image_size=128).shape == (128, 128)


def test_pointing_game_runs_on_the_bundled_model(bundled):
    results = pointing_game(bundled, methods=("relevance", "centre"), n=8, batch_size=4)
    assert [r.method for r in results] == ["relevance", "centre"]
    assert all(0 <= r.hits <= r.n == 8 and r.other_hits == 0 for r in results)
    multi = pointing_game(bundled, methods=("patch_text",), n=4, max_objects=3)[0]
    assert multi.objects == "2-3" and multi.hits + multi.other_hits <= 4


# ---------------------------------------------------------------- saliency


def _tiny_clip_model(image_size=24, patch_size=4) -> CLIPModel:
    torch.manual_seed(0)
    config = CLIPConfig(text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
                        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                           image_size=image_size, patch_size=patch_size),
                        projection_dim=16)
    return CLIPModel(config).eval()


@pytest.mark.parametrize("method", METHODS)
def test_maps_have_the_grid_shape_and_are_finite(bundled, micro, method):
    image = ShapesWorld(seed=2)[0].image
    for clip, grid in ((bundled, 8), (micro, 4)):
        m = saliency_map(clip, image, "a red circle", method)
        assert m.shape == (grid, grid) and m.dtype == np.float32 and np.isfinite(m).all()
    model = _tiny_clip_model()  # a bare CLIPModel, grid 6
    maps = saliency_maps(model, torch.randn(2, 3, 24, 24), torch.randn(16), method)
    assert maps.shape == (2, 6, 6) and maps.dtype == np.float32 and np.isfinite(maps).all()
    assert upsample(maps[0], 24).shape == (24, 24) and upsample(maps, (30, 20)).shape == (2, 30, 20)


def test_methods_follow_their_definitions(bundled):
    model = bundled.model
    image = ShapesWorld(seed=2)[1].image
    text = torch.nn.functional.normalize(torch.randn(bundled.embed_dim), dim=0)
    pixels = bundled.processor(images=[image], return_tensors="pt")["pixel_values"]
    with torch.no_grad():  # patch-text: post-LN + projection of the last layer's patch tokens, cosine with the text
        hidden = model.vision_model(pixel_values=pixels).last_hidden_state[0, 1:]
        patches = F.normalize(model.visual_projection(model.vision_model.post_layernorm(hidden)), dim=-1)
    np.testing.assert_allclose(saliency_maps(model, pixels, text, "patch_text")[0].reshape(-1), (patches @ text).numpy(),
                               atol=1e-5)
    # the text matters for both text-conditioned methods
    other = torch.nn.functional.normalize(torch.randn(bundled.embed_dim), dim=0)
    for method in ("patch_text", "relevance"):
        assert not np.allclose(saliency_maps(model, pixels, text, method), saliency_maps(model, pixels, other, method))
    assert DEFAULT_METHOD in METHODS and grid_size(model) == 8


def test_vision_walk_equals_the_model_and_eager_attentions():
    model = _tiny_clip_model()
    pixels = torch.randn(2, 3, 24, 24)
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        hidden, attentions = vision_forward_with_attentions(model.vision_model, pixels)
        reference = model.vision_model(pixel_values=pixels).last_hidden_state  # the default (sdpa) path
        api = eager.vision_model(pixel_values=pixels, output_attentions=True).attentions
    torch.testing.assert_close(hidden, reference, atol=1e-5, rtol=1e-4)
    assert len(api) == len(attentions) == 3
    for ours, theirs in zip(attentions, api):
        assert ours.shape == (2, 4, 37, 37)  # [B, heads, 1 + 6 * 6, 1 + 6 * 6]
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)


def test_relevance_leaves_the_model_untouched_and_works_under_inference_mode(bundled):
    model = bundled.model
    implementation = model.config._attn_implementation
    pixels = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        text = torch.nn.functional.normalize(torch.randn(bundled.embed_dim), dim=0)
        maps = saliency_maps(model, pixels, text, "relevance")
    assert np.isfinite(maps).all() and maps.max() > 0
    assert all(p.grad is None for p in model.parameters())
    assert model.config._attn_implementation == implementation and not model.training
    with pytest.raises(UserInputError):
        saliency_map(bundled, ShapesWorld(seed=2)[0].image, "a star", method="nope")


def test_siglip_saliency_reads_its_attention_pooling_head_instead_of_a_cls_token(tmp_path):
    """SigLIP (no CLS token): the walk ends in the model's own pooled embedding, relevance and rollout give a
    finite map per image that depends on the text (relevance), and patch_text is refused in one line."""
    from family_standins import siglip2_standin
    from PIL import Image

    import core
    from core.saliency import attention_pooled, pooled_image

    clip = core.load(str(siglip2_standin(tmp_path / "siglip2")))
    model = clip.model
    assert attention_pooled(model) and grid_size(model) == 4
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        hidden, attentions = vision_forward_with_attentions(model.vision_model, pixels)
        image, pool = pooled_image(model, hidden)
        reference = model.vision_model(pixel_values=pixels)
    torch.testing.assert_close(model.vision_model.post_layernorm(hidden), reference.last_hidden_state, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(image, reference.pooler_output, atol=1e-5, rtol=1e-4)
    assert attentions[0].shape == (2, 2, 16, 16) and pool.shape == (2, 2, 1, 16)  # no CLS: 4 × 4 patches
    texts = core.encode_texts(clip, ["a red circle", "a blue star"])
    first = saliency_maps(model, pixels[:1], texts[0], "relevance")
    second = saliency_maps(model, pixels[:1], texts[1], "relevance")
    assert first.shape == (1, 4, 4) and np.isfinite(first).all() and not np.allclose(first, second)
    assert np.isfinite(saliency_maps(model, pixels, None, "rollout")).all()
    assert saliency_map(clip, Image.new("RGB", (40, 40), "red"), "a red circle").shape == (4, 4)  # the default method
    with pytest.raises(UserInputError, match="SigLIP pools with an attention head"):
        saliency_maps(model, pixels, texts[0], "patch_text")
