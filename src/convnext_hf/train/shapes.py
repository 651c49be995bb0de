"""Synthetic scenes of coloured circles, squares and triangles: multi-label and segmentation data without downloads.

Each scene has a flat, noisy, greyish background and one to three non-overlapping shapes. By default every shape
gets a random colour (kept apart from the background), so only its form tells what it is; with `hue_coded=True` each
kind has its own hue (circles reddish, squares greenish, triangles bluish) with random brightness and tint, an easier
task where colour alone gives the class away. A scene gives its image, its mask of class ids (0 background, 1 circle,
2 square, 3 triangle) and the set of shapes it shows, or (`draw_detection_scene`) each shape's tight box. The
segmentation and detection demos and the accuracy tests train on these.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence

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
# A random shape colour is drawn again until it is this far (Euclidean, in RGB) from the background, so that no shape
# vanishes into it.
_MIN_CONTRAST = 60


def _shape_colour(
    rng: np.random.Generator, shape: str, background: tuple[int, ...], hue_coded: bool
) -> tuple[int, ...]:
    """Any colour that stands out from the background, or with `hue_coded` the shape's hue, tinted at random."""
    if hue_coded:
        colour = np.asarray(_HUES[shape]) * rng.uniform(0.75, 1.15) + rng.integers(-_TINT, _TINT + 1, size=3)
        return tuple(int(value) for value in np.clip(colour, 0, 255))
    while True:
        colour = rng.integers(0, 256, size=3)
        if np.linalg.norm(colour - np.asarray(background)) >= _MIN_CONTRAST:
            return tuple(int(value) for value in colour)


def _background(rng: np.random.Generator) -> tuple[int, ...]:
    """A grey of random lightness with a slight tint."""
    colour = rng.integers(60, 200) + rng.integers(-20, 21, size=3)
    return tuple(int(value) for value in np.clip(colour, 0, 255))


def _place_shapes(
    rng: np.random.Generator,
    size: int,
    draw: Callable[[str, tuple[int, int, int, int], int], None],
    max_shapes: int,
    side_range: tuple[float, float],
) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Draw one to `max_shapes` non-overlapping shapes through `draw(shape, box, class_id)`; return them in order."""
    placed: list[tuple[str, tuple[int, int, int, int]]] = []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        side = int(size * rng.uniform(*side_range))
        for _attempt in range(20):
            left, top = (int(value) for value in rng.integers(0, size - side, size=2))
            box = (left, top, left + side, top + side)
            if all(box[2] <= other[0] or other[2] <= box[0] or box[3] <= other[1] or other[3] <= box[1]
                   for _, other in placed):  # fmt: skip
                break
        else:
            continue
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        draw(shape, box, SEGMENTATION_LABELS.index(shape))
        placed.append((shape, box))
    return placed


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill: object) -> None:
    """A shape filling `box` (left, top, right, bottom; right and bottom exclusive)."""
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=fill)
    else:
        apex = ((box[0] + box[2]) / 2, box[1])
        draw.polygon([apex, (box[0], box[3] - 1), (box[2] - 1, box[3] - 1)], fill=fill)


def draw_scene(
    rng: np.random.Generator, size: int, hue_coded: bool = False
) -> tuple[Image.Image, np.ndarray, list[str]]:
    """One scene: the RGB image, its (size, size) uint8 mask of class ids, and the names of the shapes it shows."""
    background = _background(rng)
    image = Image.new("RGB", (size, size), background)
    mask = Image.new("L", (size, size), 0)
    draw_image, draw_mask = ImageDraw.Draw(image), ImageDraw.Draw(mask)

    def draw(shape: str, box: tuple[int, int, int, int], class_id: int) -> None:
        _draw_shape(draw_image, shape, box, _shape_colour(rng, shape, background, hue_coded))
        _draw_shape(draw_mask, shape, box, class_id)

    shown = [shape for shape, _ in _place_shapes(rng, size, draw, _MAX_SHAPES, _SHAPE_SIDE)]
    pixels = np.asarray(image, dtype=np.int16) + rng.integers(-_NOISE, _NOISE + 1, size=(size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), np.asarray(mask), sorted(set(shown))


def draw_detection_scene(
    rng: np.random.Generator, size: int, hue_coded: bool = False
) -> tuple[Image.Image, list[tuple[str, list[int]]]]:
    """The scene `draw_scene` draws from the same generator state, with each shape's name and tight box
    `[x, y, width, height]` in pixels (COCO's layout), measured on its drawn pixels."""
    background = _background(rng)
    image = Image.new("RGB", (size, size), background)
    instances = Image.new("L", (size, size), 0)
    draw_image, draw_instances = ImageDraw.Draw(image), ImageDraw.Draw(instances)
    placed: list[str] = []

    def draw(shape: str, box: tuple[int, int, int, int], class_id: int) -> None:
        # Instance numbers (1, 2, ...) rather than class ids: each shape's own pixels give its box.
        _draw_shape(draw_image, shape, box, _shape_colour(rng, shape, background, hue_coded))
        placed.append(shape)
        _draw_shape(draw_instances, shape, box, len(placed))

    _place_shapes(rng, size, draw, _MAX_SHAPES, _SHAPE_SIDE)
    numbers = np.asarray(instances)
    objects = []
    for index, shape in enumerate(placed, start=1):
        rows, columns = np.nonzero(numbers == index)
        left, top = int(columns.min()), int(rows.min())
        objects.append((shape, [left, top, int(columns.max()) + 1 - left, int(rows.max()) + 1 - top]))
    pixels = np.asarray(image, dtype=np.int16) + rng.integers(-_NOISE, _NOISE + 1, size=(size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), objects


def write_multilabel_csv(root: str, count: int, seed: int, size: int = 64, hue_coded: bool = False) -> str:
    """Write `count` scenes as `root/images/<n>.png` and `root/labels.csv` (space-separated shape names); return it."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    rows = []
    for index in range(count):
        image, _, shown = draw_scene(rng, size, hue_coded)
        name = os.path.join("images", f"{index:05d}.png")
        image.save(os.path.join(root, name))
        rows.append({"image": name, "labels": " ".join(shown)})
    path = os.path.join(root, "labels.csv")
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=["image", "labels"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_segmentation_folders(
    root: str, count: int, seed: int, size: int = 64, hue_coded: bool = False
) -> tuple[str, str]:
    """Write `count` scenes as `root/images/<n>.png` and their masks as `root/masks/<n>.png`; return both folders."""
    rng = np.random.default_rng(seed)
    folders = os.path.join(root, "images"), os.path.join(root, "masks")
    for folder in folders:
        os.makedirs(folder, exist_ok=True)
    for index in range(count):
        image, mask, _ = draw_scene(rng, size, hue_coded)
        image.save(os.path.join(folders[0], f"{index:05d}.png"))
        Image.fromarray(mask).save(os.path.join(folders[1], f"{index:05d}.png"))
    return folders


def write_coco_folder(
    root: str, scenes: Iterable[tuple[Image.Image, list[tuple[int, list[int]]]]], class_names: Sequence[str]
) -> tuple[str, str]:
    """Write scenes (an image and its objects as (class index, COCO box)) as `root/images/<n>.png` and
    `root/annotations.json` (COCO, `file_name` relative to the images folder, category ids from 1); return both."""
    images_dir = os.path.join(root, "images")
    os.makedirs(images_dir, exist_ok=True)
    images, annotations = [], []
    for index, (image, objects) in enumerate(scenes):
        name = f"{index:05d}.png"
        image.save(os.path.join(images_dir, name))
        images.append({"id": index, "file_name": name, "width": image.width, "height": image.height})
        for class_index, box in objects:
            annotations.append({
                "id": len(annotations) + 1, "image_id": index, "category_id": class_index + 1,
                "bbox": box, "area": box[2] * box[3], "iscrowd": 0,
            })  # fmt: skip
    categories = [{"id": index + 1, "name": name} for index, name in enumerate(class_names)]
    path = os.path.join(root, "annotations.json")
    with open(path, "w", encoding="utf-8") as file:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, file)
    return images_dir, path


def write_detection_folder(root: str, count: int, seed: int, size: int = 64) -> tuple[str, str]:
    """Write `count` detection scenes as `root/images/<n>.png` and their boxes as `root/annotations.json` (COCO
    format, `file_name` relative to the images folder); return the images folder and the annotation file."""
    rng = np.random.default_rng(seed)

    def scenes() -> Iterator[tuple[Image.Image, list[tuple[int, list[int]]]]]:
        for _ in range(count):
            image, objects = draw_detection_scene(rng, size)
            yield image, [(SHAPES.index(shape), list(box)) for shape, box in objects]

    return write_coco_folder(root, scenes(), SHAPES)
