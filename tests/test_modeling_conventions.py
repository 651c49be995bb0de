"""What transformers' common model, config and backbone tests check, asked of our classes.

transformers' own ConvNext test suite (ModelTesterMixin, ConfigTester, BackboneTesterMixin) runs against the built-in
classes and is not installed with transformers; these tests put the same questions to ours, with the settings of
its ConvNextModelTester (hidden_sizes 10..40, depths 2-2-3-2, 32-pixel images).
"""

import inspect
import json

import pytest
import torch

from convnext_hf import ConvNextBackbone, ConvNextConfig, ConvNextForImageClassification, ConvNextModel
from helpers import max_diff

MODEL_CLASSES = (ConvNextModel, ConvNextForImageClassification, ConvNextBackbone)
TESTER_KWARGS = {
    "num_channels": 3,
    "num_stages": 4,
    "hidden_sizes": [10, 20, 30, 40],
    "depths": [2, 2, 3, 2],
    "hidden_act": "gelu",
    "is_decoder": False,
    "initializer_range": 0.02,
    "out_features": ["stage2", "stage3", "stage4"],
    "out_indices": [2, 3, 4],
    "num_labels": 10,
}


@pytest.fixture
def config() -> ConvNextConfig:
    return ConvNextConfig(**TESTER_KWARGS)


@pytest.fixture
def pixel_values() -> torch.Tensor:
    return torch.rand(3, 3, 32, 32)


# --- configuration ---------------------------------------------------------------------------------------------


def test_config_round_trips_through_json_and_save_pretrained(config, tmp_path):
    extra = ConvNextConfig(hidden_size=37)
    assert json.loads(extra.to_json_string())["hidden_size"] == 37
    config.to_json_file(tmp_path / "config.json")
    assert ConvNextConfig.from_json_file(tmp_path / "config.json").to_dict() == config.to_dict()
    config.save_pretrained(tmp_path / "saved" / "sub")
    assert ConvNextConfig.from_pretrained(tmp_path / "saved", subfolder="sub").to_dict() == config.to_dict()
    assert ConvNextConfig.from_pretrained(tmp_path / "saved" / "sub").to_dict() == config.to_dict()
    with pytest.raises(OSError):
        ConvNextConfig.from_pretrained(tmp_path / "missing")


def test_config_common_properties_and_arguments(config):
    assert config.num_hidden_layers == config.num_stages == 4
    config.num_channels = 1
    config.hidden_sizes = [1, 2, 3, 4]
    assert (config.num_channels, config.hidden_sizes) == (1, [1, 2, 3, 4])
    assert ConvNextConfig(num_channels=1).num_channels == 1
    config.num_labels = 3
    assert len(config.id2label) == len(config.label2id) == 3
    assert ConvNextConfig().num_stages == 4
    common = ConvNextConfig(
        output_hidden_states=True, return_dict=False, chunk_size_feed_forward=5, problem_type="regression"
    )
    assert (common.output_hidden_states, common.return_dict, common.chunk_size_feed_forward) == (True, False, 5)
    assert common.problem_type == "regression"


# --- models ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_forward_takes_pixel_values_first(model_class):
    assert model_class.main_input_name == "pixel_values"
    assert list(inspect.signature(model_class.forward).parameters)[1] == "pixel_values"


def test_output_shapes(config, pixel_values):
    model = ConvNextModel(config).eval()
    assert model(pixel_values).last_hidden_state.shape == (3, 40, 1, 1)
    classifier = ConvNextForImageClassification(config).eval()
    assert classifier(pixel_values, labels=torch.tensor([0, 9, 4])).logits.shape == (3, 10)
    backbone = ConvNextBackbone(config).eval()
    feature_maps = backbone(pixel_values).feature_maps
    assert [tuple(f.shape) for f in feature_maps] == [(3, 20, 4, 4), (3, 30, 2, 2), (3, 40, 1, 1)]
    assert backbone.channels == [20, 30, 40]


def test_backbone_without_out_features_returns_the_last_stage(config, pixel_values):
    config.out_features = None
    backbone = ConvNextBackbone(config).eval()
    assert [tuple(f.shape) for f in backbone(pixel_values).feature_maps] == [(3, 40, 1, 1)]
    assert backbone.channels == [40]


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
@pytest.mark.parametrize("from_config", [False, True])
def test_hidden_states_by_argument_or_config(model_class, from_config, config, pixel_values):
    config.output_hidden_states = from_config
    model = model_class(config).eval()
    with torch.no_grad():
        outputs = model(pixel_values) if from_config else model(pixel_values, output_hidden_states=True)
    assert len(outputs.hidden_states) == config.num_stages + 1
    assert outputs.hidden_states[0].shape[-2:] == (8, 8)


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_tuple_outputs_equal_the_output_object(model_class, config, pixel_values):
    model = model_class(config).eval()
    with torch.no_grad():
        as_object = model(pixel_values, output_hidden_states=True).to_tuple()
        as_tuple = model(pixel_values, output_hidden_states=True, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(as_object)
    for mine, theirs in zip(as_tuple, as_object, strict=True):
        if isinstance(mine, tuple):
            assert all(max_diff(a, b) == 0 for a, b in zip(mine, theirs, strict=True))
        else:
            assert max_diff(mine, theirs) == 0


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_save_and_load_give_the_same_outputs(model_class, config, pixel_values, tmp_path):
    model = model_class(config).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = model_class.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        first, second = model(pixel_values).to_tuple()[0], loaded(pixel_values).to_tuple()[0]
    if isinstance(first, tuple):
        first, second = first[-1], second[-1]
    assert max_diff(first, second) < 1e-5


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_loads_from_a_state_dict_without_a_checkpoint(model_class, config):
    model = model_class(config)
    loaded = model_class.from_pretrained(None, config=config, state_dict=model.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), loaded.parameters(), strict=True))


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_a_batch_gives_what_its_images_give_alone(model_class, config, pixel_values):
    model = model_class(config).eval()
    with torch.no_grad():
        batched = model(pixel_values).to_tuple()[0]
        alone = [model(pixel_values[i : i + 1]).to_tuple()[0] for i in range(3)]
    if isinstance(batched, tuple):
        batched, alone = batched[-1], [outputs[-1] for outputs in alone]
    assert max_diff(batched, torch.cat(alone)) < 1e-5


def test_training_step_reaches_every_parameter(config, pixel_values):
    model = ConvNextForImageClassification(config).train()
    outputs = model(pixel_values, labels=torch.tensor([0, 9, 4]), output_hidden_states=True)
    outputs.hidden_states[0].retain_grad()
    outputs.loss.backward()
    assert outputs.hidden_states[0].grad is not None
    assert [name for name, parameter in model.named_parameters() if parameter.grad is None] == []


def test_a_head_of_another_size_loads_only_when_mismatches_are_allowed(config, tmp_path):
    ConvNextForImageClassification(config).save_pretrained(tmp_path)
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        ConvNextForImageClassification.from_pretrained(tmp_path, num_labels=3)
    loaded = ConvNextForImageClassification.from_pretrained(tmp_path, num_labels=3, ignore_mismatched_sizes=True)
    assert loaded.classifier.weight.shape == (3, 40)


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_torch_export(model_class, config, pixel_values):
    model = model_class(config).eval()
    exported = torch.export.export(model, (pixel_values,))
    with torch.no_grad():
        expected = model(pixel_values).to_tuple()[0]
        actual = exported.module()(pixel_values)
    actual = next(iter(actual.values())) if isinstance(actual, dict) else actual[0]
    if isinstance(expected, tuple):
        expected, actual = expected[-1], actual[-1]
    assert max_diff(actual, expected) < 1e-5
