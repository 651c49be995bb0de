"""One bounds table for every number a user or a folder can give: flags of every command, --config_overrides of every
task (detector and UperNet settings included), configs and image processors read from folders; refused in one line
before anything is allocated."""

import json

import pytest
import transformers

from convnext_hf.cli import main as cli_main
from convnext_hf.errors import UserInputError
from convnext_hf.model_folder import load_config, load_image_processor
from convnext_hf.tasks.detection.model import detector_overrides
from convnext_hf.tasks.segmentation.model import split_overrides
from convnext_hf.train.arguments import ModelArguments
from convnext_hf.train.ranges import check_config_ranges, check_processor_ranges

DETECTOR_OVERRIDES = {
    "decoder_layers 0": ({"decoder_layers": 0}, "decoder_layers 0 is out of range: it takes an integer from 1 to 64"),
    "num_queries 10^6": ({"num_queries": 10**6}, "num_queries 1000000 is out of range"),
    "d_model 10^5": ({"d_model": 10**5}, "d_model 100000 is out of range: it takes an integer from 1 to 8192"),
    "heads 0": ({"decoder_attention_heads": 0}, "decoder_attention_heads 0 is out of range"),
    "encoder widths": ({"encoder_hidden_dim": 10**6}, "encoder_hidden_dim 1000000 is out of range"),
    "ffn 10^6": ({"decoder_ffn_dim": 10**6}, "decoder_ffn_dim 1000000 is out of range"),
    "depths 10^6": ({"depths": [10**6, 1, 1, 1]}, "depths [1000000, 1, 1, 1] is out of range"),
    "dropout 2": ({"dropout": 2}, "dropout 2 is out of range: it takes a rate in [0, 1)"),
}


@pytest.mark.parametrize("case", sorted(DETECTOR_OVERRIDES))
def test_detector_overrides_out_of_range_are_refused(case):
    overrides, expected = DETECTOR_OVERRIDES[case]
    args = ModelArguments(task="object-detection", variant="atto", config_overrides=json.dumps(overrides))
    with pytest.raises(UserInputError) as refusal:
        detector_overrides(args)
    assert str(refusal.value).startswith(f"--config_overrides: {expected}")
    assert "\n" not in str(refusal.value)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"pool_scales": [0]}, "pool_scales [0] is out of range: it takes a list of integers from 1 to 64"),
        ({"pool_scales": []}, "pool_scales [] is out of range"),
        ({"hidden_size": 0}, "hidden_size 0 is out of range"),
        ({"auxiliary_loss_weight": float("nan")}, "auxiliary_loss_weight NaN is out of range"),
        ({"auxiliary_channels": 10**6}, "auxiliary_channels 1000000 is out of range"),
    ],
)
def test_upernet_overrides_out_of_range_are_refused(overrides, expected):
    args = ModelArguments(task="semantic-segmentation", variant="atto", config_overrides=json.dumps(overrides))
    with pytest.raises(UserInputError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        split_overrides(args)


def test_overrides_within_range_pass():
    args = ModelArguments(task="object-detection", variant="atto",
                          config_overrides='{"num_queries": 10, "decoder_layers": 1, "d_model": 64}')  # fmt: skip
    head, backbone = detector_overrides(args)
    assert head == {"num_queries": 10, "decoder_layers": 1, "d_model": 64} and backbone == {}


def test_non_finite_numbers_anywhere_are_refused():
    with pytest.raises(UserInputError, match=r"x: backbone_config.layer_norm_eps is .* not a finite number"):
        check_config_ranges({"backbone_config": {"layer_norm_eps": float("inf")}}, "x")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--threshold", "nan"], "--threshold nan is out of range: it takes a score threshold in [0, 1)"),
        (["--threshold", "1.5"], "--threshold 1.5 is out of range: it takes a score threshold in [0, 1)"),
        (["-b", "100000000000"], "--batch_size 100000000000 is out of range: it takes an integer from 1 to 65536"),
    ],
)
def test_evaluate_flags_out_of_range_are_refused_in_one_line(tmp_path, capsys, flags, expected):
    argv = ["evaluate", "--model", str(tmp_path), "--validation_dir", str(tmp_path), "--output_dir",
            str(tmp_path / "out"), *flags]  # fmt: skip
    assert cli_main(argv) == 2
    assert capsys.readouterr().err == f"convnext-hf evaluate: error: {expected}.\n"
    assert not (tmp_path / "out").exists()


def test_detector_folder_with_a_30000_pixel_processor_is_refused_before_resizing(tmp_path):
    transformers.RTDetrImageProcessor(size={"height": 30000, "width": 30000}).save_pretrained(tmp_path)
    with pytest.raises(UserInputError) as refusal:
        load_image_processor(tmp_path)
    assert str(refusal.value) == (
        f"--model {tmp_path}: the image processor's size.height 30000 is out of range: it takes an integer from 1 to "
        "4096 pixels; fix preprocessor_config.json."
    )


def test_processor_normalisation_is_checked():
    with pytest.raises(UserInputError, match="image_std .* is out of range"):
        check_processor_ranges({"image_std": [0.2, 0.0, 0.2]}, "m")
    check_processor_ranges({"size": {"shortest_edge": 224}, "crop_pct": 0.875, "image_std": [0.2, 0.2, 0.2]}, "m")


def test_detector_folder_config_out_of_range_is_refused(tmp_path):
    backbone = transformers.ResNetConfig(out_features=["stage2", "stage3", "stage4"])
    transformers.RTDetrConfig(backbone_config=backbone, num_queries=10).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert load_config(tmp_path).num_queries == 10
    (tmp_path / "config.json").write_text(json.dumps({**config, "decoder_layers": 0}))
    with pytest.raises(UserInputError, match=r"\(config.json\): decoder_layers 0 is out of range"):
        load_config(tmp_path)


def test_export_refuses_a_folder_whose_processor_or_config_asks_for_30000_pixels(tmp_path):
    from convnext_hf import ConvNextConfig, ConvNextForImageClassification, ConvNextHFImageProcessor
    from convnext_hf.export.graph import load_exportable

    ConvNextForImageClassification(ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_labels=2)).save_pretrained(
        tmp_path
    )
    ConvNextHFImageProcessor(size={"shortest_edge": 32}).save_pretrained(tmp_path)
    assert load_exportable(tmp_path).image_size == 32
    processor = json.loads((tmp_path / "preprocessor_config.json").read_text())
    huge = {"height": 30000, "width": 30000}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({**processor, "crop_size": huge}))
    with pytest.raises(UserInputError, match="crop_size.height 30000 is out of range"):
        load_exportable(tmp_path)
    (tmp_path / "preprocessor_config.json").unlink()
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "image_size": 30000}))
    with pytest.raises(UserInputError, match=r"\(config.json\): image_size 30000 is out of range"):
        load_exportable(tmp_path)


def test_a_billion_classes_in_config_json_is_refused_before_any_label_map(tmp_path):
    """Found by the fuzzer: transformers builds id2label for num_labels before any check (a MemoryError)."""
    from convnext_hf import ConvNextConfig

    ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1]).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_labels": 10**9}))
    with pytest.raises(UserInputError, match=r"num_labels 1000000000 is out of range: it takes a number of classes"):
        load_config(tmp_path)
