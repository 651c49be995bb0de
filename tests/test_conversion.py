"""The converter on the golden checkpoints: every layout converts, reloads through the Auto classes and reproduces the
official outputs; bad or unsafe input is refused and leaves nothing behind."""

import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from convnext_hf import ConvNextBackbone, ConvNextForImageClassification
from convnext_hf.conversion import converter, verification
from convnext_hf.conversion.architecture import detect_architecture
from convnext_hf.conversion.checkpoint_io import UnsafeCheckpointError, load_checkpoint
from convnext_hf.conversion.labels import labels_for
from convnext_hf.conversion.layouts import detect_layout
from helpers import FIXTURES, conversion_cache, golden_expected, run_convert

LAYOUTS = {
    "mini.fb.pth": "official",
    "mini.timm.safetensors": "timm",
    "mini.mmcls.pth": "mmcls",
    "mini.passl.pdparams": "passl",
    "mini.transformers.safetensors": "transformers",
    "iso-mini.fb.pth": "official-isotropic",
    "upernet-mini.fb-ade20k.pth": "upernet-official",
    "upernet-mini.mmseg.pth": "upernet-mmseg",
}
TOLERANCE = 1e-5


def case_of(file_name: str) -> str:
    return file_name.split(".")[0]



@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Convert a golden file once per module (and target); returns the output folder."""
    return conversion_cache(tmp_path_factory, FIXTURES)


@torch.no_grad()
def golden_diffs(folder, case: str) -> dict[str, float]:
    """Max |diff| to the expected outputs of `case`, for every expected output on every input, loading the folder
    through the Auto classes a user would use."""
    expected = golden_expected(case)
    if case == "upernet-mini":
        segmenter = transformers.AutoModelForSemanticSegmentation.from_pretrained(folder).eval()
        assert isinstance(segmenter.backbone, (ConvNextBackbone, transformers.ConvNextBackbone))
    else:
        classifier = transformers.AutoModelForImageClassification.from_pretrained(folder).eval()
        base = transformers.AutoModel.from_pretrained(folder).eval()
    diffs = {}
    for k in (0, 1):
        pixels = expected[f"input_{k}"]
        if case == "upernet-mini":
            actual = {"logits": segmenter(pixels).logits}
            actual.update({f"feature{s}": f for s, f in enumerate(segmenter.backbone(pixels).feature_maps, start=1)})
        else:
            outputs = classifier(pixels, output_hidden_states=True)
            trunk = base(pixels)
            actual = {"logits": outputs.logits, "pooled": trunk.pooler_output}
            actual["last_hidden_state"] = trunk.last_hidden_state
            actual.update({f"stage{s}": state for s, state in enumerate(outputs.hidden_states[1:], start=1)})
        for name, value in actual.items():
            if f"{name}_{k}" in expected:
                diffs[f"{name}_{k}"] = (value - expected[f"{name}_{k}"]).abs().max().item()
    missing = {key for key in expected if not key.startswith("input_")} - set(diffs)
    assert not missing, f"outputs not compared: {missing}"
    return diffs


def test_mini_reproduces_logits_pooled_and_stage_outputs_on_every_input(converted):
    diffs = golden_diffs(converted("mini.fb.pth"), "mini")
    names = ("logits", "pooled", "stage1", "stage2", "stage3", "stage4")
    assert set(diffs) == {f"{name}_{k}" for name in names for k in (0, 1)}
    assert max(diffs.values()) < TOLERANCE


def test_iso_mini_reproduces_logits_pooled_and_last_hidden_state_on_every_input(converted):
    diffs = golden_diffs(converted("iso-mini.fb.pth"), "iso-mini")
    assert set(diffs) == {f"{name}_{k}" for name in ("logits", "pooled", "last_hidden_state") for k in (0, 1)}
    assert max(diffs.values()) < TOLERANCE


@pytest.mark.parametrize(
    "file_name, target",
    # The built-in target differs only after the layout is read: one classifier and one UperNet cover it.
    [(name, "convnext_hf") for name in LAYOUTS]
    + [("mini.fb.pth", "transformers"), ("upernet-mini.mmseg.pth", "transformers")],
)
def test_every_golden_layout_converts_and_reproduces_the_expected_outputs(converted, file_name, target):
    folder = converted(file_name, target)
    assert max(golden_diffs(folder, case_of(file_name)).values()) < TOLERANCE
    assert f"**{LAYOUTS[file_name]}** layout" in (folder / "README.md").read_text()


def test_layouts_are_detected_from_the_weights_not_the_file_names(tmp_path):
    for file_name, layout in LAYOUTS.items():
        anonymous = tmp_path / f"weights{''.join(FIXTURES.joinpath(file_name).suffixes[-1:])}"
        shutil.copy(FIXTURES / file_name, anonymous)
        assert detect_layout(load_checkpoint(anonymous).tensors).name == layout


def test_architecture_is_read_from_the_weights(converted):
    mini = json.loads((converted("mini.fb.pth") / "config.json").read_text())
    assert (mini["hidden_sizes"], mini["depths"], mini["isotropic"], len(mini["id2label"])) == (
        [16, 32, 64, 128], [1, 2, 3, 1], False, 7)
    assert mini["layer_scale_init_value"] > 0
    iso = json.loads((converted("iso-mini.fb.pth") / "config.json").read_text())
    assert (iso["hidden_sizes"], iso["depths"], iso["isotropic"], iso["patch_size"], iso["layer_scale_init_value"]) == (
        [32], [3], True, 16, 0.0)
    upernet = json.loads((converted("upernet-mini.mmseg.pth") / "config.json").read_text())
    head = json.loads((FIXTURES / "upernet-mini.head.json").read_text())
    # The official UperNet's backbone is the built-in ConvNext's: stored as such, plain transformers loads it.
    assert upernet["model_type"] == "upernet" and upernet["backbone_config"]["model_type"] == "convnext"
    sizes = ("hidden_size", "auxiliary_channels", "pool_scales")
    assert [upernet[key] for key in sizes] == [head["channels"], head["auxiliary_channels"], head["pool_scales"]]
    assert len(upernet["id2label"]) == head["num_labels"]
    assert upernet["backbone_config"]["depths"] == head["depths"]
    assert upernet["backbone_config"]["out_indices"] == [1, 2, 3, 4]


def test_transformers_target_is_the_builtin_convnext_without_remote_code(converted):
    folder = converted("mini.fb.pth", "transformers")
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "convnext" and "auto_map" not in config
    assert not list(folder.glob("*.py"))
    model = transformers.AutoModelForImageClassification.from_pretrained(folder)
    assert type(model) is transformers.ConvNextForImageClassification
    upernet_folder = converted("upernet-mini.mmseg.pth", "transformers")
    upernet = transformers.AutoModelForSemanticSegmentation.from_pretrained(upernet_folder)
    assert type(upernet.backbone) is transformers.ConvNextBackbone


def test_transformers_target_refuses_isotropic_models(tmp_path, capsys):
    output = tmp_path / "iso"
    status = run_convert("--checkpoint", FIXTURES / "iso-mini.fb.pth", "--output", output, "--target", "transformers")
    assert status == 2
    assert "cannot express an isotropic ConvNeXt" in capsys.readouterr().err
    assert not output.exists() and list(tmp_path.iterdir()) == []


def test_converted_folders_convert_again_in_the_transformers_layout(converted, tmp_path):
    """The transformers layout is read back for every task: classifier (isotropic too) and UperNet."""
    for file_name in ("iso-mini.fb.pth", "upernet-mini.fb-ade20k.pth"):
        output = tmp_path / case_of(file_name)
        assert run_convert("--checkpoint", converted(file_name), "--output", output) == 0
        assert "**transformers** layout" in (output / "README.md").read_text()
        assert max(golden_diffs(output, case_of(file_name)).values()) < TOLERANCE


def test_headless_checkpoints_become_a_feature_extractor_or_a_backbone(tmp_path):
    official = torch.load(FIXTURES / "mini.fb.pth", weights_only=True)["model"]
    save_file({k: v for k, v in official.items() if not k.startswith("head.")}, tmp_path / "trunk.safetensors")
    assert run_convert("--checkpoint", tmp_path / "trunk.safetensors", "--output", tmp_path / "trunk") == 0
    expected = golden_expected("mini")
    model = transformers.AutoModel.from_pretrained(tmp_path / "trunk").eval()
    with torch.no_grad():
        assert (model(expected["input_1"]).pooler_output - expected["pooled_1"]).abs().max() < TOLERANCE

    dense = torch.load(FIXTURES / "upernet-mini.fb-ade20k.pth", weights_only=True)["state_dict"]
    save_file({k: v for k, v in dense.items() if k.startswith("backbone.")}, tmp_path / "backbone.safetensors")
    assert run_convert("--checkpoint", tmp_path / "backbone.safetensors", "--output", tmp_path / "backbone") == 0
    expected = golden_expected("upernet-mini")
    # AutoBackbone.from_pretrained cannot take local folders in transformers 5.23 (it asks the Hub first).
    assert json.loads((tmp_path / "backbone" / "config.json").read_text())["architectures"] == ["ConvNextBackbone"]
    backbone = ConvNextBackbone.from_pretrained(tmp_path / "backbone").eval()
    with torch.no_grad():
        features = backbone(expected["input_1"]).feature_maps
    for stage, feature in enumerate(features, start=1):
        assert (feature - expected[f"feature{stage}_1"]).abs().max() < TOLERANCE


def official_with(tmp_path, edit) -> str:
    state = torch.load(FIXTURES / "mini.fb.pth", weights_only=True)["model"]
    edit(state)
    path = tmp_path / "edited.pth"
    torch.save({"model": state}, path)
    return path


@pytest.mark.parametrize(
    "edit, listed",
    [
        (lambda s: s.update({"stages.1.0.extra.weight": torch.zeros(3)}), "unexpected (1): stages.1.0.extra.weight"),
        (lambda s: s.pop("norm.bias"), "missing (1): convnext.layernorm.bias"),
        (lambda s: s.update({"stages.0.0.gamma": torch.ones(5)}),
         "convnext.encoder.stages.0.layers.0.layer_scale_parameter: checkpoint (5,) vs model (16,)"),
    ],
    ids=["unexpected", "missing", "shape"],
)
def test_weights_that_do_not_all_map_are_refused_with_the_keys_listed(tmp_path, capsys, edit, listed):
    source = official_with(tmp_path, edit)
    assert run_convert("--checkpoint", source, "--output", tmp_path / "out") == 2
    error = capsys.readouterr().err
    assert "do not map one-to-one" in error and listed in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edited.pth"]


def test_verification_catches_a_wrong_mapping_and_writes_nothing(tmp_path, capsys, monkeypatch):
    """Swap two LayerNorms of equal size: every key maps and every shape fits, only the forward pass can tell."""
    correct = converter.official_to_transformers

    def swapped(task, isotropic):
        return [("downsample_layers.0.1.{p}", "convnext.encoder.stages.0.layers.0.layernorm.{p}"),
                ("stages.0.0.norm.{p}", "convnext.embeddings.layernorm.{p}"), *correct(task, isotropic)]

    monkeypatch.setattr(converter, "official_to_transformers", swapped)
    assert run_convert("--checkpoint", FIXTURES / "mini.fb.pth", "--output", tmp_path / "out") == 2
    assert "differs from the reference forward" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    assert run_convert("--checkpoint", FIXTURES / "mini.fb.pth", "--output", tmp_path / "out", "--no-verify") == 0
    assert "was **not** verified" in (tmp_path / "out" / "README.md").read_text()


def test_reference_forward_is_the_official_one():
    """The verification reference itself reproduces the golden outputs (bit-exact to the official code)."""
    for file_name in ("mini.fb.pth", "iso-mini.fb.pth"):
        official = load_checkpoint(FIXTURES / file_name).tensors
        arch = detect_architecture(official)
        expected = golden_expected(case_of(file_name))
        outputs = verification.reference_outputs(arch, official, expected["input_1"])
        assert (outputs["logits"] - expected["logits_1"]).abs().max() < TOLERANCE
    dense = load_checkpoint(FIXTURES / "upernet-mini.fb-ade20k.pth").tensors
    expected = golden_expected("upernet-mini")
    outputs = verification.reference_outputs(detect_architecture(dense), dense, expected["input_1"])
    assert (outputs["logits"] - expected["logits_1"]).abs().max() < TOLERANCE


class RunsCode:
    """Unpickling this object would run a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("container", ["torch-zip", "torch-legacy", "pdparams"])
def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path, capsys, container):
    marker = tmp_path / "code-ran"
    payload = {"model": {"downsample_layers.0.0.weight": RunsCode(marker)}}
    if container == "torch-zip":
        source = tmp_path / "evil.pth"
        torch.save(payload, source)
    elif container == "torch-legacy":
        source = tmp_path / "evil.pth"
        source.write_bytes(pickle.dumps(payload, protocol=2))  # torch's legacy, non-zip format
    else:
        source = tmp_path / "evil.pdparams"
        source.write_bytes(pickle.dumps({"backbone.stages.0.0.pwconv1.weight": RunsCode(marker)}))
    with pytest.raises(UnsafeCheckpointError, match="[Rr]efusing"):
        load_checkpoint(source)
    assert run_convert("--checkpoint", source, "--output", tmp_path / "out") == 2
    error = capsys.readouterr().err
    assert "Refusing" in error and "system" in error
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_pdparams_loader_rebuilds_only_numeric_arrays(tmp_path):
    passl = load_checkpoint(FIXTURES / "mini.passl.pdparams").tensors
    assert "StructuredToParameterName@@" not in passl and passl["head.fc_cls.weight"].shape == (128, 7)
    (tmp_path / "strings.pdparams").write_bytes(pickle.dumps({"w": np.array(["a", "b"])}))
    with pytest.raises(ValueError, match="not a numeric array"):
        load_checkpoint(tmp_path / "strings.pdparams")


def test_existing_output_is_refused_unless_overwrite(tmp_path, capsys):
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    assert run_convert("--checkpoint", FIXTURES / "mini.fb.pth", "--output", output) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in output.iterdir()) == ["keep.txt"]
    assert run_convert("--checkpoint", FIXTURES / "mini.fb.pth", "--output", output, "--overwrite") == 0
    assert not (output / "keep.txt").exists() and (output / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_weights_are_safetensors_only_and_sharded_when_large(tmp_path):
    output = tmp_path / "sharded"
    status = run_convert("--checkpoint", FIXTURES / "mini.mmcls.pth", "--output", output, "--max_shard_size", "400KB")
    assert status == 0
    shards = sorted(p.name for p in output.glob("*.safetensors"))
    assert len(shards) > 1 and (output / "model.safetensors.index.json").is_file()
    assert {p.suffix for p in output.iterdir()} <= {".safetensors", ".json", ".py", ".md"}
    assert not any(name.endswith((".bin", ".pth", ".pt", ".pkl")) for name in os.listdir(output))
    assert max(golden_diffs(output, "mini").values()) < TOLERANCE
    weights = {}
    for shard in shards:
        weights.update(load_file(output / shard))
    official = torch.load(FIXTURES / "mini.mmcls.pth", weights_only=True)["state_dict"]
    assert torch.equal(weights["convnext.layernorm.weight"], official["backbone.norm3.weight"])


def test_passl_linear_weights_are_transposed(converted):
    passl = load_checkpoint(FIXTURES / "mini.passl.pdparams").tensors
    weights = load_file(converted("mini.passl.pdparams") / "model.safetensors")
    assert torch.equal(weights["classifier.weight"], passl["head.fc_cls.weight"].t())
    assert torch.equal(weights["convnext.encoder.stages.2.layers.1.pwconv1.weight"],
                       passl["backbone.stages.2.1.pwconv1.weight"].t())


def test_labels_come_from_package_data_by_number_of_classes():
    assert labels_for(1000).id2label[0] == "tench, Tinca tinca" and len(labels_for(1000).id2label) == 1000
    imagenet_22k = labels_for(21841)
    assert imagenet_22k.dataset == "imagenet-22k" and imagenet_22k.id2label[0] == "organism, being"
    assert len(imagenet_22k.id2label) == 21841
    assert labels_for(150).id2label[0] == "wall" and labels_for(150).dataset == "ade20k-150"
    assert labels_for(7).id2label == {i: f"LABEL_{i}" for i in range(7)} and labels_for(7).dataset is None


def test_a_1000_class_head_gets_the_imagenet_labels(tmp_path):
    output = tmp_path / "imagenet"
    def imagenet_head(state):
        state.update({"head.weight": torch.randn(1000, 128), "head.bias": torch.zeros(1000)})

    source = official_with(tmp_path, imagenet_head)
    assert run_convert("--checkpoint", source, "--output", output, "--no-verify") == 0
    model = ConvNextForImageClassification.from_pretrained(output)
    assert model.config.id2label[1] == "goldfish, Carassius auratus" and model.config.num_labels == 1000


@pytest.mark.parametrize("resolution, crop_pct", [(224, 0.875), (288, 0.875), (384, 1.0), (512, 1.0)])
def test_processor_config_follows_the_resolution(tmp_path, resolution, crop_pct):
    output = tmp_path / "out"
    source = FIXTURES / "mini.fb.pth"
    assert run_convert("--checkpoint", source, "--output", output, "--resolution", resolution, "--no-verify") == 0
    processor = json.loads((output / "preprocessor_config.json").read_text())
    assert processor["size"] == {"shortest_edge": resolution} and processor["crop_pct"] == crop_pct
    assert processor["resample"] == 3  # bicubic, as the official evaluation
    assert processor["image_mean"] == [0.485, 0.456, 0.406] and processor["image_std"] == [0.229, 0.224, 0.225]
    assert transformers.AutoImageProcessor.from_pretrained(output).crop_pct == crop_pct


def test_segmentation_gets_a_torchvision_free_processor(converted):
    folder = converted("upernet-mini.fb-ade20k.pth")
    processor = transformers.AutoImageProcessor.from_pretrained(folder)
    assert type(processor).__name__ == "SegformerImageProcessorPil"
    assert processor.size == {"height": 224, "width": 224}
    pixels = processor(np.zeros((40, 60, 3), dtype=np.uint8), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 224, 224)


def test_a_transformers_folder_keeps_its_labels(tmp_path):
    folder = tmp_path / "builtin"
    folder.mkdir()
    shutil.copy(FIXTURES / "mini.transformers.config.json", folder / "config.json")
    shutil.copy(FIXTURES / "mini.transformers.safetensors", folder / "model.safetensors")
    assert run_convert("--checkpoint", folder, "--output", tmp_path / "out") == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == "convnext_hf" and config["id2label"]["6"] == "class_6"
    assert max(golden_diffs(tmp_path / "out", "mini").values()) < TOLERANCE


@pytest.mark.parametrize(
    "option, message",
    [(("--resolution", "0"), "resolution must be a positive number of pixels"),
     (("--tolerance", "0"), "tolerance must be positive")],
)
def test_bad_options_are_refused_before_anything_is_written(tmp_path, capsys, option, message):
    assert run_convert("--checkpoint", FIXTURES / "mini.fb.pth", "--output", tmp_path / "out", *option) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
