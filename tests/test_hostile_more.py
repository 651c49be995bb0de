"""The unseen hostile cases of issue 15's closing sweep for the model classes and the image processor (the converter's
are rows of test_hostile_conversion.py): each is refused with a ValueError or TypeError naming the input, as
transformers does, before any large allocation; the ones that are legitimate give the right result."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from convnext_hf import ConvNextConfig, ConvNextForImageClassification, ConvNextHFImageProcessor

SMALL = {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1]}

# name -> (config fields over SMALL, fragment of the refusal)
BAD_CONFIGS = {
    "a boolean depth": ({"depths": [True, 1, 1, 1]}, "depths must hold positive integers"),
    "a float width": ({"hidden_sizes": [8, 16.0, 24, 32]}, "hidden_sizes must hold positive integers"),
    "drop_path_rate as text": ({"drop_path_rate": "0.1"}, "drop_path_rate must be a finite number"),
    "drop_path_rate NaN": ({"drop_path_rate": float("nan")}, "drop_path_rate must be a finite number"),
    "drop_path_rate 1": ({"drop_path_rate": 1.0}, r"drop_path_rate must be in \[0, 1\)"),
    "a float patch_size": ({"patch_size": 4.5}, "patch_size must be a positive integer"),
    "a float num_channels": ({"num_channels": 3.0}, "num_channels must be a positive integer"),
    "image_size 0": ({"image_size": 0}, "image_size must be a positive integer"),
    "layer_norm_eps 0": ({"layer_norm_eps": 0}, "layer_norm_eps must be positive"),
    "layer_norm_eps NaN": ({"layer_norm_eps": float("nan")}, "layer_norm_eps must be a finite number"),
    "layer_scale_init_value inf": ({"layer_scale_init_value": float("inf")}, "layer_scale_init_value must be a finite"),
    "negative initializer_range": ({"initializer_range": -1}, "initializer_range must be positive"),
    "an unknown activation": ({"hidden_act": "nope"}, "hidden_act 'nope'"),
    "a float head_hidden_size": ({"head_hidden_size": 1.5}, "head_hidden_size must be a positive width"),
    "head_init_scale NaN": ({"head_init_scale": float("nan")}, "head_init_scale must be a finite number"),
    "a 10^6 patch (96 TB stem)": ({"patch_size": 10**6}, "over the limit of 2e\\+09"),
    "10^9 blocks": ({"depths": [10**9, 1, 1, 1]}, "depths must hold integers from 1 to 128"),
    "10^6 blocks (3 GB under the parameter cap)": ({"depths": [10**6, 1, 1, 1]}, "depths must hold integers from 1"),
    "a 10^7 wide stage": ({"hidden_sizes": [10**7, 16, 24, 32]}, "hidden_sizes must hold integers from 1 to 8192"),
    "128 blocks of 8192 (over the cap)": ({"hidden_sizes": [8192] * 4, "depths": [128] * 4}, "over the limit of 2e"),
    "out_features naming a missing stage": ({"out_features": ["stage7"]}, "stage7"),
    "out_indices beyond the stages": ({"out_indices": [9]}, r"\[9\]"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_config_refuses(case):
    fields, fragment = BAD_CONFIGS[case]
    with pytest.raises(ValueError, match=fragment):
        ConvNextConfig(**{**SMALL, **fields})


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    return ConvNextForImageClassification(ConvNextConfig(**SMALL, num_labels=3)).eval()


# name -> (inputs of forward, exception, fragment)
BAD_FORWARD = {
    "bool pixels": ({"pixel_values": torch.zeros(1, 3, 64, 64, dtype=torch.bool)}, TypeError, "floating-point"),
    "complex pixels": ({"pixel_values": torch.zeros(1, 3, 64, 64, dtype=torch.complex64)}, TypeError, "floating"),
    "5-D pixels": ({"pixel_values": torch.zeros(1, 1, 3, 64, 64)}, ValueError, "4 dimensions"),
    "4 channels for 3": ({"pixel_values": torch.zeros(1, 4, 64, 64)}, ValueError, "4 channels but the model expects 3"),
    "a label beyond the classes": (
        {"pixel_values": torch.zeros(1, 3, 64, 64), "labels": torch.tensor([5])}, ValueError, r"in 0\.\.2.*\[5\]"),
    "a negative label": (
        {"pixel_values": torch.zeros(2, 3, 64, 64), "labels": torch.tensor([1, -3])}, ValueError, r"\[-3\]"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_FORWARD)
def test_forward_refuses(classifier, case):
    inputs, error, fragment = BAD_FORWARD[case]
    with pytest.raises(error, match=fragment):
        classifier(**inputs)


def test_ignored_labels_are_allowed(classifier):
    loss = classifier(torch.zeros(2, 3, 64, 64), labels=torch.tensor([1, -100])).loss
    expected = torch.nn.functional.cross_entropy(classifier(torch.zeros(1, 3, 64, 64)).logits, torch.tensor([1]))
    assert torch.allclose(loss, expected)


def test_num_labels_0_is_the_feature_model(classifier):
    features = ConvNextForImageClassification(ConvNextConfig(**SMALL, num_labels=0))(torch.zeros(1, 3, 64, 64))
    assert features.logits.shape == (1, 32)


# --- the image processor: hostile arrays and files ------------------------------------------------------------------

PROCESSOR = {"size": {"shortest_edge": 32}}

# name -> (image, exception, fragment)
BAD_IMAGES = {
    "a 0 x 0 image": (np.zeros((0, 0, 3), np.uint8), ValueError, "empty"),
    "NaN pixels": (np.full((30, 40, 3), np.nan, np.float32), ValueError, "NaN"),
    "int64 pixels beyond 255": (np.full((30, 40, 3), 300, np.int64), ValueError, r"\[0, 255\].*300"),
    "uint32 pixels": (np.full((30, 40, 3), 2**31, np.uint32), ValueError, r"\[0, 255\]"),
    "a 5-D tensor": (torch.zeros(1, 1, 3, 30, 40), ValueError, "2 dimensions"),
    "a 1-D array": (np.zeros(30, np.uint8), ValueError, "2 dimensions"),
    "a numpy scalar": (np.uint8(3), TypeError, "uint8"),
    "complex pixels": (np.zeros((30, 40, 3), np.complex64), TypeError, "complex64"),
    "object pixels": (np.array([[None] * 40] * 30), TypeError, "object"),
    "raw bytes": (b"\x89PNG", TypeError, "bytes"),
    "a generator": ((x for x in []), TypeError, "generator"),
    "a PIL image of width 0": (Image.new("RGB", (0, 10)), ValueError, "empty"),
}


@pytest.mark.parametrize("case", BAD_IMAGES)
def test_processor_refuses_image(case):
    image, error, fragment = BAD_IMAGES[case]
    with pytest.raises(error, match=fragment):
        ConvNextHFImageProcessor(**PROCESSOR)(image)


def _white_rgb(processor) -> torch.Tensor:
    return processor(Image.new("RGB", (40, 30), "white"), return_tensors="pt").pixel_values


def _exif_rotated(path, orientation: int):
    image = Image.new("RGB", (40, 20), "red")
    image.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, exif=exif, quality=100)
    return path


def test_files_of_unusual_kinds_read_as_they_look(tmp_path):
    """A 16-bit PNG, a CMYK JPEG, an animated GIF (first frame), EXIF rotations (applied; a broken one ignored)."""
    processor = ConvNextHFImageProcessor(**PROCESSOR)
    Image.fromarray(np.full((30, 40), 65535, np.uint16)).save(tmp_path / "16.png")
    assert torch.allclose(processor(str(tmp_path / "16.png"), return_tensors="pt").pixel_values, _white_rgb(processor))
    Image.new("CMYK", (40, 30), (0, 0, 0, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    assert torch.allclose(processor(str(tmp_path / "cmyk.jpg"), return_tensors="pt").pixel_values,
                          _white_rgb(processor), atol=0.05)  # fmt: skip
    frames = [Image.new("RGB", (40, 30), colour) for colour in ("white", "black")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert torch.allclose(processor(str(tmp_path / "anim.gif"), return_tensors="pt").pixel_values,
                          _white_rgb(processor))  # fmt: skip
    # Orientation 6: rotate 90° clockwise to display; the blue left half ends on top.
    rotated = processor(str(_exif_rotated(tmp_path / "rot.jpg", 6)), return_tensors="pt").pixel_values[0]
    assert rotated[2, :8].mean() > rotated[2, -8:].mean() + 1
    broken = processor(str(_exif_rotated(tmp_path / "bad.jpg", 99)), return_tensors="pt").pixel_values[0]
    assert broken[2, :, :8].mean() > broken[2, :, -8:].mean() + 1  # as stored


def test_a_folder_named_like_an_image_and_text_named_png_are_refused_by_name(tmp_path):
    processor = ConvNextHFImageProcessor(**PROCESSOR)
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ValueError, match="dir.png"):
        processor(str(tmp_path / "dir.png"))
    with pytest.raises(ValueError, match="text.png.*not a readable image"):
        processor(str(tmp_path / "text.png"))
    Image.new("RGB", (40, 30), "white").save(tmp_path / "é ☃ space.png")
    assert torch.allclose(processor(str(tmp_path / "é ☃ space.png"), return_tensors="pt").pixel_values,
                          _white_rgb(processor))  # fmt: skip


# --- outputs that would replace or mix with an input ----------------------------------------------------------------


def _tiny_model(folder):
    torch.manual_seed(0)
    config = ConvNextConfig(**SMALL, num_labels=2, id2label={0: "cat", 1: "dog"})
    ConvNextForImageClassification(config).save_pretrained(folder)
    ConvNextHFImageProcessor(size={"shortest_edge": 64}).save_pretrained(folder)
    return folder


def _images(folder):
    for name in ("cat", "dog"):
        (folder / name).mkdir(parents=True)
        Image.new("RGB", (40, 40), name == "cat" and "white" or "black").save(folder / name / "0.png")
    return folder


# name -> (argv builder over (model, images, tmp_path), the flag the message names, fragment)
OVERLAPS = {
    "evaluate into the validation folder": (
        lambda m, v, t: ["evaluate", "--model", m, "--validation_dir", v, "--output_dir", v, "--overwrite"],
        "--validation_dir", "would replace it"),
    "evaluate into the model folder": (
        lambda m, v, t: ["evaluate", "--model", m, "--validation_dir", v, "--output_dir", m, "--overwrite"],
        "--model", "would replace it"),
    "evaluate into a link to the model folder": (
        lambda m, v, t: ["evaluate", "--model", m, "--validation_dir", v, "--output_dir", t / "link", "--overwrite"],
        "--model", "would replace it"),
    "evaluate inside the validation folder": (
        lambda m, v, t: ["evaluate", "--model", m, "--validation_dir", v, "--output_dir", v / "scores"],
        "--validation_dir", "lies inside"),
    "export into the model folder": (
        lambda m, v, t: ["export", "onnx", "--model", m, "--output_dir", m, "--overwrite"], "--model", "replace it"),
    "export inside the model folder": (
        lambda m, v, t: ["export", "onnx", "--model", m, "--output_dir", m / "onnx"], "--model", "lies inside"),
    "train into its train_dir": (
        lambda m, v, t: ["train", "--train_dir", v, "--variant", "atto", "--output_dir", v, "--overwrite"],
        "--train_dir", "would replace it"),
    "train inside its train_dir": (
        lambda m, v, t: ["train", "--train_dir", v, "--variant", "atto", "--output_dir", v / "run"],
        "--train_dir", "lies inside"),
    "evaluate --max_eval_samples -1": (
        lambda m, v, t: ["evaluate", "--model", m, "--validation_dir", v, "--output_dir", t / "o",
                         "--max_eval_samples", "-1"],
        "--max_eval_samples -1", "out of range: it takes an integer >= 1"),
}  # fmt: skip


@pytest.mark.parametrize("case", OVERLAPS)
def test_outputs_never_replace_or_mix_with_inputs(tmp_path, capsys, case):
    from convnext_hf.cli import main as cli_main

    build, flag, fragment = OVERLAPS[case]
    model, images = _tiny_model(tmp_path / "model"), _images(tmp_path / "images")
    (tmp_path / "link").symlink_to(model, target_is_directory=True)
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    status = cli_main([str(arg) for arg in build(model, images, tmp_path)])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err, err
    message = err.strip().splitlines()[-1]
    assert flag in message and fragment in message, message
    after = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    assert after == before
