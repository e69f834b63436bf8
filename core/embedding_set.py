"""Embed once, explore many times: a source's images (and captions) encoded by one model into a folder.

A set folder holds
  receipt.json             what made it: format, model, weights revision, family, preprocessing, the source,
                           the rows, the chunk size, the date, the libraries; and whether it is complete
  parts/part-00012.parquet one chunk of rows while the set is being made, written whole and then renamed, so
                           an interrupted run leaves finished chunks only and the same command resumes it
  embeddings.parquet       the merged set once every chunk is done (the parts are then removed)
  projections/*.parquet    2-D maps of it, cached by their settings (core.map_cache)

Columns (Apache Parquet, readable by `datasets.Dataset.from_parquet` and pandas): id, label, caption
(strings; "" where the source has none), has_caption (bool), image_emb and text_emb (fixed-size lists of
float32, L2-normalised; zeros where there is no caption) and thumb (WebP bytes, at most `thumb_px` a side).
Chunks are assigned round-robin to ranks, so torchrun processes share the work and rank 0 merges.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import UserInputError
from .model import Clip

FORMAT = "clip-lab-embedding-set/1"
MERGED = "embeddings.parquet"
PLAN_KEYS = ("format", "model", "revision", "source", "rows", "chunk_rows", "thumb_px")  # a resumed run must match


class SetError(UserInputError):
    """An embedding set that cannot be made, resumed or opened as asked; the message is one line."""


@dataclass(frozen=True)
class EmbedSource:
    """What to embed: `kind` "shapes" (the synthetic world; `name` unused) or "dataset" (a `datasets` source:
    a save_to_disk folder, an image folder with captions in metadata.csv, or a Hub name)."""

    kind: str = "shapes"
    name: str = "shapes world"
    split: str = "train"
    n: int | None = None  # rows to embed; None: all of a dataset (the shapes world needs a number)
    seed: int = 0
    image_column: str = "image"
    caption_column: str = "text"
    label_column: str = "label"


@dataclass
class Rows:
    """A source opened for reading: `total` rows, `read(start, stop)` -> [(id, PIL image, caption, label)]."""

    total: int
    read: Callable[[int, int], list]


def open_rows(src: EmbedSource) -> Rows:
    """The rows of a source, readable by index range."""
    if src.kind == "shapes":
        from .shapes import ShapesWorld

        if not src.n:
            raise SetError("the shapes world is endless: say how many pairs to embed (--rows)")
        world = ShapesWorld(seed=src.seed, split=src.split, max_objects=1)

        def read_shapes(a: int, b: int) -> list:
            out = []
            for s in world.take(b - a, a):
                o = s.objects[0]
                out.append((str(s.index), s.image, s.caption, f"{o.colour} {o.shape}"))
            return out
        return Rows(int(src.n), read_shapes)
    if src.kind != "dataset":
        raise SetError(f"unknown source kind {src.kind!r}: 'shapes' or 'dataset'")
    from .data import DataError, first_caption, open_dataset, to_rgb

    ds = open_dataset(src.name, src.split)
    if src.image_column not in ds.column_names:
        raise DataError(f"{src.name} has no image column {src.image_column!r}; it has {', '.join(ds.column_names)}")
    caption = src.caption_column if src.caption_column in ds.column_names else None
    label = src.label_column if src.label_column in ds.column_names else None
    names = getattr(ds.features.get(label), "names", None) if label else None
    total = len(ds) if not src.n else min(int(src.n), len(ds))

    def read_dataset(a: int, b: int) -> list:
        out = []
        for i, row in zip(range(a, b), ds.select(range(a, b))):
            lab = row[label] if label else ""
            out.append((str(i), to_rgb(row[src.image_column]), first_caption(row[caption]) if caption else "",
                        names[lab] if names is not None and lab is not None else str(lab if lab is not None else "")))
        return out
    return Rows(total, read_dataset)


def plan(clip: Clip, src: EmbedSource, rows: int, chunk_rows: int, thumb_px: int) -> dict:
    """The receipt of a set about to be made (complete: false until merged)."""
    from .receipts import library_versions, processor_settings

    return {"format": FORMAT, "model": clip.source, "revision": getattr(clip, "revision", ""), "family": clip.family.name,
            "embed_dim": clip.embed_dim, "preprocessing": processor_settings(clip.processor), "source": asdict(src),
            "rows": rows, "chunk_rows": chunk_rows, "thumb_px": thumb_px, "libraries": library_versions(),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "complete": False}


def read_receipt(folder: str | os.PathLike) -> dict:
    """The receipt of a set folder (SetError when there is none or it is not ours)."""
    path = Path(folder) / "receipt.json"
    try:
        receipt = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SetError(f"{folder}: not an embedding set (no readable receipt.json)") from e
    if receipt.get("format") != FORMAT:
        raise SetError(f"{folder}: an embedding set of format {receipt.get('format')!r}; this version reads {FORMAT}")
    return receipt


def start_or_resume(folder: Path, receipt: dict) -> dict:
    """Write the receipt of a new set, or check that a folder's unfinished set is this same plan."""
    if (folder / "receipt.json").is_file():
        old = read_receipt(folder)
        differs = [k for k in PLAN_KEYS if old.get(k) != receipt.get(k)]
        if differs:
            raise SetError(f"{folder} holds another set ({', '.join(differs)} differ): choose another folder or delete it")
        return old
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "receipt.json", receipt)
    return receipt


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def thumbnail(image, px: int) -> bytes:
    """WebP bytes of the image, at most px a side."""
    im = image.copy()
    im.thumbnail((px, px))
    buf = io.BytesIO()
    im.save(buf, "WEBP", quality=80)
    return buf.getvalue()


def chunk_table(clip: Clip, rows: list, thumb_px: int, batch_size: int) -> pa.Table:
    """One chunk's rows encoded: the table of a part file."""
    from .encode import arrays_to_pixels, encode_images, encode_texts

    ids, images, captions, labels = (list(x) for x in zip(*rows))
    side = clip.image_size
    if all(im.size == (side, side) and im.mode == "RGB" for im in images):  # already at model size: skip the resize
        pixels = arrays_to_pixels(np.stack([np.asarray(im) for im in images]), clip.processor.image_mean,
                                  clip.processor.image_std)
    else:
        pixels = images
    img = encode_images(clip, pixels, batch_size=batch_size).numpy().astype(np.float32)
    has = np.array([bool(c.strip()) for c in captions])
    txt = np.zeros_like(img)
    if has.any():
        txt[has] = encode_texts(clip, [c for c, h in zip(captions, has) if h]).numpy()
    d = img.shape[1]
    return pa.table({"id": ids, "label": labels, "caption": captions, "has_caption": has,
                     "image_emb": pa.FixedSizeListArray.from_arrays(pa.array(img.ravel()), d),
                     "text_emb": pa.FixedSizeListArray.from_arrays(pa.array(txt.ravel()), d),
                     "thumb": pa.array([thumbnail(im, thumb_px) for im in images], type=pa.binary())})


def part_path(folder: Path, chunk: int) -> Path:
    return folder / "parts" / f"part-{chunk:05d}.parquet"


def embed_chunks(clip: Clip, src: EmbedSource, folder: str | os.PathLike, chunk_rows: int = 1024, thumb_px: int = 64,
                 rank: int = 0, world: int = 1, batch_size: int = 64,
                 progress: Callable[[int, int], None] | None = None) -> dict:
    """Encode this rank's missing chunks (chunk i belongs to rank i % world) into part files; returns the
    receipt. progress(rows done, rows) after each chunk, counting the chunks already on disk; an exception it
    raises stops the work between chunks (what is written stays valid)."""
    folder = Path(folder)
    rows = open_rows(src)
    if rows.total < 1:
        raise SetError(f"{src.name}: nothing to embed")
    receipt = plan(clip, src, rows.total, chunk_rows, thumb_px)
    if rank == 0:
        receipt = start_or_resume(folder, receipt)
    else:
        wait_for(folder / "receipt.json")
        receipt = start_or_resume(folder, receipt)
    if receipt.get("complete"):
        return receipt
    (folder / "parts").mkdir(exist_ok=True)
    chunks = range(rank, -(-rows.total // chunk_rows), world)
    done = sum(min(chunk_rows, rows.total - c * chunk_rows) for c in chunks if part_path(folder, c).is_file())
    mine = sum(min(chunk_rows, rows.total - c * chunk_rows) for c in chunks)
    for c in chunks:
        path = part_path(folder, c)
        if path.is_file():
            continue
        a, b = c * chunk_rows, min(rows.total, (c + 1) * chunk_rows)
        table = chunk_table(clip, rows.read(a, b), thumb_px, batch_size)
        tmp = path.with_suffix(f".tmp{rank}")
        pq.write_table(table, tmp)
        os.replace(tmp, path)
        done += b - a
        if progress is not None:
            progress(done, mine)
    return receipt


def wait_for(path: Path, timeout_s: float = 600.0) -> None:
    """Rank > 0 waits for rank 0's receipt (torchrun starts the ranks together)."""
    import time

    end = time.monotonic() + timeout_s
    while not path.is_file():
        if time.monotonic() > end:
            raise SetError(f"{path} did not appear: did rank 0 fail?")
        time.sleep(0.1)


def merge_parts(folder: str | os.PathLike) -> dict:
    """Concatenate every chunk, in order, into embeddings.parquet; mark the receipt complete; remove the parts."""
    folder = Path(folder)
    receipt = read_receipt(folder)
    if receipt.get("complete"):
        return receipt
    n_chunks = -(-receipt["rows"] // receipt["chunk_rows"])
    missing = [c for c in range(n_chunks) if not part_path(folder, c).is_file()]
    if missing:
        raise SetError(f"{folder}: {len(missing)} of {n_chunks} chunks are not embedded yet; run the same command again")
    tmp = folder / (MERGED + ".tmp")
    with pq.ParquetWriter(tmp, pq.read_schema(part_path(folder, 0))) as writer:
        for c in range(n_chunks):
            writer.write_table(pq.read_table(part_path(folder, c)))
    os.replace(tmp, folder / MERGED)
    receipt = {**receipt, "complete": True,
               "completed": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    write_json_atomic(folder / "receipt.json", receipt)
    for c in range(n_chunks):
        part_path(folder, c).unlink()
    (folder / "parts").rmdir()
    return receipt


@dataclass
class EmbeddingSet:
    """A complete set, read: row metadata and embeddings in memory, thumbnails read on demand."""

    folder: Path
    receipt: dict
    ids: list[str]
    labels: list[str]
    captions: list[str]
    has_caption: np.ndarray  # [N] bool
    image_emb: np.ndarray  # [N, D] float32
    text_emb: np.ndarray  # [N, D] float32 (zeros where has_caption is false)
    thumb_column: pa.ChunkedArray | None = field(default=None, repr=False)  # read on the first thumbs() call

    def __len__(self) -> int:
        return len(self.ids)

    def thumbs(self, rows) -> list[bytes]:
        """The WebP thumbnails of some rows, in the order asked (the column is read once, then kept: a few
        hundred bytes a row)."""
        if self.thumb_column is None:
            self.thumb_column = pq.read_table(self.folder / MERGED, columns=["thumb"], memory_map=True).column("thumb")
        return self.thumb_column.take(pa.array(np.asarray(rows, dtype=np.int64))).to_pylist()


def embeddings_of(table: pa.Table, column: str) -> np.ndarray:
    col = table.column(column).combine_chunks()
    return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), col.type.list_size).astype(np.float32, copy=False)


def open_set(folder: str | os.PathLike) -> EmbeddingSet:
    """Read a complete set (SetError when it is not one, or not finished)."""
    folder = Path(folder)
    receipt = read_receipt(folder)
    if not receipt.get("complete") or not (folder / MERGED).is_file():
        raise SetError(f"{folder}: the set is not finished; run the embed command again to resume it")
    table = pq.read_table(folder / MERGED, columns=["id", "label", "caption", "has_caption", "image_emb", "text_emb"])
    return EmbeddingSet(folder, receipt, table.column("id").to_pylist(), table.column("label").to_pylist(),
                        table.column("caption").to_pylist(), table.column("has_caption").to_numpy(zero_copy_only=False),
                        embeddings_of(table, "image_emb"), embeddings_of(table, "text_emb"))


def check_model(receipt: dict, clip: Clip) -> None:
    """A set embedded by another model (or other weights) cannot be compared with this model's queries."""
    if receipt["model"] != clip.source or receipt.get("revision", "") != getattr(clip, "revision", ""):
        raise SetError(f"this set was embedded by {receipt['model']} (weights {receipt.get('revision') or '?'}), not by "
                       f"the session's model {clip.source}: pick that model, or embed the set again with this one")
