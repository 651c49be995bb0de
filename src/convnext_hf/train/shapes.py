"""Synthetic scenes of coloured circles, squares and triangles: multi-label and segmentation data without downloads.

Each scene has a flat, noisy, greyish background and one to three non-overlapping shapes. Each kind of shape has its
own hue (circles reddish, squares greenish, triangles bluish) with random brightness and tint, so both form and
colour tell them apart, as in the small scenes a tiny network can learn in a minute on a CPU. A scene gives its
image, its mask of class ids (0 background, 1 circle, 2 square, 3 triangle) and the set of shapes it shows. The
segmentation demo and the accuracy tests train on these.
"""

from __future__ import annotations

import csv
import os

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
BACKGROUND = "background"
SEGMENTATION_LABELS = (BACKGROUND, *SHAPES)
# Shapes span this fraction of the image side, so that a 64-pixel scene shows shapes of 16 to 26 pixels.
_SHAPE_SIDE = (0.25, 0.4)
_MAX_SHAPES = 3
_NOISE = 12
_HUES = {"circle": (210, 60, 60), "square": (60, 190, 60), "triangle": (60, 90, 220)}
_TINT = 35


def _shape_colour(rng: np.random.Generator, shape: str) -> tuple[int, ...]:
    """The shape's hue, tinted and brightened or darkened at random."""
    colour = np.asarray(_HUES[shape]) * rng.uniform(0.75, 1.15) + rng.integers(-_TINT, _TINT + 1, size=3)
    return tuple(int(value) for value in np.clip(colour, 0, 255))


def _background(rng: np.random.Generator) -> tuple[int, ...]:
    """A grey of random lightness with a slight tint."""
    colour = rng.integers(60, 200) + rng.integers(-20, 21, size=3)
    return tuple(int(value) for value in np.clip(colour, 0, 255))


def draw_scene(rng: np.random.Generator, size: int) -> tuple[Image.Image, np.ndarray, list[str]]:
    """One scene: the RGB image, its (size, size) uint8 mask of class ids, and the names of the shapes it shows."""
    image = Image.new("RGB", (size, size), _background(rng))
    mask = Image.new("L", (size, size), 0)
    draw_image, draw_mask = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    boxes: list[tuple[int, int, int, int]] = []
    shown: list[str] = []
    for _ in range(int(rng.integers(1, _MAX_SHAPES + 1))):
        side = int(size * rng.uniform(*_SHAPE_SIDE))
        for _attempt in range(20):
            left, top = (int(value) for value in rng.integers(0, size - side, size=2))
            box = (left, top, left + side, top + side)
            if all(box[2] <= other[0] or other[2] <= box[0] or box[3] <= other[1] or other[3] <= box[1]
                   for other in boxes):  # fmt: skip
                break
        else:
            continue
        boxes.append(box)
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        colour = _shape_colour(rng, shape)
        class_id = SEGMENTATION_LABELS.index(shape)
        for draw, fill in ((draw_image, colour), (draw_mask, class_id)):
            if shape == "circle":
                draw.ellipse(box, fill=fill)
            elif shape == "square":
                draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=fill)
            else:
                apex = ((box[0] + box[2]) / 2, box[1])
                draw.polygon([apex, (box[0], box[3] - 1), (box[2] - 1, box[3] - 1)], fill=fill)
        shown.append(shape)
    pixels = np.asarray(image, dtype=np.int16) + rng.integers(-_NOISE, _NOISE + 1, size=(size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), np.asarray(mask), sorted(set(shown))


def write_multilabel_csv(root: str, count: int, seed: int, size: int = 64) -> str:
    """Write `count` scenes as `root/images/<n>.png` and `root/labels.csv` (space-separated shape names); return it."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    rows = []
    for index in range(count):
        image, _, shown = draw_scene(rng, size)
        name = os.path.join("images", f"{index:05d}.png")
        image.save(os.path.join(root, name))
        rows.append({"image": name, "labels": " ".join(shown)})
    path = os.path.join(root, "labels.csv")
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=["image", "labels"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_segmentation_folders(root: str, count: int, seed: int, size: int = 64) -> tuple[str, str]:
    """Write `count` scenes as `root/images/<n>.png` and their masks as `root/masks/<n>.png`; return both folders."""
    rng = np.random.default_rng(seed)
    folders = os.path.join(root, "images"), os.path.join(root, "masks")
    for folder in folders:
        os.makedirs(folder, exist_ok=True)
    for index in range(count):
        image, mask, _ = draw_scene(rng, size)
        image.save(os.path.join(folders[0], f"{index:05d}.png"))
        Image.fromarray(mask).save(os.path.join(folders[1], f"{index:05d}.png"))
    return folders
