"""The picture a detection run leaves: validation images with their true boxes and the predicted ones."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

PREDICTIONS_NAME = "predictions.png"
TRUTH_COLOUR = (255, 255, 255)
# Small images are enlarged (pixels kept sharp) so that boxes and captions are readable.
MIN_SIDE = 256


def palette(num_labels: int) -> list[tuple[int, int, int]]:
    """A fixed, saturated colour per class, the same in every picture."""
    colours = np.random.default_rng(0).integers(64, 256, size=(max(num_labels, 1), 3))
    return [tuple(int(value) for value in colour) for colour in colours]


def draw_detections(
    image: Image.Image, truth: Sequence[Sequence[float]], detections: dict, label_names: Sequence[str]
) -> Image.Image:
    """The image enlarged, true boxes (COCO [x, y, w, h]) in white, predictions coloured by class with their score."""
    scale = max(1, -(-MIN_SIDE // min(image.size)))
    picture = image.convert("RGB").resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(picture)
    for x, y, w, h in truth:
        draw.rectangle((x * scale, y * scale, (x + w) * scale - 1, (y + h) * scale - 1), outline=TRUTH_COLOUR, width=1)
    colours = palette(len(label_names))
    for score, label, (x0, y0, x1, y1) in zip(detections["scores"], detections["labels"], detections["boxes"],
                                              strict=True):  # fmt: skip
        colour = colours[int(label)]
        draw.rectangle((x0 * scale, y0 * scale, x1 * scale - 1, y1 * scale - 1), outline=colour, width=2)
        draw.text((x0 * scale + 2, y0 * scale + 1), f"{label_names[int(label)]} {score:.2f}", fill=colour)
    return picture


def save_prediction_grid(pictures: Sequence[Image.Image], path: str, columns: int = 4) -> None:
    """Tile the pictures (padded to the largest) into one PNG."""
    width = max(picture.width for picture in pictures)
    height = max(picture.height for picture in pictures)
    rows = -(-len(pictures) // columns)
    grid = Image.new("RGB", (min(columns, len(pictures)) * width, rows * height))
    for index, picture in enumerate(pictures):
        grid.paste(picture, ((index % columns) * width, (index // columns) * height))
    grid.save(path)
