"""COCO detection checkpoints (official and mmdetection releases) convert to their ConvNeXt backbone: the four feature
maps after the per-stage norms match the golden outputs, and the detector's neck and heads are dropped by name and
listed in the converter's output and the model card."""

import contextlib
import io
import json
import urllib.error
import urllib.request

import pytest
import torch
import transformers
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from convnext_hf import ConvNextBackbone
from convnext_hf.conversion import reference
from convnext_hf.conversion.checkpoint_io import load_checkpoint
from convnext_hf.conversion.layouts import detect_layout
from convnext_hf.conversion.zoo import load_zoo
from convnext_hf.conversion.zoo_table import render_zoo_table
from helpers import FIXTURES, golden_expected, max_diff, run_convert

RELEASES = {"det-mini.fb-coco.pth": "coco-official", "det-mini.mmdet.pth": "coco-mmdet"}
TOLERANCE = 1e-5
# What the golden Cascade Mask R-CNN holds besides its backbone, module by module, with its number of tensors.
DROPPED = {
    "neck.lateral_convs": 8, "neck.fpn_convs": 8, "rpn_head.rpn_conv": 2, "rpn_head.rpn_cls": 2, "rpn_head.rpn_reg": 2,
    "roi_head.bbox_head": 90, "roi_head.mask_head": 36,
}
MMCLS_BLOCK_NAMES = {"dwconv": "depthwise_conv", "pwconv1": "pointwise_conv1", "pwconv2": "pointwise_conv2"}


def convert_printing(*argv) -> tuple[int, str]:
    """`convnext-hf convert ARGV` and what it printed."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = run_convert(*argv)
    return status, stdout.getvalue()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Each golden release converted once: its folder and the converter's output."""
    results = {}
    for file_name in RELEASES:
        output = tmp_path_factory.mktemp("coco") / file_name
        status, printed = convert_printing("--checkpoint", FIXTURES / file_name, "--output_dir", output)
        assert status == 0
        results[file_name] = output, printed
    return results


@torch.no_grad()
def feature_diffs(backbone: transformers.PreTrainedModel) -> dict[str, float]:
    """Max |diff| of the backbone's four feature maps to the golden ones, on both golden inputs."""
    expected = golden_expected("det-mini")
    diffs = {}
    for k in (0, 1):
        for stage, feature in enumerate(backbone(expected[f"input_{k}"]).feature_maps, start=1):
            diffs[f"feature{stage}_{k}"] = max_diff(feature, expected[f"feature{stage}_{k}"])
    return diffs


def official_v2(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The golden detector as a ConvNeXt V2 would store it: GRN (1, 1, 1, 4C) in every block, no layer scale."""
    generator = torch.Generator().manual_seed(0)
    v2 = {key: value for key, value in state.items() if not key.endswith(".gamma")}
    for key, value in state.items():
        if key.endswith(".pwconv1.weight"):
            block = key.removesuffix(".pwconv1.weight")
            for name in ("gamma", "beta"):
                v2[f"{block}.grn.{name}"] = 0.5 * torch.randn(1, 1, 1, value.shape[0], generator=generator)
    return v2


def as_mmdet(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official backbone names in mmcls' spelling (as mmdetection saves them); GRN as mmpretrain stores it, (4C,)."""
    renamed = {}
    for key, value in state.items():
        parts = key.split(".")
        if key.startswith("backbone.stages."):
            parts[4] = MMCLS_BLOCK_NAMES.get(parts[4], parts[4])
            value = value.flatten() if parts[4] == "grn" else value
        renamed[".".join(parts)] = value
    return renamed


@pytest.mark.parametrize("file_name", RELEASES)
def test_both_coco_releases_convert_to_a_backbone_with_the_golden_feature_maps(converted, file_name):
    folder, printed = converted[file_name]
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["ConvNextBackbone"]
    assert config["out_features"] == ["stage1", "stage2", "stage3", "stage4"]
    weights = load_file(folder / "model.safetensors")
    assert {key for key in weights if key.startswith("hidden_states_norms.")} == {
        f"hidden_states_norms.stage{k}.{p}" for k in range(1, 5) for p in ("weight", "bias")}
    assert not [key for key in weights if key.startswith(("neck", "rpn", "roi", "backbone."))]
    diffs = feature_diffs(ConvNextBackbone.from_pretrained(folder))
    assert len(diffs) == 8 and max(diffs.values()) <= TOLERANCE, diffs
    assert f"{RELEASES[file_name]} layout; verified" in printed


def test_the_transformers_target_is_the_builtin_backbone(tmp_path):
    assert run_convert("--checkpoint", FIXTURES / "det-mini.mmdet.pth", "--output_dir", tmp_path / "out",
                       "--target", "transformers") == 0
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model_type"] == "convnext"
    backbone = transformers.ConvNextBackbone.from_pretrained(tmp_path / "out")
    assert max(feature_diffs(backbone).values()) <= TOLERANCE


@pytest.mark.parametrize("file_name", RELEASES)
def test_dropped_modules_are_listed_in_the_output_and_the_card(converted, file_name):
    folder, printed = converted[file_name]
    listing = ", ".join(f"{module} ({count} tensors)" for module, count in DROPPED.items())
    assert f"dropped (no transformers counterpart): {listing}\n" in printed
    card = (folder / "README.md").read_text()
    assert "\n".join(f"- `{module}` ({count} tensors)" for module, count in DROPPED.items()) in card
    assert "outside the modules listed below mapped one-to-one" in card and "**Verified**" in card
    assert f"**{RELEASES[file_name]}** layout" in card


def test_the_layout_is_read_from_the_weights_and_other_unknown_keys_are_still_refused(tmp_path, capsys):
    for file_name, layout in RELEASES.items():
        assert detect_layout(load_checkpoint(FIXTURES / file_name).tensors).name == layout
    checkpoint = torch.load(FIXTURES / "det-mini.fb-coco.pth", weights_only=True)
    checkpoint["state_dict"]["bbox_head.retina_cls.weight"] = torch.zeros(3)  # a single-stage head: not dropped
    torch.save(checkpoint, tmp_path / "retina.pth")
    assert run_convert("--checkpoint", tmp_path / "retina.pth", "--output_dir", tmp_path / "out") == 2
    assert "unexpected (1): bbox_head.retina_cls.weight" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_with_optimizer_state_and_meta_converts_its_weights_only(tmp_path):
    """A training checkpoint as mmdet's runner saves it: real AdamW state (step counts, moments) next to the weights;
    read with weights_only loading, and only `state_dict` is converted."""
    checkpoint = torch.load(FIXTURES / "det-mini.fb-coco.pth", weights_only=True)
    parameters = [value.clone().requires_grad_() for value in checkpoint["state_dict"].values()
                  if value.is_floating_point()]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05)
    sum(parameter.square().sum() for parameter in parameters).backward()
    optimizer.step()
    checkpoint["optimizer"] = optimizer.state_dict()
    checkpoint["meta"] |= {"env_info": "sys.platform: linux", "config": "model = dict(type='CascadeRCNN')", "iter": 7}
    torch.save(checkpoint, tmp_path / "with_optimizer.pth")
    assert len(torch.load(tmp_path / "with_optimizer.pth", weights_only=True)["optimizer"]["state"]) == len(parameters)

    assert run_convert("--checkpoint", tmp_path / "with_optimizer.pth", "--output_dir", tmp_path / "out") == 0
    assert max(feature_diffs(ConvNextBackbone.from_pretrained(tmp_path / "out")).values()) <= TOLERANCE


@pytest.mark.parametrize("layout", ["coco-official", "coco-mmdet"])
def test_convnext_v2_detectors_convert_with_grn(tmp_path, layout):
    state = official_v2(torch.load(FIXTURES / "det-mini.fb-coco.pth", weights_only=True)["state_dict"])
    source = state if layout == "coco-official" else as_mmdet(state)
    torch.save({"meta": {}, "state_dict": source}, tmp_path / "v2.pth")
    assert detect_layout(source).name == layout

    status, printed = convert_printing("--checkpoint", tmp_path / "v2.pth", "--output_dir", tmp_path / "out")
    assert status == 0 and "ConvNeXt V2 (GRN)" in printed and "without layer scale" in printed
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["use_grn"] is True and config["layer_scale_init_value"] == 0.0
    backbone = ConvNextBackbone.from_pretrained(tmp_path / "out").eval()
    pixels = golden_expected("det-mini")["input_1"]
    with torch.no_grad():
        actual = backbone(pixels).feature_maps
    expected = reference.dense_features(state, pixels)
    assert max(max_diff(a, b) for a, b in zip(actual, expected, strict=True)) <= TOLERANCE


COCO_OFFICIAL = {  # facebookresearch/ConvNeXt object_detection/README.md: box AP, mask AP
    "mask_rcnn_convnext_tiny_1k_3x": (46.2, 41.7),
    "cascade_mask_rcnn_convnext_tiny_1k_3x": (50.4, 43.7),
    "cascade_mask_rcnn_convnext_small_1k_3x": (51.9, 45.0),
    "cascade_mask_rcnn_convnext_base_1k_3x": (52.7, 45.6),
    "cascade_mask_rcnn_convnext_base_22k_3x": (54.0, 46.9),
    "cascade_mask_rcnn_convnext_large_22k_3x": (54.8, 47.6),
    "cascade_mask_rcnn_convnext_xlarge_22k_3x": (55.2, 47.7),
}


def test_the_zoo_lists_the_coco_checkpoints_with_their_reported_ap(capsys):
    zoo = load_zoo()
    official = {name: entry for name, entry in zoo.items() if entry.format == "official-coco"}
    assert {name: (e.reported_box_ap, e.reported_mask_ap) for name, e in official.items()} == COCO_OFFICIAL
    for name, entry in official.items():
        assert entry.url == f"https://dl.fbaipublicfiles.com/convnext/coco/{name}.pth"
        assert entry.detector == ("Mask R-CNN" if name.startswith("mask_rcnn") else "Cascade Mask R-CNN")
        assert entry.num_labels == 0 and entry.finetune_dataset == "coco"
    mmdet = [entry for entry in zoo.values() if entry.format == "mmdet-coco"]
    assert [(e.variant, e.detector, e.reported_box_ap, e.reported_mask_ap) for e in mmdet] == [
        ("tiny", "Mask R-CNN", 46.2, 41.7), ("tiny", "Cascade Mask R-CNN", 50.3, 43.6),
        ("small", "Cascade Mask R-CNN", 51.8, 44.8)]
    assert all(entry.url.startswith("https://download.openmmlab.com/mmdetection/v2.0/convnext/") for entry in mmdet)
    assert ("| `cascade_mask_rcnn_convnext_tiny_1k_3x` | official-coco | tiny | 800 | 1k → COCO "
            "| 50.4 box / 43.7 mask AP | 86 | 741 |") in render_zoo_table(zoo)


def test_a_coco_model_without_a_local_checkpoint_names_its_url_offline(tmp_path, capsys, monkeypatch):
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    name = "cascade_mask_rcnn_convnext_tiny_1k_3x"
    assert run_convert("--model", name, "--output_dir", tmp_path / "out", "--cache_dir", tmp_path / "cache") == 2
    error = capsys.readouterr().err
    assert f"Could not download https://dl.fbaipublicfiles.com/convnext/coco/{name}.pth" in error
    assert "--checkpoint PATH" in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_the_card_of_a_zoo_entry_gives_the_reported_ap_of_the_whole_detector(tmp_path):
    record = {
        "name": "cascade_mini", "source": "facebookresearch/ConvNeXt", "format": "official-coco",
        "task": "object-detection", "variant": "mini", "hidden_sizes": [16, 32, 64, 128], "depths": [1, 1, 2, 1],
        "resolution": 800, "num_labels": 0, "pretrain_dataset": "imagenet-1k", "finetune_dataset": "coco",
        "detector": "Cascade Mask R-CNN", "reported_box_ap": 50.4, "reported_mask_ap": 43.7, "params_m": 86,
        "gflops": 741, "url": (FIXTURES / "det-mini.fb-coco.pth").as_uri(),
    }
    (tmp_path / "zoo.json").write_text(json.dumps({"checkpoints": [record]}))
    assert run_convert("--model", "cascade_mini", "--zoo", tmp_path / "zoo.json", "--output_dir", tmp_path / "out",
                       "--cache_dir", tmp_path / "cache") == 0
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.license == "mit" and card.data.pipeline_tag == "image-feature-extraction"
    assert card.data.datasets == ["ILSVRC/imagenet-1k", "detection-datasets/coco"]
    assert card.data.eval_results is None  # the AP is the whole detector's, not this backbone's
    assert "box AP **50.4**, mask AP **43.7**" in card.text and "Cascade Mask R-CNN (3× schedule)" in card.text
    assert "| parameters reported by the authors (the whole detector) | 86 M |" in card.text
    assert "| detector trained with this backbone | Cascade Mask R-CNN |" in card.text


def real_size_detector(widths, depths) -> dict[str, torch.Tensor]:
    """Random weights of a real-size Cascade Mask R-CNN's backbone in the official COCO release's names (trained-like
    layer scale, per-stage norms), with a few tensors of each detector module."""
    generator = torch.Generator().manual_seed(0)

    def random(*shape, scale=0.05, offset=0.0):
        return offset + scale * torch.randn(*shape, generator=generator)

    state = {"backbone.downsample_layers.0.0.weight": random(widths[0], 3, 4, 4, scale=0.2),
             "backbone.downsample_layers.0.0.bias": random(widths[0])}
    for i, (width, depth) in enumerate(zip(widths, depths, strict=True)):
        norm = "backbone.downsample_layers.0.1" if i == 0 else f"backbone.downsample_layers.{i}.0"
        before = widths[max(i - 1, 0)]
        state |= {f"{norm}.weight": random(before, offset=1.0), f"{norm}.bias": random(before)}
        if i:
            state |= {f"backbone.downsample_layers.{i}.1.weight": random(width, before, 2, 2),
                      f"backbone.downsample_layers.{i}.1.bias": random(width)}
        for j in range(depth):
            block = f"backbone.stages.{i}.{j}"
            state |= {f"{block}.dwconv.weight": random(width, 1, 7, 7), f"{block}.dwconv.bias": random(width),
                      f"{block}.norm.weight": random(width, offset=1.0), f"{block}.norm.bias": random(width),
                      f"{block}.pwconv1.weight": random(4 * width, width),
                      f"{block}.pwconv1.bias": random(4 * width),
                      f"{block}.pwconv2.weight": random(width, 4 * width),
                      f"{block}.pwconv2.bias": random(width), f"{block}.gamma": random(width, scale=0.1, offset=0.2)}
        state |= {f"backbone.norm{i}.weight": random(width, offset=1.0), f"backbone.norm{i}.bias": random(width)}
    for k, width in enumerate(widths):
        state |= {f"neck.lateral_convs.{k}.conv.weight": random(256, width, 1, 1)}
    state |= {"rpn_head.rpn_conv.weight": random(256, 256, 3, 3), "rpn_head.rpn_cls.weight": random(3, 256, 1, 1)}
    for stage in range(3):
        state |= {f"roi_head.bbox_head.{stage}.fc_cls.weight": random(81, 1024),
                  f"roi_head.mask_head.{stage}.conv_logits.weight": random(80, 256, 1, 1)}
    return state


@pytest.mark.slow
@pytest.mark.parametrize("model, layout", [
    ("cascade_mask_rcnn_convnext_tiny_1k_3x", "coco-official"),
    ("cascade_mask_rcnn_convnext-t_p4_w7_fpn_giou_4conv1f_fp16_ms-crop_3x_coco", "coco-mmdet"),
])
def test_real_size_coco_checkpoints_convert_within_1e_4_of_the_official_forward(tmp_path, model, layout):
    state = real_size_detector((96, 192, 384, 768), (3, 3, 9, 3))
    source = state if layout == "coco-official" else as_mmdet(state)
    torch.save({"meta": {"mmdet_version": "2.11.0"}, "state_dict": source, "optimizer": {"state": {},
                "param_groups": []}}, tmp_path / "detector.pth")
    status, printed = convert_printing("--model", model, "--checkpoint", tmp_path / "detector.pth",
                                       "--output_dir", tmp_path / "out")
    assert status == 0 and f"{layout} layout; verified" in printed
    backbone = ConvNextBackbone.from_pretrained(tmp_path / "out").eval()
    pixels = torch.randn(1, 3, 224, 320, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        actual = backbone(pixels).feature_maps
    expected = reference.dense_features(state, pixels)
    assert [feature.shape[1] for feature in actual] == [96, 192, 384, 768]
    assert max(max_diff(a, b) for a, b in zip(actual, expected, strict=True)) <= 1e-4
    assert "box AP **50." in (tmp_path / "out" / "README.md").read_text()
