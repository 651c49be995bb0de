"""Tests of ConvNextHFImageProcessor: evaluation semantics, parity with transformers, inputs, errors, saving."""

import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil

from convnext_hf.image_processing_convnext import MAX_IMAGE_PIXELS, ConvNextHFImageProcessor, to_pil_images

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def random_pixels(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Uniform random uint8 pixels of shape (H, W, C), or (H, W) when channels is 0."""
    shape = (height, width, channels) if channels else (height, width)
    return np.random.RandomState(seed).randint(0, 256, shape, dtype=np.uint8)


def random_image(height: int, width: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A random PIL image of the given mode (RGBA and LA get a random, non-trivial alpha)."""
    if mode in ("RGBA", "LA"):
        return Image.fromarray(random_pixels(height, width, 4, seed)).convert(mode)
    return Image.fromarray(random_pixels(height, width, 3, seed)).convert(mode)


def reference_processor(shortest_edge: int = 224, crop_pct: float = 0.875) -> ConvNextImageProcessorPil:
    """transformers' built-in PIL ConvNeXt processor with our settings (its own defaults differ)."""
    return ConvNextImageProcessorPil(
        size={"shortest_edge": shortest_edge},
        crop_pct=crop_pct,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        do_convert_rgb=True,
    )


def pixel_values(processor, images, **kwargs) -> torch.Tensor:
    """The processor's pixel_values as a torch tensor."""
    return processor(images, return_tensors="pt", **kwargs)["pixel_values"]


def assert_identical(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Assert same shape and bit-identical values, reporting the max abs diff otherwise."""
    assert actual.shape == expected.shape
    max_diff = (actual - expected).abs().max().item()
    assert max_diff == 0.0, f"max |diff| = {max_diff}"


@pytest.fixture(scope="module")
def processor() -> ConvNextHFImageProcessor:
    return ConvNextHFImageProcessor()


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A non-square RGB test image."""
    return random_image(37, 53)


@pytest.fixture(scope="module")
def baseline(processor, photo) -> torch.Tensor:
    return pixel_values(processor, photo)


# --- defaults and evaluation semantics -------------------------------------------------------------------


def test_defaults_are_the_official_evaluation_settings(processor):
    config = processor.to_dict()
    assert config["size"] == {"shortest_edge": 224}
    assert config["crop_pct"] == 0.875
    assert config["resample"] == Image.Resampling.BICUBIC == 3
    assert config["rescale_factor"] == 1 / 255
    assert list(config["image_mean"]) == [0.485, 0.456, 0.406]
    assert list(config["image_std"]) == [0.229, 0.224, 0.225]
    assert (config["do_resize"], config["do_rescale"], config["do_normalize"]) == (True, True, True)


def normalized(image: Image.Image) -> torch.Tensor:
    """ToTensor + ImageNet Normalize of an RGB image, written out by hand, as a (1, 3, H, W) batch."""
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((pixels - mean) / std)[None]


def test_below_384_resizes_short_side_to_s_over_crop_pct_then_center_crops(processor):
    image = random_image(200, 300)  # W x H = 300 x 200 -> short side 256, long side int(256 * 1.5) = 384
    expected = normalized(image.resize((384, 256), Image.Resampling.BICUBIC).crop((80, 16, 304, 240)))
    torch.testing.assert_close(pixel_values(processor, image), expected, rtol=0, atol=1e-6)


def test_at_384_warps_to_a_square_without_cropping():
    image = random_image(30, 50)
    expected = normalized(image.resize((384, 384), Image.Resampling.BICUBIC))
    actual = pixel_values(ConvNextHFImageProcessor(size={"shortest_edge": 384}), image)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)


# --- parity with transformers' ConvNextImageProcessorPil -------------------------------------------------


@pytest.mark.parametrize(
    ("shortest_edge", "crop_pct", "height", "width", "mode"),
    [
        (224, 0.875, 37, 53, "RGB"),  # non-square, landscape
        (224, 0.875, 260, 190, "RGB"),  # portrait, downscaled
        (224, 0.875, 20, 30, "RGB"),  # smaller than the crop
        (160, 0.95, 41, 29, "RGB"),
        (288, 1.0, 33, 47, "RGB"),  # crop_pct 1: crop only the long side
        (384, 0.875, 40, 60, "RGB"),  # warp mode
        (224, 0.875, 37, 53, "L"),
        (384, 0.875, 37, 53, "L"),
        (224, 0.875, 37, 53, "RGBA"),
        (224, 0.875, 37, 53, "LA"),
        (224, 0.875, 37, 53, "P"),
        (224, 0.875, 37, 53, "CMYK"),
        (224, 0.875, 37, 53, "1"),
    ],
)
def test_equals_transformers_convnext_pil_processor(shortest_edge, crop_pct, height, width, mode):
    image = random_image(height, width, mode)
    ours = ConvNextHFImageProcessor(size={"shortest_edge": shortest_edge}, crop_pct=crop_pct)
    expected = pixel_values(reference_processor(shortest_edge, crop_pct), image)
    actual = pixel_values(ours, image)
    assert actual.shape == (1, 3, shortest_edge, shortest_edge)
    assert_identical(actual, expected)


def test_batch_of_mixed_sizes_equals_transformers(processor):
    images = [random_image(37, 53, seed=1), random_image(64, 30, "L", seed=2), random_image(25, 25, seed=3)]
    assert_identical(pixel_values(processor, images), pixel_values(reference_processor(), images))


def test_palette_transparency_is_composited_like_transformers(processor):
    image = random_image(37, 53, "P")
    image.info["transparency"] = 0
    assert_identical(pixel_values(processor, image), pixel_values(reference_processor(), image))


def test_per_call_settings_override_the_stored_ones(processor, photo):
    actual = pixel_values(processor, photo, size={"shortest_edge": 160}, crop_pct=0.95)
    assert_identical(actual, pixel_values(reference_processor(160, 0.95), photo))


# --- accepted inputs: every form of the same picture gives the same pixel_values -----------------------


@pytest.mark.parametrize(
    "convert",
    [
        pytest.param(lambda pixels: pixels, id="numpy-HWC-uint8"),
        pytest.param(lambda pixels: np.ascontiguousarray(pixels.transpose(2, 0, 1)), id="numpy-CHW-uint8"),
        pytest.param(lambda pixels: pixels.astype(np.int64), id="numpy-int64"),
        pytest.param(lambda pixels: pixels.astype(np.float32) / 255, id="numpy-float32-unit"),
        pytest.param(lambda pixels: pixels / 255.0, id="numpy-float64-unit"),
        pytest.param(lambda pixels: pixels.astype(np.uint16) * 257, id="numpy-uint16"),
        pytest.param(lambda pixels: torch.from_numpy(pixels).permute(2, 0, 1), id="torch-CHW-uint8"),
        pytest.param(lambda pixels: torch.from_numpy(pixels), id="torch-HWC-uint8"),
        pytest.param(lambda pixels: torch.from_numpy(pixels).permute(2, 0, 1).half() / 255, id="torch-CHW-half"),
        pytest.param(lambda pixels: [pixels], id="list"),
        pytest.param(lambda pixels: (pixels,), id="tuple"),
        pytest.param(lambda pixels: pixels[None], id="numpy-4D-batch"),
        pytest.param(lambda pixels: torch.from_numpy(pixels).permute(2, 0, 1)[None], id="torch-4D-batch"),
    ],
)
def test_array_and_tensor_inputs_equal_the_pil_image(processor, photo, baseline, convert):
    assert_identical(pixel_values(processor, convert(np.array(photo))), baseline)


def test_half_precision_float_rounds_to_the_same_8_bit_values(processor):
    # float16 cannot hold every k / 255 exactly; rounding (not truncating) recovers k.
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    from_half = pixel_values(processor, torch.from_numpy(pixels).half() / 255)
    assert_identical(from_half, pixel_values(processor, pixels))


@pytest.mark.parametrize("as_path", [str, Path], ids=["str", "pathlib"])
def test_file_paths_load_like_the_image(processor, photo, baseline, tmp_path, as_path):
    path = tmp_path / "photo.png"
    photo.save(path)
    assert_identical(pixel_values(processor, as_path(path)), baseline)


def test_file_exif_orientation_is_applied(processor, photo, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.png"
    photo.save(path, exif=exif)
    upright = photo.transpose(Image.Transpose.ROTATE_270)
    assert_identical(pixel_values(processor, path), pixel_values(processor, upright))


def test_grayscale_forms_agree(processor):
    gray = random_pixels(37, 53, channels=0)
    expected = pixel_values(processor, Image.fromarray(gray))
    for form in (gray, gray[:, :, None], gray[None], np.repeat(gray[:, :, None], 3, axis=2)):
        assert_identical(pixel_values(processor, form), expected)


def test_rgba_array_equals_rgba_image(processor):
    rgba = random_pixels(37, 53, 4)
    assert_identical(pixel_values(processor, rgba), pixel_values(processor, Image.fromarray(rgba)))


@pytest.mark.parametrize(
    ("high_bit_depth", "mode"),
    [
        pytest.param(lambda gray: Image.fromarray(gray.astype(np.uint16) * 257), "I;16", id="I;16"),
        pytest.param(lambda gray: Image.fromarray(gray.astype(np.int32) * 257), "I", id="I"),
        pytest.param(lambda gray: Image.fromarray(gray.astype(np.float32) / 255), "F", id="F"),
        pytest.param(lambda gray: gray.astype(np.uint16) * 257, None, id="uint16-array"),
    ],
)
def test_high_bit_depth_images_map_to_8_bits(processor, high_bit_depth, mode):
    gray = random_pixels(37, 53, channels=0)
    image = high_bit_depth(gray)
    assert getattr(image, "mode", None) == mode
    assert_identical(pixel_values(processor, image), pixel_values(processor, Image.fromarray(gray)))


@pytest.mark.parametrize(
    ("pixels", "expected"),
    [
        pytest.param(np.array([0, 128, 129, 385, 386, 65535], np.uint16), [0, 0, 1, 1, 2, 255], id="uint16"),
        pytest.param(
            np.array([0, 0.5, 0.5 / 255 - 1e-6, 0.5 / 255 + 1e-6, 254.6 / 255, 1]), [0, 128, 0, 1, 255, 255], id="float"
        ),
    ],
)
def test_bit_depth_conversion_rounds_to_nearest(pixels, expected):
    (rgb,) = to_pil_images(pixels[None])
    np.testing.assert_array_equal(np.asarray(rgb)[0], np.repeat(np.array(expected, np.uint8)[:, None], 3, axis=1))


def test_one_bit_and_bool_arrays_agree(processor):
    mask = random_pixels(37, 53, channels=0) > 127
    expected = pixel_values(processor, Image.fromarray(mask.astype(np.uint8) * 255))
    assert_identical(pixel_values(processor, mask), expected)
    assert_identical(pixel_values(processor, Image.fromarray(mask).convert("1")), expected)


def test_output_forms(processor, photo, baseline):
    as_numpy = processor([photo, photo], return_tensors="np")["pixel_values"]
    assert isinstance(as_numpy, np.ndarray) and as_numpy.dtype == np.float32
    assert as_numpy.shape == (2, 3, 224, 224)
    assert isinstance(baseline, torch.Tensor) and baseline.dtype == torch.float32
    as_list = processor(photo)["pixel_values"]
    assert len(as_list) == 1 and as_list[0].shape == (3, 224, 224) and as_list[0].dtype == np.float32
    np.testing.assert_array_equal(as_numpy[1], baseline[0].numpy())


# --- bad input ---------------------------------------------------------------------------------------------


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_declaring_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels: a decompression bomb as far as the header goes."""
    data = bytearray(png_bytes(Image.new("L", (1, 1))))
    data[16:24] = struct.pack(">II", width, height)  # IHDR payload starts after signature, length and type
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.mark.parametrize(
    ("images", "error", "fragment"),
    [
        pytest.param([], ValueError, "empty list of images", id="empty-list"),
        pytest.param(None, TypeError, "no images given", id="none"),
        pytest.param(42, TypeError, "object of type int", id="int"),
        pytest.param(b"\x89PNG", TypeError, "object of type bytes", id="bytes"),
        pytest.param([[np.zeros((8, 8, 3), np.uint8)]], TypeError, "nested list", id="nested-list"),
        pytest.param(np.zeros((0, 8, 8, 3), np.uint8), ValueError, "empty batch", id="empty-batch"),
        pytest.param(np.zeros((0, 8, 3), np.uint8), ValueError, "image is empty", id="zero-height-array"),
        pytest.param(Image.new("RGB", (0, 8)), ValueError, "image is empty", id="zero-width-pil"),
        pytest.param(np.zeros((8, 8, 5), np.uint8), ValueError, "no channel axis of size 1", id="5-channels"),
        pytest.param(np.zeros((3, 8, 4), np.uint8), ValueError, "cannot tell which axis", id="ambiguous"),
        pytest.param(np.zeros((8,), np.uint8), ValueError, "must have 2 dimensions", id="1-D"),
        pytest.param(np.zeros((1, 1, 8, 8, 3), np.uint8), ValueError, "must have 2 dimensions", id="5-D"),
        pytest.param(np.full((8, 8, 3), np.nan, np.float32), ValueError, "NaN or infinite", id="nan"),
        pytest.param(np.full((8, 8, 3), 200.0), ValueError, "float pixel values must lie in [0, 1]", id="float-255"),
        pytest.param(np.full((8, 8, 3), 300), ValueError, "integer pixel values must lie in [0, 255]", id="int-300"),
        pytest.param(np.zeros((8, 8, 3), np.complex64), TypeError, "unsupported pixel dtype", id="complex"),
        pytest.param(Image.new("La", (8, 8)), ValueError, "unsupported PIL image mode 'La'", id="mode-La"),
        pytest.param(
            Image.fromarray(np.full((8, 8), -5, np.int32)), ValueError, "must lie in [0, 65535]", id="mode-I-neg"
        ),
        pytest.param(
            [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 5), np.uint8)], ValueError, "images[1]: ", id="in-batch"
        ),
    ],
)
def test_bad_input_is_rejected_with_a_clear_error(processor, images, error, fragment):
    with pytest.raises(error) as caught:
        processor(images)
    assert fragment in str(caught.value)


def test_input_data_format_resolves_ambiguity_and_is_checked(processor):
    ambiguous = np.zeros((3, 8, 4), np.uint8)
    assert pixel_values(processor, ambiguous, input_data_format="channels_first").shape == (1, 3, 224, 224)
    with pytest.raises(ValueError, match="channels; got 5 on the axis"):
        processor(np.zeros((5, 8, 8), np.uint8), input_data_format="channels_first")
    with pytest.raises(ValueError, match="input_data_format must be 'channels_first' or 'channels_last'"):
        processor(ambiguous, input_data_format="sideways")


def test_missing_file_is_rejected(processor, tmp_path):
    with pytest.raises(ValueError, match="no image file at"):
        processor(str(tmp_path / "missing.png"))


def test_corrupt_file_is_rejected(processor, tmp_path):
    path = tmp_path / "noise.png"
    path.write_bytes(np.random.RandomState(0).bytes(500))
    with pytest.raises(ValueError, match="is not a readable image file"):
        processor(path)


@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
def test_truncated_file_is_rejected(processor, tmp_path, image_format):
    buffer = io.BytesIO()
    random_image(64, 64).save(buffer, format=image_format)
    path = tmp_path / f"truncated.{image_format.lower()}"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        processor(path)
    with Image.open(path) as lazily_opened, pytest.raises(ValueError, match="truncated or corrupt"):
        processor(lazily_opened)


@pytest.mark.parametrize(("width", "height"), [(10_000, 10_000), (50_000, 50_000)], ids=["pil-warns", "pil-raises"])
def test_decompression_bomb_is_rejected(processor, tmp_path, width, height):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_declaring_size(width, height))
    with pytest.raises(ValueError, match="too large to decode safely") as caught:
        processor(path)
    assert f"{MAX_IMAGE_PIXELS:,}" in str(caught.value)


def test_pixel_limit_holds_when_pillow_guard_is_disabled(processor, tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    path = tmp_path / "bomb.png"
    path.write_bytes(png_declaring_size(10_000, 10_000))
    with pytest.raises(ValueError, match="over the limit of 89,478,485"):
        processor(path)


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"crop_pct": 1.5}, "crop_pct must be a number in (0, 1]"),
        ({"crop_pct": 0.0}, "crop_pct must be a number in (0, 1]"),
        ({"size": {"height": 224, "width": 224}}, "size must be {'shortest_edge': S}"),
        ({"size": {"shortest_edge": 0}}, "must be a positive int"),
    ],
)
def test_bad_settings_are_rejected_at_construction_and_per_call(processor, settings, fragment):
    with pytest.raises(ValueError) as at_init:
        ConvNextHFImageProcessor(**settings)
    assert fragment in str(at_init.value)
    with pytest.raises(ValueError) as at_call:
        processor(np.zeros((8, 8, 3), np.uint8), **settings)
    assert fragment in str(at_call.value)


# --- channels: do_convert_rgb=False, any number of channels ------------------------------------------------

RGBA_MEAN, RGBA_STD = (*IMAGENET_MEAN, 0.5), (*IMAGENET_STD, 0.25)


def test_without_rgb_conversion_alpha_is_kept_like_transformers():
    image = random_image(37, 53, "RGBA")
    ours = ConvNextHFImageProcessor(do_convert_rgb=False, image_mean=RGBA_MEAN, image_std=RGBA_STD)
    reference = ConvNextImageProcessorPil(
        size={"shortest_edge": 224}, crop_pct=0.875, image_mean=RGBA_MEAN, image_std=RGBA_STD, do_convert_rgb=False
    )
    actual = pixel_values(ours, image)
    assert actual.shape == (1, 4, 224, 224)
    assert_identical(actual, pixel_values(reference, image))
    # The alpha channel is the image's alpha, resized like the colours and normalized with the fourth mean and std.
    alpha = pixel_values(ConvNextHFImageProcessor(image_mean=0.5, image_std=0.25), image.getchannel("A"))[:, :1]
    assert_identical(actual[:, 3:], alpha)


def test_a_four_channel_model_takes_rgba_images():
    from convnext_hf import ConvNextConfig, ConvNextForImageClassification

    config = ConvNextConfig(num_channels=4, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_labels=3)
    model = ConvNextForImageClassification(config).eval()
    processor = ConvNextHFImageProcessor(
        size={"shortest_edge": 64}, do_convert_rgb=False, image_mean=RGBA_MEAN, image_std=RGBA_STD
    )
    inputs = processor([random_image(40, 50, "RGBA"), random_pixels(30, 30, 4)], return_tensors="pt")
    with torch.no_grad():
        assert model(**inputs).logits.shape == (2, 3)


def test_without_rgb_conversion_images_keep_their_channels():
    keep = ConvNextHFImageProcessor(
        do_convert_rgb=False, image_mean=[0.5], image_std=[0.25], size={"shortest_edge": 32}
    )
    gray = random_image(40, 40, "L")
    assert pixel_values(keep, gray).shape == (1, 1, 32, 32)
    assert_identical(pixel_values(keep, np.asarray(gray)), pixel_values(keep, gray))
    assert_identical(pixel_values(keep, gray.convert("1")), pixel_values(keep, gray.convert("1").convert("L")))
    palette = random_image(40, 40).convert("P")
    assert pixel_values(keep, palette, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD).shape == (1, 3, 32, 32)
    assert_identical(
        pixel_values(keep, palette, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD),
        pixel_values(ConvNextHFImageProcessor(size={"shortest_edge": 32}), palette.convert("RGB")),
    )
    sixteen_bit = Image.fromarray(np.full((40, 40), 65535, dtype=np.uint16))
    assert pixel_values(keep, sixteen_bit).unique().tolist() == [pytest.approx((1 - 0.5) / 0.25)]


@pytest.mark.parametrize(
    ("images", "settings", "fragment"),
    [
        (random_image(40, 40, "L"), {}, "1 channel(s) but image_mean has 3 values"),
        (random_image(40, 40, "RGBA"), {"image_mean": RGBA_MEAN}, "4 channel(s) but image_std has 3 values"),
        ([random_image(40, 40, "L"), random_image(40, 40)], {}, "different numbers of channels [1, 3]"),
    ],
)
def test_channels_that_do_not_fit_the_settings_are_refused(images, settings, fragment):
    with pytest.raises(ValueError) as err:
        ConvNextHFImageProcessor(do_convert_rgb=False)(images, **settings)
    assert fragment in str(err.value)


def test_rgb_conversion_is_the_default_and_can_be_turned_off_per_call(processor):
    image = random_image(37, 53, "RGBA")
    assert processor.do_convert_rgb is True
    assert pixel_values(processor, image).shape == (1, 3, 224, 224)
    kept = pixel_values(processor, image, do_convert_rgb=False, image_mean=RGBA_MEAN, image_std=RGBA_STD)
    assert kept.shape == (1, 4, 224, 224)


# --- one conversion for training and evaluation ---------------------------------------------------------------


def test_training_reads_images_as_evaluation_does(processor):
    import datasets

    from convnext_hf.tasks.classification.data import with_transforms
    from convnext_hf.train.data import ImageData

    transparent_red = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    sixteen_bit = Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16))
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 10, 20, 30])
    gray = Image.new("L", (8, 8), 77)
    images = [transparent_red, sixteen_bit, palette, gray]
    train = datasets.Dataset.from_dict({"image": images, "label": [0, 1, 2, 3]})
    seen = []

    def record(image: Image.Image) -> torch.Tensor:
        seen.append(image)
        return torch.zeros(1)

    with_transforms(ImageData(train, None, ["a", "b", "c", "d"], "test"), record, processor).train[:4]
    assert [image.mode for image in seen] == ["RGB"] * 4
    # Transparency composited onto white (not dropped), 16-bit white read as 8-bit white, palette colours, gray.
    assert [image.getpixel((0, 0)) for image in seen] == [(255, 255, 255), (255, 255, 255), (10, 20, 30), (77, 77, 77)]
    for image, original in zip(seen, images, strict=True):
        assert np.array_equal(np.asarray(image), np.asarray(processor.convert_image(original)))


# --- saving and loading ------------------------------------------------------------------------------------

EXPECTED_CONFIG = {
    "auto_map": {"AutoImageProcessor": "image_processing_convnext.ConvNextHFImageProcessor"},
    "crop_pct": 1.0,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "ConvNextHFImageProcessor",
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,
    "rescale_factor": 1 / 255,
    "size": {"shortest_edge": 288},
}


@pytest.fixture
def saved_folder(tmp_path) -> Path:
    folder = tmp_path / "saved"
    ConvNextHFImageProcessor(size={"shortest_edge": 288}, crop_pct=1.0).save_pretrained(folder)
    return folder


def test_save_pretrained_writes_the_config_and_the_code(saved_folder):
    assert sorted(path.name for path in saved_folder.iterdir()) == [
        "image_processing_convnext.py",
        "preprocessor_config.json",
    ]
    assert json.loads((saved_folder / "preprocessor_config.json").read_text()) == EXPECTED_CONFIG


def test_from_pretrained_round_trip(saved_folder, photo, tmp_path):
    loaded = ConvNextHFImageProcessor.from_pretrained(saved_folder)
    loaded.save_pretrained(tmp_path / "resaved")
    config_text = (saved_folder / "preprocessor_config.json").read_text()
    assert (tmp_path / "resaved" / "preprocessor_config.json").read_text() == config_text
    original = ConvNextHFImageProcessor(size={"shortest_edge": 288}, crop_pct=1.0)
    assert_identical(pixel_values(loaded, photo), pixel_values(original, photo))


REMOTE_CODE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["convnext_hf"] = None  # the project package must not be needed, installed or not
    import numpy as np
    from transformers import AutoImageProcessor
    try:  # not transformers' own ConvNextImageProcessor, which converts some inputs differently: asks for trust
        AutoImageProcessor.from_pretrained(sys.argv[1])
    except ValueError as err:
        print("refused" if "trust_remote_code=True" in str(err) else err)
    processor = AutoImageProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)
    print(type(processor).__module__, type(processor).__name__)
    np.save(sys.argv[3], processor(sys.argv[2], return_tensors="np")["pixel_values"])
    """
)


@pytest.mark.slow
def test_saved_folder_loads_as_remote_code_without_the_project_and_only_so(saved_folder, photo, tmp_path):
    image_path = tmp_path / "photo.png"
    photo.save(image_path)
    output_path = tmp_path / "pixel_values.npy"
    clean_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "HF_HUB_OFFLINE": "1",
    }
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_CODE_SCRIPT, str(saved_folder), str(image_path), str(output_path)],
        cwd=tmp_path,
        env=clean_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    refusal, module, name = result.stdout.split()[-3:]
    assert refusal == "refused"
    assert module.startswith("transformers_modules.") and name == "ConvNextHFImageProcessor"
    expected = pixel_values(ConvNextHFImageProcessor(size={"shortest_edge": 288}, crop_pct=1.0), photo)
    assert_identical(torch.from_numpy(np.load(output_path)), expected)
