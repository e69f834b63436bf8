"""The shapes world: a seeded, infinite source of synthetic image–caption pairs.

Every sample is a pure function of (seed, split, index), so any sample can be regenerated
without storing it, and two workers never draw the same one. A sample is a 64×64 RGB image with
1 to 3 coloured shapes, a caption in varied phrasing, and structured labels for evaluation.

Held-out combinations: the eight colour–shape pairs in `HELD_OUT` (one per colour and one per
shape, a Latin square) never appear in the "train" split, neither in an image nor in a caption.
The "eval" split draws every combination, so compositional zero-shot transfer can be measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("circle", "square", "triangle", "star", "heart", "cross", "diamond", "hexagon")
COLOURS = {
    "red": (215, 30, 35),
    "orange": (250, 135, 0),
    "yellow": (240, 215, 15),
    "green": (35, 165, 55),
    "blue": (30, 80, 225),
    "purple": (135, 45, 185),
    "pink": (250, 115, 185),
    "brown": (125, 70, 30),
}
STYLES = ("filled", "outline", "hand-drawn", "pixelated")
SIZES = ("small", "medium", "large")
# Held out of training: colour i with shape (i + 3) mod 8.
HELD_OUT = tuple((c, SHAPES[(i + 3) % len(SHAPES)]) for i, c in enumerate(COLOURS))
SPLITS = {"train": 0, "eval": 1}

_RADIUS = {"small": (8.0, 10.5), "medium": (11.5, 15.0), "large": (16.5, 21.0)}  # in 64-px units
_STYLE_WORDS = {
    "filled": ("", "solid ", "filled "),
    "outline": ("outlined ", "hollow ", "outline of a "),
    "hand-drawn": ("hand-drawn ", "sketched ", "doodled "),
    "pixelated": ("pixelated ", "pixel art ", "blocky "),
}
_NUMBER_WORDS = {2: "two", 3: "three"}
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class ShapeObject:
    """One object of a scene: what it is and where, in 64-px image coordinates."""

    shape: str
    colour: str
    size: str
    x: float
    y: float
    radius: float
    angle: float

    @property
    def position(self) -> str:
        """Where the object sits, in words: 'top left', 'center', 'bottom', ..."""
        row = "top" if self.y < 64 / 3 else ("bottom" if self.y > 128 / 3 else "")
        col = "left" if self.x < 64 / 3 else ("right" if self.x > 128 / 3 else "")
        return (f"{row} {col}".strip()) or "center"


@dataclass(frozen=True)
class ShapesSample:
    """An image, its caption and its labels. `image` is a 64×64 RGB PIL image."""

    image: Image.Image
    caption: str
    objects: tuple[ShapeObject, ...]
    style: str
    background: str
    index: int

    @property
    def labels(self) -> dict:
        """Structured labels for evaluation; shape and colour are the first object's."""
        first = self.objects[0]
        return {
            "shape": first.shape,
            "colour": first.colour,
            "combo": f"{first.colour} {first.shape}",
            "style": self.style,
            "count": len(self.objects),
            "size": first.size,
            "position": first.position,
            "background": self.background,
            "held_out": (first.colour, first.shape) in HELD_OUT,
        }


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of `shape` centred at (cx, cy) with outer radius r, rotated by angle (radians)."""
    if shape == "circle":
        pts = [(math.cos(t), math.sin(t)) for t in np.linspace(0, 2 * math.pi, 48, endpoint=False)]
    elif shape == "square":
        s = 0.78
        pts = [(-s, -s), (s, -s), (s, s), (-s, s)]
    elif shape == "triangle":
        pts = [(math.cos(t), math.sin(t) + 0.15) for t in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    elif shape == "diamond":
        pts = [(0, -1), (0.62, 0), (0, 1), (-0.62, 0)]
    elif shape == "hexagon":
        pts = [(math.cos(t), math.sin(t)) for t in np.arange(6) * math.pi / 3]
    elif shape == "star":
        pts = []
        for k in range(10):
            rad = 1.0 if k % 2 == 0 else 0.42
            t = -math.pi / 2 + k * math.pi / 5
            pts.append((rad * math.cos(t), rad * math.sin(t)))
    elif shape == "cross":
        a, b = 0.3, 0.95
        pts = [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)]
    elif shape == "heart":
        ts = np.linspace(0, 2 * math.pi, 60, endpoint=False)
        xs = 16 * np.sin(ts) ** 3
        ys = -(13 * np.cos(ts) - 5 * np.cos(2 * ts) - 2 * np.cos(3 * ts) - np.cos(4 * ts))
        pts = list(zip(xs / 17.0, (ys + 2.5) / 17.0))
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + r * (ca * px - sa * py), cy + r * (sa * px + ca * py)) for px, py in pts]


def _background(rng: np.random.Generator, size: int) -> tuple[Image.Image, str]:
    kind = str(rng.choice(["white", "light", "gray", "dark", "noise", "gradient"], p=[0.25, 0.2, 0.15, 0.1, 0.15, 0.15]))
    if kind == "white":
        return Image.new("RGB", (size, size), (255, 255, 255)), kind
    if kind == "light":
        return Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(215, 256, 3))), kind
    if kind in ("gray", "dark"):
        level = int(rng.integers(150, 215) if kind == "gray" else rng.integers(15, 60))
        return Image.new("RGB", (size, size), (level, level, level)), kind
    if kind == "noise":
        base = int(rng.integers(170, 240))
        arr = np.clip(base + rng.normal(0, 18, (size // 4, size // 4, 1)), 0, 255).astype(np.uint8).repeat(3, 2)
        return Image.fromarray(arr).resize((size, size), Image.BILINEAR), kind
    a, b = rng.integers(200, 256, 3), rng.integers(200, 256, 3)  # a vertical gradient
    ramp = np.linspace(0, 1, size)[:, None, None]
    return Image.fromarray((a * (1 - ramp) + b * ramp).astype(np.uint8).repeat(size, 1)), kind


def _draw_object(draw: ImageDraw.ImageDraw, obj: ShapeObject, style: str, rgb: tuple, rng: np.random.Generator, k: float) -> None:
    """Draw one object on a canvas supersampled by k."""
    pts = _polygon(obj.shape, obj.x * k, obj.y * k, obj.radius * k, obj.angle)
    if style == "hand-drawn":
        jitter = obj.radius * k * 0.06
        pts = [(x + rng.normal(0, jitter), y + rng.normal(0, jitter)) for x, y in pts]
        for _ in range(2):  # two wobbly strokes, like a pencil sketch
            wob = [(x + rng.normal(0, jitter * 0.7), y + rng.normal(0, jitter * 0.7)) for x, y in pts]
            draw.line(wob + wob[:1], fill=rgb, width=int(1.6 * k), joint="curve")
    elif style == "outline":
        draw.polygon(pts, outline=rgb, width=int(2.2 * k))
    else:
        draw.polygon(pts, fill=rgb)


def object_mask(obj: ShapeObject, image_size: int = 64) -> np.ndarray:
    """Where an object lies: bool [image_size, image_size], True on its filled silhouette.

    Rasterised as the images are: the same polygon (`_draw_object`, filled style) on a canvas
    supersampled by 4, box-downsampled, a pixel counting when at least half of it is covered.
    Outline objects count with their hollow inside; hand-drawn jitter is not reproduced.
    """
    k = _SUPERSAMPLE * image_size / 64
    canvas = Image.new("L", (_SUPERSAMPLE * image_size,) * 2, 0)
    _draw_object(ImageDraw.Draw(canvas), obj, "filled", 255, np.random.default_rng(0), k)  # filled: no rng draws
    coverage = np.asarray(canvas.resize((image_size, image_size), Image.BOX))  # [S, S] uint8
    return coverage >= 128


def _where(position: str) -> str:
    """'in the top left', 'at the top', 'on the left', 'in the center'."""
    if " " in position or position == "center":
        return f"in the {position}"
    return f"at the {position}" if position in ("top", "bottom") else f"on the {position}"


def _a(phrase: str) -> str:
    """'a' or 'an' before phrase, by its first letter."""
    return f"{'an' if phrase[:1] in tuple('aeiou') else 'a'} {phrase}"


def _caption(objects: list[ShapeObject], style: str, background: str, rng: np.random.Generator) -> str:
    def noun(o: ShapeObject, with_size: bool = False) -> str:
        return f"{o.size + ' ' if with_size else ''}{o.colour} {o.shape}"

    if len(objects) > 1:
        parts = [_a(noun(o)) for o in objects]
        listed = ", ".join(parts[:-1]) + f" and {parts[-1]}"
        n = _NUMBER_WORDS[len(objects)]
        forms = [f"{n} shapes: {listed}", listed, f"a picture of {listed}", f"{n} objects: {listed}",
                 f"{listed} on a {background} background"]
        return str(rng.choice(forms))

    o = objects[0]
    sw = str(rng.choice(_STYLE_WORDS[style]))
    base = f"an outline of {_a(noun(o))}" if sw.startswith("outline of a ") else _a(sw + noun(o))
    medium = {"hand-drawn": "a drawing of", "pixelated": "pixel art of", "outline": "a line drawing of"}.get(style, "a photo of")
    forms = [
        base,
        f"{base} {_where(o.position)}",
        f"{medium} {_a(noun(o))}",
        _a(noun(o, with_size=True)),
        f"{base} on a {background} background",
        f"{_a(o.shape)} that is {o.colour}",
        f"a photo of {_a(noun(o))}",
        f"{_a(o.colour)} shape: {_a(o.shape)}",
        f"{medium} {_a(noun(o, with_size=True))} {_where(o.position)}",
    ]
    return str(rng.choice(forms))


@dataclass
class ShapesWorld:
    """A deterministic, infinite stream of shapes-world samples.

    `ShapesWorld(seed=0, split="train")[i]` is always the same sample. `split="train"` never draws
    a combination in `HELD_OUT`; `split="eval"` draws them all. `max_objects=1` gives single-object
    scenes, which is what zero-shot colour/shape evaluation uses.
    """

    seed: int = 0
    split: str = "train"
    image_size: int = 64
    min_objects: int = 1
    max_objects: int = 3
    single_object_prob: float = 0.6
    spread: float = 1.0  # single objects: 0 puts the centre mid-image, 1 lets it sit anywhere
    styles: tuple[str, ...] = field(default=STYLES)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {self.split!r}")
        if not 1 <= self.min_objects <= self.max_objects <= 3:
            raise ValueError("object counts must satisfy 1 <= min_objects <= max_objects <= 3")
        unknown = set(self.styles) - set(STYLES)
        if unknown:
            raise ValueError(f"unknown styles {sorted(unknown)}; known: {', '.join(STYLES)}")
        if not 0.0 <= self.spread <= 1.0:
            raise ValueError(f"spread must lie in [0, 1], got {self.spread}")

    def _combos(self) -> list[tuple[str, str]]:
        combos = [(c, s) for c in COLOURS for s in SHAPES]
        return [cs for cs in combos if cs not in HELD_OUT] if self.split == "train" else combos

    def __getitem__(self, index: int) -> ShapesSample:
        return self.sample(index)

    def sample(self, index: int, stream: int = 0, colour: str | None = None, shape: str | None = None,
               style: str | None = None) -> ShapesSample:
        """Sample `index` of a stream. Giving colour/shape/style forces a single object with those
        attributes (used to build hard-negative groups); everything else is still drawn at random."""
        if index < 0:
            raise IndexError("the shapes world is infinite; use a non-negative index")
        rng = np.random.default_rng([self.seed, SPLITS[self.split], stream, index])
        combos = self._combos()
        forced = colour is not None or shape is not None
        if forced:
            combos = [(c, s) for c, s in combos if colour in (None, c) and shape in (None, s)]
            if not combos:
                raise ValueError(f"no {colour or ''} {shape or ''} in the {self.split} split (held-out combination?)")
        if forced or self.min_objects == self.max_objects == 1:
            count = 1
        elif self.min_objects == self.max_objects:
            count = self.min_objects
        elif self.min_objects == 1 and rng.random() < self.single_object_prob:
            count = 1
        else:
            count = int(rng.integers(max(2, self.min_objects), self.max_objects + 1))
        style = style or str(rng.choice(self.styles))
        objects: list[ShapeObject] = []
        for _ in range(50 * count):  # rejection-sample non-overlapping objects
            if len(objects) == count:
                break
            c, sh = combos[int(rng.integers(len(combos)))]
            size = str(rng.choice(SIZES[1:] if style == "pixelated" else SIZES)) if count == 1 else str(rng.choice(SIZES[:2]))
            r = float(rng.uniform(*_RADIUS[size]))
            lo, hi = r + 1, 63 - r
            if count == 1 and self.spread < 1.0:  # shrink the range of centres towards the middle (a curriculum knob)
                lo, hi = 32 - self.spread * (32 - lo), 32 + self.spread * (hi - 32)
            x, y = (float(v) for v in rng.uniform(lo, hi, 2))
            if any(math.hypot(x - o.x, y - o.y) < r + o.radius + 2 for o in objects):
                continue
            angle = float(rng.uniform(-0.2, 0.2))
            objects.append(ShapeObject(sh, c, size, x, y, r, angle))
        k = _SUPERSAMPLE
        canvas, background = _background(rng, 64 * k)
        draw = ImageDraw.Draw(canvas)
        for o in objects:
            rgb = tuple(min(255, max(0, v + int(rng.integers(-12, 13)))) for v in COLOURS[o.colour])
            _draw_object(draw, o, style, rgb, rng, k)
        if style == "pixelated":
            cells = int(rng.choice([21, 32]))
            image = canvas.resize((cells, cells), Image.BOX).resize((64, 64), Image.NEAREST)
        else:
            image = canvas.resize((64, 64), Image.BOX)
            if style == "hand-drawn":
                image = image.filter(ImageFilter.SMOOTH)
        if self.image_size != 64:
            image = image.resize((self.image_size, self.image_size), Image.BICUBIC)
        caption = _caption(objects, style, background, rng)
        return ShapesSample(image, caption, tuple(objects), style, background, index)

    def hard_negative_group(self, key: int) -> list[ShapesSample]:
        """Minimal pairs: one scene drawn once per shape allowed for its colour.

        Colour, style, size, position, background and caption phrasing are shared; only the shape
        differs. Inside such a group nothing but the shape tells the captions apart, so a contrastive
        batch that contains groups cannot be solved by colour, position or size shortcuts.
        """
        rng = np.random.default_rng([self.seed, SPLITS[self.split], 1, key])
        colour = str(rng.choice(list(COLOURS)))
        style = str(rng.choice(self.styles))
        shapes = [s for c, s in self._combos() if c == colour]
        return [self.sample(key, stream=2, colour=colour, shape=s, style=style) for s in shapes]

    def take(self, n: int, start: int = 0) -> list[ShapesSample]:
        """The n samples starting at index `start`."""
        return [self[i] for i in range(start, start + n)]

    def __iter__(self) -> Iterator[ShapesSample]:
        i = 0
        while True:
            yield self[i]
            i += 1


def shape_classnames() -> list[str]:
    return list(SHAPES)


def colour_classnames() -> list[str]:
    return [f"{c} shape" for c in COLOURS]


def combo_classnames() -> list[str]:
    return [f"{c} {s}" for c in COLOURS for s in SHAPES]
