"""Shapes: procedural images of coloured geometric shapes, with class labels and captions.

Every image is a pure function of (split, index): the same item is drawn bit for bit on any machine,
at any resolution from 32 to 512 pixels. The class is the kind of shape; an image holds one to three
shapes of that kind, of one colour and size, around one position, on a coloured, textured background:

    "two small red triangles at the top left on a blue striped background"

Shapes are drawn with PIL at 4x the resolution and downsampled (anti-aliased edges).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

CLASSES = ["circle", "square", "triangle", "pentagon", "hexagon", "star", "cross", "diamond", "ellipse", "ring"]
COLORS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 210, 40),
    "purple": (140, 60, 190), "orange": (245, 140, 30), "white": (245, 245, 245), "black": (20, 20, 20),
    "cyan": (40, 200, 210), "pink": (240, 130, 180),
}
SIZES = {"small": 0.14, "medium": 0.22, "large": 0.32}  # radius as a fraction of the image side
POSITIONS = {  # centre of the group, as fractions of the image side
    "top left": (0.28, 0.28), "top": (0.5, 0.28), "top right": (0.72, 0.28),
    "left": (0.28, 0.5), "center": (0.5, 0.5), "right": (0.72, 0.5),
    "bottom left": (0.28, 0.72), "bottom": (0.5, 0.72), "bottom right": (0.72, 0.72),
}
TEXTURES = ["plain", "striped", "dotted", "checkered", "gradient"]
COUNT_WORDS = {1: "a", 2: "two", 3: "three"}
SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2}
SPLIT_SIZES = {"train": 50_000, "validation": 5_000, "test": 10_000}
SUPERSAMPLE = 4


@dataclass(frozen=True)
class ShapeSpec:
    """Everything that determines an image."""

    shape: str
    color: str
    size: str
    position: str
    count: int
    background: str
    texture: str
    rotation: float  # of each shape, degrees
    arrangement: float  # orientation of a group of 2 or 3 shapes, degrees

    @property
    def label(self) -> int:
        return CLASSES.index(self.shape)

    @property
    def caption(self) -> str:
        noun = self.shape + ("es" if self.shape.endswith(("s", "x")) else "s") if self.count > 1 else self.shape
        where = "in the center" if self.position == "center" else f"at the {self.position}"
        article = "an" if self.background[0] in "aeiou" else "a"
        return f"{COUNT_WORDS[self.count]} {self.size} {self.color} {noun} {where} on {article} {self.background} " \
               f"{self.texture} background"

    def layout(self) -> list[tuple[float, float, float]]:
        """(x, y, radius) of each shape, as fractions of the image side. Shapes of a group stand apart;
        the group is moved just enough to stay inside the image."""
        r = SIZES[self.size] / (1 + 0.5 * (self.count - 1))
        t = math.radians(self.arrangement)
        offsets = {1: [(0.0, 0.0)], 2: [(-1.2, 0.0), (1.2, 0.0)],
                   3: [(1.4 * math.cos(a), 1.4 * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]}
        offsets = [(r * (x * math.cos(t) - y * math.sin(t)), r * (x * math.sin(t) + y * math.cos(t)))
                   for x, y in offsets[self.count]]
        extent = max(math.hypot(x, y) for x, y in offsets) + 1.1 * r
        cx, cy = (min(max(c, extent + 0.02), 0.98 - extent) for c in POSITIONS[self.position])
        return [(cx + x, cy + y, r) for x, y in offsets]


def sample_spec(rng: np.random.Generator, shape: str | None = None) -> ShapeSpec:
    """Draw a random spec (of the given class, if any)."""
    shape = shape or CLASSES[rng.integers(len(CLASSES))]
    color, background = rng.choice(list(COLORS), size=2, replace=False)
    size = list(SIZES)[rng.integers(len(SIZES))]
    count = int(rng.integers(1, 4)) if size != "large" else 1  # large shapes come alone: they would not fit
    return ShapeSpec(shape=shape, color=str(color), size=size, position=list(POSITIONS)[rng.integers(len(POSITIONS))],
                     count=count, background=str(background), texture=TEXTURES[rng.integers(len(TEXTURES))],
                     rotation=float(rng.uniform(0, 360)), arrangement=float(rng.uniform(0, 360)))


def _polygon(cx, cy, r, sides, rotation, inner=None):
    points = []
    steps = sides * (2 if inner else 1)
    for i in range(steps):
        radius = inner * r if inner and i % 2 else r
        angle = math.radians(rotation) + 2 * math.pi * i / steps - math.pi / 2
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float, rotation: float, fill):
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif kind == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill, width=max(1, int(0.35 * r)))
    elif kind == "ellipse":
        # an ellipse rotated by drawing it as a many-sided polygon
        a, b, t = r, 0.55 * r, math.radians(rotation)
        pts = [(cx + a * math.cos(s) * math.cos(t) - b * math.sin(s) * math.sin(t),
                cy + a * math.cos(s) * math.sin(t) + b * math.sin(s) * math.cos(t))
               for s in np.linspace(0, 2 * math.pi, 64, endpoint=False)]
        draw.polygon(pts, fill=fill)
    elif kind == "cross":
        w = 0.33 * r
        for angle in (rotation, rotation + 90):
            t = math.radians(angle)
            dx, dy, px, py = r * math.cos(t), r * math.sin(t), w * -math.sin(t), w * math.cos(t)
            draw.polygon([(cx - dx - px, cy - dy - py), (cx + dx - px, cy + dy - py),
                          (cx + dx + px, cy + dy + py), (cx - dx + px, cy - dy + py)], fill=fill)
    else:
        sides, inner = {"square": (4, None), "triangle": (3, None), "pentagon": (5, None), "hexagon": (6, None),
                        "star": (5, 0.45), "diamond": (4, None)}[kind]
        radius = r * (1.25 if kind == "square" else 1.0)  # squares by their half-diagonal
        turn = rotation + (45 if kind == "square" else 0)
        if kind == "diamond":  # a rhombus: a square squashed along one axis
            t = math.radians(rotation)
            pts = [(0, -r), (0.6 * r, 0), (0, r), (-0.6 * r, 0)]
            draw.polygon([(cx + x * math.cos(t) - y * math.sin(t), cy + x * math.sin(t) + y * math.cos(t))
                          for x, y in pts], fill=fill)
        else:
            draw.polygon(_polygon(cx, cy, radius, sides, turn, inner), fill=fill)


def _background(spec: ShapeSpec, side: int) -> Image.Image:
    base = np.array(COLORS[spec.background], dtype=np.float32)
    shade = np.clip(base * 0.7 + 20, 0, 255)
    yy, xx = np.mgrid[0:side, 0:side] / side
    period = 1 / 8
    if spec.texture == "plain":
        mask = np.zeros((side, side))
    elif spec.texture == "striped":
        mask = ((xx + yy) % period) < period / 2
    elif spec.texture == "dotted":
        mask = ((xx % period - period / 2) ** 2 + (yy % period - period / 2) ** 2) < (period / 4) ** 2
    elif spec.texture == "checkered":
        mask = ((xx // period + yy // period) % 2) == 1
    else:  # gradient
        mask = yy
    mask = np.asarray(mask, dtype=np.float32)[..., None]
    pixels = base * (1 - mask) + shade * mask
    return Image.fromarray(pixels.astype(np.uint8))


def render(spec: ShapeSpec, size: int = 64) -> Image.Image:
    """Draw a spec as an RGB PIL image of size x size pixels."""
    if not isinstance(size, int) or not 32 <= size <= 512:
        raise ValueError(f"size must be an integer from 32 to 512 pixels, got {size!r}.")
    side = size * SUPERSAMPLE
    image = _background(spec, side)
    draw = ImageDraw.Draw(image)
    for x, y, r in spec.layout():
        _draw_shape(draw, spec.shape, x * side, y * side, r * side, spec.rotation, COLORS[spec.color])
    return image.resize((size, size), Image.LANCZOS)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> float tensor [3, H, W] in [-1, 1]."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1


class ShapesDataset(torch.utils.data.Dataset):
    """Shapes as a map-style dataset: item i of a split is always the same image.

    Items are dicts: image [3, size, size] in [-1, 1], label (int), caption (str); `spec(i)` gives the
    full description of item i.
    """

    def __init__(self, split: str = "train", size: int = 64, length: int | None = None, shape: str | None = None):
        if split not in SPLIT_SEEDS:
            raise ValueError(f"unknown split {split!r}; pass one of {list(SPLIT_SEEDS)}.")
        if shape is not None and shape not in CLASSES:
            raise ValueError(f"unknown shape {shape!r}; pass one of {CLASSES}.")
        render(sample_spec(np.random.default_rng(0)), size)  # validates size
        self.split, self.size, self.shape = split, size, shape
        self.length = SPLIT_SIZES[split] if length is None else length
        if self.length < 1:
            raise ValueError(f"length must be >= 1, got {self.length}.")

    def __len__(self) -> int:
        return self.length

    def spec(self, index: int) -> ShapeSpec:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items.")
        rng = np.random.default_rng([SPLIT_SEEDS[self.split], CLASSES.index(self.shape) + 1 if self.shape else 0,
                                     index])
        return sample_spec(rng, self.shape)

    def __getitem__(self, index: int) -> dict:
        spec = self.spec(index)
        return {"image": to_tensor(render(spec, self.size)), "label": spec.label, "caption": spec.caption}
