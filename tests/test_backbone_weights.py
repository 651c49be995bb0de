"""load_backbone_weights: a saved ConvNeXt (ours or the built-in, classification, backbone or converted) into the
backbone of every transformers head that takes one, bit for bit, and refused by name when it is another network."""

import json

import pytest
import torch
import transformers
from safetensors.torch import load_file

from convnext_hf import (
    ConvNextBackbone,
    ConvNextConfig,
    ConvNextForImageClassification,
    load_backbone_weights,
)
from convnext_hf.backbone_weights import find_backbone
from convnext_hf.errors import UserInputError
from helpers import BACKBONE_PATHS, FIXTURES, HEADS, build_head, conversion_cache

SIZES = {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 2, 1, 1]}
NORMS = ["stage1", "stage2", "stage3", "stage4"]


def randomized(model: torch.nn.Module) -> torch.nn.Module:
    """The model with every tensor random, so that equality after loading cannot come from initialisation."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.copy_(torch.randn(tensor.shape, generator=generator))
    return model


def assert_backbone_holds(backbone: torch.nn.Module, folder, prefix: str, fresh: tuple[str, ...] = ()) -> None:
    """Every backbone tensor equals the folder's `prefix + name` exactly, but the norms in `fresh` (unit LayerNorm)."""
    saved = load_file(folder / "model.safetensors")
    for name, value in backbone.state_dict().items():
        if name.startswith("hidden_states_norms.") and name.split(".")[1] in fresh:
            expected = torch.ones_like(value) if name.endswith("weight") else torch.zeros_like(value)
        else:
            expected = saved[prefix + name]
        assert torch.equal(value, expected), name


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Saved source folders: our classifier and backbone, the built-in ConvNext and ConvNextV2 classifiers."""
    root = tmp_path_factory.mktemp("sources")
    ours = randomized(ConvNextForImageClassification(ConvNextConfig(**SIZES, num_labels=4)))
    ours.save_pretrained(root / "ours")
    backbone = randomized(ConvNextBackbone(ConvNextConfig(**SIZES, out_indices=[1, 2, 3, 4])))
    backbone.save_pretrained(root / "backbone")
    builtin = transformers.ConvNextForImageClassification(transformers.ConvNextConfig(**SIZES, num_labels=4))
    randomized(builtin).save_pretrained(root / "builtin")
    v2 = transformers.ConvNextV2ForImageClassification(transformers.ConvNextV2Config(**SIZES, num_labels=4))
    randomized(v2).save_pretrained(root / "builtin-v2")
    return root


@pytest.mark.parametrize("backbone_kind", ["convnext_hf", "builtin"])
@pytest.mark.parametrize("head", sorted(HEADS))
def test_every_head_takes_a_classification_folder_bit_for_bit(folders, head, backbone_kind):
    config = ConvNextConfig(**SIZES) if backbone_kind == "convnext_hf" else transformers.ConvNextConfig(**SIZES)
    model = build_head(head, config)
    path, backbone = find_backbone(model)
    assert path == BACKBONE_PATHS[head]
    report = load_backbone_weights(model, folders / "ours")
    # A classifier has no per-stage output norms: they stay as initialised, and its pooled-output norm is unused.
    assert_backbone_holds(backbone, folders / "ours", "convnext.", fresh=tuple(backbone.out_features))
    assert report.backbone_path == path and report.source_prefix == "convnext."
    assert report.norms_loaded == [] and report.norms_initialised == sorted(backbone.out_features)
    assert report.unused == ["layernorm.bias", "layernorm.weight"]
    assert len(report.loaded) + len(report.initialised) == len(backbone.state_dict())
    assert f"freshly initialised: {', '.join(sorted(backbone.out_features))}" in str(report)


@pytest.mark.parametrize("backbone_kind", ["convnext_hf", "builtin"])
def test_a_backbone_folder_brings_its_output_norms(folders, backbone_kind):
    config = ConvNextConfig(**SIZES) if backbone_kind == "convnext_hf" else transformers.ConvNextConfig(**SIZES)
    model = build_head("rt_detr", config)  # stages 2-4: the folder's stage1 norm has no place
    report = load_backbone_weights(model, folders / "backbone")
    assert_backbone_holds(model.model.backbone.model, folders / "backbone", "")
    assert report.source_prefix == "" and report.norms_loaded == ["stage2", "stage3", "stage4"]
    assert report.initialised == []
    assert report.unused == ["hidden_states_norms.stage1.bias", "hidden_states_norms.stage1.weight"]


@pytest.mark.parametrize("backbone_kind", ["convnext_hf", "builtin"])
def test_the_builtin_convnext_and_convnextv2_classifiers_load(folders, backbone_kind):
    v1 = ConvNextConfig(**SIZES) if backbone_kind == "convnext_hf" else transformers.ConvNextConfig(**SIZES)
    model = build_head("upernet", v1)
    assert load_backbone_weights(model, folders / "builtin").source_prefix == "convnext."
    assert_backbone_holds(model.backbone, folders / "builtin", "convnext.", fresh=tuple(NORMS))
    if backbone_kind == "convnext_hf":
        v2 = ConvNextConfig(**SIZES, use_grn=True, layer_scale_init_value=0.0)
    else:
        v2 = transformers.ConvNextV2Config(**SIZES)
    model = build_head("mask2former", v2)
    assert load_backbone_weights(model, folders / "builtin-v2").source_prefix == "convnextv2."
    assert_backbone_holds(model.model.pixel_level_module.encoder, folders / "builtin-v2", "convnextv2.", NORMS)


def test_a_converted_upernet_folder_loads_with_its_output_norms(tmp_path_factory):
    folder = conversion_cache(tmp_path_factory, FIXTURES)("upernet-mini.fb-ade20k.pth")
    backbone_config = json.loads((folder / "config.json").read_text())["backbone_config"]
    sizes = {key: backbone_config[key] for key in ("hidden_sizes", "depths")}
    model = build_head("detr", ConvNextConfig(**sizes))
    report = load_backbone_weights(model, folder)
    assert report.source_prefix == "backbone." and report.norms_loaded == NORMS and report.unused == []
    assert_backbone_holds(model.model.backbone.model, folder, "backbone.")


def test_another_network_is_refused_by_name(folders):
    wider = build_head("upernet", ConvNextConfig(hidden_sizes=[8, 16, 24, 40], depths=[1, 2, 1, 1]))
    with pytest.raises(UserInputError, match=r"shape mismatch \(\d+\): encoder.stages.3.downsampling_layer.1.bias"):
        load_backbone_weights(wider, folders / "ours")
    shallower = build_head("upernet", ConvNextConfig(hidden_sizes=SIZES["hidden_sizes"], depths=[1, 1, 1, 1]))
    with pytest.raises(UserInputError, match=r"not in the backbone \(\d+\): encoder.stages.1.layers.1"):
        load_backbone_weights(shallower, folders / "ours")
    deeper = build_head("upernet", ConvNextConfig(hidden_sizes=SIZES["hidden_sizes"], depths=[1, 2, 2, 1]))
    with pytest.raises(UserInputError, match=r"missing from the source \(\d+\): encoder.stages.2.layers.1"):
        load_backbone_weights(deeper, folders / "ours")
    grn = build_head("upernet", ConvNextConfig(**SIZES, use_grn=True, layer_scale_init_value=0.0))
    with pytest.raises(UserInputError, match="missing from the source .*grn.*not in the backbone .*layer_scale"):
        load_backbone_weights(grn, folders / "ours")
    other_eps = build_head("upernet", ConvNextConfig(**SIZES, layer_norm_eps=1e-5))
    with pytest.raises(UserInputError, match=r"LayerNorm eps 1e-06 vs 1e-05"):
        load_backbone_weights(other_eps, folders / "builtin")


def test_what_is_not_a_convnext_head_or_folder_is_refused(folders, tmp_path):
    with pytest.raises(UserInputError, match="holds no ConvNeXt backbone.*use_timm_backbone=False"):
        load_backbone_weights(transformers.ResNetModel(transformers.ResNetConfig()), folders / "ours")
    model = build_head("upernet", ConvNextConfig(**SIZES))
    pickled = tmp_path / "pickled"
    classifier = ConvNextForImageClassification(ConvNextConfig(**SIZES))
    classifier.config.save_pretrained(pickled)
    torch.save(classifier.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(UserInputError, match=r"pickled: its weights are in pytorch_model.bin, a pickle, which is not"):
        load_backbone_weights(model, pickled)
    with pytest.raises(UserInputError, match="is not a folder"):
        load_backbone_weights(model, tmp_path / "absent")
    not_convnext = tmp_path / "resnet"
    transformers.ResNetModel(transformers.ResNetConfig(hidden_sizes=[8, 8, 8, 8])).save_pretrained(not_convnext)
    with pytest.raises(UserInputError, match="holds no ConvNeXt trunk"):
        load_backbone_weights(model, not_convnext)
