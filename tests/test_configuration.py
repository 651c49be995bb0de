import pytest
import transformers

from convnext_hf import ConvNextConfig
from convnext_hf.complexity import count_macs, count_parameters
from convnext_hf.configuration_convnext import VARIANTS

# Parameters (M) and GFLOPs the paper reports (Table 1, §3.3, and the 384² fine-tuning rows of Table 2).
PAPER = {
    ("tiny", 224): (28.59, 4.46),
    ("small", 224): (50.22, 8.69),
    ("base", 224): (88.59, 15.36),
    ("large", 224): (197.77, 34.37),
    ("xlarge", 224): (350.20, 60.93),
    ("base", 384): (88.59, 45.1),
    ("large", 384): (197.77, 101.0),
    ("xlarge", 384): (350.20, 179.0),
    ("isotropic-small", 224): (22.3, 4.3),
    ("isotropic-base", 224): (87.1, 16.9),
    ("isotropic-large", 224): (305.9, 59.7),
}


@pytest.mark.parametrize(("variant", "resolution"), PAPER)
def test_variant_size_and_compute_match_the_paper(variant, resolution):
    config = ConvNextConfig.from_variant(variant, num_labels=1000)
    params_m, gflops = PAPER[variant, resolution]
    assert count_parameters(config) / 1e6 == pytest.approx(params_m, abs=0.05)
    assert count_macs(config, resolution) / 1e9 == pytest.approx(gflops, abs=0.1)


def test_presets():
    tiny = ConvNextConfig.from_variant("tiny", num_labels=10)
    assert (tiny.hidden_sizes, tiny.depths, tiny.num_labels) == ([96, 192, 384, 768], [3, 3, 9, 3], 10)
    assert (tiny.patch_size, tiny.isotropic, tiny.layer_scale_init_value, tiny.layer_norm_eps) == (4, False, 1e-6, 1e-6)
    assert tiny.stage_names == ["stem", "stage1", "stage2", "stage3", "stage4"]
    iso = ConvNextConfig.from_variant("isotropic-small")
    assert (iso.hidden_sizes, iso.depths, iso.patch_size, iso.isotropic) == ([384], [18], 16, True)
    assert iso.layer_scale_init_value == 0.0
    assert iso.total_stride == 16 and tiny.total_stride == 32
    assert len(VARIANTS) == 21


def test_preset_overrides_and_backbone_fields():
    config = ConvNextConfig.from_variant("atto", drop_path_rate=0.1, out_features=["stage2", "stage4"])
    assert config.drop_path_rate == 0.1
    assert config.out_indices == [2, 4]
    assert ConvNextConfig(out_indices=[1, 2, 3, 4]).out_features == ["stage1", "stage2", "stage3", "stage4"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden_sizes": [8, 16], "depths": [1, 1, 1]}, "same length"),
        ({"hidden_sizes": [8, 0], "depths": [1, 1]}, "positive integers"),
        ({"hidden_sizes": [8, 16], "depths": [1, -2]}, "positive integers"),
        ({"hidden_sizes": [], "depths": []}, "at least one stage"),
        ({"patch_size": 0}, "patch_size"),
        ({"hidden_sizes": [8, 16], "depths": [1, 1], "isotropic": True}, "exactly one stage"),
        ({"drop_path_rate": 1.5}, "drop_path_rate"),
        ({"layer_scale_init_value": -1.0}, "layer_scale_init_value"),
        ({"out_features": ["stage9"]}, "out_features"),
    ],
)
def test_invalid_configurations_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConvNextConfig(**kwargs)


def test_unknown_variant_lists_the_known_ones():
    with pytest.raises(ValueError, match="Unknown ConvNeXt variant 'tinyy'.*tiny, small"):
        ConvNextConfig.from_variant("tinyy")


def test_round_trip_keeps_every_field(tmp_path):
    config = ConvNextConfig.from_variant("isotropic-base", num_labels=3, out_indices=[1])
    config.save_pretrained(tmp_path)
    loaded = ConvNextConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.model_type == "convnext_hf"
    assert loaded.auto_map["AutoModelForImageClassification"] == "modeling_convnext.ConvNextForImageClassification"


def test_reads_the_builtin_convnext_config():
    import transformers

    builtin = transformers.ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 2, 1], num_labels=4)
    config = ConvNextConfig.from_dict(builtin.to_dict())
    assert (config.hidden_sizes, config.depths, config.num_labels) == ([8, 16, 24, 32], [1, 1, 2, 1], 4)
    # The built-in's final-norm eps (1e-12) is a conversion artifact; the official network uses 1e-6 everywhere.
    assert builtin.layer_norm_eps == 1e-12 and config.layer_norm_eps == 1e-6
    assert config.model_type == "convnext_hf"


def test_num_stages_is_accepted_as_transformers_passes_it():
    config = ConvNextConfig(num_stages=4, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 2, 1])
    assert config.num_stages == config.num_hidden_layers == 4
    config.num_hidden_layers = 4
    config.num_stages = 4
    assert "num_stages" not in config.to_dict()
    with pytest.raises(ValueError, match=r"num_stages=3 does not match depths \[1, 1, 2, 1\]"):
        ConvNextConfig(num_stages=3, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 2, 1])
    with pytest.raises(ValueError, match="num_stages=2 does not match"):
        config.num_hidden_layers = 2
    assert config.num_stages == 4


def test_builtin_config_with_fewer_stages_than_depths_is_refused():
    builtin = transformers.ConvNextConfig(num_stages=3, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 2, 1])
    with pytest.raises(ValueError, match="num_stages=3 does not match"):
        ConvNextConfig.from_dict(builtin.to_dict())
    assert ConvNextConfig.from_dict(transformers.ConvNextConfig().to_dict()).depths == [3, 3, 9, 3]
