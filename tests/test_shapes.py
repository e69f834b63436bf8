"""The shapes world: deterministic, varied, labelled, and honest about held-out combinations."""

import numpy as np
import pytest

from core.train import ShapesPairs
from core.shapes import COLOURS, HELD_OUT, SHAPES, STYLES, ShapesWorld


def test_samples_are_deterministic_and_random_access():
    a, b = ShapesWorld(seed=4), ShapesWorld(seed=4)
    for i in (0, 17, 1000):
        assert a[i].caption == b[i].caption
        assert np.array_equal(np.asarray(a[i].image), np.asarray(b[i].image))
    other = ShapesWorld(seed=5)[3]
    assert a[3].caption != other.caption or not np.array_equal(np.asarray(a[3].image), np.asarray(other.image))


def test_images_and_labels():
    samples = ShapesWorld(seed=0).take(300)
    assert all(s.image.size == (64, 64) and s.image.mode == "RGB" for s in samples)
    counts = {s.labels["count"] for s in samples}
    assert counts == {1, 2, 3}
    assert {s.style for s in samples} == set(STYLES)
    assert {s.labels["shape"] for s in samples} == set(SHAPES)
    assert {s.labels["colour"] for s in samples} == set(COLOURS)
    for s in samples:  # the caption names every object's colour and shape
        for o in s.objects:
            assert o.colour in s.caption and o.shape in s.caption


def test_held_out_combinations_never_in_train_images_or_captions():
    assert len(HELD_OUT) == 8 and len({c for c, _ in HELD_OUT}) == 8 and len({s for _, s in HELD_OUT}) == 8
    world = ShapesWorld(seed=0, split="train")
    pairs = ShapesPairs(seed=0)
    samples = world.take(400) + [g for k in range(30) for g in world.hard_negative_group(k)]
    for s in samples:
        assert not any((o.colour, o.shape) in HELD_OUT for o in s.objects)
        assert not any(f"{c} {sh}" in s.caption for c, sh in HELD_OUT)
    assert not any(f"{c} {sh}" in cap for cap in pairs.batch(7, 64).captions for c, sh in HELD_OUT)
    evals = ShapesWorld(seed=0, split="eval", max_objects=1).take(600)
    assert {s.labels["combo"] for s in evals if s.labels["held_out"]} == {f"{c} {sh}" for c, sh in HELD_OUT}


def test_hard_negative_group_shares_colour_and_style():
    group = ShapesWorld(seed=2).hard_negative_group(3)
    assert len({s.labels["colour"] for s in group}) == 1 and len({s.style for s in group}) == 1
    assert len({s.labels["shape"] for s in group}) == len(group) == 7  # every shape but the held-out one


def test_bad_arguments():
    with pytest.raises(ValueError):
        ShapesWorld(split="test")
    with pytest.raises(ValueError):
        ShapesWorld(styles=("watercolour",))
    with pytest.raises(IndexError):
        ShapesWorld()[-1]


def test_spread_centres_single_objects_and_curriculum_widens_it():
    centred = ShapesWorld(seed=1, max_objects=1, spread=0.0).take(20)
    assert all(abs(o.x - 32) < 1e-6 and abs(o.y - 32) < 1e-6 for s in centred for o in s.objects)
    anywhere = ShapesWorld(seed=1, max_objects=1).take(50)
    assert max(abs(o.x - 32) for s in anywhere for o in s.objects) > 10
    pairs = ShapesPairs(seed=0, curriculum_steps=100)
    pairs.batch(0, 16)
    assert pairs.world.spread == 0.0
    pairs.batch(50, 16)
    assert pairs.world.spread == 0.5
    with pytest.raises(ValueError, match="spread"):
        ShapesWorld(spread=1.5)


def test_shapes_batches_put_minimal_pair_groups_first_and_say_so():
    batch = ShapesPairs(seed=0, hard_negatives=0.5).batch(3, 32)
    assert (batch.n_groups, batch.group_size) == (2, 7) and len(batch.captions) == 32
    world = ShapesPairs(seed=0).world
    for g in range(batch.n_groups):
        group = world.hard_negative_group(3 * 32 + g)  # the same scenes, with labels
        assert [s.caption for s in group] == batch.captions[g * 7:(g + 1) * 7]
        assert len({s.labels["colour"] for s in group}) == 1 and len({s.labels["shape"] for s in group}) == 7
    assert ShapesPairs(seed=0, hard_negatives=0.0).batch(3, 32).n_groups == 0
