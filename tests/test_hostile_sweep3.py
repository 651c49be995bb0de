"""The third sweep of issue 15's hostile cases: new variations of each kind over the converter, the image processor,
the model classes, evaluate and the demo. Each refusal is one message naming the input, with nothing written; the
unusual inputs that are legitimate convert or process exactly."""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from convnext_hf import ConvNextConfig, ConvNextForImageClassification, ConvNextHFImageProcessor
from convnext_hf.cli import main as cli_main
from helpers import FIXTURES, run_convert

FAMILY = FIXTURES / "family"


def timm_folder(path: Path, edit: Callable[[dict], None]) -> Path:
    """The hnf-mini timm folder with its config.json edited."""
    shutil.copytree(FAMILY / "hnf-mini.timm", path)
    config = json.loads((path / "config.json").read_text())
    edit(config)
    (path / "config.json").write_text(json.dumps(config))
    return path


def sharded(path: Path, stray: bool = False, omit: str | None = None) -> Path:
    """A one-shard timm checkpoint folder, with a different model.safetensors beside it or a name left out of the
    index."""
    path.mkdir()
    state = load_file(FIXTURES / "mini.timm.safetensors")
    save_file(state, path / "model-00001-of-00001.safetensors")
    weight_map = {name: "model-00001-of-00001.safetensors" for name in state if name != omit}
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    if stray:
        save_file({name: value * 2 for name, value in state.items()}, path / "model.safetensors")
    return path


def official(path: Path, convert: Callable[[dict], dict]) -> Path:
    state = torch.load(FIXTURES / "mini.fb.pth", weights_only=True)["model"]
    torch.save(convert(state), path)
    return path


def passl_arrays() -> dict:
    with open(FIXTURES / "mini.passl.pdparams", "rb") as handle:
        return pickle.load(handle)  # the trusted golden fixture


def big_endian_pdparams(path: Path) -> Path:
    arrays = {name: value.astype(value.dtype.newbyteorder(">")) if isinstance(value, np.ndarray) else value
              for name, value in passl_arrays().items()}  # fmt: skip
    path.write_bytes(pickle.dumps(arrays, protocol=2))
    return path


MINI = FIXTURES / "mini.fb.pth"

# id -> (builder(input folder) -> checkpoint, extra flags, what the one message names)
REFUSED = {
    "index beside a model.safetensors": (lambda d: sharded(d / "s", stray=True), (),
                                         ("besides the shards", "['model.safetensors']", "--weights_file")),
    "index that leaves out a tensor its shard holds": (lambda d: sharded(d / "s", omit="head.fc.bias"), (),
                                                       ("does not match its shards", "'head.fc.bias'")),
    "--weights_file an index outside the folder": (lambda d: sharded(d / "s"), ("--weights_file", "../x.index.json"),
                                                  ("--weights_file '../x.index.json' is not a file in",)),
    "timm num_classes as text": (lambda d: timm_folder(d / "t", lambda c: c.update(num_classes="7")), (),
                                 ("num_classes is '7'", "an integer")),
    "timm dims as floats": (lambda d: timm_folder(d / "t", lambda c: c["model_args"].update(dims=[16.0, 32, 64, 128])),
                            (), ("dims is [16.0, 32, 64, 128]", "a list of integers")),
    "timm label_names for another head": (lambda d: timm_folder(d / "t", lambda c: c.update(label_names=["a", "b"])),
                                          (), ("label_names names 2 classes", "has 7")),
    "timm label_names not names": (lambda d: timm_folder(d / "t", lambda c: c.update(label_names=[1] * 7)), (),
                                   ("label_names must be a list of non-empty class names",)),
    "timm input_size of 4 channels": (
        lambda d: timm_folder(d / "t", lambda c: c["pretrained_cfg"].update(input_size=[4, 224, 224])), (),
        ("input_size [4, 224, 224] says 4 input channels", "takes 3")),
    "timm non-square input_size": (
        lambda d: timm_folder(d / "t", lambda c: c["pretrained_cfg"].update(input_size=[3, 224, 160])), (),
        ("input_size [3, 224, 160] is not square", "--resolution")),
    "timm crop_mode squash": (lambda d: timm_folder(d / "t", lambda c: c["pretrained_cfg"].update(crop_mode="squash")),
                              (), ("crop_mode is 'squash'", "'center'")),
    "timm input_size below the stride": (
        lambda d: timm_folder(d / "t", lambda c: c["pretrained_cfg"].update(input_size=[3, 16, 16])), (),
        ("resolution 16", "total stride 32")),
    "--resolution below the stride": (lambda d: MINI, ("--resolution", "7"), ("resolution 7", "total stride 32")),
    "--private without --push_to_hub": (lambda d: MINI, ("--private",), ("--private", "--push_to_hub")),
    "--push_to_hub not a repo id": (lambda d: MINI, ("--push_to_hub", "a b/!!"), ("--push_to_hub 'a b/!!'",)),
}  # fmt: skip


@pytest.mark.parametrize("case", REFUSED)
def test_converter_refuses(tmp_path, capsys, case):
    build, flags, named = REFUSED[case]
    inputs, work = tmp_path / "in", tmp_path / "work"
    inputs.mkdir()
    work.mkdir()
    status = run_convert("--checkpoint", build(inputs), "--output_dir", work / "out", *flags)
    error = capsys.readouterr().err
    assert status == 2 and error.startswith("convnext-hf convert: error: ") and "Traceback" not in error, error
    assert error.count("\n") == 1, error
    for word in named:
        assert word in error, (word, error)
    assert list(work.iterdir()) == []


def converted(tmp_path: Path, source: Path, *flags: object) -> dict[str, torch.Tensor]:
    assert run_convert("--checkpoint", source, "--output_dir", tmp_path / "out", *flags) == 0
    return load_file(tmp_path / "out" / "model.safetensors")


def test_bfloat16_and_mixed_precision_weights_convert_exactly(tmp_path):
    state = torch.load(MINI, weights_only=True)["model"]
    dtypes = (torch.bfloat16, torch.float16, torch.float32)
    mixed = {name: value.to(dtypes[index % 3]) for index, (name, value) in enumerate(state.items())}
    weights = converted(tmp_path, official(tmp_path / "mixed.pth", lambda s: {"model": mixed}))
    assert {value.dtype for value in weights.values()} == {torch.float32}
    for ours, theirs in (("classifier.weight", "head.weight"), ("classifier.bias", "head.bias"),
                         ("convnext.embeddings.patch_embeddings.weight", "downsample_layers.0.0.weight")):  # fmt: skip
        assert torch.equal(weights[ours], mixed[theirs].float()), ours


def test_a_big_endian_pdparams_converts_to_the_same_numbers(tmp_path, capsys):
    weights = converted(tmp_path, big_endian_pdparams(tmp_path / "be.pdparams"))
    assert "verified" in capsys.readouterr().out
    assert torch.equal(weights["classifier.weight"], torch.from_numpy(passl_arrays()["head.fc_cls.weight"]).T)


def test_other_state_dicts_in_a_checkpoint_are_named(tmp_path, capsys):
    source = official(tmp_path / "ema.pth", lambda s: {"model": s, "model_ema": {k: v * 0.5 for k, v in s.items()}})
    weights = converted(tmp_path, source)
    error = capsys.readouterr().err
    assert "also holds ['model_ema'], other weights than the ones converted" in error, error
    assert torch.equal(weights["classifier.bias"], torch.load(MINI, weights_only=True)["model"]["head.bias"])


def test_timm_label_names_become_the_class_names(tmp_path):
    names = [f"class {index}" for index in range(7)]
    converted(tmp_path, timm_folder(tmp_path / "t", lambda c: c.update(label_names=names)))
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["id2label"] == {str(index): name for index, name in enumerate(names)}


def test_weights_file_can_choose_the_index(tmp_path):
    weights = converted(tmp_path, sharded(tmp_path / "s", stray=True), "--weights_file", "model.safetensors.index.json")
    assert torch.equal(weights["classifier.weight"], load_file(FIXTURES / "mini.timm.safetensors")["head.fc.weight"])


# --- image processor and model classes ------------------------------------------------------------------------------

IMAGE = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)

# name -> (settings of the processor, call keywords, image, exception, fragment)
BAD_PROCESSING = {
    "do_rescale False with a 0..1 mean": ({"do_rescale": False}, {}, IMAGE, ValueError,
                                          "do_rescale=False with image_mean"),
    "do_rescale False per call": ({}, {"do_rescale": False}, IMAGE, ValueError, "would normalize pixels of 0..255"),
    "a zero std per call": ({}, {"image_std": [0, 0, 0]}, IMAGE, ValueError, "image_std must be positive"),
    "a mean as text per call": ({}, {"image_mean": "x"}, IMAGE, TypeError, "Field 'image_mean' with value 'x'"),
    "a bogus data_format": ({}, {"data_format": "bogus"}, IMAGE, ValueError, "data_format must be 'channels_first'"),
    "a meta tensor": ({}, {}, torch.empty(3, 40, 50, device="meta"), ValueError, "meta device"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_PROCESSING)
def test_processor_refuses(case):
    settings, call, image, error, fragment = BAD_PROCESSING[case]
    with pytest.raises(error, match=fragment):
        ConvNextHFImageProcessor(size={"shortest_edge": 32}, **settings)(image, **call)


def test_do_rescale_false_in_a_saved_processor_fails_on_load(tmp_path):
    ConvNextHFImageProcessor().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "preprocessor_config.json").read_text())
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({**config, "do_rescale": False}))
    with pytest.raises(ValueError, match="do_rescale=False"):
        ConvNextHFImageProcessor.from_pretrained(tmp_path)


def test_rescale_settings_that_agree_give_the_same_pixels():
    """A mean and std on the 0..255 scale without rescaling, and whole-number lists per call, are legitimate."""
    default = ConvNextHFImageProcessor(size={"shortest_edge": 32})
    expected = default(IMAGE, return_tensors="pt").pixel_values
    scaled = ConvNextHFImageProcessor(size={"shortest_edge": 32}, do_rescale=False,
                                      image_mean=[v * 255 for v in default.image_mean],
                                      image_std=[v * 255 for v in default.image_std])  # fmt: skip
    assert torch.allclose(scaled(IMAGE, return_tensors="pt").pixel_values, expected, atol=1e-5)
    ones = default(IMAGE, image_mean=[0, 0, 0], image_std=[1, 1, 1], return_tensors="pt").pixel_values
    assert torch.allclose(ones, default(IMAGE, do_normalize=False, return_tensors="pt").pixel_values)
    assert 0.3 < ones.max() <= 1


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [({"num_labels": -1}, "num_labels must be an integer >= 0"), ({"num_labels": 2.0}, "got 2.0"),
     ({"problem_type": "regresion"}, "problem_type must be one of")],
)  # fmt: skip
def test_config_refuses_head_fields(fields, fragment):
    with pytest.raises(ValueError, match=fragment):
        ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], **fields)


# --- evaluate and demo ----------------------------------------------------------------------------------------------


def test_evaluate_refuses_classes_that_partly_match_the_model(tmp_path, capsys):
    model = tmp_path / "model"
    config = ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_labels=2,
                            id2label={0: "cat", 1: "dog"})  # fmt: skip
    ConvNextForImageClassification(config).save_pretrained(model)
    ConvNextHFImageProcessor(size={"shortest_edge": 32}).save_pretrained(model)
    for name in ("bird", "dog"):  # "bird" would be scored as "cat", folder 0 as class 0
        (tmp_path / "val" / name).mkdir(parents=True)
        Image.fromarray(IMAGE).save(tmp_path / "val" / name / "0.png")
    status = cli_main(["evaluate", "--model", str(model), "--validation_dir", str(tmp_path / "val"),
                       "--output_dir", str(tmp_path / "out")])  # fmt: skip
    error = capsys.readouterr().err.rpartition("convnext-hf evaluate: error: ")[2]
    assert status == 2 and error.startswith("The data's classes ['bird'] are not among the model's labels"), error
    assert "while ['dog'] are" in error and not (tmp_path / "out").exists()


NAN_RATE = "--learning_rate nan is out of range: it takes a finite number > 0"

# name -> (demo flags, fragment)
BAD_DEMO = {
    "--output_dir a file": (["--output_dir", "{file}"], "--output_dir {file} is a file"),
    "--train_images for the digits": (
        ["--train_images", "5"], "--train_images sizes the semantic-segmentation and object-detection demo(s)"
    ),
    "--train_per_class for segmentation": (["--task", "semantic-segmentation", "--train_per_class", "5"],
                                           "--train_per_class sizes the image-classification demo(s)"),
    "--train_per_class 0": (["--train_per_class", "0"], "--train_per_class 0 is out of range: it takes an integer"),
    "--epochs 0": (["--epochs", "0"], "--epochs 0 is out of range: it takes a number of epochs in (0, 1e+06]"),
    # Refused inside the training run, after the demo wrote its data: what it wrote is removed again.
    "--learning_rate nan for the digits": (["--learning_rate", "nan", "--train_per_class", "1"], NAN_RATE),
    "--learning_rate nan for segmentation": (
        ["--task", "semantic-segmentation", "--learning_rate", "nan", "--train_images", "1"], NAN_RATE
    ),
    "--learning_rate nan for detection": (
        ["--task", "object-detection", "--learning_rate", "nan", "--train_images", "1"], NAN_RATE
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_DEMO)
def test_demo_refuses_before_writing(tmp_path, capsys, case):
    flags, fragment = BAD_DEMO[case]
    file = tmp_path / "file"
    file.write_text("mine")
    flags = [flag.format(file=file) for flag in flags]
    if "--output_dir" not in flags:
        flags += ["--output_dir", str(tmp_path / "out")]
    assert cli_main(["demo", *flags]) == 2
    error = capsys.readouterr().err  # after progress bars, when the data was written before the refusal
    message = error.splitlines()[-1]
    assert message.startswith("convnext-hf demo: error: ") and fragment.format(file=file) in message, error
    assert "Traceback" not in error and error.count("convnext-hf demo: error: ") == 1, error
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file"] and file.read_text() == "mine"


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_float8_weights_convert_exactly_and_are_named(tmp_path, capsys, dtype):
    """fp8 → fp32 is exact, so 8-bit weights convert; the note names the dtype, since the file is a reduced-precision
    copy."""
    state = load_file(FIXTURES / "mini.timm.safetensors")
    state["head.fc.weight"] = state["head.fc.weight"].to(dtype)
    folder = tmp_path / "fp8"
    folder.mkdir()
    save_file(state, folder / "model.safetensors")
    weights = converted(tmp_path, folder)
    error = capsys.readouterr().err
    assert f"8-bit floats (1 in {str(dtype).removeprefix('torch.')})" in error and "value for value" in error, error
    assert weights["classifier.weight"].dtype == torch.float32
    assert torch.equal(weights["classifier.weight"], state["head.fc.weight"].float())


def test_a_demo_refused_inside_training_leaves_the_folder_as_it_found_it(tmp_path, capsys):
    """An existing --output_dir (with --overwrite) keeps what it held; the digits the demo wrote are removed."""
    output = tmp_path / "out"
    output.mkdir()
    (output / "mine.txt").write_text("mine")
    flags = ["--learning_rate", "nan", "--train_per_class", "1", "--overwrite", "--output_dir", str(output)]
    assert cli_main(["demo", *flags]) == 2
    assert NAN_RATE in capsys.readouterr().err
    assert sorted(path.name for path in output.iterdir()) == ["mine.txt"]
    assert (output / "mine.txt").read_text() == "mine"
