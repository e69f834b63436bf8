"""Where (image, caption) pairs come from: the shapes world, uploads, or a `datasets` source.

Shared by the similarity-matrix and embedding-map tabs. Every builder returns a `Pairs`.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core.data import DataError, open_dataset
from core.errors import UserInputError
from core.model import looks_like_path
from core.shapes import ShapesWorld
from demo.inputs.images import display_name, open_image
from demo.platform.gpu import embed_images, embed_texts

SOURCES = ("shapes world", "uploaded images", "datasets source")
LABEL_KEYS = ("shape", "colour", "combo", "style", "count", "size", "position", "background", "held_out")
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[\w.-]{1,96})?$")


@dataclass
class Pairs:
    """N images with N captions, display names, and per-pair labels (may be empty dicts)."""

    images: list
    captions: list[str]
    names: list[str]
    labels: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.captions)


def shapes_pairs(n: int, seed: int = 0, split: str = "eval", start: int = 0,
                 progress: Callable[[int, int], None] | None = None) -> Pairs:
    """n consecutive samples of the shapes world (the eval split holds every colour–shape pair).
    progress(done, n) is called every 500 samples (about 0.5 s), so a Stop can end a large set early."""
    n, seed = int(n), int(seed)
    if n < 1:
        raise UserInputError("the batch needs at least one pair")
    world, samples = ShapesWorld(seed=seed, split=split), []
    for at in range(start, start + n, 500):
        samples += world.take(min(500, start + n - at), at)
        if progress is not None:
            progress(len(samples), n)
    return Pairs([s.image for s in samples], [s.caption for s in samples],
                 [f"#{s.index}" for s in samples], [s.labels for s in samples])


def caption_from_name(name: str) -> str:
    """A starting caption from a file name: 'red_apple-2.jpg' -> 'red apple 2'."""
    return re.sub(r"[_\-.]+", " ", Path(name).stem).strip() or "an image"


def upload_pairs(files, max_images: int = 64, captions: list[str] | None = None) -> Pairs:
    """Uploaded image files, captioned by `captions` if given, else by their file names."""
    files = list(files or [])
    if not files:
        raise UserInputError("no images uploaded: add some image files first")
    if len(files) > max_images:
        raise UserInputError(f"{len(files)} images uploaded; the limit is {max_images}")
    images = [open_image(f) for f in files]
    names = [display_name(f) for f in files]
    caps = list(captions) if captions else [caption_from_name(n) for n in names]
    return Pairs(images, caps, names, [{} for _ in images])


def check_dataset_source(source: str, data_dirs: list[Path]) -> str:
    """A local dataset folder must lie inside an allowed folder; anything else must look like a Hub name."""
    source = (source or "").strip()
    if not source:
        raise UserInputError("no dataset given: enter a Hub dataset name or an allowed local folder")
    if looks_like_path(source) or Path(source).expanduser().exists():
        path = Path(source).expanduser().resolve()
        if not any(path == d or d in path.parents for d in data_dirs):
            allowed = ", ".join(str(d) for d in data_dirs) or "none configured (set CLIP_LAB_DATA_DIRS)"
            raise UserInputError(f"{source}: local datasets may only be read from the allowed folders: {allowed}")
        return str(path)
    if not _DATASET_NAME.match(source):
        raise UserInputError(f"{source!r} is not a Hub dataset name like 'user/name' nor an allowed local folder")
    return source


def dataset_pairs(source: str, split: str, image_column: str, text_column: str, n: int, seed: int,
                  data_dirs: list[Path], opened: Callable | None = None, max_bytes: int = 256 << 20) -> Pairs:
    """n (image, caption) pairs drawn with `seed` from a `datasets` source, bounded before decoding.

    A local folder (inside `data_dirs`) is read map-style (memory-mapped); a Hub dataset is only ever
    streamed, n rows from a seeded shuffle buffer, never downloaded whole. Image cells are read as
    encoded bytes and decoded by `open_image` (format allowlist, pixel cap from the header, shrunk on
    decode); at most `max_bytes` of them are read in all. A cell that names a file is opened only
    when the file lies inside an allowed data folder. opened(source, split, opener) returns the
    opened split from the app's cache (Services.dataset).
    """
    import datasets

    source = check_dataset_source(source, data_dirs)
    split = (split or "train").strip()
    local = Path(source).is_dir()
    opener = lambda: open_dataset(source, split, streaming=not local)  # noqa: E731
    ds = opened(source, split, opener) if opened else opener()
    columns = list(ds.column_names or (ds.features or {}).keys())
    for col in (image_column, text_column):
        if col not in columns:
            raise DataError(f"{source} has no column {col!r}; its columns are {', '.join(columns)}")
    ds = ds.cast_column(image_column, datasets.Image(decode=False))
    if local:
        total = len(ds)
        take = min(int(n), total)
        if take < 1:
            raise DataError(f"{source} [{split}] is empty")
        idx = np.sort(np.random.default_rng(int(seed)).choice(total, size=take, replace=False)) if take < total else np.arange(total)
        rows = [ds[int(i)] for i in idx]
    else:
        rows = list(itertools.islice(ds.shuffle(seed=int(seed), buffer_size=min(1000, 4 * int(n))), int(n)))
        idx = np.arange(len(rows))
        if not rows:
            raise DataError(f"{source} [{split}] is empty")
    images = []
    for i, data in zip(idx, image_cell_bytes(rows, idx, image_column, source, data_dirs, max_bytes, "pairs")):
        try:
            images.append(open_image(data))
        except Exception as e:
            raise DataError(f"{source} row {int(i)}: unreadable image ({e.__class__.__name__})") from e
    captions = []
    for r in rows:
        c = r[text_column]
        captions.append(str(c[0] if isinstance(c, (list, tuple)) and c else c))
    labels = [{k: v for k, v in r.items() if k not in (image_column, text_column) and isinstance(v, (str, int, bool))}
              for r in rows]
    return Pairs(images, captions, [f"{split}[{int(i)}]" for i in idx], labels)


def image_cell_bytes(rows: list[dict], idx, image_column: str, source: str, data_dirs: list[Path],
                     max_bytes: int, what: str = "rows") -> list[bytes]:
    """The still-encoded bytes of each row's image cell (datasets' Image(decode=False): {"bytes", "path"}),
    at most max_bytes in all, counted before any file is read. A cell naming a local file is read only
    inside `data_dirs`. idx[i] is row i's index, for messages; `what` names the rows ("pairs", "rows")."""
    blobs, read = [], 0
    too_much = DataError(f"{source}: the images are over {max_bytes >> 20} MB in all; ask for fewer {what}")
    for i, r in zip(idx, rows):
        cell = r[image_column] or {}
        data, path = cell.get("bytes"), cell.get("path")
        if data is None and path:
            where = Path(path).expanduser().resolve()
            if not any(where == d or d in where.parents for d in data_dirs):
                raise DataError(f"{source} row {int(i)}: its image names a file outside the allowed data folders")
            if read + where.stat().st_size > max_bytes:
                raise too_much
            data = where.read_bytes()
        read += len(data or b"")
        if read > max_bytes:
            raise too_much
        blobs.append(data or b"")
    return blobs


@dataclass
class SourceSpec:
    """What a source selector says: which source and its settings."""

    source: str = "shapes world"
    n: int = 8
    seed: int = 0
    split: str = "eval"
    files: list | None = None
    dataset: str = ""
    dataset_split: str = "train"
    image_column: str = "image"
    text_column: str = "text"


def build_pairs(spec: SourceSpec, data_dirs: list[Path], max_images: int = 64, opened: Callable | None = None,
                progress: Callable[[int, int], None] | None = None) -> Pairs:
    """Pairs from whichever source `spec` names (`opened`: the app's dataset cache, see dataset_pairs;
    `progress(done, total)`: called while shapes-world images are drawn)."""
    if spec.source == "shapes world":
        return shapes_pairs(spec.n, spec.seed, spec.split or "eval", progress=progress)
    if spec.source == "uploaded images":
        return upload_pairs(spec.files, max_images)
    if spec.source == "datasets source":
        return dataset_pairs(spec.dataset, spec.dataset_split, spec.image_column, spec.text_column,
                             spec.n, spec.seed, data_dirs, opened)
    raise UserInputError(f"unknown source {spec.source!r}; choose one of {', '.join(SOURCES)}")


DEFAULT_SET = SourceSpec("shapes world", 500, 0, "eval")  # 1,000 points


def set_key(spec: SourceSpec) -> tuple:
    """A cache key for the encoded set that `spec` describes (Services adds the model's key)."""
    files = tuple(str(getattr(f, "path", f)) for f in spec.files or []) if spec.source == "uploaded images" else ()
    ds = (spec.dataset, spec.dataset_split, spec.image_column, spec.text_column) if spec.source == "datasets source" else ()
    n = spec.n if spec.source != "uploaded images" else len(files)
    return (spec.source, n, spec.seed, spec.split, files, ds)


def encoded_set(ctx, clip, spec: SourceSpec, progress=None, job=None) -> tuple[Pairs, torch.Tensor, torch.Tensor]:
    """The pairs and their image [N, D] and caption [N, D] embeddings, from ctx's services or computed now.

    A request for the set that the start-up warm-up is encoding waits for it instead of encoding
    it a second time beside it. `job` (demo.platform.jobs.Job) stops the encoding when its Stop is pressed.
    """
    def build():
        if progress is not None:
            progress(0.1, desc=f"building {spec.n} pairs")
        pairs = build_pairs(spec, ctx.config.data_dirs, ctx.config.max_upload_images, ctx.services.dataset,
                            job.reporter(progress, "drawing shapes-world images", "images") if job else None)
        img = embed_images(clip, pairs.images, job.reporter(progress, "encoding images", "images") if job else None)
        txt = embed_texts(clip, pairs.captions, job.reporter(progress, "encoding captions", "captions") if job else None)
        for im in pairs.images:  # the cache keeps small thumbnails (for the map's hover cards), not decoded images
            im.thumbnail((64, 64))
        return pairs, img, txt

    return ctx.services.encoded_set(clip, set_key(spec), build)[0]


def prewarm(ctx) -> None:
    """Load the default model and encode the default map set (for a background thread at start)."""
    clip = ctx.models.get(ctx.config.default_model)
    encoded_set(ctx, clip, DEFAULT_SET)
