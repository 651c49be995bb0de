"""The fuzzer's images: arrays and files of every mode PIL decodes (1, L, LA, P, RGB, RGBA, CMYK, I;16, I, F), sizes
from 1×1, truncated bytes, EXIF orientations valid and not, other bytes under an image's extension, and headers that
claim 100000² pixels (a decompression bomb). Through `images.read_image` / `read_mask`, the image processor and the
training loader's reading (`train.data.read_images`), each either gives a correct result (a finite float tensor of the
processor's size) or refuses in one line naming the file (the loader: "PATH (WHY)" for the Trainer to skip or stop
at); never another exception, never a decode past `MAX_IMAGE_PIXELS`.

Profiles as tests/test_fuzz.py (tests/conftest.py: `ci` by default, HYPOTHESIS_PROFILE=long).
"""

import io
import struct

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from convnext_hf import ConvNextHFImageProcessor
from convnext_hf.errors import UserInputError
from convnext_hf.images import read_image, read_mask
from convnext_hf.train.data import read_images
from helpers import png_claiming

MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F")
# The format each mode is written in (PNG holds neither CMYK nor 32-bit floats; JPEG holds neither alpha nor 16 bits).
FORMATS = {"CMYK": ("TIFF", "JPEG"), "F": ("TIFF",), "I": ("PNG", "TIFF"), "I;16": ("PNG", "TIFF"),
           "LA": ("PNG", "TIFF"), "RGBA": ("PNG", "TIFF", "WEBP")}  # fmt: skip
DEFAULT_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP")
EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tiff", "BMP": ".bmp", "GIF": ".gif", "WEBP": ".webp"}
SIZE = 32
# The largest side the strategies draw: a bounded image (the bombs claim more in their headers only).
MAX_SIDE = 64


def _pixels(mode: str, width: int, height: int, seed: int, high: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "F":
        # Within [0, 1], the scale the processor reads floats on, or beyond it (refused by name).
        scale = 1.0 if high == 2**16 else 1e4
        return Image.fromarray((rng.uniform(0, 1, (height, width)) * scale).astype(np.float32), "F")
    if mode in ("I", "I;16"):
        high = 2**16 if mode == "I;16" else high
        image = Image.fromarray(rng.integers(0, high, (height, width)).astype(np.int32), "I")
        return image if mode == "I" else image.convert("I;16")
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")
    return image.convert("P", palette=Image.Palette.ADAPTIVE) if mode == "P" else image.convert(mode)


@st.composite
def image_files(draw) -> tuple[str, bytes, bool]:
    """(file name, its bytes, whether it is a complete image) of a hostile image file."""
    kind = draw(st.sampled_from(["image", "image", "image", "truncated", "not an image", "bomb"]))
    if kind == "not an image":
        data = draw(st.sampled_from([b"", b"hello", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"\xff\xd8\xff", b"{}"])
                    | st.binary(max_size=64))  # fmt: skip
        return "x" + draw(st.sampled_from(list(EXTENSIONS.values()))), data, False
    if kind == "bomb":
        side = draw(st.sampled_from([100_000, 65_535, 20_000, 2**31 - 1]))
        return "bomb.png", png_claiming(side, draw(st.sampled_from([side, 1, 10_000]))), False
    mode = draw(st.sampled_from(MODES))
    width, height = draw(st.integers(1, MAX_SIDE)), draw(st.integers(1, MAX_SIDE))
    # 32-bit integer and float pixels: within the scale the processor reads them on, or beyond it (refused by name).
    image = _pixels(mode, width, height, draw(st.integers(0, 2**16)), draw(st.sampled_from([2**16, 2**31])))
    file_format = draw(st.sampled_from(FORMATS.get(mode, DEFAULT_FORMATS)))
    exif = Image.Exif()
    orientation = draw(st.none() | st.integers(0, 9) | st.sampled_from([-1, 255, 65535, 2**31]))
    if orientation is not None:
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    try:
        image.save(buffer, file_format, exif=exif.tobytes())
    except (OSError, ValueError, KeyError, struct.error):
        # The format cannot hold this mode or tag (PIL's own limits): write it as TIFF without the tag.
        buffer = io.BytesIO()
        file_format = "TIFF"
        image.save(buffer, file_format)
    data = buffer.getvalue()
    if kind == "truncated":
        data = data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    return "image" + EXTENSIONS[file_format], data, kind != "truncated"


def _refused_by_name(error: UserInputError, name: str) -> None:
    message = str(error)
    assert "\n" not in message and name in message, message


def _check_pixels(pixels: torch.Tensor) -> None:
    assert pixels.shape == (1, 3, SIZE, SIZE) and pixels.dtype == torch.float32
    assert torch.isfinite(pixels).all()


@given(file=image_files())
def test_fuzz_image_files(tmp_path_factory, file):
    """read_image, read_mask, the processor given the path and the training loader's reading, on one file."""
    name, data, complete = file
    path = tmp_path_factory.mktemp("image") / name
    path.write_bytes(data)
    processor = ConvNextHFImageProcessor(size={"shortest_edge": SIZE})
    try:
        image = read_image(path)
    except UserInputError as error:
        _refused_by_name(error, str(path))
        # A complete file is refused only for pixel values off the scale the processor reads.
        assert not complete or "pixel" in str(error), str(error)
    else:
        assert image.mode == "RGB" and 1 <= min(image.size) and max(image.size) <= MAX_SIDE
        _check_pixels(processor(image, return_tensors="pt")["pixel_values"])
        assert read_mask(path).size == image.size
    (read,), (problem,) = read_images([{"path": str(path), "bytes": None}])
    assert (read is None) == bool(problem)
    if problem:
        assert problem.startswith(f"{path} (") and "\n" not in problem, problem
    else:
        assert read.mode == "RGB"
    try:
        pixels = processor(str(path), return_tensors="pt")["pixel_values"]
    except ValueError as error:
        # The processor's documented refusal of an unreadable file: a ValueError naming it.
        assert str(path) in str(error), str(error)
        assert read is None
    else:
        _check_pixels(pixels)
        assert read is not None


ARRAY_DTYPES = st.sampled_from([np.uint8, np.uint16, np.int32, np.int64, np.float16, np.float32, np.float64, np.bool_])


@st.composite
def image_arrays(draw) -> np.ndarray:
    """An image array of any dtype, 2-D or with 0-5 channels first or last, NaN and infinities included."""
    height, width = draw(st.integers(0, MAX_SIDE)), draw(st.integers(0, MAX_SIDE))
    shape = draw(st.sampled_from([(height, width), (height, width, draw(st.integers(0, 5))),
                                  (draw(st.integers(1, 5)), height, width), (1, height, width, 3)]))  # fmt: skip
    dtype = draw(ARRAY_DTYPES)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    values = rng.normal(0, draw(st.sampled_from([1.0, 255.0, 1e6])), shape)
    array = values.astype(dtype) if dtype is not np.bool_ else values > 0
    if np.issubdtype(array.dtype, np.floating) and array.size and draw(st.booleans()):
        array.flat[draw(st.integers(0, array.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return array


@given(array=image_arrays(), as_tensor=st.booleans())
def test_fuzz_image_arrays(array, as_tensor):
    """The processor given an array (or tensor): pixel values of its size, all finite, or a ValueError/TypeError
    that says what is wrong in one line."""
    processor = ConvNextHFImageProcessor(size={"shortest_edge": SIZE})
    images = torch.from_numpy(array) if as_tensor and array.dtype != np.uint16 else array
    try:
        pixels = processor(images, return_tensors="pt")["pixel_values"]
    except (ValueError, TypeError) as error:
        assert str(error) and "\n" not in str(error), str(error)
        return
    assert pixels.shape[1:] == (3, SIZE, SIZE) and pixels.dtype == torch.float32
    assert torch.isfinite(pixels).all()


@pytest.mark.parametrize(("width", "height"), [(100_000, 100_000), (20_000, 20_000), (2**31 - 1, 1)])
def test_a_png_claiming_huge_dimensions_is_refused_by_name_before_decoding(tmp_path, width, height):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(width, height))
    for read in (read_image, read_mask):
        with pytest.raises(UserInputError) as refusal:
            read(path)
        _refused_by_name(refusal.value, str(path))
        assert "89,478,485" in str(refusal.value)
    (image,), (problem,) = read_images([{"path": str(path), "bytes": None}])
    assert image is None and problem.startswith(f"{path} (") and "89,478,485" in problem
