"""portable_head: a head over our backbone becomes one over transformers' built-in ConvNext / ConvNextV2 with the same
outputs when the built-in expresses it, so that its saved folder loads where convnext_hf is not installed."""

import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from convnext_hf import ConvNextBackbone, ConvNextConfig, heads_convnext, portable_head
from convnext_hf.backbone_weights import find_backbone
from convnext_hf.conversion.model_card import usage
from convnext_hf.conversion.naming import SEGMENTATION
from convnext_hf.conversion.targets import CONVNEXT_HF
from convnext_hf.errors import UserInputError
from convnext_hf.portable import needs_convnext_hf_sentence
from helpers import _DETR as DETR_SIZES
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
        assert reason in sentence and "`trust_remote_code=True`" in sentence and "`import convnext_hf`" in sentence
        assert "KeyError: 'convnext_hf'" in sentence


@pytest.mark.parametrize("head", sorted(HEADS))
def test_every_head_with_an_inexpressible_backbone_gets_its_shipped_config_class(head):
    model = build_head(head, ConvNextConfig(**dict(SIZES, layer_norm_eps=1e-5)))
    head_class = type(model.config)
    portable_head(model)
    shipped = type(model.config)
    assert shipped is getattr(heads_convnext, head_class.__name__) and shipped.__mro__[1] is head_class
    assert shipped.__name__ == head_class.__name__ and shipped._auto_class == "AutoConfig"
    assert head_class._auto_class is None  # transformers' own class is untouched


@pytest.mark.parametrize("head", ["upernet", "rt_detr"])
def test_an_inexpressible_head_saves_its_code_and_reloads_with_the_same_outputs(head, tmp_path):
    model = trained_like(build_head(head, ConvNextConfig(**dict(SIZES, stem_type="overlap_tiered"))))
    with torch.no_grad():
        expected = model(PIXELS)
    portable_head(model).save_pretrained(tmp_path)
    assert sorted(path.name for path in tmp_path.glob("*.py")) == [
        "configuration_convnext.py", "heads_convnext.py", "inference_convnext.py", "modeling_convnext.py",
    ]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {"AutoConfig": f"heads_convnext.{type(model.config).__name__}"}
    assert config["model_type"] == head and config["backbone_config"]["model_type"] == "convnext_hf"
    auto_class = transformers.AutoModelForSemanticSegmentation if head == "upernet" else (
        transformers.AutoModelForObjectDetection
    )
    for trust_remote_code in (False, True):
        reloaded = auto_class.from_pretrained(tmp_path, trust_remote_code=trust_remote_code).eval()
        assert type(reloaded) is type(model)
        # Where convnext_hf is imported, the remote code leaves its registration alone: the backbone is ours.
        assert type(find_backbone(reloaded)[1]) is ConvNextBackbone
        assert CONFIG_MAPPING["convnext_hf"] is ConvNextConfig
        with torch.no_grad():
            actual = reloaded(PIXELS)
        for name in ("logits", "pred_boxes"):
            if name in expected:
                torch.testing.assert_close(actual[name], expected[name], atol=1e-5, rtol=0)


def test_the_converted_upernet_card_shows_remote_code_loading_only_for_a_backbone_the_builtin_cannot_express():
    cards = {}
    for eps in (1e-6, 1e-5):
        model = portable_head(build_head("upernet", ConvNextConfig(**dict(SIZES, layer_norm_eps=eps))))
        conversion = SimpleNamespace(arch=SimpleNamespace(task=SEGMENTATION), model=model, target=CONVNEXT_HF)
        cards[eps] = usage(conversion, "me/upernet")
    assert "trust_remote_code" not in cards[1e-6] and "import convnext_hf" not in cards[1e-6]
    assert 'pipe = pipeline("image-segmentation", model=model_id, trust_remote_code=True)' in cards[1e-5]
    assert "model = AutoModelForSemanticSegmentation.from_pretrained(model_id, trust_remote_code=True)" in cards[1e-5]
    assert cards[1e-5].endswith(needs_convnext_hf_sentence(model.config)) and "LayerNorm eps 1e-05" in cards[1e-5]


def test_an_expressible_head_drops_shipped_code_it_was_loaded_with(tmp_path):
    model = build_head("upernet", ConvNextConfig(**V1))
    model.config.__class__ = heads_convnext.UperNetConfig
    model.config.auto_map = {"AutoConfig": "heads_convnext.UperNetConfig"}
    portable_head(model).save_pretrained(tmp_path)
    assert type(model.config) is transformers.UperNetConfig and not list(tmp_path.glob("*.py"))
    assert "auto_map" not in json.loads((tmp_path / "config.json").read_text())


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


# Loads heads that kept our backbone where convnext_hf cannot be imported: refused without trust_remote_code, then
# with it through the Auto classes and the pipelines; writes their outputs and prints what the refusals and the
# pipelines said.
REMOTE_CODE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["convnext_hf"] = None  # as on a machine where the package is not installed
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForObjectDetection, AutoModelForSemanticSegmentation, pipeline

    upernet_folder, rt_detr_folder, detr_folder, image_path, inputs_path, out_path = sys.argv[1:]
    pixels = load_file(inputs_path)["pixels"]
    heads = (
        ("upernet", upernet_folder, AutoModelForSemanticSegmentation, "backbone"),
        ("rt_detr", rt_detr_folder, AutoModelForObjectDetection, "model.backbone.model"),
        ("detr", detr_folder, AutoModelForObjectDetection, "model.backbone.model"),
    )
    outputs, refusals, backbones = {}, {}, []
    # All refusals first: the remote code, once run, registers the convnext_hf backbone for the whole process.
    for name, folder, auto_class, _ in heads:
        try:
            auto_class.from_pretrained(folder)
        except Exception as error:
            refusals[name] = f"{type(error).__name__}: {error}"
    for name, folder, auto_class, backbone in heads:
        model = auto_class.from_pretrained(folder, trust_remote_code=True).eval()
        backbones.append(type(model.get_submodule(backbone)).__module__)
        with torch.no_grad():
            result = model(pixels)
        outputs[name + "_logits"] = result.logits.contiguous()
        if name != "upernet":
            outputs[name + "_boxes"] = result.pred_boxes.contiguous()
    image = Image.open(image_path)
    segments = pipeline("image-segmentation", model=upernet_folder, trust_remote_code=True)(image)
    outputs["upernet_masks"] = torch.from_numpy(np.stack([np.array(segment["mask"]) for segment in segments]))
    detections = pipeline("object-detection", model=rt_detr_folder, trust_remote_code=True, threshold=0.0)(image)
    save_file(outputs, out_path)
    print(json.dumps({
        "refusals": refusals, "backbones": backbones, "labels": [segment["label"] for segment in segments],
        "detections": detections,
    }))
    """
)


@pytest.mark.slow
def test_heads_that_keep_our_backbone_load_with_trust_remote_code_without_convnext_hf(tmp_path):
    """Subprocess without convnext_hf: UperNet (other eps), RT-DETR (tiered stem) and DETR (isotropic) saved through
    portable_head load with trust_remote_code=True, through the Auto classes and the pipelines, with the outputs of
    this process; without it, the error names convnext_hf."""
    isotropic = ConvNextConfig(hidden_sizes=[32], depths=[2], isotropic=True, patch_size=16)
    heads = {
        "upernet": build_head("upernet", ConvNextConfig(**dict(SIZES, layer_norm_eps=1e-5))),
        "rt_detr": build_head("rt_detr", ConvNextConfig(**dict(SIZES, stem_type="overlap_tiered"))),
        "detr": transformers.DetrForObjectDetection(
            transformers.DetrConfig(use_timm_backbone=False, backbone_config=isotropic, **DETR_SIZES)
        ).eval(),
    }
    processors = {
        "upernet": transformers.SegformerImageProcessorPil(size={"height": 64, "width": 64}),
        "rt_detr": transformers.RTDetrImageProcessorPil(size={"height": 64, "width": 64}),
    }
    expected, folders = {}, {}
    for name, model in heads.items():
        trained_like(model)
        with torch.no_grad():
            result = model(PIXELS)
        expected[name + "_logits"] = result.logits
        if name != "upernet":
            expected[name + "_boxes"] = result.pred_boxes
        folders[name] = tmp_path / name
        portable_head(model).save_pretrained(folders[name])
        assert type(find_backbone(model)[1]) is ConvNextBackbone
        if name in processors:
            processors[name].save_pretrained(folders[name])
    image_path = tmp_path / "image.png"
    Image.fromarray(torch.randint(0, 256, (64, 64, 3), generator=torch.Generator().manual_seed(3)).byte().numpy()).save(
        image_path
    )
    segments = transformers.pipeline("image-segmentation", model=str(folders["upernet"]))(str(image_path))
    detections = transformers.pipeline("object-detection", model=str(folders["rt_detr"]), threshold=0.0)(
        str(image_path)
    )
    save_file({"pixels": PIXELS}, tmp_path / "inputs.safetensors")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1", PYTHONNOUSERSITE="1")
    out_path = tmp_path / "outputs.safetensors"
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_CODE_SCRIPT, *(str(folders[name]) for name in heads), str(image_path),
         str(tmp_path / "inputs.safetensors"), str(out_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["refusals"] == dict.fromkeys(heads, "KeyError: 'convnext_hf'")
    assert all(
        module.startswith("transformers_modules.") and module.endswith(".modeling_convnext")
        for module in report["backbones"]
    ) and len(report["backbones"]) == 3
    remote = load_file(out_path)
    for name, tensor in expected.items():
        torch.testing.assert_close(remote[name], tensor, atol=1e-5, rtol=0)
    assert report["labels"] == [segment["label"] for segment in segments]
    # Masks are argmaxes of logits computed in two processes: a pixel whose classes tie to the last bits may flip.
    masks = torch.from_numpy(np.stack([np.array(s["mask"]) for s in segments]))
    assert remote["upernet_masks"].shape == masks.shape
    assert (remote["upernet_masks"] != masks).float().mean().item() <= 1e-3
    assert [d["label"] for d in report["detections"]] == [d["label"] for d in detections] and len(detections) == 5
    for got, want in zip(report["detections"], detections, strict=True):
        assert abs(got["score"] - want["score"]) <= 1e-5
        assert all(abs(got["box"][key] - want["box"][key]) <= 1 for key in want["box"])
