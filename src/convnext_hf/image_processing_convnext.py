"""ConvNeXt image processor: the paper's ImageNet evaluation transform, for any reasonable image input.

ConvNeXt (Liu et al., "A ConvNet for the 2020s", CVPR 2022) evaluates a model at resolution S like this:

* S < 384: resize the short side to int(S / crop_pct) keeping the aspect ratio (bicubic), then take the
  central S x S crop (crop_pct = 224 / 256 = 0.875 by default);
* S >= 384: warp the whole image to S x S (bicubic), no crop;

then scale pixels to [0, 1] and normalize with the ImageNet mean and std the official weights were trained
with. The numbers equal transformers' `ConvNextImageProcessorPil` given the same settings; this class adds
ConvNeXt's own defaults, a uniform conversion of every input kind to RGB (or, with `do_convert_rgb=False`, to
8-bit channels kept as they are, e.g. RGBA for a 4-channel model), and clear errors for bad input.

Its name differs from transformers' `ConvNextImageProcessor` on purpose: a saved `preprocessor_config.json` names
its class, and transformers would otherwise load its own processor from it, which converts some inputs differently.

The file imports nothing from this project: `save_pretrained` copies it next to the saved config, and
`AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)` loads it where `convnext_hf` is absent.
"""

import os
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from huggingface_hub.dataclasses import validate_typed_dict
from huggingface_hub.errors import StrictDataclassError
from PIL import Image, ImageOps
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    ChannelDimension,
    PILImageResampling,
    SizeDict,
)
from transformers.processing_utils import ImagesKwargs, Unpack

# From this resolution on, the official evaluation code warps instead of resize-and-crop; the accuracies
# reported for the 384 checkpoints are measured that way.
WARP_RESOLUTION = 384
# Below WARP_RESOLUTION: resize the short side to S / crop_pct, then center-crop S (224 from 256, as in ResNet days).
DEFAULT_CROP_PCT = 224 / 256

# Largest image file we decode: Pillow's default decompression-bomb threshold, pinned here so that the guard
# holds whatever a caller did to PIL.Image.MAX_IMAGE_PIXELS.
MAX_IMAGE_PIXELS = 89_478_485
# Largest evaluation resolution S, and largest short side before the crop (S / crop_pct): a float32 batch of one
# 4096 x 4096 RGB image is 201 MB.
MAX_RESOLUTION = 4096
# Largest image the resize may make before the centre crop (an extreme aspect ratio makes the long side long): 4:1 at
# the largest resolution, 201 MB as 8-bit RGB; at 224 it allows a 1:1000 strip.
MAX_RESIZED_PIXELS = 4 * MAX_RESOLUTION**2
# Numbers of channels an image array may have: grayscale, grayscale + alpha, RGB, RGBA.
_CHANNEL_COUNTS = (1, 2, 3, 4)

# Pillow modes by how they become RGB.
_MODES_WITH_ALPHA = {"LA", "PA", "RGBA", "RGBa"}
_MODES_CONVERTIBLE_TO_RGB = {"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
_MODES_HIGH_BIT_DEPTH = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
# Without RGB conversion an image keeps its channels: grayscale stays L, colour RGB, with alpha LA or RGBA.
_MODES_KEPT = {"L", "LA", "RGB", "RGBA"}
_MODES_GRAYSCALE = {"1", "L", "LA"}

_ACCEPTED_INPUTS = (
    "a PIL image, a numpy array or torch tensor of shape (H, W), (H, W, C) or (C, H, W) with C in {1, 2, 3, 4}, "
    "a path to an image file, or a non-empty list of these"
)


class ConvNextHFImageProcessorKwargs(ImagesKwargs, total=False):
    """Keyword arguments of `ConvNextHFImageProcessor`: transformers' image kwargs plus `crop_pct`."""

    crop_pct: int | float


def _check_channels(channels: int, image_mean: float | list[float], image_std: float | list[float]) -> None:
    """Refuse a per-channel mean or std whose length is not the images' number of channels."""
    for name, values in (("image_mean", image_mean), ("image_std", image_std)):
        if isinstance(values, (list, tuple)) and len(values) != channels:
            raise ValueError(
                f"the images have {channels} channel(s) but {name} has {len(values)} values; pass one value per "
                "channel, or do_convert_rgb=True to read every image as RGB."
            )


def _check_normalization(
    image_mean: object, image_std: object, rescale_factor: object, same_length: bool = True
) -> None:
    """Reject non-finite mean or std values, a std that is not positive (division by it would give inf), a rescale
    factor that is not a positive number and (with `same_length`, for the saved settings; per call the images'
    channels are compared with each) a mean and std of different lengths."""
    means = list(image_mean) if isinstance(image_mean, (list, tuple)) else [image_mean]
    stds = list(image_std) if isinstance(image_std, (list, tuple)) else [image_std]
    lists = isinstance(image_mean, (list, tuple)) and isinstance(image_std, (list, tuple))
    if same_length and lists and len(means) != len(stds):
        raise ValueError(
            f"image_mean has {len(means)} values and image_std {len(stds)}; give one mean and one std per channel."
        )
    for name, values in (("image_mean", means), ("image_std", stds)):
        if not all(isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
                   for value in values if value is not None):  # fmt: skip
            raise ValueError(f"{name} must hold finite numbers; got {values}.")
    if any(value is not None and value <= 0 for value in stds):
        raise ValueError(f"image_std must be positive (pixels are divided by it); got {stds}.")
    if rescale_factor is not None and (
        isinstance(rescale_factor, bool)
        or not isinstance(rescale_factor, (int, float))
        or not 0 < rescale_factor < float("inf")
    ):
        raise ValueError(f"rescale_factor must be a positive number (1/255 for 8-bit images); got {rescale_factor!r}.")


def _check_rescale(do_rescale: object, do_normalize: object, image_mean: object, image_std: object) -> None:
    """Refuse do_rescale=False beside a mean and std on the 0..1 scale: every image is read as 8-bit pixels (floats in
    [0, 1] too), so without the 1/255 the normalization would be off by a factor 255."""
    means = image_mean if isinstance(image_mean, (list, tuple)) else [image_mean]
    stds = image_std if isinstance(image_std, (list, tuple)) else [image_std]
    numbers = [value for value in [*means, *stds] if isinstance(value, (int, float))]
    if do_rescale is False and do_normalize and numbers and max(abs(value) for value in numbers) <= 1:
        raise ValueError(
            f"do_rescale=False with image_mean {list(means)} and image_std {list(stds)} (on the 0..1 scale) would "
            "normalize pixels of 0..255 as if they were 0..1: this processor reads every image as 8-bit pixels "
            "(floats in [0, 1] are not rescaled twice). Keep do_rescale=True, or give image_mean and image_std on "
            "the 0..255 scale."
        )


def _check_evaluation_settings(size: SizeDict, crop_pct: float) -> None:
    """Reject a size or crop_pct that the ConvNeXt evaluation transform cannot use, or that would make images of
    more than MAX_RESOLUTION pixels a side."""
    if size is None or set(dict(size)) != {"shortest_edge"}:
        raise ValueError(
            f"ConvNeXt resizes by the short side, so size must be {{'shortest_edge': S}}; got "
            f"{None if size is None else dict(size)}. "
            "Pass size={'shortest_edge': 224} (or the resolution the model was trained at)."
        )
    if isinstance(size.shortest_edge, bool) or not isinstance(size.shortest_edge, int) or size.shortest_edge < 1:
        raise ValueError(f"size['shortest_edge'] must be a positive int; got {size.shortest_edge!r}.")
    if isinstance(crop_pct, bool) or not isinstance(crop_pct, (int, float)) or not 0 < crop_pct <= 1:
        raise ValueError(
            f"crop_pct must be a number in (0, 1] (the fraction of the resized short side kept by the center "
            f"crop); got {crop_pct!r}. The official value is 224 / 256 = 0.875."
        )
    if size.shortest_edge > MAX_RESOLUTION:
        raise ValueError(
            f"size['shortest_edge'] = {size.shortest_edge} is over the limit of {MAX_RESOLUTION} pixels (one image "
            f"would take {3 * 4 * size.shortest_edge**2 / 2**30:.1f} GiB as float32); use the resolution the model "
            "was trained at."
        )
    if size.shortest_edge < WARP_RESOLUTION and int(size.shortest_edge / crop_pct) > MAX_RESOLUTION:
        raise ValueError(
            f"crop_pct {crop_pct} would resize the short side to {int(size.shortest_edge / crop_pct)} pixels before "
            f"cropping {size.shortest_edge}, over the limit of {MAX_RESOLUTION}; use a crop_pct near 0.875."
        )


def _resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) after resizing the short side to `short_side`, the long side in proportion (as transformers'
    `get_resize_output_image_size` with `default_to_square=False` computes it)."""
    short, long = (height, width) if height <= width else (width, height)
    new_short, new_long = short_side, int(short_side * long / short)
    return (new_short, new_long) if height <= width else (new_long, new_short)


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Map pixel values to 8 bits: uint8 as is, bool to {0, 255}, uint16 by /257, floats in [0, 1] by *255."""
    if pixels.dtype == np.bool_:
        return pixels.astype(np.uint8) * 255
    if pixels.dtype == np.uint8:
        return pixels
    if np.issubdtype(pixels.dtype, np.uint16):
        return np.rint(pixels / 257.0).astype(np.uint8)
    if np.issubdtype(pixels.dtype, np.integer):
        low, high = int(pixels.min()), int(pixels.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"integer pixel values must lie in [0, 255]; got values in [{low}, {high}]. "
                "Pass 8-bit data, or dtype uint16 for 16-bit images."
            )
        return pixels.astype(np.uint8)
    if np.issubdtype(pixels.dtype, np.floating):
        if not np.isfinite(pixels).all():
            raise ValueError("the image contains NaN or infinite values; replace them before preprocessing.")
        low, high = float(pixels.min()), float(pixels.max())
        if low < 0 or high > 1:
            raise ValueError(
                f"float pixel values must lie in [0, 1]; got values in [{low:g}, {high:g}]. "
                "Divide 0-255 data by 255, or pass it as uint8."
            )
        return np.rint(pixels.astype(np.float64) * 255).astype(np.uint8)
    raise TypeError(
        f"unsupported pixel dtype {pixels.dtype}; use uint8, uint16, bool, an integer type with values in "
        "[0, 255], or a float type with values in [0, 1]."
    )


def _channel_axis(shape: tuple[int, ...], input_data_format: str | ChannelDimension | None) -> int:
    """Find the channel axis of a 3-D image array, from input_data_format or from the shape."""
    if input_data_format is not None:
        try:
            return 0 if ChannelDimension(input_data_format) == ChannelDimension.FIRST else 2
        except ValueError:
            raise ValueError(
                f"input_data_format must be 'channels_first' or 'channels_last'; got {input_data_format!r}."
            ) from None
    first, last = shape[0] in _CHANNEL_COUNTS, shape[2] in _CHANNEL_COUNTS
    if first and last:
        raise ValueError(
            f"cannot tell which axis holds the channels in an image of shape {shape}: it is a {shape[1]} x "
            f"{shape[2]} image of {shape[0]} channels if channels come first, a {shape[0]} x {shape[1]} image of "
            f"{shape[2]} channels if they come last; pass input_data_format='channels_first' or "
            "input_data_format='channels_last'."
        )
    if not (first or last):
        raise ValueError(
            f"an image of shape {shape} has no channel axis of size 1 (grayscale), 2 (grayscale + alpha), 3 (RGB) "
            "or 4 (RGBA) at either end; convert it to one of these (for example keep the first 3 channels)."
        )
    return 0 if first else 2


def _array_to_pil(pixels: np.ndarray, input_data_format: str | ChannelDimension | None) -> Image.Image:
    """Turn an (H, W), (H, W, C) or (C, H, W) array with C in {1, 2, 3, 4} into an L, LA, RGB or RGBA image."""
    if pixels.ndim == 3:
        pixels = np.moveaxis(pixels, _channel_axis(pixels.shape, input_data_format), -1)
        if pixels.shape[-1] not in _CHANNEL_COUNTS:
            raise ValueError(
                f"an image needs 1 (grayscale), 2 (grayscale + alpha), 3 (RGB) or 4 (RGBA) channels; got "
                f"{pixels.shape[-1]} on the axis "
                f"that input_data_format={input_data_format!r} names. Check input_data_format or convert the "
                "channels."
            )
        if pixels.shape[-1] == 1:
            pixels = pixels[..., 0]
    elif pixels.ndim != 2:
        raise ValueError(
            f"an image array must have 2 dimensions (H, W) or 3 (H, W, C or C, H, W); got shape {pixels.shape}. "
            "Pass a batch as a list of images or as one 4-D array."
        )
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ValueError(f"the image is empty (height x width = {pixels.shape[0]} x {pixels.shape[1]}).")
    return Image.fromarray(np.ascontiguousarray(_to_uint8(pixels)))


def _tensor_to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """Copy a tensor to a CPU numpy array, widening half-precision floats numpy cannot hold."""
    if tensor.is_meta:
        raise ValueError("the image tensor is on the meta device and holds no pixel values; pass a tensor with data.")
    tensor = tensor.detach().cpu()
    if tensor.dtype in (torch.bfloat16, torch.float16):
        tensor = tensor.float()
    return tensor.numpy()


def _decode(image: Image.Image) -> None:
    """Decode a lazily opened image now, so that a truncated or corrupt file fails here with a clear error."""
    try:
        image.load()
    except Image.DecompressionBombError as err:
        raise ValueError(f"refusing to decode the image: {err}") from err
    except (OSError, SyntaxError, EOFError) as err:
        raise ValueError(
            f"the image data is truncated or corrupt ({err}); re-download or re-encode the file."
        ) from err


def to_standard_mode(image: Image.Image, convert_rgb: bool = True) -> Image.Image:
    """Read a PIL image of any supported mode as 8-bit RGB, transparency composited onto white; or, without
    `convert_rgb`, as 8 bits per channel keeping its channels (L, LA, RGB or RGBA: alpha is kept)."""
    _decode(image)
    if image.width == 0 or image.height == 0:
        raise ValueError(f"the image is empty (height x width = {image.height} x {image.width}).")
    if image.mode in _MODES_HIGH_BIT_DEPTH:
        pixels = np.asarray(image)
        if image.mode == "I":
            # 16-bit PNGs may open as 32-bit "I"; read them on the 16-bit scale like "I;16".
            if pixels.min() < 0 or pixels.max() > 65535:
                raise ValueError(
                    f"mode 'I' pixels must lie in [0, 65535] (16-bit); got [{pixels.min()}, {pixels.max()}]. "
                    "Rescale the image to 8 or 16 bits first."
                )
            pixels = pixels.astype(np.uint16)
        image = Image.fromarray(_to_uint8(pixels))
    if image.mode not in _MODES_WITH_ALPHA | _MODES_CONVERTIBLE_TO_RGB:
        raise ValueError(
            f"unsupported PIL image mode {image.mode!r}; convert it first, for example image.convert('RGB')."
        )
    has_alpha = image.mode in _MODES_WITH_ALPHA or "transparency" in image.info
    if convert_rgb and has_alpha:
        # Same rule as transformers' convert_to_rgb, so RGBA inputs keep parity with it.
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    if convert_rgb:
        return image.convert("RGB")
    if image.mode in _MODES_KEPT and "transparency" not in image.info:
        return image
    if image.mode in _MODES_GRAYSCALE:
        return image.convert("LA" if has_alpha else "L")
    return image.convert("RGBA" if has_alpha else "RGB")


def _check_pixel_limit(size: tuple[int, int], name: str) -> None:
    """Refuse to decode an image file larger than MAX_IMAGE_PIXELS (a decompression-bomb guard)."""
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"{name} declares {width} x {height} = {width * height:,} pixels, over the limit of "
            f"{MAX_IMAGE_PIXELS:,} (a decompression-bomb guard); downscale the file before preprocessing."
        )


def open_displayed(source: Path | BinaryIO, name: str | None = None) -> Image.Image:
    """Decode an image file (a path or a binary file object) in its displayed frame, EXIF orientation applied as
    transformers' `load_image` applies it, its pixels in the file's own mode; clear errors for unreadable files."""
    # A path by its whole spelling (a Path's `name` is its last part only: found by the image fuzzer).
    name = name or (os.fspath(source) if isinstance(source, os.PathLike) else str(getattr(source, "name", None)
                                                                                  or source))  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            opened = Image.open(source)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise ValueError(
                f"{name} is too large to decode safely ({err}); the limit is {MAX_IMAGE_PIXELS:,} pixels. "
                "Downscale the file before preprocessing."
            ) from err
        except OSError as err:
            raise ValueError(
                f"{name} is not a readable image file ({err}); check that it is a complete image (PNG, JPEG, "
                "...) or decode it yourself and pass the image."
            ) from err
    with opened:
        _check_pixel_limit(opened.size, name)
        try:
            _decode(opened)
        except ValueError as err:
            # Found by the image fuzzer: a truncated file was refused without naming it.
            raise ValueError(f"{name}: {err}") from err
        return ImageOps.exif_transpose(opened)


def open_image_file(path: Path, convert_rgb: bool) -> Image.Image:
    """Read an image file as `to_standard_mode` does, in its displayed frame (see `open_displayed`)."""
    if not path.is_file():
        raise ValueError(f"no image file at {path}; pass an existing file path, or the decoded image itself.")
    image = open_displayed(path)
    try:
        return to_standard_mode(image, convert_rgb)
    except ValueError as err:
        # Found by the image fuzzer: a 32-bit image beyond the 16-bit scale was refused without naming its file.
        raise ValueError(f"{path}: {err}") from err


def _image_to_pil(image: object, input_data_format: str | ChannelDimension | None, convert_rgb: bool) -> Image.Image:
    """Convert one accepted image input to a PIL image in a standard mode (see `to_standard_mode`)."""
    if isinstance(image, (str, os.PathLike)):
        return open_image_file(Path(image), convert_rgb)
    if isinstance(image, Image.Image):
        return to_standard_mode(image, convert_rgb)
    if isinstance(image, torch.Tensor):
        image = _tensor_to_numpy(image)
    if isinstance(image, np.ndarray):
        return to_standard_mode(_array_to_pil(image, input_data_format), convert_rgb)
    raise TypeError(f"cannot preprocess an object of type {type(image).__name__}; pass {_ACCEPTED_INPUTS}.")


def _split_batch(images: object) -> list:
    """List the single images in the input: a list or tuple of images, a 4-D batch array, or one image."""
    if images is None:
        raise TypeError(f"no images given; pass {_ACCEPTED_INPUTS}.")
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError(f"got an empty list of images; pass {_ACCEPTED_INPUTS}.")
        for index, item in enumerate(images):
            if isinstance(item, (list, tuple)):
                raise TypeError(f"images[{index}] is a nested {type(item).__name__}; pass a flat list of images.")
        return list(images)
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        if images.shape[0] == 0:
            raise ValueError(f"got an empty batch of shape {tuple(images.shape)}; pass at least one image.")
        return list(images)
    return [images]


def to_pil_images(
    images: object, input_data_format: str | ChannelDimension | None = None, convert_rgb: bool = True
) -> list[Image.Image]:
    """Convert every accepted input form to a list of PIL images, RGB or (without `convert_rgb`) keeping their
    channels, naming the offending image on error."""
    batch = _split_batch(images)
    pil_images = []
    for index, image in enumerate(batch):
        try:
            pil_images.append(_image_to_pil(image, input_data_format, convert_rgb))
        except (ValueError, TypeError) as err:
            if len(batch) == 1:
                raise
            kind = ValueError if isinstance(err, ValueError) else TypeError
            raise kind(f"images[{index}]: {err}") from err
    return pil_images


class ConvNextHFImageProcessor(PilBackend):
    r"""
    Image processor for ConvNeXt: the official ImageNet evaluation transform, on PIL and numpy only.

    Args:
        size (`dict[str, int]`, *optional*, defaults to `{"shortest_edge": 224}`):
            Evaluation resolution S. Below 384: resize the short side to `int(S / crop_pct)` and center-crop
            S x S; from 384 on: warp the image to S x S.
        crop_pct (`float`, *optional*, defaults to `224 / 256`):
            Fraction of the resized short side kept by the center crop; used only when S < 384.
        resample (`PILImageResampling`, *optional*, defaults to `BICUBIC`):
            Resampling filter of the resize.
        do_convert_rgb (`bool`, *optional*, defaults to `True`):
            Read every image as RGB (transparency composited onto white). With `False` an image keeps its channels
            (grayscale 1, colour 3, with alpha one more), e.g. RGBA for a model with `num_channels=4`.
        do_rescale / rescale_factor, do_normalize / image_mean / image_std:
            Scale by 1/255, then normalize with the ImageNet mean (0.485, 0.456, 0.406) and std
            (0.229, 0.224, 0.225); give one mean and std per channel of the images.

    Inputs are read with `to_pil_images`. Output: `pixel_values` of shape (N, C, S, S), C = 3 with RGB conversion,
    float32, as a list of arrays or with `return_tensors="pt"`/`"np"`.
    """

    # save_pretrained copies this file and writes auto_map, so that a saved folder loads as remote code.
    _auto_class = "AutoImageProcessor"

    valid_kwargs = ConvNextHFImageProcessorKwargs
    model_input_names = ["pixel_values"]

    do_convert_rgb = True
    do_resize = True
    size = {"shortest_edge": 224}
    crop_pct = DEFAULT_CROP_PCT
    default_to_square = False
    resample = PILImageResampling.BICUBIC
    do_rescale = True
    do_normalize = True
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD

    def __init__(self, **kwargs: Unpack[ConvNextHFImageProcessorKwargs]) -> None:
        super().__init__(**kwargs)
        _check_evaluation_settings(self.size, self.crop_pct)
        _check_normalization(self.image_mean, self.image_std, self.rescale_factor)
        _check_rescale(self.do_rescale, self.do_normalize, self.image_mean, self.image_std)

    def preprocess(self, images: object, *args, **kwargs: Unpack[ConvNextHFImageProcessorKwargs]) -> BatchFeature:
        """transformers' preprocess, with whole-number means and stds taken as numbers and a mistyped setting
        reported as one TypeError naming it."""
        for name in ("image_mean", "image_std"):
            values = kwargs.get(name)
            if isinstance(values, (list, tuple)) and all(type(value) is int for value in values):
                kwargs[name] = [float(value) for value in values]
        try:
            validate_typed_dict(self.valid_kwargs, kwargs)
        except StrictDataclassError as error:
            raise TypeError(str(error).splitlines()[-1].strip().removeprefix("TypeError: ")) from None
        return super().preprocess(images, *args, **kwargs)

    def _validate_preprocess_kwargs(
        self,
        size: SizeDict | None = None,
        crop_pct: float | None = None,
        image_mean: float | list[float] | None = None,
        image_std: float | list[float] | None = None,
        rescale_factor: float | None = None,
        **kwargs,
    ) -> None:
        """Check the per-call settings, including ConvNeXt's size and crop_pct."""
        _check_evaluation_settings(size, crop_pct)
        _check_normalization(image_mean, image_std, rescale_factor, same_length=False)
        _check_rescale(kwargs.get("do_rescale"), kwargs.get("do_normalize"), image_mean, image_std)
        data_format = kwargs.get("data_format")
        if data_format is not None and data_format not in [format.value for format in ChannelDimension]:
            raise ValueError(f"data_format must be 'channels_first' or 'channels_last'; got {data_format!r}.")
        super()._validate_preprocess_kwargs(
            size=size, image_mean=image_mean, image_std=image_std, rescale_factor=rescale_factor, **kwargs
        )

    def _prepare_image_like_inputs(
        self,
        images: object,
        *args,
        do_convert_rgb: bool | None = None,
        input_data_format: str | ChannelDimension | None = None,
        do_normalize: bool | None = None,
        image_mean: float | list[float] | None = None,
        image_std: float | list[float] | None = None,
        **kwargs,
    ) -> list[np.ndarray]:
        """Turn the raw input into channels-first uint8 arrays, rejecting bad input before any work."""
        arrays = [np.atleast_3d(np.array(image)) for image in to_pil_images(images, input_data_format, do_convert_rgb)]
        channels = {array.shape[-1] for array in arrays}
        if len(channels) > 1:
            raise ValueError(
                f"the images have different numbers of channels {sorted(channels)}; pass do_convert_rgb=True to read "
                "every image as RGB, or convert them to one mode."
            )
        if do_normalize:
            _check_channels(channels.pop(), image_mean, image_std)
        return [np.moveaxis(array, -1, 0) for array in arrays]

    def convert_image(self, image: object) -> Image.Image:
        """Read one image as this processor does before resizing (RGB, or its own channels without do_convert_rgb)."""
        (converted,) = to_pil_images([image], convert_rgb=self.do_convert_rgb)
        return converted

    def resize(
        self,
        image: np.ndarray,
        size: SizeDict,
        resample: PILImageResampling | None = None,
        crop_pct: float | None = None,
        **kwargs,
    ) -> np.ndarray:
        """Resize one channels-first image as ConvNeXt is evaluated at S: crop below 384, warp from 384 on."""
        resolution = size.shortest_edge
        square = SizeDict(height=resolution, width=resolution)
        if resolution >= WARP_RESOLUTION:
            return super().resize(image, square, resample, **kwargs)
        crop_pct = self.crop_pct if crop_pct is None else crop_pct
        short_side = int(resolution / crop_pct)
        height, width = _resized_size(*image.shape[-2:], short_side)
        if height * width > MAX_RESIZED_PIXELS:
            raise ValueError(
                f"an image of {image.shape[-2]} x {image.shape[-1]} pixels would be resized to {height} x {width} = "
                f"{height * width:,} pixels before the {resolution} x {resolution} center crop, over the limit of "
                f"{MAX_RESIZED_PIXELS:,}; crop it to a less extreme aspect ratio (at most "
                f"{MAX_RESIZED_PIXELS // short_side**2}:1) first."
            )
        resized = super().resize(image, SizeDict(shortest_edge=short_side), resample, **kwargs)
        return self.center_crop(resized, square)

    def _preprocess(
        self,
        images: list[np.ndarray],
        do_resize: bool,
        size: SizeDict,
        resample: PILImageResampling | None,
        crop_pct: float,
        **kwargs,
    ) -> BatchFeature:
        """Apply the evaluation resize, then the backend's rescale and normalize."""
        if do_resize:
            images = [self.resize(image, size, resample, crop_pct) for image in images]
        return super()._preprocess(images, do_resize=False, size=size, resample=resample, **kwargs)


# The class's name before it was saved under its own (so that folders never reload as transformers' processor);
# code that imports the old name gets the same class.
ConvNextImageProcessor = ConvNextHFImageProcessor

__all__ = ["ConvNextHFImageProcessor", "ConvNextImageProcessor", "to_pil_images"]
