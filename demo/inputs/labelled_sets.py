"""Labelled image sets for the Evaluate tab: the shapes world, an uploaded zip or files with a
labels.csv, or a `datasets` source with an image and a label column.

A loader returns a `LabelledSet`: the images still encoded (bytes, paths or a seeded generator),
their labels and class names, and captions when the set has them. `encode_set` then decodes them
with `open_image` (format allowlist, pixel cap) and encodes them in chunks, keeping only the
embeddings and small packed thumbnails, so 5,000 photos are never all decoded at once.

Uploads are bounded before anything is decompressed: a zip's directory is read first (at most
MAX_ZIP_MEMBERS entries, MAX_SET_IMAGES images, MAX_SET_BYTES uncompressed, no absolute or '..'
paths, no encrypted members); members are read into memory with `zipfile`, never extracted to disk.
A labels.csv is parsed with the csv module and capped at MAX_CSV_BYTES.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np
import torch

from core.data import DataError, open_dataset
from core.errors import UserInputError
from core.shapes import STYLES, ShapesWorld
from demo.inputs.images import display_name, open_image, pack
from demo.inputs.pairs import check_dataset_source, image_cell_bytes
from demo.platform import gpu

SET_SOURCES = ("shapes world", "uploaded zip or files", "datasets source")
SHAPES_LABELS = {"shape": "shape", "colour": "colour", "colour × shape": "combo", "style": "style"}
MAX_SET_IMAGES = 5000
MAX_SET_BYTES = 256 << 20  # uncompressed image bytes of one set (zip members or dataset cells)
MAX_CSV_BYTES = 1 << 20
MAX_ZIP_MEMBERS = 4 * MAX_SET_IMAGES  # directory entries of any kind (folders, read-me files, images)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")
FILE_COLUMNS = ("filename", "file_name", "file", "image", "path", "name")
LABEL_COLUMNS = ("label", "class", "category", "classname")
THUMB_SIDE = 112  # thumbnails kept for the galleries
CHUNK = 256 if gpu.ZERO_GPU else 32  # images decoded at once (each at most 1024 px on its long side)


@dataclass
class LabelledSet:
    """N images not yet decoded, with labels. tasks: label kind -> (class names, label ids [N]);
    the shapes world offers shape, colour, combo and style, every other source one kind, 'label'."""

    names: list[str]
    read: Callable[[int], object]  # image i as RGB PIL (decoded on demand)
    tasks: dict[str, tuple[list[str], list[int]]]
    captions: list[str] | None
    description: str


@dataclass
class EncodedSet:
    """What the services keep per (model, set): embeddings, labels, captions and packed thumbnails."""

    names: list[str]
    tasks: dict[str, tuple[list[str], list[int]]]
    description: str
    image_emb: torch.Tensor  # [N, D], L2-normalised
    thumbs: list[bytes]  # demo.inputs.images.pack of each image, at most THUMB_SIDE px
    captions: list[str] | None = None
    caption_emb: torch.Tensor | None = None  # [N, D]

    def task(self, label: str | None) -> tuple[str, list[str], list[int]]:
        """(kind, class names, labels) of the asked label kind (shapes world) or the set's only one."""
        if len(self.tasks) == 1:
            kind = next(iter(self.tasks))
        else:
            kind = SHAPES_LABELS.get(label or "shape", label or "shape")
            if kind not in self.tasks:
                raise UserInputError(f"label {label!r} is not one of {', '.join(SHAPES_LABELS)}")
        return (kind, *self.tasks[kind])


@dataclass(frozen=True)
class SetSpec:
    """What the tab's set inputs say; `key` identifies the encoded set (Services adds the model)."""

    source: str = "shapes world"
    n: int = 1000
    seed: int = 0
    split: str = "eval"
    files: tuple[str, ...] = ()
    dataset: str = ""
    dataset_split: str = "train"
    image_column: str = "image"
    label_column: str = "label"
    caption_column: str = ""

    def key(self) -> tuple:
        if self.source == "shapes world":  # the labels of every kind are kept: switching the label encodes nothing
            return ("eval-set", self.source, self.n, self.seed, self.split)
        if self.source == "uploaded zip or files":  # Gradio names uploads by a hash of their bytes
            return ("eval-set", self.source, self.files)
        return ("eval-set", self.source, self.dataset, self.dataset_split, self.image_column, self.label_column,
                self.caption_column, self.n, self.seed)


def _indexed(labels: list[str], classes: list[str] | None = None) -> tuple[list[str], list[int]]:
    classes = classes if classes is not None else sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    return classes, [index[l] for l in labels]


# ---------------------------------------------------------------- shapes world

def shapes_set(n: int, seed: int = 0, split: str = "eval", report: Callable[[int, int], None] | None = None) -> LabelledSet:
    """n single-object shapes-world samples, labelled by shape, colour, colour × shape and style;
    report(done, n) every 100 samples (a Stop check: 5,000 samples take a few seconds)."""
    from core.eval_study import shapes_task

    world = ShapesWorld(seed=int(seed), split=split, min_objects=1, max_objects=1)
    samples = []
    for start in range(0, int(n), 100):
        samples += world.take(min(100, int(n) - start), start)
        if report is not None:
            report(len(samples), int(n))
    tasks = {task: shapes_task(samples, task) for task in ("shape", "colour", "combo")}
    tasks["style"] = _indexed([f"{s.style} shape" for s in samples], [f"{s} shape" for s in STYLES])
    images = [s.image for s in samples]
    return LabelledSet([f"#{s.index}" for s in samples], lambda i: images[i], tasks, [s.caption for s in samples],
                       f"shapes world, {len(samples):,} single-object images (seed {seed}, {split} split)")


# ---------------------------------------------------------------- uploads: a zip, or files with labels.csv

def parse_labels_csv(data: bytes, max_rows: int = MAX_SET_IMAGES) -> list[tuple[str, str]]:
    """(file, label) rows of a labels.csv: a header naming a file column (filename, file, image, path)
    and a label column (label, class, category), or no header and two columns file,label."""
    if len(data) > MAX_CSV_BYTES:
        raise DataError(f"labels.csv is {len(data):,} bytes; the limit is {MAX_CSV_BYTES:,}")
    try:
        rows = [r for r in csv.reader(io.StringIO(data.decode("utf-8-sig"))) if any(c.strip() for c in r)]
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"labels.csv is not a readable UTF-8 CSV file ({e.__class__.__name__})") from e
    if not rows:
        raise DataError("labels.csv is empty")
    header = [c.strip().lower() for c in rows[0]]
    fcol = next((header.index(c) for c in FILE_COLUMNS if c in header), None)
    lcol = next((header.index(c) for c in LABEL_COLUMNS if c in header), None)
    if fcol is not None and lcol is not None:
        rows = rows[1:]
    elif len(rows[0]) >= 2 and rows[0][0].strip().lower().endswith(IMAGE_SUFFIXES):
        fcol, lcol = 0, 1
    else:
        raise DataError("labels.csv needs a header with a filename and a label column, or two columns: file,label")
    if len(rows) > max_rows:
        raise DataError(f"labels.csv has {len(rows):,} rows; the limit is {max_rows:,} images")
    out, seen = [], set()
    for i, r in enumerate(rows, start=1):
        if len(r) <= max(fcol, lcol) or not r[fcol].strip() or not r[lcol].strip():
            raise DataError(f"labels.csv row {i} lacks a file name or a label")
        name, label = r[fcol].strip().replace("\\", "/"), r[lcol].strip()
        if name in seen:
            raise DataError(f"labels.csv names {name[:80]!r} twice")
        seen.add(name)
        out.append((name, label))
    return out


def _member_path(name: str) -> PurePosixPath:
    """A zip member's path, refused when it is absolute or climbs out with '..'."""
    clean = name.replace("\\", "/")
    path = PurePosixPath(clean)
    if clean.startswith("/") or re.match(r"^[A-Za-z]:", clean) or ".." in path.parts:
        raise DataError(f"the zip holds an unsafe path {name[:80]!r} (absolute, or with '..'): refused")
    return path


def _ignored(path: PurePosixPath) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in path.parts) or path.name.lower() == "thumbs.db"


def zip_set(zip_path, max_images: int = MAX_SET_IMAGES, max_bytes: int = MAX_SET_BYTES) -> LabelledSet:
    """A labelled set from a zip: class sub-folders (ImageFolder: the first folder under a common root is
    the class), or images with a labels.csv (file names relative to the csv's folder). Bounded before reading."""
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise DataError(f"{display_name(zip_path)} is not a readable zip file") from e
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_MEMBERS:
            raise DataError(f"the zip lists {len(infos):,} entries; the limit is {MAX_ZIP_MEMBERS:,}")
        members = [(info, _member_path(info.filename)) for info in infos]  # every path is checked, used or not
        members = [(i, p) for i, p in members if not i.is_dir() and not _ignored(p)]
        images = [(i, p) for i, p in members if p.suffix.lower() in IMAGE_SUFFIXES]
        tables = sorted((p for i, p in members if p.name.lower() == "labels.csv"), key=lambda p: len(p.parts))
        if not images:
            raise DataError("the zip holds no images (png, jpg, webp, gif, bmp, tiff)")
        if len(images) > max_images:
            raise DataError(f"the zip holds {len(images):,} images; the limit is {max_images:,}")
        if any(i.flag_bits & 0x1 for i, _ in images):
            raise DataError("the zip is encrypted; upload an unencrypted one")
        declared = sum(i.file_size for i, _ in images)
        if declared > max_bytes:
            raise DataError(f"the zip's images are {declared / 2**20:,.0f} MB uncompressed; the limit is {max_bytes >> 20} MB")
        if tables:
            csv_info = next(i for i, p in members if p == tables[0])
            rows = parse_labels_csv(_read_member(zf, csv_info, MAX_CSV_BYTES), max_images)
            by_path = {p.relative_to(tables[0].parent).as_posix(): (i, p) for i, p in images if tables[0].parent in p.parents}
            missing = [f for f, _ in rows if f not in by_path]
            if missing:
                raise DataError(f"labels.csv names {missing[0][:80]!r}, which is not an image in the zip"
                                + (f" ({len(missing)} such rows)" if len(missing) > 1 else ""))
            chosen = [(by_path[f][0], by_path[f][1], label) for f, label in rows]
        else:
            chosen = _image_folder(images)
        blobs, read = [], 0
        for info, _, _ in chosen:
            blob = _read_member(zf, info, max_bytes - read)
            read += len(blob)
            blobs.append(blob)
    classes, y = _indexed([label for _, _, label in chosen])
    layout = "labels.csv" if tables else "class folders"
    return LabelledSet([p.as_posix() for _, p, _ in chosen], lambda i: open_image(blobs[i]), {"label": (classes, y)},
                       None, f"{display_name(zip_path)}: {len(blobs)} images in {len(classes)} classes ({layout})")


def _image_folder(images: list) -> list[tuple]:
    """(info, path, class) per image of an ImageFolder layout, under the images' common root folder."""
    parents = [p.parts[:-1] for _, p in images]
    root = 0
    while all(len(ps) > root + 1 for ps in parents) and len({ps[root] for ps in parents}) == 1:
        root += 1  # 'mydata/cat/1.png': the common folder 'mydata' is not a class
    loose = next((p for (_, p), ps in zip(images, parents) if len(ps) <= root), None)
    if loose is not None:
        raise DataError(f"{loose.as_posix()[:80]!r} is not inside a class folder: put each class's images in a "
                        "folder named after it, or add a labels.csv (filename,label)")
    chosen = [(i, p, ps[root]) for (i, p), ps in zip(images, parents)]
    if len({c for *_, c in chosen}) < 2:
        raise DataError(f"the zip has one class folder ({chosen[0][2]!r}); evaluation needs at least two classes")
    return sorted(chosen, key=lambda t: (t[2], t[1].as_posix()))


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, chunk: int = 1 << 20) -> bytes:
    """A member's bytes, read into memory and refused past `limit` whatever its header declares.

    It is inflated a chunk at a time, never past its declared size (+1 byte): a member that lies about
    its size costs at most that much memory before zipfile's CRC check refuses it.
    """
    want = min(max(0, limit), info.file_size) + 1
    parts, got = [], 0
    try:
        with zf.open(info) as f:
            while got < want:
                part = f.read(min(chunk, want - got))
                if not part:
                    break
                parts.append(part)
                got += len(part)
    except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError, EOFError, ValueError) as e:
        raise DataError(f"the zip member {info.filename[:80]!r} cannot be read ({e.__class__.__name__})") from e
    data = b"".join(parts)
    if len(data) > limit:
        raise DataError(f"the zip's contents are over the limit ({limit >> 20} MB left for {info.filename[:80]!r})")
    if len(data) > info.file_size:
        raise DataError(f"the zip member {info.filename[:80]!r} is larger than its header says: refused")
    return data


def files_set(files: list[str], max_images: int = MAX_SET_IMAGES) -> LabelledSet:
    """Image files plus one labels.csv (rows naming the files by their names) uploaded together."""
    paths = [str(f) for f in files]
    tables = [p for p in paths if Path(p).suffix.lower() == ".csv"]
    images = {display_name(p): p for p in paths if p not in tables}
    if len(tables) != 1:
        raise DataError(f"image files need exactly one labels.csv beside them (got {len(tables)} csv files), "
                        "or upload a zip of class folders instead")
    size = Path(tables[0]).stat().st_size
    if size > MAX_CSV_BYTES:
        raise DataError(f"labels.csv is {size:,} bytes; the limit is {MAX_CSV_BYTES:,}")
    rows = parse_labels_csv(Path(tables[0]).read_bytes(), max_images)
    missing = [f for f, _ in rows if PurePosixPath(f).name not in images]
    if missing:
        raise DataError(f"labels.csv names {missing[0][:80]!r}, which was not uploaded"
                        + (f" ({len(missing)} such rows)" if len(missing) > 1 else ""))
    chosen = [images[PurePosixPath(f).name] for f, _ in rows]
    classes, y = _indexed([label for _, label in rows])
    return LabelledSet([display_name(p) for p in chosen], lambda i: open_image(chosen[i]), {"label": (classes, y)}, None,
                       f"{len(chosen)} uploaded images in {len(classes)} classes (labels.csv)")


def upload_set(files, max_images: int = MAX_SET_IMAGES) -> LabelledSet:
    """One zip, or image files with a labels.csv."""
    files = [str(getattr(f, "path", f)) for f in files or []]
    if not files:
        raise UserInputError("nothing uploaded: add a zip of class folders, or image files with a labels.csv")
    zips = [f for f in files if Path(f).suffix.lower() == ".zip"]
    if zips:
        if len(files) > 1:
            raise UserInputError(f"{len(files)} files: upload either one zip, or image files with a labels.csv, not both "
                                 "(a new upload adds to the list: clear the files box with its × first)")
        return zip_set(zips[0], max_images)
    if len(files) > max_images + 1:
        raise UserInputError(f"{len(files) - 1:,} images uploaded; the limit is {max_images:,}")
    return files_set(files, max_images)


# ---------------------------------------------------------------- a `datasets` source

def dataset_set(spec: SetSpec, data_dirs: list[Path], opened: Callable | None = None,
                max_bytes: int = MAX_SET_BYTES, report: Callable[[int, int], None] | None = None) -> LabelledSet:
    """spec.n rows drawn with spec.seed from a `datasets` source (local folders map-style, Hub datasets
    streamed), image cells read as bytes (at most max_bytes in all) and decoded later. A ClassLabel
    column gives its names as classes; other labels give their sorted distinct values."""
    import datasets

    source = check_dataset_source(spec.dataset, data_dirs)
    split, n = spec.dataset_split or "train", int(spec.n)
    local = Path(source).is_dir()
    opener = lambda: open_dataset(source, split, streaming=not local)  # noqa: E731
    ds = opened(source, split, opener) if opened else opener()
    columns = list(ds.column_names or (ds.features or {}).keys())
    for col in (spec.image_column, spec.label_column) + ((spec.caption_column,) if spec.caption_column else ()):
        if col not in columns:
            raise DataError(f"{spec.dataset} has no column {col!r}; its columns are {', '.join(columns)}")
    feature = (ds.features or {}).get(spec.label_column)
    ds = ds.cast_column(spec.image_column, datasets.Image(decode=False))
    if local:
        take = min(n, len(ds))
        idx = (np.sort(np.random.default_rng(spec.seed).choice(len(ds), size=take, replace=False)) if take < len(ds)
               else np.arange(len(ds)))
        stream = (ds[int(i)] for i in idx)
    else:
        stream = itertools.islice(ds.shuffle(seed=spec.seed, buffer_size=min(1000, 4 * n)), n)
    rows = []
    for row in stream:  # a Hub stream can be slow: Stop is checked every 50 rows
        rows.append(row)
        if report is not None and len(rows) % 50 == 0:
            report(len(rows), n)
    idx = idx if local else np.arange(len(rows))
    if not rows:
        raise DataError(f"{spec.dataset} [{split}] is empty")
    blobs = image_cell_bytes(rows, idx, spec.image_column, spec.dataset, data_dirs, max_bytes)
    raw = [r[spec.label_column] for r in rows]
    if isinstance(feature, datasets.ClassLabel):
        classes, y = list(feature.names), [int(v) for v in raw]
    else:
        classes, y = _indexed([str(v) for v in raw])
    if len(classes) < 2:
        raise DataError(f"{spec.dataset}: the label column {spec.label_column!r} has one class; evaluation needs two")
    captions = None
    if spec.caption_column:
        captions = [str(c[0] if isinstance(c, (list, tuple)) and c else c) for c in (r[spec.caption_column] for r in rows)]

    def decode(i: int):
        try:
            return open_image(blobs[i])
        except UserInputError as e:
            raise DataError(f"{spec.dataset} row {int(idx[i])}: {e}") from e

    return LabelledSet([f"{split}[{int(i)}]" for i in idx], decode, {"label": (classes, y)}, captions,
                       f"{spec.dataset} [{split}], {len(rows)} rows, {len(classes)} classes from {spec.label_column!r}")


def load_set(spec: SetSpec, data_dirs: list[Path], opened: Callable | None = None,
             report: Callable[[int, int], None] | None = None) -> LabelledSet:
    """The labelled set `spec` names; report(done, total) as rows are read (shapes world, datasets)."""
    if spec.source == "shapes world":
        return shapes_set(spec.n, spec.seed, spec.split, report)
    if spec.source == "uploaded zip or files":
        return upload_set(list(spec.files))
    if spec.source == "datasets source":
        return dataset_set(spec, data_dirs, opened, report=report)
    raise UserInputError(f"unknown source {spec.source!r}; choose one of {', '.join(SET_SOURCES)}")


# ---------------------------------------------------------------- encoding, in chunks

def _thumb(image) -> bytes:
    small = image.copy()
    small.thumbnail((THUMB_SIDE, THUMB_SIDE))
    return pack(small)


def encode_set(clip, lset: LabelledSet, report: Callable[[int, int], None] | None = None,
               report_captions: Callable[[int, int], None] | None = None) -> EncodedSet:
    """Decode and encode the set CHUNK images at a time; report(done, N) after each batch (Stop checks there)."""
    n = len(lset.names)
    parts, thumbs = [], []
    for start in range(0, n, CHUNK):
        images = [lset.read(i) for i in range(start, min(n, start + CHUNK))]
        inner = (lambda done, _total, s=start: report(s + done, n)) if report else None
        parts.append(gpu.embed_images(clip, images, inner))  # [chunk, D]
        thumbs += [_thumb(im) for im in images]
    caption_emb = gpu.embed_texts(clip, lset.captions, report_captions) if lset.captions else None
    return EncodedSet(list(lset.names), lset.tasks, lset.description, torch.cat(parts), thumbs,
                      list(lset.captions) if lset.captions else None, caption_emb)
