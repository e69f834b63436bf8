"""What users really upload: every case gives a correct RGB image or one clean ImageInputError."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from demo.inputs.images import MAX_SIDE, ImageInputError, open_image

RED = (220, 20, 30)


def _save(tmp_path, image: Image.Image, fmt: str, name: str | None = None, **kw):
    path = tmp_path / (name or f"img.{fmt.lower()}")
    image.save(path, format=fmt, **kw)
    return path


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_every_allowed_format_opens_as_rgb(tmp_path, fmt):
    out = open_image(_save(tmp_path, Image.new("RGB", (40, 30), RED), fmt))
    assert out.mode == "RGB" and out.size == (40, 30)
    assert np.abs(np.asarray(out)[15, 20].astype(int) - RED).max() < 40  # lossy formats, GIF palette


def test_decompression_bomb_is_refused(tmp_path):
    path = _save(tmp_path, Image.new("1", (7000, 7000)), "PNG")  # 49 MP: over our 40 MP cap, tiny on disk
    with pytest.raises(ImageInputError, match="too large"):
        open_image(path)


@pytest.mark.parametrize("payload", [b"", b"\x00" * 10, bytes(random.Random(0).randrange(256) for _ in range(4096))])
def test_empty_and_random_bytes_are_refused(tmp_path, payload):
    path = tmp_path / "x.png"
    path.write_bytes(payload)
    with pytest.raises(ImageInputError, match="not a readable image"):
        open_image(path)


def test_truncated_file_is_refused(tmp_path):
    full = _save(tmp_path, Image.effect_noise((256, 256), 50).convert("RGB"), "PNG").read_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(ImageInputError):
        open_image(path)


def test_other_formats_renamed_png_are_refused(tmp_path):
    eps = _save(tmp_path, Image.new("RGB", (8, 8), RED), "EPS", name="drawing.png")
    psd = tmp_path / "layers.png"
    psd.write_bytes(b"8BPS\x00\x01" + b"\x00" * 6 + b"\x00\x03" + b"\x00\x00\x00\x08" * 2 + b"\x00\x08\x00\x03" + b"\x00" * 64)
    for path in (eps, psd):
        with pytest.raises(ImageInputError, match="allowed"):
            open_image(path)


def test_cmyk_becomes_rgb(tmp_path):
    out = open_image(_save(tmp_path, Image.new("CMYK", (10, 10), (0, 255, 255, 0)), "JPEG"))  # pure red ink
    r, g, b = np.asarray(out)[5, 5]
    assert out.mode == "RGB" and r > 200 and g < 60 and b < 60


def test_transparency_is_composited_on_white(tmp_path):
    pal = Image.new("P", (10, 10), 0)
    pal.putpalette([0, 0, 0, 220, 20, 30] + [0] * 762)
    pal.putpixel((0, 0), 1)
    pal_out = open_image(_save(tmp_path, pal, "PNG", name="pal.png", transparency=0))
    assert tuple(np.asarray(pal_out)[5, 5]) == (255, 255, 255)  # transparent black -> white, not black
    assert np.abs(np.asarray(pal_out)[0, 0].astype(int) - RED).max() < 3
    la = Image.new("LA", (10, 10), (0, 0))  # black, fully transparent
    assert tuple(np.asarray(open_image(_save(tmp_path, la, "PNG", name="la.png")))[5, 5]) == (255, 255, 255)
    rgba = Image.new("RGBA", (10, 10), (*RED, 255))
    assert tuple(np.asarray(open_image(_save(tmp_path, rgba, "PNG", name="rgba.png")))[5, 5]) == RED


def test_16_bit_greyscale_is_rescaled_not_clipped(tmp_path):
    arr = np.full((10, 10), 30000, np.uint16)
    arr[0, 0] = 65535
    out = np.asarray(open_image(_save(tmp_path, Image.fromarray(arr), "PNG", name="deep.png")))
    assert abs(int(out[5, 5, 0]) - round(30000 / 257)) <= 1  # mid-grey, not white
    assert tuple(out[0, 0]) == (255, 255, 255)


def test_one_bit_and_extreme_shapes(tmp_path):
    one = Image.new("1", (9, 9), 1)
    assert tuple(np.asarray(open_image(_save(tmp_path, one, "PNG", name="one.png")))[4, 4]) == (255, 255, 255)
    assert open_image(_save(tmp_path, Image.new("RGB", (1, 1), RED), "PNG", name="dot.png")).size == (1, 1)
    wide = open_image(_save(tmp_path, Image.new("RGB", (10000, 3), RED), "PNG", name="wide.png"))
    assert wide.mode == "RGB" and max(wide.size) == MAX_SIDE and min(wide.size) >= 1


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (12, 12), c) for c in (RED, (20, 30, 220))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert np.abs(np.asarray(open_image(path))[6, 6].astype(int) - RED).max() < 40


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), RED)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = _save(tmp_path, image, "JPEG", exif=exif.tobytes())
    assert open_image(path).size == (20, 40)


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), RED).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(
    st.binary(max_size=2048),
    st.tuples(st.integers(0, len(PNG) - 1), st.binary(min_size=1, max_size=8)).map(
        lambda t: PNG[: t[0]] + t[1] + PNG[t[0] + len(t[1]):]),  # a PNG with a few bytes overwritten
    st.integers(0, len(PNG)).map(lambda n: PNG[:n]),  # a PNG cut anywhere
))
def test_fuzzed_bytes_give_an_image_or_our_own_error(tmp_path, data):
    path = tmp_path / "fuzz.png"
    path.write_bytes(data)
    try:
        out = open_image(path)
    except ImageInputError:
        return
    assert out.mode == "RGB" and max(out.size) <= MAX_SIDE
