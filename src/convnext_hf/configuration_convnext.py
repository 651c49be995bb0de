"""Configuration of ConvNeXt ("A ConvNet for the 2020s", Liu et al., CVPR 2022), of ConvNeXt V2 ("Co-designing and
Scaling ConvNets with Masked Autoencoders", Woo et al., CVPR 2023) and of timm's variants of both."""

from __future__ import annotations

import math
from typing import Any

from transformers import PreTrainedConfig
from transformers.activations import ACT2FN
from transformers.backbone_utils import BackboneConfigMixin

# (hidden_sizes, depths) of every published hierarchical ConvNeXt. tiny..xlarge are the paper's (Table 1 and
# §3.1); atto..nano and huge come from later work (timm, ConvNeXt V2) and share the same macro design.
HIERARCHICAL_VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "atto": ((40, 80, 160, 320), (2, 2, 6, 2)),
    "femto": ((48, 96, 192, 384), (2, 2, 6, 2)),
    "pico": ((64, 128, 256, 512), (2, 2, 6, 2)),
    "nano": ((80, 160, 320, 640), (2, 2, 8, 2)),
    "tiny": ((96, 192, 384, 768), (3, 3, 9, 3)),
    "small": ((96, 192, 384, 768), (3, 3, 27, 3)),
    "base": ((128, 256, 512, 1024), (3, 3, 27, 3)),
    "large": ((192, 384, 768, 1536), (3, 3, 27, 3)),
    "xlarge": ((256, 512, 1024, 2048), (3, 3, 27, 3)),
    "huge": ((352, 704, 1408, 2816), (3, 3, 27, 3)),
}

# Isotropic ConvNeXt (§3.3): one stage at 1/16 resolution, as in ViT-S/B/L; (width, depth).
ISOTROPIC_VARIANTS: dict[str, tuple[int, int]] = {
    "isotropic-small": (384, 18),
    "isotropic-base": (768, 18),
    "isotropic-large": (1024, 36),
}

# ConvNeXt V2 (Table 10 of the V2 paper): the V1 macro design with GRN in every block and no layer scale.
V2_VARIANTS: dict[str, str] = {
    f"v2-{name}": name for name in ("atto", "femto", "pico", "nano", "tiny", "base", "large", "huge")
}

VARIANTS = (*HIERARCHICAL_VARIANTS, *ISOTROPIC_VARIANTS, *V2_VARIANTS)

# Largest network a configuration may describe, and (`train.ranges.check_model_size`) the largest model any command
# builds, heads included: 2.4 times ConvNeXt-XXLarge (846M; the largest published detector and UperNet on ConvNeXt
# hold under 0.5e9). 8 GB as float32, about 32 GB to train with AdamW (weights, gradients, two moments): what one
# 40-80 GB accelerator holds. Beyond it a config is a mistake whose model would exhaust memory while being built.
MAX_PARAMETERS = 2_000_000_000
# Deepest stage and widest one a configuration may have: about four times the published ones (36 blocks in
# isotropic-large, widths up to 3072 in XXLarge), so that one edited number cannot ask for gigabytes under the cap.
MAX_STAGE_DEPTH = 128
MAX_WIDTH = 8192


def _is_int(value: Any) -> bool:
    """An int, not a bool (True would pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


# Stems: the paper's 4×4 patchify conv, or timm's overlapping tiered stem (`*_ols`): two 3×3 stride-2 convs.
STEM_TYPES = ("patch", "overlap_tiered")

# model_type of transformers' built-in ConvNext and ConvNextV2, whose configs this configuration reads.
BUILTIN_MODEL_TYPES = ("convnext", "convnextv2")

# Keys of transformers' built-in ConvNext / ConvNextV2 configs that this configuration derives instead of storing.
BUILTIN_ONLY_KEYS = ("model_type", "auto_map", "architectures", "transformers_version")

# Written into every saved config.json so that a folder saved from any of the models loads through every Auto class
# with `trust_remote_code=True`, where this package is not installed.
AUTO_MAP = {
    "AutoConfig": "configuration_convnext.ConvNextConfig",
    "AutoModel": "modeling_convnext.ConvNextModel",
    "AutoModelForImageClassification": "modeling_convnext.ConvNextForImageClassification",
    "AutoBackbone": "modeling_convnext.ConvNextBackbone",
}


# The losses ConvNextForImageClassification computes, by transformers' problem_type names.
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")


class ConvNextConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""
    Configuration of a ConvNeXt model, hierarchical (four stages, 4×4 patchify stem, 2×2 downsampling layers) or
    isotropic (§3.3: a single stage behind a 16×16 patchify stem with no normalization and no layer scale).

    Args:
        num_channels: Channels of the input images.
        num_stages: Optional; the number of stages is `len(depths)`, and a different value is refused.
        patch_size: Kernel size and stride of the patchify stem (4 hierarchical, 16 isotropic).
        hidden_sizes: Width of each stage.
        depths: Number of ConvNeXt blocks in each stage.
        isotropic: Build the isotropic variant: exactly one stage, no LayerNorm after the stem.
        hidden_act: Activation of the inverted bottleneck (the paper uses GELU).
        initializer_range: Standard deviation of the truncated normal used for conv and linear weights.
        layer_norm_eps: Epsilon of every LayerNorm; the official code uses 1e-6 everywhere.
        layer_scale_init_value: Initial layer-scale value; 0 disables layer scale (ConvNeXt V2 has none).
        use_grn: ConvNeXt V2: Global Response Normalization (learned gamma/beta) after the GELU of every block.
        stem_type: `"patch"` (the paper's `patch_size` patchify conv) or `"overlap_tiered"` (timm's `*_ols`: a 3×3
            stride-2 conv to `make_divisible(hidden_sizes[0] / 2, 8)` channels, a 3×3 stride-2 conv, then LayerNorm).
        head_norm_first: timm's `*_hnf`: the final LayerNorm normalizes the last feature map before pooling.
        head_hidden_size: Width of the MLP head (timm's `convnext_large_mlp`, the CLIP towers): the pooled, normalized
            features go through Linear + GELU of this width before the classifier; None for the paper's linear head.
        head_init_scale: Factor applied to the initial classifier weights (used when fine-tuning at 384).
        drop_path_rate: Stochastic depth rate of the last block; earlier blocks follow the linear rule.
        image_size: Resolution the model was trained at (informational; any size divisible by the total stride runs).
        out_features / out_indices: Stages the backbone returns (`"stem"`, `"stage1"`, ...), transformers' backbone
            conventions.
    """

    model_type = "convnext_hf"
    attribute_map = {"num_hidden_layers": "num_stages"}

    num_channels: int = 3
    patch_size: int = 4
    hidden_sizes: list[int] | tuple[int, ...] = (96, 192, 384, 768)
    depths: list[int] | tuple[int, ...] = (3, 3, 9, 3)
    isotropic: bool = False
    hidden_act: str = "gelu"
    initializer_range: float | int = 0.02
    layer_norm_eps: float | int = 1e-6
    layer_scale_init_value: float | int = 1e-6
    use_grn: bool = False
    stem_type: str = "patch"
    head_norm_first: bool = False
    head_hidden_size: int | None = None
    head_init_scale: float | int = 1.0
    drop_path_rate: float | int = 0.0
    image_size: int = 224
    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        self.hidden_sizes = list(self.hidden_sizes)
        self.depths = list(self.depths)
        self._validate()
        self.stage_names = ["stem"] + [f"stage{idx}" for idx in range(1, self.num_stages + 1)]
        self.set_output_features_output_indices(
            out_indices=kwargs.pop("out_indices", None), out_features=kwargs.pop("out_features", None)
        )
        self._validate_head_fields(kwargs.get("num_labels"))
        super().__post_init__(**kwargs)
        if self.num_labels < 0:
            raise ValueError(f"num_labels must be >= 0 (0: no classifier, the pooled features), got {self.num_labels}.")
        self.auto_map = {**AUTO_MAP, **(getattr(self, "auto_map", None) or {})}

    def _validate_head_fields(self, num_labels: Any) -> None:
        """Refuse a num_labels that is not a count (transformers would make -1 an empty head) and a problem_type no
        loss exists for. A num_labels beside another id2label is transformers' way to re-head a saved model."""
        counts = isinstance(num_labels, int) and not isinstance(num_labels, bool) and num_labels >= 0
        if num_labels is not None and not counts:
            raise ValueError(f"num_labels must be an integer >= 0 (0: no classifier), got {num_labels!r}.")
        if self.problem_type not in (None, *PROBLEM_TYPES):
            raise ValueError(f"problem_type must be one of {PROBLEM_TYPES} or None, got {self.problem_type!r}.")

    @property
    def num_stages(self) -> int:
        """Number of stages (4 for the hierarchical models, 1 for the isotropic ones)."""
        return len(self.depths)

    @num_stages.setter
    def num_stages(self, value: int) -> None:
        # Accepted as transformers' built-in ConvNext and its common tests pass it (also as num_hidden_layers), but
        # the stages are what depths and hidden_sizes list: a different count would describe another model.
        if value != len(self.depths):
            raise ValueError(
                f"num_stages={value} does not match depths {self.depths} ({len(self.depths)} stages); the number of "
                "stages follows depths and hidden_sizes (one entry per stage), so set those instead."
            )

    @property
    def stem_stride(self) -> int:
        """Downsampling factor of the stem (the overlapping tiered stem has two stride-2 convs)."""
        return 4 if self.stem_type == "overlap_tiered" else self.patch_size

    @property
    def stem_mid_channels(self) -> int:
        """Width between the two convs of the overlapping tiered stem: timm's `make_divisible(hidden_sizes[0] // 2)`,
        the nearest multiple of 8, never more than 10% below half the width."""
        half = self.hidden_sizes[0] // 2
        rounded = max(8, (half + 4) // 8 * 8)
        return rounded + 8 if rounded < 0.9 * half else rounded

    @property
    def total_stride(self) -> int:
        """Downsampling factor from the input image to the last stage."""
        return self.stem_stride * 2 ** (self.num_stages - 1)

    def _validate(self) -> None:
        if len(self.hidden_sizes) != len(self.depths):
            raise ValueError(
                f"hidden_sizes {self.hidden_sizes} and depths {self.depths} must have the same length "
                "(one width and one depth per stage)."
            )
        if not self.depths:
            raise ValueError("depths is empty: a ConvNeXt needs at least one stage.")
        for name, most in (("hidden_sizes", MAX_WIDTH), ("depths", MAX_STAGE_DEPTH)):
            values = getattr(self, name)
            if any(not _is_int(v) or v <= 0 for v in values):
                raise ValueError(f"{name} must hold positive integers, got {values}.")
            if any(v > most for v in values):
                raise ValueError(f"{name} must hold integers from 1 to {most}, got {values}.")
        for name in ("num_channels", "patch_size", "image_size"):
            if not _is_int(getattr(self, name)) or getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        for name in ("layer_norm_eps", "drop_path_rate", "layer_scale_init_value", "head_init_scale",
                     "initializer_range"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}.")
        # initializer_range 0 would divide by zero in the truncated normal's init (found by the fuzzer).
        for name in ("layer_norm_eps", "initializer_range"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}.")
        if self.hidden_act not in ACT2FN:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not an activation transformers knows; use 'gelu'.")
        parameters = self.parameter_bound()
        if parameters > MAX_PARAMETERS:
            raise ValueError(
                f"this configuration describes a network of about {parameters:.2g} parameters (patch_size "
                f"{self.patch_size}, hidden_sizes {self.hidden_sizes}, depths {self.depths}), over the limit of "
                f"{MAX_PARAMETERS:.0e} (the largest ConvNeXt has 0.85e9); check these values."
            )
        if self.isotropic and len(self.depths) != 1:
            raise ValueError(
                f"An isotropic ConvNeXt has exactly one stage, got depths {self.depths}; "
                "use e.g. hidden_sizes=[384], depths=[18]."
            )
        if self.stem_type not in STEM_TYPES:
            raise ValueError(f"stem_type must be one of {STEM_TYPES}, got {self.stem_type!r}.")
        if self.isotropic and (self.stem_type != "patch" or self.head_norm_first):
            raise ValueError("An isotropic ConvNeXt has the patchify stem and the norm after pooling (§3.3).")
        if self.head_hidden_size is not None and (not _is_int(self.head_hidden_size) or self.head_hidden_size <= 0):
            raise ValueError(f"head_hidden_size must be a positive width or None, got {self.head_hidden_size}.")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}.")
        if self.layer_scale_init_value < 0:
            raise ValueError(f"layer_scale_init_value must be >= 0 (0 disables it), got {self.layer_scale_init_value}.")

    def parameter_bound(self) -> int:
        """About how many parameters the network has (stem, blocks, downsampling), before building it."""
        widths = [self.num_channels, *self.hidden_sizes]
        stem = self.num_channels * self.hidden_sizes[0] * self.patch_size**2
        blocks = sum(depth * width * (49 + 8 * width) for depth, width in zip(self.depths, self.hidden_sizes))
        downsampling = sum(4 * before * after for before, after in zip(widths[1:], widths[2:]))
        return stem + blocks + downsampling

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> ConvNextConfig:
        """Build from a saved dict; also reads the configs of transformers' built-in ConvNext and ConvNextV2."""
        model_type = config_dict.get("model_type")
        if model_type in BUILTIN_MODEL_TYPES:
            config_dict = {key: value for key, value in config_dict.items() if key not in BUILTIN_ONLY_KEYS}
            if model_type == "convnextv2":
                config_dict.update(use_grn=True, layer_scale_init_value=0.0)
            # The built-in uses eps 1e-6 in every LayerNorm but the final one, where its converted checkpoints say
            # 1e-12; the official weights were trained with 1e-6 there too.
            config_dict["layer_norm_eps"] = 1e-6
        return super().from_dict(config_dict, **kwargs)

    @classmethod
    def from_variant(cls, variant: str, **kwargs: Any) -> ConvNextConfig:
        """Build the configuration of a published variant by name, e.g. `from_variant("tiny", num_labels=10)`."""
        if variant in HIERARCHICAL_VARIANTS:
            hidden_sizes, depths = HIERARCHICAL_VARIANTS[variant]
            preset = {"hidden_sizes": list(hidden_sizes), "depths": list(depths)}
        elif variant in V2_VARIANTS:
            hidden_sizes, depths = HIERARCHICAL_VARIANTS[V2_VARIANTS[variant]]
            preset = {
                "hidden_sizes": list(hidden_sizes),
                "depths": list(depths),
                "use_grn": True,
                "layer_scale_init_value": 0.0,
            }
        elif variant in ISOTROPIC_VARIANTS:
            width, depth = ISOTROPIC_VARIANTS[variant]
            preset = {
                "hidden_sizes": [width],
                "depths": [depth],
                "isotropic": True,
                "patch_size": 16,
                "layer_scale_init_value": 0.0,
            }
        else:
            raise ValueError(f"Unknown ConvNeXt variant {variant!r}; choose one of: {', '.join(VARIANTS)}.")
        return cls(**{**preset, **kwargs})


__all__ = ["ConvNextConfig", "HIERARCHICAL_VARIANTS", "ISOTROPIC_VARIANTS", "V2_VARIANTS", "VARIANTS"]


def total_stride_of(config: PreTrainedConfig) -> int:
    """Downsampling from the image to the last feature map of ours, transformers' built-in ConvNext(V2) (which has no
    `total_stride`: patchify stem, then each stage halves), or an UperNet's or detector's backbone."""
    config = getattr(config, "backbone_config", None) or config
    if hasattr(config, "total_stride"):
        return config.total_stride
    return config.patch_size * 2 ** (config.num_stages - 1)
