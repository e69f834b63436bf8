"""Regenerate the example images in this folder (all CC0, made by the CLIP Lab project).

    PYTHONPATH=. python assets/examples/make_examples.py

shapes_*.png: single-object samples of the shapes world (core.shapes, eval split, seed 7): for each of
    the 8 shapes, the first sample that the bundled shapes-tiny names correctly with the default presets
    (shapes-world shapes and templates) with at least 90% (tests/test_app_logic.py checks it). The
    earlier pink-circle example, a small outline circle at 64 px, was called a hexagon: it was
    replaced rather than shown as if it were typical.
photo_*.png: simple synthetic, photo-like illustrations drawn here with PIL and numpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from core.shapes import ShapesWorld

OUT = Path(__file__).resolve().parent


def shapes_examples(count: int = 8) -> None:
    import core
    from core.zeroshot import classname_presets, template_presets

    clip = core.load()
    shapes, templates = classname_presets()["shapes_world_shapes"], template_presets()["shapes_world"]
    world = ShapesWorld(seed=7, split="eval", max_objects=1, styles=("filled", "outline"))
    seen, i = set(), 0
    while len(seen) < count:
        s = world[i]
        i += 1
        shape = s.labels["shape"]
        if shape in seen:
            continue
        top = core.classify(clip, [s.image], shapes, templates).top_k(1)[0][0]
        if top[0] != shape or top[1] < 0.9:
            continue
        seen.add(shape)
        s.image.save(OUT / f"shapes_{s.labels['colour']}_{shape}.png")


def _sky(w: int, h: int, top, bottom) -> Image.Image:
    t = np.linspace(0, 1, h)[:, None, None]
    arr = (np.array(top) * (1 - t) + np.array(bottom) * t).repeat(w, 1)
    return Image.fromarray(arr.astype(np.uint8))


def _noise(im: Image.Image, sigma: float, seed: int) -> Image.Image:
    arr = np.asarray(im).astype(np.float32)
    arr += np.random.default_rng(seed).normal(0, sigma, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6))


def photo_apple() -> Image.Image:
    im = _sky(224, 224, (236, 228, 214), (200, 188, 170))
    d = ImageDraw.Draw(im)
    d.ellipse((40, 175, 190, 200), fill=(150, 138, 120))  # shadow
    d.ellipse((48, 62, 118, 190), fill=(190, 20, 30))
    d.ellipse((100, 62, 176, 190), fill=(175, 15, 25))
    d.ellipse((70, 80, 100, 120), fill=(235, 110, 110))  # highlight
    d.line((112, 70, 120, 35), fill=(90, 55, 20), width=6)
    d.ellipse((120, 30, 160, 52), fill=(60, 150, 50))
    return _noise(im, 4, 1)


def photo_sunset() -> Image.Image:
    im = _sky(224, 224, (40, 40, 110), (250, 150, 70))
    d = ImageDraw.Draw(im)
    d.ellipse((82, 100, 142, 160), fill=(255, 210, 120))
    sea = _sky(224, 90, (30, 60, 110), (10, 25, 60))
    im.paste(sea, (0, 134))
    for y in range(140, 224, 9):
        d.line((100 - (y - 134) // 3, y, 124 + (y - 134) // 3, y), fill=(240, 170, 90), width=2)
    return _noise(im, 3, 2)


def photo_house() -> Image.Image:
    im = _sky(224, 224, (120, 180, 235), (200, 230, 250))
    d = ImageDraw.Draw(im)
    d.rectangle((0, 170, 224, 224), fill=(70, 140, 60))
    d.rectangle((52, 100, 172, 185), fill=(225, 210, 180))
    d.polygon([(40, 104), (112, 45), (184, 104)], fill=(150, 50, 40))
    d.rectangle((98, 135, 126, 185), fill=(100, 60, 30))
    d.rectangle((65, 118, 88, 140), fill=(170, 210, 240))
    d.rectangle((136, 118, 159, 140), fill=(170, 210, 240))
    return _noise(im, 3, 3)


def photo_tree() -> Image.Image:
    im = _sky(224, 224, (150, 200, 240), (225, 240, 250))
    d = ImageDraw.Draw(im)
    d.ellipse((-60, 160, 290, 300), fill=(90, 160, 70))
    d.rectangle((103, 110, 123, 185), fill=(100, 70, 40))
    for (x, y, r) in [(112, 80, 48), (80, 100, 34), (146, 100, 34), (112, 50, 32)]:
        d.ellipse((x - r, y - r, x + r, y + r), fill=(40, 120 + r // 2, 45))
    return _noise(im, 4, 4)


def photo_boat() -> Image.Image:
    im = _sky(224, 224, (130, 190, 240), (215, 235, 250))
    sea = _sky(224, 84, (40, 110, 170), (20, 70, 120))
    im.paste(sea, (0, 140))
    d = ImageDraw.Draw(im)
    d.polygon([(55, 140), (170, 140), (150, 165), (75, 165)], fill=(120, 60, 35))
    d.line((112, 140, 112, 40), fill=(80, 50, 30), width=4)
    d.polygon([(116, 45), (116, 132), (175, 132)], fill=(250, 250, 245))
    d.polygon([(108, 55), (108, 132), (62, 132)], fill=(235, 235, 225))
    return _noise(im, 3, 5)


def main() -> None:
    shapes_examples()
    for name, fn in [("apple", photo_apple), ("sunset", photo_sunset), ("house", photo_house),
                     ("tree", photo_tree), ("boat", photo_boat)]:
        fn().save(OUT / f"photo_{name}.png")


if __name__ == "__main__":
    main()
