"""The experiments that train, run end to end at a toy size: a run repeats itself exactly, a fixed
temperature stays fixed while a learned one moves, centring is the NumPy computation, and fine-tuning
works on a copy and leaves the loaded model untouched."""

import dataclasses

import numpy as np
import pytest
import torch

from core.experiments import load_experiment, run_experiment

TOY = {"pool": 64, "images": 128, "batch_size": 32, "evals": 1, "eval_n": 48}


def _toy(name: str, **settings):
    exp = load_experiment(name)
    return dataclasses.replace(exp, seeds=(0,), settings={**exp.settings, **TOY, **settings})


def test_an_objectives_run_repeats_itself_and_counts_the_images_each_objective_saw():
    exp = _toy("objectives")
    runs = [run_experiment(exp) for _ in range(2)]
    assert runs[0]["per_seed"] == runs[1]["per_seed"]  # same seed, same pool, same order: the same numbers
    curves = runs[0]["per_seed"][0]["curves"]
    assert set(curves) == {"caption", "bag_of_words", "contrastive"}
    for curve in curves.values():
        assert [p["images"] for p in curve] == [0, 128]  # evals + 1 points, steps x batch
        assert curve[0]["accuracy"] == pytest.approx(curves["contrastive"][0]["accuracy"], abs=0.5)


def test_a_fixed_temperature_stays_fixed_and_a_learned_one_moves():
    exp = _toy("temperature-and-batch", fixed_scales=[50.0], batch_sizes=[16], lr=1e-2)
    conditions = run_experiment(exp)["per_seed"][0]["conditions"]
    fixed = [p["logit_scale"] for p in conditions["fixed scale 50, batch 32"]["curve"]]
    learned = [p["logit_scale"] for p in conditions["learned, batch 32"]["curve"]]
    assert fixed == pytest.approx([50.0, 50.0], rel=1e-5)
    assert learned[0] == pytest.approx(1 / 0.07, rel=1e-4) and learned[1] != pytest.approx(learned[0], rel=1e-4)
    assert conditions["learned, batch 16"]["steps"] == 8 and conditions["learned, batch 32"]["steps"] == 4


def test_centring_is_each_modality_minus_its_centroid_renormalised():
    from core.experiments.gap import centring

    rng = np.random.default_rng(0)
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    img, txt, head = unit(rng.normal(size=(20, 8)) + 2), unit(rng.normal(size=(20, 8)) - 2), unit(rng.normal(size=(4, 8)))
    y = rng.integers(0, 4, 20)
    out = centring({"img": img, "txt": txt, "head": head, "y": y})
    ci, ct = unit(img - img.mean(0)), unit(txt - txt.mean(0))
    hc = unit(head - txt.mean(0))
    assert out["zero_shot_centred"] == pytest.approx(((ci @ hc.T).argmax(1) == y).mean())
    assert out["retrieval_r1_centred"] == pytest.approx(((ci @ ct.T).argmax(1) == np.arange(20)).mean())
    assert out["zero_shot"] == pytest.approx(((img @ head.T).argmax(1) == y).mean())


def test_fine_tuning_works_on_a_copy_and_leaves_the_loaded_model_untouched():
    from core.experiments.pool import train_pool
    from core.experiments.shift import IN_STYLES, Settings, finetune
    from core.model import create

    clip = create("tiny", seed=0)
    before = {k: v.clone() for k, v in clip.model.state_dict().items()}
    pool = train_pool(16, 0, IN_STYLES, plain_only=True)
    assert set(pool.styles) == {"filled"} and set(pool.backgrounds) <= {"white", "light"}
    head = torch.nn.functional.normalize(torch.randn(8, clip.embed_dim), dim=-1)
    tuned = finetune(clip, pool, head, pool.targets("shape")[1], Settings(finetune_steps=2, batch_size=8, lr=1e-3), 0,
                     lambda: None)
    assert all(torch.equal(v, clip.model.state_dict()[k]) for k, v in before.items())
    assert not torch.equal(tuned.vision_model.embeddings.patch_embedding.weight,
                           clip.model.vision_model.embeddings.patch_embedding.weight)
    assert torch.equal(tuned.text_projection.weight, clip.model.text_projection.weight)  # the head's tower is frozen
