"""Reading image–caption data: any `datasets` source (a save_to_disk folder, an image folder with
captions, a Hub dataset), and decoding its image cells to RGB the way a viewer shows them.

Used by evaluation and the app. Training batches built from these sources live in
`core.train.data`.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .errors import UserFacingError, UserInputError
from .model import looks_like_path


class SourceUnavailable(UserFacingError):
    """A dataset that could not be reached (the Hub, a network or disk failure): an outage, not bad input."""


class DataError(UserInputError):
    """A dataset could not be opened or lacks a needed column; the message is one line."""


def open_dataset(source: str, split: str = "train", streaming: bool = False):
    """Open a `datasets` source: a save_to_disk directory, a local image folder (imagefolder with
    a caption column in metadata.csv / metadata.jsonl), or a Hub dataset name.

    Raises DataError for what the user can change (no such dataset, split or folder; a format it
    cannot read) and SourceUnavailable when the Hub or the disk fails; anything else is a bug and
    propagates as it is."""
    import datasets
    from datasets.exceptions import DatasetsError

    path = Path(source).expanduser()
    try:
        if path.is_dir():
            if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
                ds = datasets.load_from_disk(str(path))
                if isinstance(ds, datasets.DatasetDict):
                    if split not in ds:
                        raise DataError(f"{source} has no split {split!r}; it has {', '.join(ds)}")
                    ds = ds[split]
                return ds.to_iterable_dataset() if streaming else ds
            return datasets.load_dataset("imagefolder", data_dir=str(path), split=split, streaming=streaming)
        if path.exists() or looks_like_path(source):
            raise DataError(f"{source}: not a dataset directory")
        return datasets.load_dataset(source, split=split, streaming=streaming)
    except DataError:
        raise
    except (DatasetsError, FileNotFoundError, ValueError) as e:  # no such dataset, split or file; a format it cannot read
        raise DataError(f"{source}: could not open dataset ({e.__class__.__name__}: {str(e).splitlines()[0][:200]})") from e
    except (ConnectionError, TimeoutError, OSError) as e:  # the Hub or the disk failed: not the user's input
        raise SourceUnavailable(f"{source}: the dataset could not be reached ({e.__class__.__name__}); "
                                "try again later, or use a local folder") from e


def as_rgb(image: Image.Image) -> Image.Image:
    """Any decoded PIL image as 8-bit RGB, the way a viewer would show it.

    - EXIF orientation is applied (a phone photo taken sideways comes out upright);
    - an animated image gives its first frame;
    - transparency (RGBA, LA, PA, palette with a transparent colour) is composited on white;
    - 16- and 32-bit greyscale (I;16, I, F) is rescaled to 8 bits rather than clipped to white;
    - CMYK, 1-bit, palette and the rest go through Pillow's own conversion.
    """
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    image = ImageOps.exif_transpose(image) or image
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        if mode == "F":
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        else:  # 16-bit range, whatever Pillow calls the mode
            arr = np.clip(arr, 0, 65535) / 257.0
        return Image.fromarray(np.round(arr).astype(np.uint8), "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def to_rgb(value) -> Image.Image:
    """A datasets image cell (PIL image, {'bytes','path'} dict, or path) as an RGB PIL image."""
    if isinstance(value, Image.Image):
        im = value
    elif isinstance(value, dict) and value.get("bytes"):
        im = Image.open(io.BytesIO(value["bytes"]))
    elif isinstance(value, dict) and value.get("path"):
        im = Image.open(value["path"])
    elif isinstance(value, (str, os.PathLike)):
        im = Image.open(value)
    else:
        raise DataError(f"cannot read an image from a {type(value).__name__}")
    return as_rgb(im)


def first_caption(value) -> str:
    if isinstance(value, (list, tuple)):  # several captions per image: take the first
        value = value[0] if value else ""
    return str(value)
