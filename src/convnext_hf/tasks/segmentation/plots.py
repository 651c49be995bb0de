"""The prediction overlay of a segmentation model: per image, the image, the true mask and the prediction over it.

Training draws it for the first validation pairs (`prediction_overlay.png` in the model folder), `convnext-hf
evaluate` for the first scored pairs; predictions are the pipeline's (logits resized to the image, best class).
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import numpy as np
import torch
import transformers
from PIL import Image

from ...images import read_image
from .data import IGNORE_INDEX, mask_array

OVERLAY_NAME = "prediction_overlay.png"


def palette(num_labels: int) -> np.ndarray:
    """A fixed colour per class (uint8 RGB), the same in every overlay."""
    return np.random.default_rng(0).integers(0, 256, size=(max(num_labels, 1), 3)).astype(np.uint8)


def draw_overlay(rows: Sequence[tuple[Image.Image, np.ndarray, np.ndarray]], num_labels: int, path: str) -> None:
    """Write a PNG with one row per (image, true ids, predicted ids): the image, then each mask blended over it."""
    colours = palette(num_labels)
    pictures = []
    for image, truth, predicted in rows:
        pixels = np.asarray(read_image(image), dtype=np.float32)

        def blend(ids: np.ndarray, pixels: np.ndarray = pixels) -> np.ndarray:
            coloured = colours[np.clip(ids, 0, num_labels - 1)].astype(np.float32)
            shown = np.where((ids == IGNORE_INDEX)[..., None], pixels, 0.5 * pixels + 0.5 * coloured)
            return shown.astype(np.uint8)

        pictures.append(np.concatenate([pixels.astype(np.uint8), blend(truth), blend(predicted)], axis=1))
    width = max(picture.shape[1] for picture in pictures)
    canvas = np.concatenate([np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0))) for row in pictures], axis=0)
    # Small images are enlarged (pixels kept sharp) so that the overlay is readable.
    scale = max(1, 128 // pictures[0].shape[0])
    picture = Image.fromarray(canvas)
    picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST).save(path)


def plot_prediction_overlay(
    model: torch.nn.Module,
    processor: transformers.BaseImageProcessor,
    pairs: datasets.Dataset,
    path: str,
    count: int = 4,
) -> None:
    """Write a PNG with, per validation image, the image, the true mask and the prediction blended over it."""
    num_labels = model.config.num_labels
    rows = []
    model.eval()
    for example in pairs.select(range(min(count, len(pairs)))):
        image = read_image(example["image"])
        truth = mask_array(example["mask"], num_labels)
        with torch.no_grad():
            logits = model(**processor(image, return_tensors="pt").to(model.device)).logits
        # As the image-segmentation pipeline does: logits resized to the image, then the best class per pixel.
        logits = torch.nn.functional.interpolate(logits, size=image.size[::-1], mode="bilinear", align_corners=False)
        rows.append((image, truth, logits.argmax(dim=1)[0].cpu().numpy()))
    draw_overlay(rows, num_labels, path)
