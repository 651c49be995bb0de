"""The fuzzer's numbers that end up in a model: no saved model holds a non-finite tensor, whatever the input.

Hostile inputs that could make NaN or infinite weights (NaN, infinity or 1e38 in a source folder's weights; settings
such as layer_scale_init_value 1e38 or initializer_range 1e30 in --config_overrides; a learning rate of 1e30, a weight
decay of 1e30) go through a real tiny training run in process (an atto-sized ConvNeXt of widths 8-64 on eight 8×8
images, one or two steps). Each run either refuses in one line (exit 2, no model written) or writes folders every
tensor of which, read back with safetensors, is finite.

Profiles as tests/test_fuzz.py; each property runs half the profile's examples (a run takes about a second).
"""

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file, save_file

from convnext_hf import ConvNextConfig, ConvNextForImageClassification, ConvNextHFImageProcessor
from convnext_hf.cli import main as cli_main

TINY = {"hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1]}
HOSTILE_NUMBERS = st.sampled_from([math.nan, math.inf, -math.inf, 1e38, 1e30, -1e30, 1e-38, 0.0, 1e-6, 1.0])
# Settings that scale the initial weights or the normalisation.
SCALES = st.sampled_from(["layer_scale_init_value", "head_init_scale", "initializer_range", "layer_norm_eps",
                          "drop_path_rate"])  # fmt: skip
FLAG_VALUES = {
    "--learning_rate": ["1e30", "1e10", "inf", "nan", "1e-3"],
    "--weight_decay": ["0", "1e30", "nan"],
    "--max_grad_norm": ["0", "1", "1e30"],
    "--label_smoothing_factor": ["0", "0.5"],
    "--max_steps": ["1", "2"],
}
HALF = settings(max_examples=max(settings.default.max_examples // 2, 1))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Eight distinct 8×8 images in two classes."""
    root = tmp_path_factory.mktemp("images")
    for label, name in enumerate(("a", "b")):
        (root / name).mkdir()
        for index in range(4):
            pixels = np.random.default_rng(10 * label + index).integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index}.png")
    return root


@pytest.fixture(scope="module")
def source_folder(tmp_path_factory) -> Path:
    """A tiny two-class classifier folder, as a fine-tuning run starts from."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("source")
    labels = {"id2label": {0: "a", 1: "b"}, "label2id": {"a": 0, "b": 1}}
    ConvNextForImageClassification(ConvNextConfig(**TINY, num_labels=2, **labels)).save_pretrained(folder)
    ConvNextHFImageProcessor(size={"shortest_edge": 32}).save_pretrained(folder)
    return folder


def _saved_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of every safetensors file under `folder` (checkpoints included), by file and name."""
    return {f"{file.relative_to(folder)}:{name}": value for file in sorted(folder.rglob("*.safetensors"))
            for name, value in load_file(file).items()}  # fmt: skip


@HALF
@given(
    poison=st.none() | st.tuples(st.sampled_from([math.nan, math.inf, -math.inf, 1e38]), st.integers(0, 10**6)),
    overrides=st.dictionaries(SCALES, HOSTILE_NUMBERS, max_size=2),
    flags=st.fixed_dictionaries({}, optional={flag: st.sampled_from(values) for flag, values in FLAG_VALUES.items()}),
)
def test_fuzz_no_saved_model_holds_a_non_finite_tensor(data, source_folder, tmp_path_factory, capsys, poison,
                                                       overrides, flags):  # fmt: skip
    work = tmp_path_factory.mktemp("run")
    if poison is None:
        model = ["--variant", "atto", "--config_overrides", json.dumps({**TINY, **overrides}, allow_nan=True)]
    else:
        # A source folder with one number of one tensor replaced (a diverged or tampered checkpoint).
        folder = work / "source"
        folder.mkdir()
        for file in source_folder.iterdir():
            (folder / file.name).write_bytes(file.read_bytes())
        weights = load_file(folder / "model.safetensors")
        name = sorted(weights)[poison[1] % len(weights)]
        weights[name].view(-1)[poison[1] % weights[name].numel()] = poison[0]
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
        model = ["--model_name_or_path", str(folder)]
        if overrides:
            model += ["--config_overrides", json.dumps(overrides, allow_nan=True)]
    output = work / "out"
    argv = ["train", "--train_dir", str(data), *model, "--image_size", "32", "--per_device_train_batch_size", "4",
            "--output_dir", str(output), "--cache_dir", str(work / "cache"), "--plots", "false", "--report_to", "none",
            "--seed", "0", "--max_steps", "1"]  # fmt: skip
    for flag, value in flags.items():
        argv += [flag, value]
    _refused_in_one_line_or_saved_finite(argv, output, capsys)


def _refused_in_one_line_or_saved_finite(argv: list[str], output: Path, capsys: Any) -> None:
    """Run `convnext-hf ARGV`: exit 2 with one line and no weights written, or exit 0 with every saved tensor finite."""
    capsys.readouterr()
    status = cli_main(argv)
    error = capsys.readouterr().err
    assert status in (0, 2), error
    event(f"exit {status}: {error.partition('error: ')[2][:40] or 'saved'}")
    if status == 2:
        lines = [line for line in error.splitlines() if line.startswith("convnext-hf train:")]
        assert len(lines) == 1 and "Traceback" not in error, error
        assert not output.exists() or not list(output.rglob("*.safetensors"))
        return
    tensors = _saved_tensors(output)
    assert any(key.startswith("model.safetensors:") for key in tensors), sorted(tensors)[:3]
    bad = [key for key, value in tensors.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    assert not bad, bad


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> tuple[Path, Path]:
    """Four 64×64 scenes, each with one box, and their COCO file."""
    root = tmp_path_factory.mktemp("coco")
    images, annotations = [], []
    for index in range(4):
        pixels = np.full((64, 64, 3), 60, np.uint8)
        pixels[10 + index : 40 + index, 12:44] = 200
        Image.fromarray(pixels).save(root / f"{index}.png")
        images.append({"id": index, "file_name": f"{index}.png", "width": 64, "height": 64})
        annotations.append({"id": index, "image_id": index, "category_id": 1 + index % 2, "iscrowd": 0,
                            "bbox": [12, 10 + index, 32, 30], "area": 960})  # fmt: skip
    path = root / "annotations.json"
    categories = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return root, path


# RT-DETR's loss weights (transformers' defaults: 1, 5, 2) and its matcher's costs.
LOSS_WEIGHTS = st.sampled_from(["weight_loss_vfl", "weight_loss_bbox", "weight_loss_giou", "matcher_class_cost",
                                "matcher_bbox_cost"])  # fmt: skip


@settings(max_examples=max(settings.default.max_examples // 6, 1))
@given(
    weights=st.dictionaries(LOSS_WEIGHTS, HOSTILE_NUMBERS, min_size=1, max_size=2),
    learning_rate=st.sampled_from(["1e30", "1e-3"]),
)
def test_fuzz_detector_loss_weights_never_save_a_non_finite_tensor(coco, tmp_path_factory, capsys, weights,
                                                                   learning_rate):  # fmt: skip
    """The detector's loss weights (1e38, 1e30, NaN, 0...) through a one-step detection run: refused in one line or
    saved finite. The ci profile runs two examples (a run takes about 3 s)."""
    output = tmp_path_factory.mktemp("detector") / "out"
    overrides = {"hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1], "num_queries": 10, "num_denoising": 5,
                 **weights}  # fmt: skip
    argv = ["train", "--task", "object-detection", "--train_dir", str(coco[0]), "--train_annotations", str(coco[1]),
            "--variant", "atto", "--config_overrides", json.dumps(overrides, allow_nan=True), "--image_size", "64",
            "--max_steps", "1", "--per_device_train_batch_size", "4", "--learning_rate", learning_rate,
            # Two held-out scenes, so that the final evaluation scores more than one image.
            "--train_val_split", "0.5",
            "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none", "--plots", "false",
            "--output_dir", str(output)]  # fmt: skip
    _refused_in_one_line_or_saved_finite(argv, output, capsys)


# The detector's structure: widths, heads, levels and layers that must fit together (each within its bounds alone).
STRUCTURE = {
    "d_model": st.sampled_from([1, 3, 8, 48, 64]),
    "encoder_attention_heads": st.sampled_from([1, 3, 4, 64]),
    "decoder_attention_heads": st.sampled_from([1, 3, 4]),
    "encoder_hidden_dim": st.sampled_from([1, 8, 30]),
    "encoder_in_channels": st.sampled_from([[1, 2], [16, 32, 64], [16, 32, 64, 8]]),
    "encode_proj_layers": st.sampled_from([[0], [2], [5], []]),
    "feat_strides": st.sampled_from([[1, 2], [8, 16, 32], [0, 0, 0]]),
    "num_feature_levels": st.sampled_from([1, 2, 3, 8]),
    "decoder_n_points": st.sampled_from([1, 4, 64]),
    "activation_function": st.sampled_from(["relu", "bogus", ""]),
    "encoder_activation_function": st.sampled_from(["gelu", "bogus"]),
    "hidden_expansion": st.sampled_from([0.5, 1.0, 0.0]),
    "anchor_image_size": st.sampled_from([None, [1, 1], [64, 64]]),
    "decoder_layers": st.sampled_from([1, 2]),
    "encoder_layers": st.sampled_from([0, 1]),
}


@settings(max_examples=max(settings.default.max_examples // 2, 1))
@given(structure=st.fixed_dictionaries({}, optional=STRUCTURE).filter(bool))
def test_fuzz_detector_structure_trains_or_is_refused_in_one_line(coco, tmp_path_factory, capsys, structure):
    """Detector settings that each lie within their bounds but may not fit together (a d_model its heads do not
    divide, feature widths that do not meet) through a one-step detection run: refused in one line before the
    first step (the model's trial on a training image) or trained and saved finite."""
    output = tmp_path_factory.mktemp("structure") / "out"
    overrides = {"hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1], "num_queries": 10, "num_denoising": 5,
                 **structure}  # fmt: skip
    argv = ["train", "--task", "object-detection", "--train_dir", str(coco[0]), "--train_annotations", str(coco[1]),
            "--variant", "atto", "--config_overrides", json.dumps(overrides), "--image_size", "64", "--max_steps", "1",
            "--per_device_train_batch_size", "4", "--train_val_split", "0.5", "--eval_strategy", "no",
            "--save_strategy", "no", "--report_to", "none", "--plots", "false",
            "--output_dir", str(output)]  # fmt: skip
    _refused_in_one_line_or_saved_finite(argv, output, capsys)
