"""Box-aware augmentation for detection: photometric jitter, scale jitter (zoom in with a random crop, zoom out onto
a padded canvas), horizontal flip. Boxes are COCO `[x, y, width, height]` in pixels and move with the image; a box
cut by the crop is clipped to it, and dropped once too little of it is left to show the object.

The image keeps its size, so scale jitter is what gives the detector objects at many scales (the multi-scale
training of the paper's detection recipe) while the processor's fixed input size keeps batches stackable.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance

# A box cut by the crop stays while this fraction of its area is still in the image; below, the object is gone.
MIN_VISIBLE_FRACTION = 0.25
# ... and while it is at least this many pixels wide and high.
MIN_SIDE = 1.0


def hflip_boxes(boxes: np.ndarray, width: float) -> np.ndarray:
    """Boxes of an image `width` pixels wide mirrored left to right."""
    flipped = boxes.copy()
    flipped[:, 0] = width - boxes[:, 0] - boxes[:, 2]
    return flipped


def crop_boxes(
    boxes: np.ndarray, left: float, top: float, width: float, height: float
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes in the frame of the crop (left, top, width, height), clipped to it, and the mask of those kept.

    A box is kept while at least MIN_VISIBLE_FRACTION of its area and MIN_SIDE pixels of each side remain.
    """
    x0 = np.clip(boxes[:, 0] - left, 0, width)
    y0 = np.clip(boxes[:, 1] - top, 0, height)
    x1 = np.clip(boxes[:, 0] + boxes[:, 2] - left, 0, width)
    y1 = np.clip(boxes[:, 1] + boxes[:, 3] - top, 0, height)
    clipped = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)
    area = boxes[:, 2] * boxes[:, 3]
    keep = (
        (clipped[:, 2] >= MIN_SIDE)
        & (clipped[:, 3] >= MIN_SIDE)
        & (clipped[:, 2] * clipped[:, 3] >= MIN_VISIBLE_FRACTION * area)
    )
    return clipped[keep], keep


def zoom(
    image: Image.Image, boxes: np.ndarray, factor: float, offset: tuple[float, float]
) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """Scale the image by `factor` and bring it back to its size: a crop when enlarged, a canvas of its mean colour
    when shrunk. `offset` (each in [0, 1]) places the crop or the shrunk image. Returns the image, the kept boxes and
    the mask of the boxes kept."""
    width, height = image.size
    new_width, new_height = max(1, round(width * factor)), max(1, round(height * factor))
    scaled = image.resize((new_width, new_height), Image.Resampling.BILINEAR)
    scale = np.array([new_width / width, new_height / height, new_width / width, new_height / height])
    boxes = boxes * scale
    if factor >= 1:
        left, top = round(offset[0] * (new_width - width)), round(offset[1] * (new_height - height))
        kept, keep = crop_boxes(boxes, left, top, width, height)
        return scaled.crop((left, top, left + width, top + height)), kept, keep
    fill = tuple(int(value) for value in np.asarray(image).reshape(-1, 3).mean(axis=0))
    canvas = Image.new("RGB", (width, height), fill)
    left, top = round(offset[0] * (width - new_width)), round(offset[1] * (height - new_height))
    canvas.paste(scaled, (left, top))
    moved = boxes + np.array([left, top, 0, 0])
    return canvas, moved, np.ones(len(boxes), dtype=bool)


def shift_hue(image: Image.Image, shift: float) -> Image.Image:
    """Rotate every pixel's hue by `shift` turns (0..1)."""
    hsv = np.asarray(image.convert("HSV"), dtype=np.int16)
    hsv[..., 0] = (hsv[..., 0] + round(shift * 256)) % 256
    return Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")


def photometric(image: Image.Image, strength: float, rng: random.Random) -> Image.Image:
    """Brightness, contrast and saturation each by a factor in [1 − strength, 1 + strength], then a hue rotation of
    up to strength / 4 of a turn, in random order."""
    operations = [
        lambda picture: ImageEnhance.Brightness(picture).enhance(rng.uniform(1 - strength, 1 + strength)),
        lambda picture: ImageEnhance.Contrast(picture).enhance(rng.uniform(1 - strength, 1 + strength)),
        lambda picture: ImageEnhance.Color(picture).enhance(rng.uniform(1 - strength, 1 + strength)),
        lambda picture: shift_hue(picture, rng.uniform(-strength / 4, strength / 4)),
    ]
    rng.shuffle(operations)
    for operation in operations:
        image = operation(image)
    return image


@dataclass(frozen=True)
class BoxAugment:
    """The training augmentation of one image and its boxes: photometric jitter, scale jitter, flip."""

    scale_range: tuple[float, float] = (0.75, 1.25)
    hflip: float = 0.5
    photometric: float = 0.3
    # None: Python's global generator, which the Trainer seeds (and reseeds in each data-loading worker).
    rng: random.Random | None = None

    def __call__(
        self, image: Image.Image, boxes: np.ndarray, categories: np.ndarray
    ) -> tuple[Image.Image, np.ndarray, np.ndarray]:
        """The augmented image, its boxes (COCO pixels) and their categories (dropped boxes removed)."""
        rng = self.rng if self.rng is not None else random.Random(random.getrandbits(64))
        image = image.convert("RGB")
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        categories = np.asarray(categories, dtype=np.int64)
        if self.photometric > 0:
            image = photometric(image, self.photometric, rng)
        factor = rng.uniform(*self.scale_range)
        if factor != 1:
            image, boxes, keep = zoom(image, boxes, factor, (rng.random(), rng.random()))
            categories = categories[keep]
        if rng.random() < self.hflip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            boxes = hflip_boxes(boxes, image.width)
        return image, boxes, categories

