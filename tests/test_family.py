"""The rest of the ConvNeXt family on the golden checkpoints of timm's and transformers' own code: ConvNeXt V2
(official, FCMAE, timm, transformers), timm's V1 variants (conv_mlp, ols, hnf, MLP head) and DINOv3. Every case converts
through the command line, reloads through the Auto classes and reproduces logits, pooled and stage outputs; what the
configuration cannot express is refused by name."""

import json
import shutil

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from convnext_hf import ConvNextConfig, ConvNextForImageClassification, ConvNextModel
from convnext_hf.conversion.checkpoint_io import load_checkpoint
from convnext_hf.conversion.converter import UnsupportedVariantError, convert
from convnext_hf.conversion.layouts import detect_layout
from convnext_hf.transformers_format import save_as_transformers
from helpers import FIXTURES, conversion_cache, golden_expected, run_convert

FAMILY = FIXTURES / "family"
TOLERANCE = 1e-5

# file -> (golden case, layout detected from the weights)
CASES = {
    "v2-mini.fb-v2.pt": ("v2-mini", "official"),
    "v2-mini.fcmae.pt": ("v2-mini", "official-v2-fcmae"),
    "v2-mini.timm": ("v2-mini", "timm"),
    "v2-mini.timm/model.safetensors": ("v2-mini", "timm"),
    "v2-mini.transformers.safetensors": ("v2-mini", "transformers"),
    "v2-convmlp-mini.timm": ("v2-convmlp-mini", "timm"),
    "convmlp-mini.timm": ("convmlp-mini", "timm"),
    "ols-mini.timm": ("ols-mini", "timm"),
    "hnf-mini.timm": ("hnf-mini", "timm"),
    "mlphead-mini.timm": ("mlphead-mini", "timm"),
    "dinov3-mini.dinov3.pth": ("dinov3-mini", "official"),
    "dinov3-mini.transformers.safetensors": ("dinov3-mini", "dinov3_convnext"),
}
# What the built-in ConvNext / ConvNextV2 can express (no ols stem, no hnf, no MLP head).
BUILTIN_EXPRESSIBLE = [
    "v2-mini.fb-v2.pt", "v2-mini.fcmae.pt", "v2-mini.timm", "v2-convmlp-mini.timm", "convmlp-mini.timm",
    "dinov3-mini.transformers.safetensors",
]
# The FCMAE encoder has no final LayerNorm and no head: only its stage outputs are the V2 model's.
FCMAE_OUTPUTS = ("stage1", "stage2", "stage3", "stage4")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Convert a golden checkpoint once per module and target; returns the output folder."""
    return conversion_cache(tmp_path_factory, FAMILY)


@torch.no_grad()
def outputs_of(folder, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    """logits (with a head), pooled, stage outputs and DINOv3-style patch tokens, loaded as a user would."""
    config = transformers.AutoConfig.from_pretrained(folder)
    base = transformers.AutoModel.from_pretrained(folder).eval()
    trunk = base(pixels, output_hidden_states=True)
    outputs = {f"stage{k}": state for k, state in enumerate(trunk.hidden_states[1:], start=1)}
    outputs["pooled"] = trunk.pooler_output
    if config.architectures[0].endswith("ForImageClassification"):
        outputs["logits"] = transformers.AutoModelForImageClassification.from_pretrained(folder).eval()(pixels).logits
    if not getattr(config, "head_norm_first", False):
        outputs["patch_tokens"] = base.layernorm(trunk.last_hidden_state.flatten(2).transpose(1, 2))
    return outputs


def golden_diffs(folder, case: str, names: tuple[str, ...] | None = None) -> dict[str, float]:
    expected = golden_expected(case, FAMILY)
    diffs = {}
    for k in (0, 1):
        for name, value in outputs_of(folder, expected[f"input_{k}"]).items():
            if f"{name}_{k}" in expected and (names is None or name in names):
                diffs[f"{name}_{k}"] = (value - expected[f"{name}_{k}"]).abs().max().item()
    wanted = {key for key in expected if not key.startswith("input_") and (names is None or key[:-2] in names)}
    assert set(diffs) == wanted, f"outputs not compared: {wanted - set(diffs)}"
    return diffs


@pytest.mark.parametrize(
    "file_name, target",
    [(name, "convnext_hf") for name in CASES] + [(name, "transformers") for name in BUILTIN_EXPRESSIBLE],
)
def test_every_family_layout_converts_and_reproduces_the_expected_outputs(converted, file_name, target):
    case, layout = CASES[file_name]
    folder = converted(file_name, target)
    names = FCMAE_OUTPUTS if layout == "official-v2-fcmae" else None
    assert max(golden_diffs(folder, case, names).values()) < TOLERANCE
    assert f"**{layout}** layout" in (folder / "README.md").read_text()


def test_layouts_are_detected_from_the_weights(tmp_path):
    for file_name, (_, layout) in CASES.items():
        source = FAMILY / file_name
        weights = source / "model.safetensors" if source.is_dir() else source
        anonymous = tmp_path / f"weights{weights.suffix}"
        shutil.copy(weights, anonymous)
        assert detect_layout(load_checkpoint(anonymous).tensors).name == layout, file_name


def test_config_reads_the_variant_from_the_weights_and_the_timm_config(converted):
    def config(file_name):
        return json.loads((converted(file_name) / "config.json").read_text())

    v2 = config("v2-mini.fb-v2.pt")
    assert (v2["use_grn"], v2["layer_scale_init_value"], v2["hidden_sizes"], v2["depths"]) == (
        True, 0.0, [16, 32, 64, 128], [1, 2, 3, 1])
    assert config("ols-mini.timm")["stem_type"] == "overlap_tiered"
    assert config("hnf-mini.timm")["head_norm_first"] is True
    assert config("mlphead-mini.timm")["head_hidden_size"] == 128
    assert config("convmlp-mini.timm")["use_grn"] is False
    processor = json.loads((converted("hnf-mini.timm") / "preprocessor_config.json").read_text())
    assert (processor["crop_pct"], processor["resample"]) == (0.95, 3)


def test_transformers_target_writes_the_builtin_convnextv2(converted):
    folder = converted("v2-mini.fb-v2.pt", "transformers")
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "convnextv2" and "auto_map" not in config
    model = transformers.ConvNextV2ForImageClassification.from_pretrained(folder).eval()
    expected = golden_expected("v2-mini", FAMILY)
    with torch.no_grad():
        assert (model(expected["input_1"]).logits - expected["logits_1"]).abs().max() < TOLERANCE


def builtin_v2_folder(tmp_path):
    folder = tmp_path / "builtin-v2"
    folder.mkdir()
    shutil.copy(FAMILY / "v2-mini.transformers.safetensors", folder / "model.safetensors")
    shutil.copy(FAMILY / "v2-mini.transformers.config.json", folder / "config.json")
    return folder


def test_v2_round_trips_with_the_builtin_convnextv2(tmp_path):
    expected = golden_expected("v2-mini", FAMILY)
    ours, info = ConvNextForImageClassification.from_pretrained(builtin_v2_folder(tmp_path), output_loading_info=True)
    assert not any(info.values()), info
    assert ours.config.use_grn and ours.config.layer_scale_init_value == 0
    save_as_transformers(ours, tmp_path / "back")
    builtin = transformers.AutoModelForImageClassification.from_pretrained(tmp_path / "back")
    assert type(builtin) is transformers.ConvNextV2ForImageClassification
    with torch.no_grad():
        for model in (ours.eval(), builtin.eval()):
            assert (model(expected["input_0"]).logits - expected["logits_0"]).abs().max() < TOLERANCE


def test_dinov3_pooled_equals_the_builtin_pooler_output(converted, tmp_path):
    builtin_folder = tmp_path / "dinov3"
    builtin_folder.mkdir()
    shutil.copy(FAMILY / "dinov3-mini.transformers.safetensors", builtin_folder / "model.safetensors")
    shutil.copy(FAMILY / "dinov3-mini.transformers.config.json", builtin_folder / "config.json")
    builtin = transformers.DINOv3ConvNextModel.from_pretrained(builtin_folder).eval()
    ours = ConvNextModel.from_pretrained(converted("dinov3-mini.dinov3.pth")).eval()
    pixels = golden_expected("dinov3-mini", FAMILY)["input_1"]
    with torch.no_grad():
        reference = builtin(pixels)
        output = ours(pixels)
        patch_tokens = ours.layernorm(output.last_hidden_state.flatten(2).transpose(1, 2))
    assert (output.pooler_output - reference.pooler_output).abs().max() < TOLERANCE
    assert (patch_tokens - reference.last_hidden_state[:, 1:]).abs().max() < TOLERANCE


@pytest.mark.parametrize("file_name", ["dinov3-mini.dinov3.pth", "v2-mini.fcmae.pt"])
def test_feature_extraction_pipeline_on_a_converted_feature_extractor(converted, file_name):
    extractor = transformers.pipeline("image-feature-extraction", model=str(converted(file_name)), pool=True)
    from PIL import Image

    image = Image.new("RGB", (80, 64), (120, 40, 200))
    features = torch.tensor(extractor(image))
    assert features.shape == (1, 128)
    model = ConvNextModel.from_pretrained(converted(file_name)).eval()
    pixels = extractor.image_processor(image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        assert (features - model(pixels).pooler_output).abs().max() < TOLERANCE


def timm_without_norm_biases(tmp_path, with_config: bool):
    """timm's `norm_layer="simplenorm"` layout: every normalization stores a weight and no bias."""
    tensors = load_file(FAMILY / "convmlp-mini.timm" / "model.safetensors")
    norms = [key.removesuffix("weight") for key, value in tensors.items() if key.endswith("weight") and value.ndim == 1]
    for name in norms:
        del tensors[f"{name}bias"]
    folder = tmp_path / "rms"
    folder.mkdir()
    save_file(tensors, folder / "model.safetensors")
    if with_config:
        config = json.loads((FAMILY / "convmlp-mini.timm" / "config.json").read_text())
        config["architecture"] = "convnext_atto_rms"
        config["model_args"]["norm_layer"] = "simplenorm"
        (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("with_config", [True, False])
def test_rms_norm_variants_are_refused_by_name(tmp_path, capsys, with_config):
    folder = timm_without_norm_biases(tmp_path, with_config)
    with pytest.raises(UnsupportedVariantError) as error:
        convert(load_checkpoint(folder))
    message = str(error.value)
    assert ("norm_layer='simplenorm'" in message) if with_config else ("RMSNorm / SimpleNorm" in message)
    assert run_convert("--checkpoint", folder, "--output_dir", tmp_path / "out") == 2
    assert not (tmp_path / "out").exists()
    assert "Refusing to convert" in capsys.readouterr().err


def test_optimized_v2_matches_the_eager_model_and_the_golden_outputs(converted):
    folder = converted("v2-mini.fb-v2.pt")
    expected = golden_expected("v2-mini", FAMILY)
    eager = ConvNextForImageClassification.from_pretrained(folder).eval()
    fast = ConvNextForImageClassification.from_pretrained(folder).optimize_for_inference()
    with torch.no_grad():
        for k in (0, 1):
            pixels = expected[f"input_{k}"]
            logits = fast(pixels).logits
            assert (logits - eager(pixels).logits).abs().max() < 1e-4
            assert (logits - expected[f"logits_{k}"]).abs().max() < 1e-4


def test_v2_presets_have_the_papers_sizes():
    # ConvNeXt V2 paper, Table 10 (parameters in millions at 1000 classes).
    paper = {"v2-atto": 3.7, "v2-femto": 5.2, "v2-pico": 9.1, "v2-nano": 15.6, "v2-tiny": 28.6, "v2-base": 89,
             "v2-large": 198, "v2-huge": 660}
    from convnext_hf.complexity import count_parameters

    for variant, params_m in paper.items():
        config = ConvNextConfig.from_variant(variant, num_labels=1000)
        assert config.use_grn and config.layer_scale_init_value == 0
        assert count_parameters(config) / 1e6 == pytest.approx(params_m, rel=0.01)


def test_tiered_stem_width_follows_timm():
    # timm: make_divisible(dims[0] // 2, 8) for the mid width of the overlapping tiered stem.
    widths = {16: 8, 40: 24, 48: 24, 64: 32, 80: 40, 96: 48}
    for width, mid in widths.items():
        config = ConvNextConfig(hidden_sizes=[width, 2 * width], depths=[1, 1], stem_type="overlap_tiered")
        assert config.stem_mid_channels == mid


def test_fine_tuning_from_an_fcmae_folder_with_the_v2_recipe(converted, tmp_path):
    from PIL import Image

    from convnext_hf.tasks.classification.model import build_model
    from convnext_hf.train import parse_args, run

    fcmae = converted("v2-mini.fcmae.pt")
    for index, (name, color) in enumerate({"red": (200, 0, 0), "blue": (0, 0, 200)}.items()):
        (tmp_path / "train" / name).mkdir(parents=True)
        for k in range(2):
            pixel = tuple(c + 10 * k + index for c in color)
            Image.new("RGB", (32, 32), pixel).save(tmp_path / "train" / name / f"{k}.png")
    argv = ["--recipe", "v2-finetune", "--model_name_or_path", str(fcmae), "--train_dir", str(tmp_path / "train"),
            "--image_size", "32", "--per_device_train_batch_size", "4", "--max_steps", "1", "--report_to", "none",
            "--plots", "false", "--cache_dir", str(tmp_path / "cache"), "--output_dir", str(tmp_path / "out")]
    args = parse_args(argv)
    recipe = (args.recipe.layer_decay, args.recipe.layer_decay_type, args.training.num_train_epochs)
    assert recipe == (0.9, "single", 600)
    assert args.training.learning_rate == 8e-4 and args.model.head_init_scale == 0.001
    model = build_model(args.model, ["blue", "red"])
    trunk = load_file(fcmae / "model.safetensors")
    loaded = model.convnext.state_dict()
    assert set(trunk) == set(loaded)
    assert all(torch.equal(loaded[name], value) for name, value in trunk.items())
    run(args)
    trained = ConvNextForImageClassification.from_pretrained(tmp_path / "out")
    assert trained.config.use_grn and trained.config.id2label == {0: "blue", 1: "red"}


@pytest.mark.parametrize("file_name", ["hnf-mini.timm", "ols-mini.timm", "mlphead-mini.timm", "v2-mini.fb-v2.pt"])
def test_a_converted_folder_converts_again_to_the_same_model(converted, tmp_path, file_name):
    case, _ = CASES[file_name]
    output = tmp_path / "again"
    assert run_convert("--checkpoint", converted(file_name), "--output_dir", output) == 0
    assert max(golden_diffs(output, case).values()) < TOLERANCE


def test_open_clip_tower_converts_its_timm_trunk(tmp_path):
    """open_clip keeps a plain timm ConvNeXt under `visual.trunk.`, beside CLIP's projection and text tower."""
    trunk = load_file(FAMILY / "v2-mini.timm" / "model.safetensors")
    tensors = {f"visual.trunk.{key}": value for key, value in trunk.items() if not key.startswith("head.fc.")}
    tensors.update({"visual.head.proj.weight": torch.ones(8, 128), "text_projection": torch.ones(8, 8)})
    save_file(tensors, tmp_path / "open_clip_model.safetensors")
    conversion = convert(load_checkpoint(tmp_path / "open_clip_model.safetensors"))
    assert conversion.layout.name == "open_clip" and isinstance(conversion.model, ConvNextModel)
    expected = golden_expected("v2-mini", FAMILY)
    with torch.no_grad():
        pooled = conversion.model(expected["input_1"]).pooler_output
    assert (pooled - expected["pooled_1"]).abs().max() < TOLERANCE


def test_timm_pretrained_cfg_sets_the_image_processor(tmp_path):
    folder = tmp_path / "timm"
    shutil.copytree(FAMILY / "ols-mini.timm", folder)
    config = json.loads((folder / "config.json").read_text())
    config["pretrained_cfg"].update(input_size=[3, 160, 160], interpolation="bilinear", mean=[0.5] * 3, std=[0.25] * 3)
    (folder / "config.json").write_text(json.dumps(config))
    processor = convert(load_checkpoint(folder)).processor
    assert processor.size["shortest_edge"] == 160 and processor.crop_pct == 0.95 and processor.resample == 2
    assert list(processor.image_mean) == [0.5] * 3 and list(processor.image_std) == [0.25] * 3


def test_gated_zoo_entries_name_the_download_and_are_skipped_by_model_all(tmp_path, capsys):
    from convnext_hf.conversion.zoo import load_zoo

    zoo = load_zoo()
    dinov3 = zoo["dinov3_convnext_tiny_pretrain_lvd1689m"]
    assert (dinov3.task, dinov3.license, dinov3.license_name) == ("image-feature-extraction", "other", "DINOv3 License")
    assert zoo["convnextv2_tiny_1k_224_fcmae"].task == "image-feature-extraction"
    assert zoo["convnextv2_tiny_22k_384_ema"].license == "cc-by-nc-4.0"
    assert run_convert("--model", dinov3.name, "--output_dir", tmp_path / "one") == 2
    assert "facebook/dinov3-convnext-tiny-pretrain-lvd1689m" in capsys.readouterr().err
    registry = tmp_path / "zoo.json"
    registry.write_text(json.dumps({"checkpoints": [json.loads(json.dumps(dinov3.__dict__ | {
        "hidden_sizes": list(dinov3.hidden_sizes), "depths": list(dinov3.depths), "license": "DINOv3 License"}))]}))
    assert run_convert("--model", "all", "--zoo", registry, "--output_dir", tmp_path / "all") == 0
    assert "0 converted, 0 failed, 1 skipped (gated downloads)." in capsys.readouterr().out


def test_a_zoo_checkpoint_converts_with_its_card(tmp_path):
    """The FCMAE golden file as `convnextv2_atto_1k_224_fcmae` would be: a feature extractor under CC-BY-NC-4.0."""
    from convnext_hf.conversion.zoo import load_zoo

    entry = load_zoo()["convnextv2_atto_1k_224_fcmae"]
    record = entry.__dict__ | {"hidden_sizes": [16, 32, 64, 128], "depths": [1, 2, 3, 1], "license": "CC-BY-NC-4.0",
                               "url": (FAMILY / "v2-mini.fcmae.pt").as_uri()}
    registry = tmp_path / "zoo.json"
    registry.write_text(json.dumps({"checkpoints": [record]}))
    output = tmp_path / "out"
    assert run_convert("--model", entry.name, "--zoo", registry, "--output_dir", output,
                       "--cache_dir", tmp_path / "cache") == 0
    card = (output / "README.md").read_text()
    assert "license: cc-by-nc-4.0" in card and "pipeline_tag: image-feature-extraction" in card
    assert "ConvNeXt V2: Co-designing and Scaling ConvNets" in card


FAMILY_CONFIGS = {
    "v2": {"use_grn": True, "layer_scale_init_value": 0.0},
    "ols-hnf": {"stem_type": "overlap_tiered", "head_norm_first": True},
    "mlp-head": {"head_hidden_size": 24, "layer_norm_eps": 1e-5},
}


@pytest.mark.parametrize("variant", FAMILY_CONFIGS)
def test_family_models_train_save_batch_and_export(variant, tmp_path):
    """transformers' common-test questions (see test_modeling_conventions.py) asked of each family option."""
    config = ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 2, 1], num_labels=5, **FAMILY_CONFIGS[variant])
    pixels = torch.rand(3, 3, 64, 64)
    model = ConvNextForImageClassification(config).train()
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.3)  # GRN's zero init would hide it from every output
    model(pixels, labels=torch.tensor([0, 4, 2])).loss.backward()
    assert [name for name, parameter in model.named_parameters() if parameter.grad is None] == []
    model.eval().save_pretrained(tmp_path)
    loaded = ConvNextForImageClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        logits = model(pixels).logits
        assert (loaded(pixels).logits - logits).abs().max() == 0
        alone = torch.cat([model(pixels[i : i + 1]).logits for i in range(3)])
        assert (alone - logits).abs().max() < 1e-5
        exported = torch.export.export(model, (pixels,)).module()(pixels)
    exported_logits = exported["logits"] if isinstance(exported, dict) else exported[0]
    assert exported_logits.shape == logits.shape and (exported_logits - logits).abs().max() < 1e-5
