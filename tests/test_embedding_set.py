"""Embed once, explore many times (core/embedding_set.py, scripts/embed.py): a set made in two interrupted
halves is the set made in one go; a folder holding another plan is never mixed into; the receipt says which
model made the set and a set of another model is refused for the session's model; the files are standard
Parquet that `datasets` reads; the CLI speaks in one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.embedding_set import (EmbedSource, SetError, check_model, embed_chunks, merge_parts, open_set, part_path,
                                read_receipt)

ROOT = Path(__file__).resolve().parents[1]
SRC = EmbedSource("shapes", n=150, seed=4)


class Interrupted(Exception):
    pass


def _stop_after(chunks: int):
    seen = []

    def progress(done, total):
        seen.append(done)
        if len(seen) >= chunks:
            raise Interrupted
    return progress


def test_a_set_made_in_two_interrupted_halves_equals_one_made_in_one_go(micro, tmp_path):
    whole, halves = tmp_path / "whole", tmp_path / "halves"
    embed_chunks(micro, SRC, whole, chunk_rows=32)
    merge_parts(whole)
    with pytest.raises(Interrupted):  # killed after 2 of 5 chunks: those two are on disk, whole
        embed_chunks(micro, SRC, halves, chunk_rows=32, progress=_stop_after(2))
    assert [part_path(halves, c).is_file() for c in range(5)] == [True, True, False, False, False]
    with pytest.raises(SetError, match="3 of 5 chunks are not embedded yet"):
        merge_parts(halves)
    resumed = []
    embed_chunks(micro, SRC, halves, chunk_rows=32, progress=lambda d, t: resumed.append((d, t)))
    assert resumed[0] == (96, 150) and resumed[-1] == (150, 150)  # the kept chunks count, and are not redone
    merge_parts(halves)
    a, b = open_set(whole), open_set(halves)
    assert a.ids == b.ids == [str(i) for i in range(150)] and a.labels == b.labels and a.captions == b.captions
    np.testing.assert_array_equal(a.image_emb, b.image_emb)
    np.testing.assert_array_equal(a.text_emb, b.text_emb)
    assert a.thumbs([0, 149, 7]) == b.thumbs([0, 149, 7]) and not (halves / "parts").exists()
    np.testing.assert_allclose(np.linalg.norm(a.image_emb, axis=1), 1.0, atol=1e-5)


def test_the_set_holds_what_the_model_gives_and_datasets_reads_it(bundled, tmp_path):
    """Rows equal encoding the same shapes-world samples through the model's own processor (the set takes a
    shortcut for images already at model size); the Parquet file opens in `datasets`."""
    import datasets
    import torch
    from PIL import Image

    from core.encode import encode_images, encode_texts
    from core.shapes import ShapesWorld

    embed_chunks(bundled, EmbedSource("shapes", n=20, seed=1), tmp_path, chunk_rows=16)
    merge_parts(tmp_path)
    s = open_set(tmp_path)
    samples = ShapesWorld(seed=1, split="train", max_objects=1).take(20)
    with torch.no_grad():
        np.testing.assert_allclose(s.image_emb, encode_images(bundled, [x.image for x in samples]).numpy(), atol=1e-5)
        np.testing.assert_allclose(s.text_emb, encode_texts(bundled, [x.caption for x in samples]).numpy(), atol=1e-5)
    assert s.labels[0] == f"{samples[0].objects[0].colour} {samples[0].objects[0].shape}"
    import io
    thumb = Image.open(io.BytesIO(s.thumbs([3])[0]))
    assert thumb.format == "WEBP" and max(thumb.size) <= 64
    ds = datasets.Dataset.from_parquet(str(tmp_path / "embeddings.parquet"))
    assert ds.num_rows == 20 and len(ds[0]["image_emb"]) == bundled.embed_dim


def test_a_folder_holding_another_plan_is_refused(micro, tmp_path):
    with pytest.raises(Interrupted):
        embed_chunks(micro, SRC, tmp_path, chunk_rows=32, progress=_stop_after(1))
    with pytest.raises(SetError, match="holds another set .*rows"):
        embed_chunks(micro, EmbedSource("shapes", n=151, seed=4), tmp_path, chunk_rows=32)
    with pytest.raises(SetError, match="chunk_rows"):
        embed_chunks(micro, SRC, tmp_path, chunk_rows=64)
    with pytest.raises(SetError, match="not finished"):
        open_set(tmp_path)


def test_a_set_of_another_model_is_refused_for_the_sessions_model(micro, tmp_path):
    embed_chunks(micro, EmbedSource("shapes", n=16), tmp_path, chunk_rows=16)
    receipt = merge_parts(tmp_path)
    assert receipt["complete"] and receipt["model"] == micro.source and receipt["rows"] == 16
    check_model(receipt, micro)  # its own model: fine
    other = {**receipt, "model": "openai/clip-vit-base-patch32", "revision": "abc"}
    with pytest.raises(SetError, match="embedded by openai/clip-vit-base-patch32 .*not by the session's model"):
        check_model(other, micro)
    with pytest.raises(SetError, match="weights"):
        check_model({**receipt, "revision": "another"}, micro)


def _run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "scripts/embed.py", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_cli_embeds_an_image_folder_with_captions(tmp_path):
    """An image folder with a metadata.csv of captions and labels (the `imagefolder` layout)."""
    from core.shapes import ShapesWorld

    folder = tmp_path / "images"
    rows = ["file_name,text,label"]
    for s in ShapesWorld(seed=2, max_objects=1).take(12):
        shape = s.objects[0].shape
        (folder / shape).mkdir(parents=True, exist_ok=True)
        s.image.save(folder / shape / f"{s.index}.png")
        rows.append(f"{shape}/{s.index}.png,{s.caption},{shape}")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    done = _run("--source", str(folder), "--out", str(tmp_path / "set"), "--chunk-rows", "16")
    assert done.returncode == 0, done.stderr[-2000:]
    s = open_set(tmp_path / "set")
    assert len(s) == 12 and s.has_caption.all() and all(c for c in s.captions)
    assert s.labels == [c.split(",")[2] for c in rows[1:]] and read_receipt(tmp_path / "set")["source"]["kind"] == "dataset"
    assert json.loads((tmp_path / "set" / "receipt.json").read_text())["preprocessing"]["class"]


@pytest.mark.parametrize("args, message", [
    (("--source", "shapes"), "the shapes world is endless"),
    (("--n", "0"), "--rows must be between"),
    (("--source", "/nonexistent/folder"), "error:"),
    (("--n", "10", "--chunk-rows", "3"), "--chunk-rows"),
])
def test_the_cli_says_what_is_wrong_in_one_line(tmp_path, capsys, args, message):
    """In-process (the subprocess path is the test above): exit status 1 and one `error:` line."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import embed

    assert embed.main([*args, "--out", str(tmp_path / "out")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error:") and message in lines[-1], lines

