"""One bound on the whole model (`train.ranges.check_model_size`): settings each within their range may together
describe a model of 10^11 parameters; it is counted on torch's meta device and refused in one line before any weight
is allocated, whether it comes from flags and --config_overrides (every task) or from a folder's config.json."""

import json

import pytest
import torch
import transformers
from PIL import Image

from convnext_hf import ConvNextConfig, ConvNextForImageClassification, ConvNextHFImageProcessor
from convnext_hf.cli import main as cli_main
from convnext_hf.configuration_convnext import MAX_PARAMETERS
from convnext_hf.errors import UserInputError
from convnext_hf.model_folder import load_model_folder
from convnext_hf.tasks.classification.model import build_model
from convnext_hf.tasks.detection.model import build_detector, new_detector
from convnext_hf.tasks.segmentation.model import _new_upernet, build_segmentation_model
from convnext_hf.train.arguments import ModelArguments
from convnext_hf.train.ranges import check_model_size, meta_model

TINY = {"hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1]}
# Every detector setting at (or near) its bound in CONFIG_RANGES: each passes alone.
DETECTOR_AT_ITS_BOUNDS = {"d_model": 8192, "encoder_layers": 64, "decoder_layers": 64, "encoder_ffn_dim": 16384,
                          "decoder_ffn_dim": 16384}  # fmt: skip
UPERNET_AT_ITS_BOUNDS = {"hidden_size": 8192, "auxiliary_channels": 8192, "auxiliary_num_convs": 8}
# A ConvNeXt under the configuration's own cap (its trunk: 3 blocks of 8C² + 57C at C = 8192, 1.62e9) whose
# classifier for 100000 classes (8192 × 100000 + 100000 = 0.82e9) takes the whole model over it.
WIDE_TRUNK = {"hidden_sizes": [64, 128, 256, 8192], "depths": [1, 1, 1, 3]}
MANY_CLASSES = [f"c{index}" for index in range(100_000)]


def _count(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def _one_line(error: UserInputError, source: str, model: str) -> str:
    message = str(error)
    assert "\n" not in message
    assert message.startswith(f"{source}: the {model} it describes holds "), message
    assert f"over the limit of {MAX_PARAMETERS:.0e}" in message and "lower its sizes (" in message, message
    return message


@pytest.mark.parametrize(
    "build",
    [
        lambda: ConvNextForImageClassification(ConvNextConfig(**TINY, num_labels=7)),
        lambda: _new_upernet(ConvNextConfig(**TINY, out_indices=[1, 2, 3, 4]), ["a", "b"], {}),
        lambda: new_detector("rt_detr", ConvNextConfig(**TINY), ["a", "b"], {"num_queries": 10, "num_denoising": 5}),
        lambda: new_detector("detr", ConvNextConfig(**TINY), ["a", "b"], {"num_queries": 10}),
    ],
    ids=["classifier", "upernet", "rt_detr", "detr"],
)
def test_the_meta_count_is_the_built_models_count(build):
    model = build()
    counted = meta_model(type(model), model.config)
    assert _count(counted) == _count(model) > 0
    assert all(parameter.device.type == "meta" for parameter in counted.parameters())


def test_the_config_class_checks_the_trunk_and_the_gate_the_whole_model():
    config = ConvNextConfig.from_variant("atto", **WIDE_TRUNK, num_labels=len(MANY_CLASSES))
    assert 1.5e9 < config.parameter_bound() <= MAX_PARAMETERS
    with pytest.raises(UserInputError) as refusal:
        check_model_size(ConvNextForImageClassification, config, "here")
    assert "holds 2.44e+09 parameters (10 GB as float32)" in _one_line(
        refusal.value, "here", "ConvNextForImageClassification"
    )


@pytest.mark.parametrize(
    ("task", "build", "overrides", "labels", "source", "model"),
    [
        ("object-detection", build_detector, DETECTOR_AT_ITS_BOUNDS, ["a", "b"], "--detector rt_detr with "
         "--config_overrides", "RTDetrForObjectDetection"),
        ("semantic-segmentation", build_segmentation_model, UPERNET_AT_ITS_BOUNDS, ["a", "b"], "--variant atto with "
         "--config_overrides", "UperNetForSemanticSegmentation"),
        ("image-classification", build_model, WIDE_TRUNK, MANY_CLASSES, "--variant atto with --config_overrides",
         "ConvNextForImageClassification"),
    ],
    ids=["detector", "upernet", "classifier"],
)
def test_every_task_refuses_a_model_over_the_cap_built_from_flags(task, build, overrides, labels, source, model):
    args = ModelArguments(task=task, variant="atto", config_overrides=json.dumps(overrides))
    with pytest.raises(UserInputError) as refusal:
        build(args, labels)
    _one_line(refusal.value, source, model)


def test_a_folder_whose_config_json_grew_is_refused_by_load_model_folder_evaluate_and_export(tmp_path, capsys):
    folder = tmp_path / "model"
    ConvNextForImageClassification(ConvNextConfig(**TINY, num_labels=2)).save_pretrained(folder)
    ConvNextHFImageProcessor(size={"shortest_edge": 32}).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    grown = {key: value for key, value in config.items() if key not in ("id2label", "label2id")}
    (folder / "config.json").write_text(json.dumps({**grown, **WIDE_TRUNK, "num_labels": len(MANY_CLASSES)}))
    with pytest.raises(UserInputError) as refusal:
        load_model_folder(transformers.AutoModelForImageClassification, folder)
    _one_line(refusal.value, f"--model {folder} (config.json)", "ConvNextForImageClassification")
    images = tmp_path / "images"
    for name in ("a", "b"):
        (images / name).mkdir(parents=True)
        Image.new("RGB", (8, 8), (9, 9, 9)).save(images / name / "0.png")
    evaluate = ["evaluate", "--model", str(folder), "--validation_dir", str(images), "--output_dir",
                str(tmp_path / "scores")]  # fmt: skip
    export = ["export", "onnx", "--model", str(folder), "--output_dir", str(tmp_path / "onnx")]
    capsys.readouterr()
    for argv in (evaluate, export):
        assert cli_main(argv) == 2
        error = capsys.readouterr().err
        assert len(error.splitlines()) == 1 and "the ConvNextForImageClassification it describes holds" in error, error
    assert not (tmp_path / "scores").exists() and not (tmp_path / "onnx").exists()


def test_a_detector_folder_whose_heads_grew_is_refused_before_from_pretrained(tmp_path):
    head = {"num_queries": 10, "num_denoising": 5}
    new_detector("rt_detr", ConvNextConfig(**TINY), ["a", "b"], head).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **DETECTOR_AT_ITS_BOUNDS}))
    with pytest.raises(UserInputError) as refusal:
        load_model_folder(transformers.RTDetrForObjectDetection, tmp_path)
    _one_line(refusal.value, f"--model {tmp_path} (config.json)", "RTDetrForObjectDetection")
