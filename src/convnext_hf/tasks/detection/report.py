"""The picture a detection run leaves: validation images with their true boxes and the predicted ones."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

PREDICTIONS_NAME = "predictions.png"
TRUTH_COLOUR = (255, 255, 255)
CROWD_COLOUR = (128, 128, 128)
# Small images are enlarged (pixels kept sharp) so that boxes and captions are readable.
MIN_SIDE = 256
# The caption line above a grid: its height, and a width that holds it whatever the number of pictures.
CAPTION_HEIGHT, CAPTION_WIDTH = 20, 640


def palette(num_labels: int) -> list[tuple[int, int, int]]:
    """A fixed, saturated colour per class, the same in every picture."""
    colours = np.random.default_rng(0).integers(64, 256, size=(max(num_labels, 1), 3))
    return [tuple(int(value) for value in colour) for colour in colours]


def draw_detections(
    image: Image.Image, truth: Sequence[Sequence[float]], detections: dict, label_names: Sequence[str],
    crowd: Sequence[int] = (),
) -> Image.Image:  # fmt: skip
    """The image enlarged, true boxes (COCO [x, y, w, h]) in white (crowd ones, which the metrics ignore, in grey),
    predictions coloured by class with their score."""
    scale = max(1, -(-MIN_SIDE // min(image.size)))
    picture = image.convert("RGB").resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(picture)
    flags = list(crowd) or [0] * len(truth)
    for (x, y, w, h), flag in zip(truth, flags, strict=True):
        colour = CROWD_COLOUR if flag else TRUTH_COLOUR
        draw.rectangle((x * scale, y * scale, (x + w) * scale - 1, (y + h) * scale - 1), outline=colour, width=1)
    colours = palette(len(label_names))
    for score, label, (x0, y0, x1, y1) in zip(detections["scores"], detections["labels"], detections["boxes"],
                                              strict=True):  # fmt: skip
        colour = colours[int(label)]
        draw.rectangle((x0 * scale, y0 * scale, x1 * scale - 1, y1 * scale - 1), outline=colour, width=2)
        draw.text((x0 * scale + 2, y0 * scale + 1), f"{label_names[int(label)]} {score:.2f}", fill=colour)
    return picture


def shown_caption(threshold: float) -> str:
    """What a prediction grid shows, written above it: which detections are drawn, and what the metrics count."""
    return (f"true boxes white (crowd boxes, ignored, grey); detections scored above {threshold:g} drawn; the metrics "
            "count every detection (COCO's protocol)")  # fmt: skip


def save_prediction_grid(pictures: Sequence[Image.Image], path: str, caption: str = "", columns: int = 4) -> None:
    """Tile the pictures (padded to the largest) into one PNG, under a line of `caption` when given."""
    width = max(picture.width for picture in pictures)
    height = max(picture.height for picture in pictures)
    rows = -(-len(pictures) // columns)
    top = CAPTION_HEIGHT if caption else 0
    grid = Image.new("RGB", (max(min(columns, len(pictures)) * width, CAPTION_WIDTH if caption else 0),
                             top + rows * height))  # fmt: skip
    if caption:
        ImageDraw.Draw(grid).text((4, 4), caption, fill=TRUTH_COLOUR)
    for index, picture in enumerate(pictures):
        grid.paste(picture, ((index % columns) * width, top + (index // columns) * height))
    grid.save(path)
