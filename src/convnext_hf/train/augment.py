"""The paper's training-time data augmentation, in PIL and torch (no torchvision).

Per image, in the order of the official recipe: random-resized crop and horizontal flip, RandAugment
(rand-m9-mstd0.5-inc1), conversion to a tensor rescaled and normalized as the model's image processor does it, then
random erasing. Random choices come from Python's `random` and noise from torch's generator; the Trainer seeds both
and every DataLoader worker re-seeds them.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

from ..errors import UserInputError


class RandomResizedCrop:
    """Crop a random area fraction and aspect ratio of the image, then resize it to `size`×`size`."""

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        resample: Image.Resampling = Image.Resampling.BICUBIC,
    ) -> None:
        if not 0 < scale[0] <= scale[1] <= 1:
            raise UserInputError(f"scale must satisfy 0 < min <= max <= 1, got {scale}; the paper uses (0.08, 1).")
        if not 0 < ratio[0] <= ratio[1]:
            raise UserInputError(f"ratio must satisfy 0 < min <= max, got {ratio}; the paper uses (3/4, 4/3).")
        self.size = size
        self.scale = scale
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.ratio = ratio
        self.resample = resample

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Sample a (left, top, right, bottom) box; after ten misses, fall back to the largest central crop."""
        area = width * height
        for _ in range(10):
            target_area = area * random.uniform(*self.scale)
            aspect = math.exp(random.uniform(*self.log_ratio))
            crop_w = round(math.sqrt(target_area * aspect))
            crop_h = round(math.sqrt(target_area / aspect))
            if 0 < crop_w <= width and 0 < crop_h <= height:
                left = random.randint(0, width - crop_w)
                top = random.randint(0, height - crop_h)
                return left, top, left + crop_w, top + crop_h
        aspect = min(max(width / height, self.ratio[0]), self.ratio[1])
        crop_w, crop_h = (width, round(width / aspect)) if width / height < aspect else (round(height * aspect), height)
        left, top = (width - crop_w) // 2, (height - crop_h) // 2
        return left, top, left + crop_w, top + crop_h

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.resize((self.size, self.size), self.resample, box=self.crop_box(*image.size))


def random_horizontal_flip(image: Image.Image, probability: float) -> Image.Image:
    """Mirror the image left-right with the given probability."""
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if random.random() < probability else image


# RandAugment. Each operation takes the image, a strength in [0, 1] (magnitude / 10) and the fill colour of pixels
# that geometric operations expose. The "increasing" set (inc1) makes every operation stronger as the strength grows.
_MAX_ROTATE_DEGREES = 30.0
_MAX_SHEAR = 0.3
_MAX_TRANSLATE = 0.45
_MAX_ENHANCE = 0.9
_MAX_SOLARIZE_ADD = 110
# The ImageNet mean colour, as the reference implementation fills with it.
FILL_COLOR = (124, 116, 104)


def _random_sign(value: float) -> float:
    return value if random.random() < 0.5 else -value


def _affine(image: Image.Image, coefficients: tuple[float, ...], fill: tuple[int, ...]) -> Image.Image:
    return image.transform(image.size, Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR, fillcolor=fill)


def _rotate(image: Image.Image, strength: float, fill: tuple[int, ...]) -> Image.Image:
    return image.rotate(_random_sign(strength * _MAX_ROTATE_DEGREES), Image.Resampling.BILINEAR, fillcolor=fill)


def _shear_x(image: Image.Image, strength: float, fill: tuple[int, ...]) -> Image.Image:
    return _affine(image, (1, _random_sign(strength * _MAX_SHEAR), 0, 0, 1, 0), fill)


def _shear_y(image: Image.Image, strength: float, fill: tuple[int, ...]) -> Image.Image:
    return _affine(image, (1, 0, 0, _random_sign(strength * _MAX_SHEAR), 1, 0), fill)


def _translate_x(image: Image.Image, strength: float, fill: tuple[int, ...]) -> Image.Image:
    return _affine(image, (1, 0, _random_sign(strength * _MAX_TRANSLATE) * image.width, 0, 1, 0), fill)


def _translate_y(image: Image.Image, strength: float, fill: tuple[int, ...]) -> Image.Image:
    return _affine(image, (1, 0, 0, 0, 1, _random_sign(strength * _MAX_TRANSLATE) * image.height), fill)


def _enhance(enhancer: type) -> Callable[[Image.Image, float, tuple[int, ...]], Image.Image]:
    def apply(image: Image.Image, strength: float, fill: tuple[int, ...]) -> Image.Image:
        return enhancer(image).enhance(1.0 + _random_sign(strength * _MAX_ENHANCE))

    return apply


def _posterize(image: Image.Image, strength: float, fill: tuple[int, ...]) -> Image.Image:
    return ImageOps.posterize(image, max(4 - int(strength * 4), 1))


def _solarize(image: Image.Image, strength: float, fill: tuple[int, ...]) -> Image.Image:
    return ImageOps.solarize(image, 256 - int(strength * 256))


def _solarize_add(image: Image.Image, strength: float, fill: tuple[int, ...]) -> Image.Image:
    pixels = np.asarray(image, dtype=np.int16)
    added = np.where(pixels < 128, np.minimum(pixels + int(strength * _MAX_SOLARIZE_ADD), 255), pixels)
    return Image.fromarray(added.astype(np.uint8))


RAND_AUGMENT_OPS: dict[str, Callable[[Image.Image, float, tuple[int, ...]], Image.Image]] = {
    "AutoContrast": lambda image, strength, fill: ImageOps.autocontrast(image),
    "Equalize": lambda image, strength, fill: ImageOps.equalize(image),
    "Invert": lambda image, strength, fill: ImageOps.invert(image),
    "Rotate": _rotate,
    "Posterize": _posterize,
    "Solarize": _solarize,
    "SolarizeAdd": _solarize_add,
    "Color": _enhance(ImageEnhance.Color),
    "Contrast": _enhance(ImageEnhance.Contrast),
    "Brightness": _enhance(ImageEnhance.Brightness),
    "Sharpness": _enhance(ImageEnhance.Sharpness),
    "ShearX": _shear_x,
    "ShearY": _shear_y,
    "TranslateX": _translate_x,
    "TranslateY": _translate_y,
}


@dataclass(frozen=True)
class RandAugment:
    """RandAugment (Cubuk et al. 2020) as the ConvNeXt recipe configures it: `num_ops` random operations per image,
    each applied with probability `probability` at a magnitude drawn from N(`magnitude`, `magnitude_std`) on a 0-10
    scale.
    """

    magnitude: float = 9.0
    magnitude_std: float = 0.5
    num_ops: int = 2
    probability: float = 0.5

    MAX_MAGNITUDE = 10.0
    # What each field can express, as timm reads it: magnitudes on its 0-10 scale (timm clips larger ones to 10, so
    # m99 would silently be m10), a std up to 100 (timm samples uniformly above, which is not implemented here), and
    # one to 15 operations per image (the 15 of the set).
    RANGES = {
        "magnitude": (0.0, MAX_MAGNITUDE, "a magnitude from 0 to 10 (timm's scale; the paper uses m9)"),
        "magnitude_std": (0.0, 100.0, "a std from 0 to 100 (timm's uniform sampling above 100 is not implemented)"),
        "num_ops": (1, len(RAND_AUGMENT_OPS), f"1 to {len(RAND_AUGMENT_OPS)} operations per image"),
        "probability": (0.0, 1.0, "a probability from 0 to 1"),
    }

    @classmethod
    def from_string(cls, spec: str) -> RandAugment:
        """Parse a timm-style spec such as `rand-m9-mstd0.5-inc1` (m: magnitude, n: ops, mstd, p; inc1 only)."""
        fields = spec.split("-")
        if fields[0] != "rand":
            raise UserInputError(
                f"RandAugment spec must start with 'rand-', got {spec!r}; e.g. 'rand-m9-mstd0.5-inc1'."
            )
        keys = {"m": "magnitude", "mstd": "magnitude_std", "n": "num_ops", "p": "probability"}
        values: dict[str, float] = {}
        for field in fields[1:]:
            match = re.fullmatch(r"(mstd|inc|m|n|p)(\d+(?:\.\d+)?)", field)
            if match is None:
                raise UserInputError(
                    f"Unknown RandAugment field {field!r} in {spec!r}; known fields: m, n, mstd, p, inc1."
                )
            key, number = match.groups()
            if key == "inc":
                if number != "1":
                    raise UserInputError(f"Only the increasing operation set (inc1) is implemented, got {field!r}.")
                continue
            if keys[key] in values:
                raise UserInputError(f"--rand_augment {spec}: gives {key} twice; give each field once.")
            if key == "n" and "." in number:
                raise UserInputError(f"--rand_augment {spec}: n counts operations, a whole number, got {field!r}.")
            values[keys[key]] = int(number) if key == "n" else float(number)
        for name, (low, high, words) in cls.RANGES.items():
            if name in values and not low <= values[name] <= high:
                raise UserInputError(f"--rand_augment {spec}: {name} {values[name]:g} is out of range; it takes "
                                     f"{words}.")  # fmt: skip
        return cls(**values)

    def __call__(self, image: Image.Image) -> Image.Image:
        fill = FILL_COLOR if image.mode == "RGB" else FILL_COLOR[0]
        for name in random.choices(list(RAND_AUGMENT_OPS), k=self.num_ops):
            if random.random() > self.probability:
                continue
            magnitude = random.gauss(self.magnitude, self.magnitude_std) if self.magnitude_std > 0 else self.magnitude
            strength = min(max(magnitude, 0.0), self.MAX_MAGNITUDE) / self.MAX_MAGNITUDE
            image = RAND_AUGMENT_OPS[name](image, strength, fill)
        return image


def random_erasing(pixel_values: torch.Tensor, probability: float) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020), per-pixel mode: with the given probability, replace a random rectangle of
    2%-33% of a normalized (C, H, W) image, aspect ratio in [0.3, 3.3], with standard normal noise.
    """
    if random.random() >= probability:
        return pixel_values
    channels, height, width = pixel_values.shape
    for _ in range(10):
        target_area = height * width * random.uniform(0.02, 1 / 3)
        aspect = math.exp(random.uniform(math.log(0.3), math.log(1 / 0.3)))
        erase_h = round(math.sqrt(target_area * aspect))
        erase_w = round(math.sqrt(target_area / aspect))
        if 0 < erase_h < height and 0 < erase_w < width:
            top = random.randint(0, height - erase_h)
            left = random.randint(0, width - erase_w)
            erased = pixel_values.clone()
            erased[:, top : top + erase_h, left : left + erase_w] = torch.randn(
                (channels, erase_h, erase_w), dtype=pixel_values.dtype
            )
            return erased
    return pixel_values


def to_pixel_values(
    image: Image.Image,
    rescale_factor: float | None,
    image_mean: Sequence[float] | None,
    image_std: Sequence[float] | None,
) -> torch.Tensor:
    """PIL image → (C, H, W) float tensor, rescaled and normalized as the image processor does (None skips a step)."""
    pixels = torch.from_numpy(np.array(image, dtype=np.float32))
    pixels = pixels.unsqueeze(0) if pixels.ndim == 2 else pixels.permute(2, 0, 1)
    if rescale_factor is not None:
        pixels = pixels * rescale_factor
    if image_mean is not None and image_std is not None:
        mean = torch.tensor(image_mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(image_std, dtype=torch.float32).view(-1, 1, 1)
        pixels = (pixels - mean) / std
    return pixels


@dataclass(frozen=True)
class TrainTransform:
    """The whole per-image training augmentation: crop and flip, RandAugment, normalization, random erasing."""

    crop: RandomResizedCrop
    hflip: float
    rand_augment: RandAugment | None
    random_erasing: float
    rescale_factor: float | None
    image_mean: Sequence[float] | None
    image_std: Sequence[float] | None

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = random_horizontal_flip(self.crop(image), self.hflip)
        if self.rand_augment is not None:
            image = self.rand_augment(image)
        pixel_values = to_pixel_values(image, self.rescale_factor, self.image_mean, self.image_std)
        return random_erasing(pixel_values, self.random_erasing) if self.random_erasing > 0 else pixel_values
