"""Hostile inputs (issue 15) to the image processor, `export`, `evaluate` and `train`, and through every entry point.

One row per class of case: each must be refused with exit status 2 and one line naming the input (no traceback),
leave nothing behind, and never allocate beyond what the input justifies.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from convnext_hf import ConvNextConfig, ConvNextForImageClassification, ConvNextHFImageProcessor
from convnext_hf.cli import main as cli_main

ROOT = Path(__file__).parents[1]

# --- image processor ------------------------------------------------------------------------------------------------

# name -> (settings of the processor, refusal fragment)
BAD_SETTINGS = {
    "shortest_edge beyond any sane size": ({"size": {"shortest_edge": 100000}}, "over the limit of 4096"),
    "crop_pct that blows the short side up": ({"crop_pct": 0.01}, "would resize the short side to 22400"),
    "mean and std of different lengths": ({"image_mean": [0.5, 0.5]}, "image_mean has 2 values and image_std 3"),
    "a zero std": ({"image_std": [0.2, 0.0, 0.2]}, "image_std must be positive"),
    "a NaN mean": ({"image_mean": [float("nan")] * 3}, "image_mean must hold finite numbers"),
    "a zero rescale factor": ({"rescale_factor": 0}, "rescale_factor must be a positive number"),
}


@pytest.mark.parametrize("case", BAD_SETTINGS)
def test_processor_settings_are_checked_on_load(tmp_path, case):
    settings, fragment = BAD_SETTINGS[case]
    with pytest.raises(ValueError, match=fragment):
        ConvNextHFImageProcessor(**settings)
    # The same settings in a saved preprocessor_config.json fail in from_pretrained, not later.
    ConvNextHFImageProcessor().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "preprocessor_config.json").read_text())
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({**config, **settings}))
    with pytest.raises(ValueError, match=fragment):
        ConvNextHFImageProcessor.from_pretrained(tmp_path)


def test_grey_alpha_array_is_not_read_as_rgb():
    processor = ConvNextHFImageProcessor(size={"shortest_edge": 32})
    rng = np.random.default_rng(0)
    grey_alpha = rng.integers(0, 256, (3, 64, 2), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"\(3, 64, 2\).*3 x 64 image of 2 channels.*input_data_format"):
        processor(grey_alpha)
    as_la = processor(Image.fromarray(grey_alpha, "LA"), return_tensors="pt").pixel_values
    # Separate resizes and normalizations: equal up to float rounding, which may differ by CPU.
    torch.testing.assert_close(
        processor(grey_alpha, input_data_format="channels_last", return_tensors="pt").pixel_values, as_la,
        rtol=0, atol=1e-6,
    )  # fmt: skip
    # Unambiguous grey+alpha arrays are read as such either way round.
    wide = rng.integers(0, 256, (40, 64, 2), dtype=np.uint8)
    expected = processor(Image.fromarray(wide, "LA"), return_tensors="pt").pixel_values
    torch.testing.assert_close(processor(wide, return_tensors="pt").pixel_values, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(
        processor(np.moveaxis(wide, -1, 0).copy(), return_tensors="pt").pixel_values, expected, rtol=0, atol=1e-6
    )


@pytest.mark.parametrize("shape", [(1, 100000, 3), (100000, 8)], ids=["1x100000-rgb", "100000x8-grey"])
def test_extreme_aspect_ratio_is_refused_before_resizing(shape):
    processor = ConvNextHFImageProcessor()
    with pytest.raises(ValueError, match=r"would be resized to .* over the limit of 67,108,864"):
        processor(np.zeros(shape, np.uint8), input_data_format="channels_last" if len(shape) == 3 else None)
    # A warp (S >= 384) makes an S x S image whatever the aspect ratio: allowed.
    warped = ConvNextHFImageProcessor(size={"shortest_edge": 384})(np.zeros(shape, np.uint8), return_tensors="pt",
                                                                   input_data_format="channels_last" if len(shape) == 3
                                                                   else None)  # fmt: skip
    assert warped.pixel_values.shape == (1, 3, 384, 384)


# --- the commands ---------------------------------------------------------------------------------------------------


def tiny_model(folder: Path, num_channels: int = 3) -> Path:
    torch.manual_seed(0)
    config = ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_labels=3, num_channels=num_channels)
    ConvNextForImageClassification(config).save_pretrained(folder)
    ConvNextHFImageProcessor(size={"shortest_edge": 64}, do_convert_rgb=num_channels == 3,
                             image_mean=[0.5] * num_channels, image_std=[0.25] * num_channels).save_pretrained(folder)
    return folder


def make_input(tmp_path: Path, kind: str) -> Path:
    """A hostile `--model` folder."""
    folder = tmp_path / "model"
    if kind == "missing":
        return tmp_path / "no" / "such" / "folder"
    folder.mkdir()
    if kind == "file":
        folder.rmdir()
        folder.write_text("not a folder")
    elif kind == "config not JSON":
        (folder / "config.json").write_text("{nope")
    elif kind == "config of no model":
        (folder / "config.json").write_text('{"hello": 1}')
    elif kind == "no weights":
        ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_labels=3).save_pretrained(folder)
    elif kind in WEIGHTS_VS_CONFIG:
        tiny_model(folder)
        edit_config, edit_weights = WEIGHTS_VS_CONFIG[kind]
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **edit_config}))
        weights = load_file(folder / "model.safetensors")
        edit_weights(weights)
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    elif kind == "processor with shortest_edge 100000":
        tiny_model(folder)
        config = json.loads((folder / "preprocessor_config.json").read_text())
        (folder / "preprocessor_config.json").write_text(json.dumps({**config, "size": {"shortest_edge": 100000}}))
    return folder


# A config.json that disagrees with the weights beside it: kind -> (config fields, edit of the weights). Loaded as
# transformers does by default, what is missing would be initialised at random and still "pass" export's parity check.
WEIGHTS_VS_CONFIG = {
    "config with one block more than the weights": ({"depths": [1, 2, 1, 1]}, lambda weights: None),
    "config with a wider last stage": ({"hidden_sizes": [8, 16, 24, 40]}, lambda weights: None),
    "config with a head of 5 classes for 3": (
        {"num_labels": 5, "id2label": {str(i): f"c{i}" for i in range(5)}, "label2id": {f"c{i}": i for i in range(5)}},
        lambda weights: None),
    "weights with an extra tensor": ({}, lambda weights: weights.update(extra=torch.zeros(3))),
    "weights missing the head's bias": ({}, lambda weights: weights.pop("classifier.bias")),
}  # fmt: skip
MODEL_FOLDERS = ["empty", "missing", "file", "config not JSON", "config of no model", "no weights",
                 "processor with shortest_edge 100000", *WEIGHTS_VS_CONFIG]  # fmt: skip
# What the refusal of each WEIGHTS_VS_CONFIG folder names: the weights that do not fit.
NAMED_WEIGHTS = {
    "config with one block more than the weights": "9 missing: convnext.encoder.stages.1.layers.1.dwconv.bias",
    "config with a wider last stage": "14 of another shape: classifier.weight (3, 32) for (3, 40)",
    "config with a head of 5 classes for 3": "classifier.bias (3,) for (5,), classifier.weight (3, 32) for (5, 32)",
    "weights with an extra tensor": "1 unexpected: extra",
    "weights missing the head's bias": "1 missing: classifier.bias",
}


def assert_refused(capsys, status: int, *names: object) -> str:
    """Exit status 2, and the last stderr line is the one error naming each of `names`; no traceback."""
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert sum("error:" in line for line in err.splitlines()) == 1, err
    for name in names:
        assert str(name) in message, message
    return message


def leftovers(tmp_path: Path, created: set[str]) -> list[str]:
    return sorted(set(os.listdir(tmp_path)) - created)


@pytest.mark.parametrize("kind", MODEL_FOLDERS)
def test_evaluate_model_that_is_not_one(tmp_path, capsys, kind):
    model = make_input(tmp_path, kind)
    images = tmp_path / "images" / "a"
    images.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(images / "0.png")
    created = set(os.listdir(tmp_path))
    status = cli_main(["evaluate", "--model", str(model), "--validation_dir", str(images.parent),
                       "--output_dir", str(tmp_path / "out" / "scores")])  # fmt: skip
    assert_refused(capsys, status, model, NAMED_WEIGHTS.get(kind, ""))
    assert leftovers(tmp_path, created) == []


@pytest.mark.parametrize("kind", MODEL_FOLDERS)
def test_export_model_that_is_not_one(tmp_path, capsys, kind):
    model = make_input(tmp_path, kind)
    created = set(os.listdir(tmp_path))
    status = cli_main(["export", "onnx", str(tmp_path / "out"), "--model", str(model)])
    assert_refused(capsys, status, model, NAMED_WEIGHTS.get(kind, ""))
    assert leftovers(tmp_path, created) == []


# name -> (extra export flags, refusal fragment)
BAD_EXPORT_FLAGS = {
    "static shape below the total stride": (["--static_shape", "1", "1"], "smaller than the model's total stride 32"),
    "static shape one pixel short": (["--static_shape", "31", "64"], "smaller than the model's total stride 32"),
    "opset no onnx knows": (["--opset", "99"], "--opset 99 is newer than the installed onnx knows"),
    "negative tolerance": (["--tolerance", "-1"], "--tolerance is a relative difference, a number >= 0"),
    "NaN tolerance": (["--tolerance", "nan"], "--tolerance is a relative difference"),
    "misspelt flag": (["--tolernce", "1"], "--tolernce; did you mean --tolerance?"),
    "static shape of 100000 a side (240 GB)": (["--static_shape", "100000", "100000"], "over the limit of 4096"),
    "--calibration_dir without --quantize": (["--calibration_dir", "."], "--calibration_dir serves int8"),
    "--calibration_images without --quantize": (["--calibration_images", "3"], "--calibration_images serves int8"),
    "calibration flags without --quantize": (
        ["--calibration_dir", ".", "--calibration_images", "3"], "--calibration_dir, --calibration_images serve int8"),
    "--validation_dir without --quantize": (["--validation_dir", "."], "--validation_dir serves int8 quantization"),
    "--validation_annotations for a classifier": (
        ["--validation_annotations", "boxes.json"], "--validation_annotations serves the detection check"),
}


@pytest.fixture(scope="module")
def four_channel_model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("rgba") / "model", num_channels=4)


@pytest.mark.parametrize("case", BAD_EXPORT_FLAGS)
def test_export_flags_are_checked(tmp_path, capsys, four_channel_model, case):
    flags, fragment = BAD_EXPORT_FLAGS[case]
    status = cli_main(["export", "onnx", str(tmp_path / "out"), "--model", str(four_channel_model), *flags])
    err = capsys.readouterr().err
    assert status == 2 and fragment in err and "Traceback" not in err, err
    assert os.listdir(tmp_path) == []


def calibration_input(tmp_path: Path, kind: str) -> Path:
    """A hostile `--calibration_dir`."""
    folder = tmp_path / "calibration"
    if kind == "a file":
        folder.write_text("not a folder")
    elif kind == "text named .png":
        folder.mkdir()
        Image.new("RGB", (8, 8)).save(folder / "0.png")
        (folder / "1.png").write_text("not an image")
    return folder


# kind -> refusal fragment (the flag and the path are named too)
BAD_CALIBRATION = {
    "a file": "is a file; pass a folder of images",
    "missing": "does not exist; pass a folder of images",
    "text named .png": "1.png is not a readable image",
}


@pytest.mark.parametrize("kind", BAD_CALIBRATION)
def test_calibration_images_are_checked_before_the_export(tmp_path, capsys, four_channel_model, monkeypatch, kind):
    from convnext_hf.export import exporter

    def no_export(*args, **kwargs):
        raise AssertionError("the model was loaded before the calibration images were checked")

    monkeypatch.setattr(exporter, "load_exportable", no_export)
    folder = calibration_input(tmp_path, kind)
    created = set(os.listdir(tmp_path))
    status = cli_main(["export", "onnx", str(tmp_path / "out"), "--model", str(four_channel_model),
                       "--quantize", "int8", "--calibration_dir", str(folder)])  # fmt: skip
    message = assert_refused(capsys, status, "--calibration_dir", folder)
    assert BAD_CALIBRATION[kind] in message
    assert leftovers(tmp_path, created) == []


@pytest.mark.slow
def test_four_channel_model_exports(tmp_path, four_channel_model):
    pytest.importorskip("onnxruntime")
    assert cli_main(["export", "onnx", str(tmp_path / "out"), "--model", str(four_channel_model)]) == 0
    report = json.loads((tmp_path / "out" / "export_report.json").read_text())
    assert [entry["input_shape"][1] for entry in report["parity"]["inputs"]] == [4, 4]
    assert report["parity"]["max_relative_difference"] <= 1e-5
    assert sorted(os.listdir(tmp_path)) == ["out"]


@pytest.mark.slow
def test_opset_onnx_cannot_convert_to_is_refused(tmp_path, capsys, four_channel_model):
    status = cli_main(["export", "onnx", str(tmp_path / "out"), "--model", str(four_channel_model), "--opset", "27"])
    message = assert_refused(capsys, status, "opset 27")
    assert "Gelu" in message and os.listdir(tmp_path) == []


# name -> (evaluate flags over (model, images, a file), refusal fragment)
BAD_EVALUATE = {
    "a device this machine lacks": (lambda m, v, f: ["--validation_dir", v, "--device", "cuda:7"],
                                    "--device cuda:7 is not available on this machine"),
    "a device name torch does not know": (lambda m, v, f: ["--validation_dir", v, "--device", "gpu0"],
                                          "--device gpu0 is not a device name"),
    "--validation_dir that is a file": (
        lambda m, v, f: ["--validation_dir", f], "--validation_dir {f} is a file; pass a folder with one subfolder"),
    "--validation_dir that does not exist": (lambda m, v, f: ["--validation_dir", v / "none"],
                                             "--validation_dir {v}/none does not exist"),
    "--validation_file that does not exist": (lambda m, v, f: ["--validation_file", v / "none.csv"],
                                              "--validation_file {v}/none.csv does not exist"),
    "--validation_file that is not CSV or JSON": (lambda m, v, f: ["--validation_file", f],
                                                  "--validation_file {f}: the data files must be .csv"),
    "an unreadable image": (lambda m, v, f: ["--validation_dir", v, "--device", "cpu"],
                            "unreadable image(s) in the scored data"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_EVALUATE)
def test_evaluate_refuses_in_one_line_naming_its_own_flags(tmp_path, capsys, case):
    build, fragment = BAD_EVALUATE[case]
    model, images, file = tiny_model(tmp_path / "model"), tmp_path / "images", tmp_path / "file.txt"
    for name in ("a", "b", "c"):
        (images / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(images / name / "0.png")
    if case == "an unreadable image":
        (images / "a" / "1.png").write_text("not an image")
    file.write_text("mine")
    created = set(os.listdir(tmp_path))
    status = cli_main(["evaluate", "--model", str(model), "--output_dir", str(tmp_path / "out"),
                       *map(str, build(model, images, file))])  # fmt: skip
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err, err
    assert fragment.format(f=file, v=images) in err, err
    assert "train" not in err.split("error:", 1)[1], err
    assert leftovers(tmp_path, created) == []


def checkpoint(tmp_path: Path, kind: str) -> Path:
    """A hostile `--resume_from_checkpoint` folder."""
    folder = tmp_path / "run" / "checkpoint-2"
    folder.mkdir(parents=True)
    state = {"global_step": 2, "log_history": []}
    if kind != "trainer state not JSON":
        (folder / "trainer_state.json").write_text(json.dumps(state))
    else:
        (folder / "trainer_state.json").write_text("{")
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}" if kind == "damaged weights"
                                               else b"\x02\x00\x00\x00\x00\x00\x00\x00{}")  # fmt: skip
    if kind == "damaged optimizer":
        (folder / "optimizer.pt").write_bytes(b"not a zip archive")
    return folder


# name -> (train flags besides --train_dir, the file or flag the message names, fragment)
BAD_TRAIN = {
    "misspelt flag": (["--learnign_rate", "1"], "--learnign_rate", "did you mean --learning_rate?"),
    "dashed misspelt flag": (["--learnign-rate=1"], "--learnign-rate", "did you mean --learning_rate?"),
    "value of the wrong type": (["--num_train_epochs", "many"], "--num_train_epochs", "invalid float value"),
    "unknown recipe": (["--recipe", "nope"], "--recipe", "invalid choice"),
    "output_dir is a file": (["--output_dir", "{file}"], "{file}", "is a file"),
    "trainer state not JSON": (["--resume_from_checkpoint", "{ckpt}"], "trainer_state.json", "unreadable"),
    "damaged weights": (["--resume_from_checkpoint", "{ckpt}"], "model.safetensors", "not a readable safetensors"),
    "damaged optimizer": (["--resume_from_checkpoint", "{ckpt}"], "optimizer.pt", "damaged"),
    "--model_ema without an EMA file": (
        ["--resume_from_checkpoint", "{ckpt}", "--model_ema"], "ema.safetensors", "saved without --model_ema",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_TRAIN)
def test_train_refuses_in_one_line(tmp_path, capsys, case):
    flags, name, fragment = BAD_TRAIN[case]
    (tmp_path / "file").write_text("mine")
    ckpt = checkpoint(tmp_path, case)
    values = {"{file}": str(tmp_path / "file"), "{ckpt}": str(ckpt)}
    flags = [values.get(flag, flag) for flag in flags]
    created = set(os.listdir(tmp_path)) | {"out"}
    argv = ["train", "--train_dir", str(tmp_path / "images"), "--variant", "atto", "--report_to", "none",
            "--output_dir", str(tmp_path / "out"), *flags]  # fmt: skip
    message = assert_refused(capsys, cli_main(argv), values.get(name, name))
    assert fragment in message
    assert leftovers(tmp_path, created) == [] and not (tmp_path / "out").exists()
    assert (tmp_path / "file").read_text() == "mine"


# --- every entry point: one line and exit 2 ---------------------------------------------------------------------

ENTRY_POINTS = {
    "python -m convnext_hf.train": [sys.executable, "-m", "convnext_hf.train"],
    "convnext-hf train": [sys.executable, "-m", "convnext_hf.cli", "train"],
    # The launcher runs the module in a shell that keeps the child's own stderr and exit status in CHILD (a folder
    # outside the run's): the launcher's report of a failed child is its own (accelerate 1.16 repeats the child's
    # stderr in a chained exception), so the test reads what the module itself wrote.
    "accelerate launch -m convnext_hf.train": [
        sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--no_python", "bash", "-c",
        f'"{sys.executable}" -m convnext_hf.train "$@" 2>"$CHILD/stderr"; status=$?; echo $status >"$CHILD/status";'
        ' exit $status', "child",
    ],
}  # fmt: skip


def run_entry_point(command: list[str], tmp_path: Path, **env_vars: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **env_vars}
    return subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_train_entry_points_report_user_errors_in_one_line(tmp_path, tmp_path_factory, entry_point):
    if "accelerate" in entry_point and shutil.which("accelerate") is None:
        pytest.importorskip("accelerate")
    # A broken JPEG: found only when the data is read, deep inside the run.
    (tmp_path / "images" / "cat").mkdir(parents=True)
    (tmp_path / "images" / "cat" / "0.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    (tmp_path / "images" / "dog").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "dog" / "0.png")
    argv = ["--train_dir", "images", "--variant", "atto", "--output_dir", "out", "--report_to", "none"]
    child = tmp_path_factory.mktemp("child")
    result = run_entry_point([*ENTRY_POINTS[entry_point], *argv], tmp_path, CHILD=str(child))
    stderr, status = result.stderr, result.returncode
    if "accelerate" in entry_point:
        assert status != 0, stderr  # the launcher fails too; how it says so is its own
        stderr, status = (child / "stderr").read_text(), int((child / "status").read_text())
    assert status == 2, stderr
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert errors == [errors[0]] and "0.jpg" in stderr.split("error:", 1)[1], stderr
    assert sorted(os.listdir(tmp_path)) == ["images"]


@pytest.mark.slow
def test_convert_script_reports_user_errors_in_one_line(tmp_path):
    (tmp_path / "out").write_text("mine")
    result = run_entry_point([sys.executable, str(ROOT / "conversion" / "convert.py"), "--checkpoint",
                              "missing.pth", "--output_dir", "out"], tmp_path)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("convnext-hf convert: error: out is a file")
    assert sorted(os.listdir(tmp_path)) == ["out"] and (tmp_path / "out").read_text() == "mine"
