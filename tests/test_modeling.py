import shutil

import pytest
import torch
import torch.nn.functional as F
import transformers

from convnext_hf import ConvNextBackbone, ConvNextConfig, ConvNextForImageClassification, ConvNextModel
from convnext_hf.transformers_format import save_as_transformers, to_transformers
from helpers import FIXTURES, golden_expected, max_diff


@pytest.fixture
def golden_transformers_dir(tmp_path):
    """The golden `mini` weights as transformers' built-in ConvNext saved them."""
    shutil.copy(FIXTURES / "mini.transformers.config.json", tmp_path / "config.json")
    shutil.copy(FIXTURES / "mini.transformers.safetensors", tmp_path / "model.safetensors")
    return tmp_path


def test_golden_weights_match_the_official_outputs_and_the_builtin(golden_transformers_dir):
    ours = ConvNextForImageClassification.from_pretrained(golden_transformers_dir).eval()
    builtin = transformers.ConvNextForImageClassification.from_pretrained(golden_transformers_dir).eval()
    expected = golden_expected("mini")
    for k in (0, 1):
        pixel_values = expected[f"input_{k}"]
        with torch.no_grad():
            out = ours(pixel_values, output_hidden_states=True)
            ref = builtin(pixel_values, output_hidden_states=True)
        assert max_diff(out.logits, expected[f"logits_{k}"]) < 1e-5
        for stage in range(1, 5):
            assert max_diff(out.hidden_states[stage], expected[f"stage{stage}_{k}"]) < 1e-5
        assert max_diff(out.logits, ref.logits) < 1e-5
        assert len(out.hidden_states) == len(ref.hidden_states) == 5
        for ours_state, ref_state in zip(out.hidden_states, ref.hidden_states, strict=True):
            assert max_diff(ours_state, ref_state) < 1e-5


def test_builtin_checkpoints_load_and_ours_export_to_the_builtin(tmp_path, tiny_config_kwargs):
    torch.manual_seed(1)
    builtin = transformers.ConvNextForImageClassification(
        transformers.ConvNextConfig(layer_norm_eps=1e-6, **tiny_config_kwargs)
    ).eval()
    builtin.save_pretrained(tmp_path / "builtin")
    ours = ConvNextForImageClassification.from_pretrained(tmp_path / "builtin").eval()
    assert ours.config.model_type == "convnext_hf"
    pixel_values = torch.randn(2, 3, 64, 96)
    torch.testing.assert_close(ours(pixel_values).logits, builtin(pixel_values).logits, rtol=0, atol=1e-5)

    save_as_transformers(ours, tmp_path / "exported")
    config_json = (tmp_path / "exported" / "config.json").read_text()
    assert '"model_type": "convnext"' in config_json and "auto_map" not in config_json
    assert not list((tmp_path / "exported").glob("*.py"))
    reloaded = transformers.AutoModelForImageClassification.from_pretrained(tmp_path / "exported").eval()
    assert type(reloaded) is transformers.ConvNextForImageClassification
    torch.testing.assert_close(reloaded(pixel_values).logits, ours(pixel_values).logits, rtol=0, atol=1e-5)


def test_export_refuses_what_the_builtin_cannot_express(tmp_path):
    iso = ConvNextForImageClassification(ConvNextConfig(hidden_sizes=[16], depths=[2], isotropic=True, patch_size=16))
    with pytest.raises(ValueError, match="isotropic"):
        save_as_transformers(iso, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_refuses_to_overwrite(tmp_path, tiny_config_kwargs):
    model = ConvNextForImageClassification(ConvNextConfig(**tiny_config_kwargs))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="overwrite"):
        save_as_transformers(model, tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "precious"
    save_as_transformers(model, tmp_path / "out", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", "model.safetensors"]


def test_backbone_matches_the_builtin_backbone(tiny_config_kwargs):
    config = ConvNextConfig(out_features=["stage1", "stage2", "stage3", "stage4"], **tiny_config_kwargs)
    ours = ConvNextBackbone(config).eval()
    for norm in ours.hidden_states_norms.values():
        torch.nn.init.normal_(norm.weight)
        torch.nn.init.normal_(norm.bias)
    builtin = to_transformers(ours).eval()
    assert type(builtin) is transformers.ConvNextBackbone
    pixel_values = torch.randn(1, 3, 96, 64)
    out, ref = ours(pixel_values), builtin(pixel_values)
    assert [tuple(f.shape) for f in out.feature_maps] == [(1, 8, 24, 16), (1, 16, 12, 8), (1, 24, 6, 4), (1, 32, 3, 2)]
    assert ours.channels == [8, 16, 24, 32]
    for feature, reference in zip(out.feature_maps, ref.feature_maps, strict=True):
        assert max_diff(feature, reference) < 1e-5
    assert out.hidden_states is None and len(ours(pixel_values, output_hidden_states=True).hidden_states) == 5


@pytest.mark.parametrize("selection", [[0, 2], -1, [-2, 4, 9], True])
@pytest.mark.parametrize("model_class", [ConvNextModel, ConvNextForImageClassification, ConvNextBackbone])
def test_hidden_states_selection_matches_the_builtin(model_class, selection, tiny_config_kwargs):
    config = ConvNextConfig(out_features=["stage2", "stage4"], **tiny_config_kwargs)
    ours = model_class(config).eval()
    builtin = to_transformers(ours).eval()
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = ours(pixel_values, output_hidden_states=selection).hidden_states
        ref = builtin(pixel_values, output_hidden_states=selection).hidden_states
    expected = {(0, 2): [0, 2], -1: [4], (-2, 4, 9): [3, 4], True: [0, 1, 2, 3, 4]}[
        tuple(selection) if isinstance(selection, list) else selection
    ]
    assert len(out) == len(ref) == 5
    assert [i for i, state in enumerate(out) if state is not None] == expected
    assert [i for i, state in enumerate(ref) if state is not None] == expected
    for i in expected:
        assert max_diff(out[i], ref[i]) < 1e-5


def test_backbone_plugs_into_upernet(tiny_config_kwargs):
    backbone_config = ConvNextConfig(out_features=["stage1", "stage2", "stage3", "stage4"], **tiny_config_kwargs)
    config = transformers.UperNetConfig(
        backbone_config=backbone_config, hidden_size=16, auxiliary_channels=8, num_labels=6
    )
    model = transformers.UperNetForSemanticSegmentation(config).eval()
    assert isinstance(model.backbone, ConvNextBackbone)
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 64, 64)).logits
    assert logits.shape == (1, 6, 64, 64)


def test_model_outputs(tiny_config_kwargs):
    model = ConvNextModel(ConvNextConfig(**tiny_config_kwargs)).eval()
    out = model(torch.randn(2, 3, 64, 64))
    assert out.last_hidden_state.shape == (2, 32, 2, 2)
    assert out.pooler_output.shape == (2, 32)
    assert out.hidden_states is None
    norm = model.layernorm
    expected_pooled = F.layer_norm(out.last_hidden_state.mean((2, 3)), (32,), norm.weight, norm.bias, 1e-6)
    torch.testing.assert_close(out.pooler_output, expected_pooled)
    as_tuple = model(torch.randn(2, 3, 64, 64), return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 2


def test_isotropic_model_shapes_and_names():
    config = ConvNextConfig(hidden_sizes=[32], depths=[3], isotropic=True, patch_size=16, layer_scale_init_value=0)
    model = ConvNextForImageClassification(config)
    names = set(model.state_dict())
    assert "convnext.embeddings.layernorm.weight" not in names
    assert not any("layer_scale" in name or "downsampling" in name for name in names)
    out = model(torch.randn(1, 3, 64, 48), output_hidden_states=True)
    assert [tuple(h.shape) for h in out.hidden_states] == [(1, 32, 4, 3), (1, 32, 4, 3)]


@pytest.mark.parametrize(
    ("problem_type", "labels", "reference"),
    [
        ("single_label_classification", torch.tensor([0, 3]), lambda logits, labels: F.cross_entropy(logits, labels)),
        (
            "multi_label_classification",
            torch.tensor([[1.0, 0, 0, 1, 0], [0, 1, 0, 0, 0]]),
            lambda logits, labels: F.binary_cross_entropy_with_logits(logits, labels),
        ),
        ("regression", torch.randn(2, 5), lambda logits, labels: F.mse_loss(logits, labels)),
    ],
)
def test_losses(problem_type, labels, reference, tiny_config_kwargs):
    model = ConvNextForImageClassification(ConvNextConfig(problem_type=problem_type, **tiny_config_kwargs))
    out = model(torch.randn(2, 3, 32, 32), labels=labels)
    torch.testing.assert_close(out.loss, reference(out.logits, labels))


def test_problem_type_is_inferred_from_labels(tiny_config_kwargs):
    model = ConvNextForImageClassification(ConvNextConfig(**tiny_config_kwargs))
    labels = torch.tensor([1, 2])
    out = model(torch.randn(2, 3, 32, 32), labels=labels)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels))


def test_official_initialization():
    torch.manual_seed(0)
    config = ConvNextConfig.from_variant("atto", num_labels=100, head_init_scale=0.5, layer_scale_init_value=1e-6)
    model = ConvNextForImageClassification(config)
    block = model.convnext.encoder.stages[2].layers[0]
    assert block.pwconv1.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert block.pwconv1.weight.mean().item() == pytest.approx(0.0, abs=1e-3)
    assert block.pwconv1.bias.abs().max().item() == 0
    assert torch.equal(block.layer_scale_parameter, torch.full((160,), 1e-6))
    assert model.classifier.weight.std().item() == pytest.approx(0.01, rel=0.1)
    assert torch.equal(block.layernorm.weight, torch.ones(160))


def test_stochastic_depth_follows_the_linear_rule():
    config = ConvNextConfig(hidden_sizes=[8, 16], depths=[2, 3], drop_path_rate=0.4)
    model = ConvNextModel(config)
    rates = [
        getattr(layer.drop_path, "drop_prob", 0.0) for stage in model.encoder.stages for layer in stage.layers
    ]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    pixel_values = torch.randn(4, 3, 32, 32)
    model.eval()
    torch.testing.assert_close(model(pixel_values).pooler_output, model(pixel_values).pooler_output)
    model.train()
    torch.manual_seed(0)
    first = model(pixel_values).pooler_output
    torch.manual_seed(1)
    assert not torch.allclose(first, model(pixel_values).pooler_output)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_config_kwargs):
    torch.manual_seed(0)
    model = ConvNextForImageClassification(ConvNextConfig(**tiny_config_kwargs))
    pixel_values, labels = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])

    def gradients():
        model.zero_grad()
        model(pixel_values, labels=labels).loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    model.train()
    plain = gradients()
    model.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for stage in model.convnext.encoder.stages for layer in stage.layers)
    for a, b in zip(plain, gradients(), strict=True):
        torch.testing.assert_close(a, b)
    assert set(model._no_split_modules) == {"ConvNextLayer"}


def test_channels_last_and_half_precision_inputs(tiny_config_kwargs):
    model = ConvNextForImageClassification(ConvNextConfig(**tiny_config_kwargs)).eval()
    pixel_values = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = model(pixel_values).logits
        channels_last = model(pixel_values.to(memory_format=torch.channels_last)).logits
        torch.testing.assert_close(channels_last, reference, rtol=0, atol=1e-5)
        for dtype in (torch.bfloat16, torch.float16):
            half = model.to(dtype)(pixel_values.to(dtype)).logits
            assert half.dtype == dtype
            torch.testing.assert_close(half.float(), reference, rtol=0.05, atol=0.05)
            model.float()


@pytest.mark.parametrize(
    ("pixel_values", "error", "message"),
    [
        (torch.randn(3, 64, 64), ValueError, "4 dimensions.*unsqueeze"),
        (torch.randn(1, 1, 64, 64), ValueError, "1 channels but the model expects 3"),
        (torch.randn(1, 4, 64, 64), ValueError, "give the images that many channels"),
        (torch.randn(1, 3, 16, 64), ValueError, "smaller than the model's total stride 32"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), TypeError, "floating-point.*image processor"),
        (torch.zeros(0, 3, 64, 64), ValueError, "empty batch"),
        (None, ValueError, "pixel_values is required"),
        ([[0.0]], TypeError, "must be a torch.Tensor"),
    ],
)
def test_bad_input_gets_a_clear_error(pixel_values, error, message, tiny_config_kwargs):
    model = ConvNextForImageClassification(ConvNextConfig(**tiny_config_kwargs))
    with pytest.raises(error, match=message):
        model(pixel_values)
