"""Safe image input and small image output helpers shared by the tabs.

Uploads are opened with an allowlist of formats (the format comes from magic bytes, not the file
name), decompression bombs are errors, and images are shrunk right after decoding.
"""

from __future__ import annotations

import base64
import io
import os
import warnings
from pathlib import Path

from PIL import Image

from core.data import as_rgb
from core.errors import UserInputError

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
MAX_SIDE = 1024  # images are shrunk to this before anything else; CLIP needs 224 at most
MAX_PIXELS = 40_000_000

if not Image.MAX_IMAGE_PIXELS or Image.MAX_IMAGE_PIXELS > MAX_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ImageInputError(UserInputError):
    """An upload is not an image we accept; the message is one line for the user."""


def _path_of(item) -> str:
    """A filesystem path from what Gradio hands a callback (str, Path, FileData-like, dict)."""
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    if isinstance(item, dict) and item.get("path"):
        return str(item["path"])
    path = getattr(item, "path", None) or getattr(item, "name", None)
    if path:
        return str(path)
    raise ImageInputError(f"cannot read an image from a {type(item).__name__}")


def open_image(item) -> Image.Image:
    """Open an uploaded image as RGB, refusing non-image formats and decompression bombs.

    The format comes from the file's bytes and must be in ALLOWED_FORMATS (EPS or PSD renamed
    .png is refused). Pillow's DecompressionBombWarning is an error here, and MAX_PIXELS caps the
    rest; truncated, empty or random files give ImageInputError. Colour modes, EXIF orientation
    and animation are handled by core.data.as_rgb. Pillow's global LOAD_TRUNCATED_IMAGES is never
    touched.
    """
    if isinstance(item, Image.Image):
        image = item
    else:
        path = io.BytesIO(item) if isinstance(item, (bytes, bytearray)) else _path_of(item)
        name = "image" if isinstance(path, io.BytesIO) else Path(path).name
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(path, formats=ALLOWED_FORMATS)
                image.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at reduced size
                image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageInputError(f"{name}: the image is too large (over {MAX_PIXELS:,} pixels)") from e
        except Exception as e:  # Pillow's decoders raise many types on broken files; the user needs one line
            raise ImageInputError(f"{name}: not a readable image (allowed: {', '.join(ALLOWED_FORMATS)})") from e
    if image.width * image.height > MAX_PIXELS:  # a PIL image handed in directly skips Image.open's check
        raise ImageInputError(f"the image is too large (over {MAX_PIXELS:,} pixels)")
    try:
        image = as_rgb(image)
    except Exception as e:  # a frame or EXIF block that decodes badly
        raise ImageInputError(f"not a readable image ({e.__class__.__name__})") from e
    if max(image.size) > MAX_SIDE:
        image.thumbnail((MAX_SIDE, MAX_SIDE))
    return image


def display_name(item) -> str:
    """The file name of an upload, for tables (Gradio stores uploads under folders named by a hash of their bytes)."""
    try:
        return Path(_path_of(item)).name
    except ImageInputError:
        return "image"


def gather_images(image, files, max_images: int) -> tuple[list[Image.Image], list[str]]:
    """The single image (a path) and any uploaded files, opened safely, with display names."""
    items = ([image] if image else []) + list(files or [])
    if len(items) > max_images:
        raise UserInputError(f"{len(items)} images; the limit is {max_images} per request")
    return [open_image(item) for item in items], [display_name(item) for item in items]


def thumbnail_uri(image: Image.Image, size: int = 48, fmt: str = "JPEG") -> str:
    """A small data: URI of the image, for plotly layout images and hover cards."""
    thumb = image.convert("RGB")
    thumb.thumbnail((size, size))
    buf = io.BytesIO()
    thumb.save(buf, format=fmt, quality=80) if fmt == "JPEG" else thumb.save(buf, format=fmt)
    mime = "jpeg" if fmt == "JPEG" else fmt.lower()
    return f"data:image/{mime};base64,{base64.b64encode(buf.getvalue()).decode()}"


def pack(image: Image.Image, max_short_side: int = 448) -> bytes:
    """An image kept compactly for a session: PNG when small (lossless; shapes-world samples are 64 px),
    else JPEG at quality 95 with the shorter side at most max_short_side (enough for 336-px models)."""
    image = image.convert("RGB")
    short = min(image.size)
    if short > max_short_side:
        scale = max_short_side / short
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BICUBIC)
    buf = io.BytesIO()
    if max(image.size) <= 256:
        image.save(buf, format="PNG")
    else:
        image.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def unpack(blob: bytes) -> Image.Image:
    """The image that `pack` stored."""
    image = Image.open(io.BytesIO(blob), formats=("PNG", "JPEG"))
    image.load()
    return image.convert("RGB")
