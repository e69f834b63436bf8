"""datasets sources: save_to_disk and image folders feed training batches and evaluation."""

import datasets
import pytest
import torch

from core.data import DataError, open_dataset
from core.train import HFPairs
from core.evaluate import evaluate_dataset
from core.shapes import SHAPES, ShapesWorld


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    samples = ShapesWorld(seed=8, max_objects=1).take(24)
    ds = datasets.Dataset.from_dict(
        {"image": [s.image for s in samples], "text": [s.caption for s in samples],
         "label": [SHAPES.index(s.labels["shape"]) for s in samples]},
        features=datasets.Features({"image": datasets.Image(), "text": datasets.Value("string"),
                                    "label": datasets.ClassLabel(names=list(SHAPES))}))
    path = tmp_path_factory.mktemp("ds") / "shapes"
    ds.save_to_disk(str(path))
    return path


def test_save_to_disk_batches_are_deterministic(saved, micro):
    pairs = HFPairs(open_dataset(str(saved)), micro.processor, seed=1)
    a, b = pairs.batch(2, 8), pairs.batch(2, 8)
    assert a.pixel_values.shape == (8, 3, 32, 32) and a.captions == b.captions
    assert torch.equal(a.pixel_values, b.pixel_values)
    epoch = [c for s in range(3) for c in pairs.batch(s, 8).captions]
    assert len(set(epoch)) == len(set(open_dataset(str(saved))["text"]))  # one epoch sees every pair once


def test_missing_column_is_a_clear_error(saved, micro):
    with pytest.raises(DataError, match="no column 'caption'"):
        HFPairs(open_dataset(str(saved)), micro.processor, text_column="caption")
    with pytest.raises(DataError, match="not a dataset directory"):
        open_dataset("./no/such/folder")


def test_evaluate_dataset_zero_shot_and_retrieval(saved, micro):
    res = evaluate_dataset(micro, open_dataset(str(saved)), templates=["a photo of a {}."])
    assert res["zero_shot"]["n"] == 24 and 0 <= res["zero_shot"]["top1"] <= 1
    assert set(res["retrieval"]) >= {"image_to_text_R@1", "text_to_image_R@10"}


def test_image_folder_with_metadata_jsonl(tmp_path, micro):
    import json

    lines = []
    for s in ShapesWorld(seed=3).take(6):
        s.image.save(tmp_path / f"{s.index}.png")
        lines.append(json.dumps({"file_name": f"{s.index}.png", "caption": s.caption}))
    (tmp_path / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    pairs = HFPairs(open_dataset(str(tmp_path)), micro.processor, text_column="caption")
    assert len(pairs) == 6 and pairs.batch(0, 4).pixel_values.shape == (4, 3, 32, 32)


def test_uint8_batches_normalise_to_the_float_batches():
    """The trainer's uint8 transport (a quarter of the bytes) gives the same pixels as the float path."""
    import torch

    from core.train import ShapesPairs, batch_stream

    floats = ShapesPairs(seed=0, curriculum_steps=10).batch(2, 8)
    raw = list(batch_stream(ShapesPairs(seed=0, curriculum_steps=10, as_uint8=True), 8, 2, 3, num_workers=1))[0]
    assert raw.pixel_values.dtype == torch.uint8 and raw.captions == floats.captions
    assert torch.equal(raw.pixels("cpu"), floats.pixel_values)


# ---- the streaming path: HFPairs over an IterableDataset, skip on resume, split by node -----------

@pytest.fixture(scope="module")
def numbered(tmp_path_factory):
    """24 pairs whose captions are unique (numbered), saved to disk: streamed with streaming=True."""
    samples = ShapesWorld(seed=11, max_objects=1).take(24)
    ds = datasets.Dataset.from_dict({"image": [s.image for s in samples], "text": [f"{i}: {s.caption}" for i, s in enumerate(samples)]},
                                    features=datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")}))
    path = tmp_path_factory.mktemp("ds") / "numbered"
    ds.save_to_disk(str(path))
    return path


def _streamed(path, micro, rank=0, world=1):
    from core.train import TrainConfig, make_source
    from core.train.distributed import DistInfo

    cfg = TrainConfig.from_flat(data=str(path), streaming=True, seed=1)
    return make_source(cfg, micro, DistInfo(rank, world) if world > 1 else None)


def test_streaming_pairs_resume_by_skipping_to_the_same_batches(numbered, micro):
    run = _streamed(numbered, micro)
    assert run.streaming
    in_order = [run.batch(s, 4) for s in range(4)]  # one iterator, read on
    later = _streamed(numbered, micro).batch(2, 4)  # a fresh source asked for step 2: shuffle, then skip 8
    assert later.captions == in_order[2].captions and torch.equal(later.pixel_values, in_order[2].pixel_values)
    assert torch.equal(later.input_ids, in_order[2].input_ids)  # tokenized by the source, as in the workers
    seen = [c for b in in_order[:6] for c in b.captions]
    assert len(set(seen)) == 16 and set(seen) <= set(open_dataset(str(numbered))["text"])  # shuffled, no repeats in a pass


def test_streaming_is_split_by_node(numbered, micro):
    ranks = [_streamed(numbered, micro, rank, 2) for rank in range(2)]
    parts = [[c for s in range(2) for c in r.batch(s, 6).captions] for r in ranks]  # 2 steps x 6 per rank = a pass
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == sorted(open_dataset(str(numbered))["text"])


def test_a_streamed_run_resumed_reproduces_the_uninterrupted_losses(numbered, micro_dir, tmp_path):
    import json

    from core.train import TrainConfig, train

    def cfg(out, **kw):
        return TrainConfig.from_flat(output_dir=str(out), model=str(micro_dir), data=str(numbered), streaming=True,
                                     steps=4, batch_size=4, warmup_steps=1, eval_every=0, save_every=2, log_every=1,
                                     num_workers=0, progress=False, **kw)

    def losses(out):
        return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]

    train(cfg(tmp_path / "full"))
    train(cfg(tmp_path / "cut", stop_at=2))
    train(cfg(tmp_path / "cut"), start="resume")
    assert len(losses(tmp_path / "full")) == 4
    assert losses(tmp_path / "cut") == pytest.approx(losses(tmp_path / "full"), abs=1e-5)
