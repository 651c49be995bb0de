"""portable_head: a head over our backbone becomes one over transformers' built-in ConvNext / ConvNextV2 with the same
outputs when the built-in expresses it, so that its saved folder loads where convnext_hf is not installed."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from convnext_hf import ConvNextBackbone, ConvNextConfig, portable_head
from convnext_hf.backbone_weights import find_backbone
from convnext_hf.errors import UserInputError
from convnext_hf.portable import needs_convnext_hf_sentence
from helpers import FIXTURES, HEADS, build_head, conversion_cache, golden_expected

SIZES = {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 2, 1, 1]}
V1 = dict(SIZES)
V2 = dict(SIZES, use_grn=True, layer_scale_init_value=0.0)
PIXELS = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """Perturb every tensor, as training would, so that no output depends on initial values (ones, zeros)."""
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.05 * torch.randn(tensor.shape, generator=generator))
    return model


@pytest.mark.parametrize("variant", [V1, V2], ids=["v1", "v2"])
@pytest.mark.parametrize("head", sorted(HEADS))
def test_an_expressible_backbone_becomes_the_builtin_with_the_same_features(head, variant):
    model = trained_like(build_head(head, ConvNextConfig(**variant)))
    path, ours = find_backbone(model)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    with torch.no_grad():
        expected = ours(PIXELS).feature_maps
    assert portable_head(model) is model
    _, builtin = find_backbone(model)
    builtin_class = transformers.ConvNextV2Backbone if variant is V2 else transformers.ConvNextBackbone
    assert type(builtin) is builtin_class and model.get_submodule(path) is builtin
    assert model.config.backbone_config is builtin.config
    assert model.config.backbone_config.model_type == ("convnextv2" if variant is V2 else "convnext")
    assert builtin.out_features == ours.out_features and not builtin.training
    after = model.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[name], before[name]) for name in before)
    with torch.no_grad():
        actual = builtin(PIXELS).feature_maps
    for got, want in zip(actual, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert needs_convnext_hf_sentence(model.config) is None


@pytest.mark.parametrize("head", ["upernet", "rt_detr"])
def test_a_portable_head_saves_and_reloads_with_the_same_outputs(head, tmp_path):
    model = trained_like(build_head(head, ConvNextConfig(**V1)))
    with torch.no_grad():
        expected = model(PIXELS)
    portable_head(model).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["backbone_config"]["model_type"] == "convnext"
    assert "convnext_hf" not in (tmp_path / "config.json").read_text() and not list(tmp_path.glob("*.py"))
    reloaded = type(model).from_pretrained(tmp_path).eval()
    assert type(find_backbone(reloaded)[1]) is transformers.ConvNextBackbone
    with torch.no_grad():
        actual = reloaded(PIXELS)
    for name in ("logits", "pred_boxes"):
        if name in expected:
            torch.testing.assert_close(actual[name], expected[name], atol=1e-5, rtol=0)


def test_an_inexpressible_backbone_stays_and_the_card_says_why():
    for variant, reason in (
        (dict(SIZES, layer_norm_eps=1e-5), "LayerNorm eps 1e-05"),
        (dict(SIZES, stem_type="overlap_tiered"), "overlap_tiered stem"),
    ):
        model = build_head("upernet", ConvNextConfig(**variant))
        assert type(portable_head(model).backbone) is ConvNextBackbone
        assert model.config.backbone_config.model_type == "convnext_hf"
        sentence = needs_convnext_hf_sentence(model.config)
        assert reason in sentence and "`import convnext_hf`" in sentence and "KeyError: 'convnext_hf'" in sentence


def test_a_bare_backbone_is_not_a_head():
    with pytest.raises(UserInputError, match="bare backbone, not a head; .*save_as_transformers"):
        portable_head(ConvNextBackbone(ConvNextConfig(**V1)))


def test_frozen_parameters_stay_frozen():
    model = build_head("detr", ConvNextConfig(**V1))
    _, backbone = find_backbone(model)
    backbone.embeddings.requires_grad_(False)
    portable_head(model)
    _, builtin = find_backbone(model)
    frozen = sorted(name for name, parameter in builtin.named_parameters() if not parameter.requires_grad)
    assert frozen and frozen == sorted(f"embeddings.{name}" for name, _ in builtin.embeddings.named_parameters())


# Loads the folders where convnext_hf cannot be imported, and writes their outputs on the given inputs.
PLAIN_TRANSFORMERS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["convnext_hf"] = None  # as on a machine where the package is not installed
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForObjectDetection, AutoModelForSemanticSegmentation

    upernet_folder, detector_folder, inputs_path, out_path = sys.argv[1:]
    inputs = load_file(inputs_path)
    upernet = AutoModelForSemanticSegmentation.from_pretrained(upernet_folder).eval()
    detector = AutoModelForObjectDetection.from_pretrained(detector_folder).eval()
    with torch.no_grad():
        segmented = upernet(inputs["upernet"])
        detected = detector(inputs["detector"])
    save_file({
        "upernet_logits": segmented.logits.contiguous(),
        "detector_logits": detected.logits.contiguous(),
        "detector_boxes": detected.pred_boxes.contiguous(),
    }, out_path)
    print(type(upernet.backbone).__module__, type(detector.model.backbone.model).__module__)
    """
)


@pytest.mark.slow
def test_converted_upernet_and_rt_detr_load_with_plain_transformers(tmp_path_factory, tmp_path):
    """Subprocess without convnext_hf: a converted ADE20K UperNet and an RT-DETR over our backbone give the same
    outputs as in this process."""
    upernet_folder = conversion_cache(tmp_path_factory, FIXTURES)("upernet-mini.fb-ade20k.pth")
    detector = trained_like(build_head("rt_detr", ConvNextConfig(**V1)))
    detector_folder = tmp_path / "rt-detr"
    portable_head(detector).save_pretrained(detector_folder)
    golden = golden_expected("upernet-mini")
    inputs = {"upernet": golden["input_0"], "detector": PIXELS}
    save_file(inputs, tmp_path / "inputs.safetensors")
    upernet = transformers.AutoModelForSemanticSegmentation.from_pretrained(upernet_folder).eval()
    with torch.no_grad():
        segmented, detected = upernet(inputs["upernet"]), detector(inputs["detector"])
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1", PYTHONNOUSERSITE="1")
    out_path = tmp_path / "outputs.safetensors"
    result = subprocess.run(
        [sys.executable, "-c", PLAIN_TRANSFORMERS_SCRIPT, str(upernet_folder), str(detector_folder),
         str(tmp_path / "inputs.safetensors"), str(out_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["transformers.models.convnext.modeling_convnext"] * 2
    remote = load_file(out_path)
    torch.testing.assert_close(remote["upernet_logits"], segmented.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(remote["upernet_logits"], golden["logits_0"], atol=1e-5, rtol=0)
    torch.testing.assert_close(remote["detector_logits"], detected.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(remote["detector_boxes"], detected.pred_boxes, atol=1e-5, rtol=0)
