"""Linear probing and partial fine-tuning (frozen backbone, last stages trainable), and the learning rate by batch."""

import json

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file

from convnext_hf import ConvNextConfig, ConvNextForImageClassification, ConvNextHFImageProcessor
from convnext_hf.errors import UserInputError
from convnext_hf.train import parse_args, run
from convnext_hf.train.arguments import build_parser

CLASSES = ("blue", "green", "red")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A saved classifier for the three classes, and a folder of their images."""
    root = tmp_path_factory.mktemp("partial")
    torch.manual_seed(0)
    labels = {"id2label": dict(enumerate(CLASSES)), "label2id": {name: index for index, name in enumerate(CLASSES)}}
    config = ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], layer_scale_init_value=0.5, **labels)
    ConvNextForImageClassification(config).save_pretrained(root / "model")
    ConvNextHFImageProcessor(size={"shortest_edge": 32}).save_pretrained(root / "model")
    rng = np.random.default_rng(0)
    for channel, name in enumerate(CLASSES):
        (root / "images" / name).mkdir(parents=True)
        for index in range(4):
            pixels = rng.integers(0, 90, size=(24, 24, 3))
            pixels[..., 2 - channel] += 150
            Image.fromarray(pixels.astype(np.uint8)).save(root / "images" / name / f"{index}.png")
    return root


def _train(pretrained, output_dir, *extra):
    argv = [
        "--train_dir", str(pretrained / "images"), "--model_name_or_path", str(pretrained / "model"),
        "--output_dir", str(output_dir), "--max_steps", "3", "--per_device_train_batch_size", "4",
        "--learning_rate", "1e-2", "--train_val_split", "0", "--cache_dir", str(pretrained / "cache"),
        "--report_to", "none", "--plots", "false", *extra,
    ]  # fmt: skip
    run(parse_args(argv))
    return load_file(pretrained / "model" / "model.safetensors"), load_file(output_dir / "model.safetensors")


def test_freeze_backbone_trains_the_head_only(pretrained, tmp_path):
    before, after = _train(pretrained, tmp_path / "probe", "--freeze_backbone")
    trunk = [key for key in before if key.startswith("convnext.")]
    assert len(trunk) > 20
    for key in trunk:
        assert torch.equal(before[key], after[key]), f"{key} moved under --freeze_backbone"
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])
    card = ModelCard.load(tmp_path / "probe" / "README.md")
    assert "| trained | heads only (frozen backbone: linear probe) |" in card.text


def test_unfreeze_last_stages_trains_those_stages_too(pretrained, tmp_path):
    before, after = _train(pretrained, tmp_path / "partial", "--freeze_backbone", "--unfreeze_last_stages", "1")
    moved = {key for key in before if not torch.equal(before[key], after[key])}
    assert any(key.startswith("convnext.encoder.stages.3.") for key in moved)
    assert "convnext.layernorm.weight" in moved, "the norm after the last stage trains with it"
    assert not any(key.startswith(("convnext.embeddings.", "convnext.encoder.stages.0.", "convnext.encoder.stages.1.",
                                   "convnext.encoder.stages.2.")) for key in moved)  # fmt: skip
    with pytest.raises(UserInputError, match="goes with --freeze_backbone"):
        _train(pretrained, tmp_path / "refused", "--unfreeze_last_stages", "1")
    with pytest.raises(UserInputError, match="not between 0 and the model's 4 stages"):
        _train(pretrained, tmp_path / "refused", "--freeze_backbone", "--unfreeze_last_stages", "5")


def test_base_learning_rate_scales_with_the_total_batch(pretrained, tmp_path, caplog):
    extra = ["--base_learning_rate", "4e-3", "--gradient_accumulation_steps", "2", "--lr_scheduler_type", "constant",
             "--logging_steps", "1"]  # fmt: skip
    with caplog.at_level("INFO"):
        _train(pretrained, tmp_path / "scaled", *extra)
    expected = 4e-3 * (4 * 1 * 2) / 4096
    assert "Learning rate 7.81e-06 = base learning rate 0.004 × total batch 8 / 4096" in caplog.text
    state = json.loads((tmp_path / "scaled" / "trainer_state.json").read_text())
    rates = [entry["learning_rate"] for entry in state["log_history"] if "learning_rate" in entry]
    assert rates and all(rate == pytest.approx(expected) for rate in rates)
    card = ModelCard.load(tmp_path / "scaled" / "README.md")
    assert "| learning rate | 7.81e-06 (base 0.004 × 8 / 4096) |" in card.text
    assert "total batch / 4096" in " ".join(build_parser([]).format_help().split()), "the help states the rule"
