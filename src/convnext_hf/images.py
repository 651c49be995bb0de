"""Every image and mask this project reads from a file, decoded in one place.

An image is read in its displayed frame: its EXIF orientation applied once, here, as transformers' `load_image`
(and `datasets.Image`) apply it, so that pixels, sizes and boxes are those an annotation tool shows. Its pixels are
then converted as the image processor converts every input (`to_standard_mode`): 16-bit and 32-bit integer images
on their 16-bit scale, palette, CMYK, grayscale and transparency (composited onto white) to 8-bit RGB. A
segmentation mask is read in the same frame but never colour-converted: its pixel values are class ids.

Sources: a path, a binary file object, an undecoded `datasets.Image` entry (`{"path": ..., "bytes": ...}`), or a PIL
image already opened (e.g. by `datasets.Image()`), which gets the same orientation and conversion.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps

from .errors import UserInputError
from .image_processing_convnext import open_displayed, to_standard_mode

ImageSource = str | os.PathLike | BinaryIO | dict | Image.Image
# EXIF orientations that turn the picture by 90 or 270 degrees (transposed, rotated, transversed): the displayed
# frame swaps the stored width and height.
SWAPPING_ORIENTATIONS = (5, 6, 7, 8)
EXIF_ORIENTATION = 0x0112


def source_name(source: ImageSource) -> str:
    """The file an image source names, for messages ('<image bytes>' when it has none)."""
    if isinstance(source, dict):
        return str(source.get("path") or "<image bytes>")
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return str(getattr(source, "filename", None) or getattr(source, "name", None) or "<image bytes>")


def _file(source: str | os.PathLike | BinaryIO | dict) -> str | os.PathLike | BinaryIO:
    """The path or file object to open for a source (an undecoded `datasets.Image` entry: its bytes, else its path)."""
    if not isinstance(source, dict):
        return source
    if source.get("bytes"):
        return io.BytesIO(source["bytes"])
    if source.get("path") is None:
        raise ValueError("an image entry with neither bytes nor a path")
    return source["path"]


def _displayed(source: ImageSource) -> Image.Image:
    """The decoded image in its displayed frame, pixels in the file's own mode; refused in one line naming it."""
    name = source_name(source)
    try:
        if isinstance(source, Image.Image):
            return ImageOps.exif_transpose(source)
        source = _file(source)
        if isinstance(source, (str, os.PathLike)) and not os.path.isfile(source):
            raise ValueError(f"no image file at {name}; check the path, or remove it from the data.")
        return open_displayed(Path(source) if isinstance(source, (str, os.PathLike)) else source, name)
    except (ValueError, OSError, SyntaxError, EOFError) as error:
        if isinstance(error, UserInputError):
            raise
        raise UserInputError(str(error) if name in str(error) else f"{name}: {error}") from error


def read_image(source: ImageSource, convert_rgb: bool = True) -> Image.Image:
    """An image as 8-bit RGB in its displayed frame (EXIF orientation applied), converted as the image processor
    converts its inputs (16-bit, palette, CMYK, grayscale, alpha onto white); an unreadable image refused by name.
    `convert_rgb=False` keeps its channels as a processor with `do_convert_rgb=False` does (L, LA, RGB or RGBA)."""
    image = _displayed(source)
    try:
        return to_standard_mode(image, convert_rgb)
    except ValueError as error:
        raise UserInputError(f"{source_name(source)}: {error}") from error


def read_mask(source: ImageSource) -> Image.Image:
    """A segmentation mask in its displayed frame with its pixel values as stored (class ids; palette indices stay
    indices, 16-bit ids stay 16-bit): never colour-converted."""
    return _displayed(source)


def image_frames(source: str | os.PathLike | BinaryIO | dict) -> tuple[tuple[int, int], tuple[int, int]]:
    """(width, height) of an image file as stored and as displayed (EXIF orientation applied), from its header."""
    with Image.open(_file(source)) as image:
        stored = image.size
        orientation = image.getexif().get(EXIF_ORIENTATION)
    return stored, (stored[::-1] if orientation in SWAPPING_ORIENTATIONS else stored)
