"""From loaded weights to a transformers model: detect the layout and the architecture, map every parameter."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers

from ..configuration_convnext import total_stride_of
from ..errors import UserInputError
from ..portable import portable_head
from .architecture import Architecture, detect_architecture
from .checkpoint_io import Checkpoint
from .claims import (
    check_resolution,
    check_stride,
    check_tensors,
    id2label,
    mm_meta_claims,
    timm_claims,
    timm_label_names,
    timm_preprocessing,
    transformers_claims,
)
from .labels import LabelSet, labels_for
from .layouts import Layout, detect_layout
from .naming import BACKBONE, SEGMENTATION, official_to_transformers
from .rename import rename
from .targets import (
    AUTO_CLASSES,
    CONVNEXT_HF,
    empty_model,
    image_processor,
    model_class,
    model_config,
    target_parameter_names,
)

# Evaluation resolution when neither the command line, the zoo nor a timm folder's `pretrained_cfg` gives one.
DEFAULT_RESOLUTION = 224


class MappingError(UserInputError):
    """Some weights of the checkpoint have no place in the target model, or some parameters of it no weight."""


@dataclass
class Conversion:
    """A converted model with everything needed to save, verify and describe it."""

    layout: Layout
    arch: Architecture
    labels: LabelSet
    official: dict[str, torch.Tensor]
    model: transformers.PreTrainedModel
    processor: transformers.BaseImageProcessor
    target: str
    resolution: int
    # Modules of the checkpoint without a transformers counterpart (a detector's neck and heads), with tensor counts.
    dropped: dict[str, int] = field(default_factory=dict)
    # What the conversion took from the checkpoint's config because the weights cannot tell (e.g.
    # "head_norm_first=True"): the verification checks the mapping under these claims, not the claims themselves.
    assumed: tuple[str, ...] = ()


def _labels(checkpoint: Checkpoint, arch: Architecture) -> LabelSet:
    """Class names stored with the checkpoint (transformers folders), else the official ones for this head size."""
    stored = id2label(checkpoint.config, arch)
    if stored is None and _timm_model_args(checkpoint.config) is not None:
        stored = timm_label_names(checkpoint.config, arch)
    return LabelSet("checkpoint config", stored) if stored else labels_for(arch.num_labels)


def _check_mapping(
    model: transformers.PreTrainedModel, mapped: dict[str, torch.Tensor], unmatched: list[str]
) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(unmatched) + sorted(set(mapped) - set(expected))
    mismatched = [
        f"{key}: checkpoint {tuple(mapped[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in sorted(set(mapped) & set(expected))
        if mapped[key].shape != expected[key].shape
    ]
    if missing or unexpected or mismatched:
        sections = [
            f"{title} ({len(keys)}):\n" + "\n".join(f"  {key}" for key in keys)
            for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
            if keys
        ]
        raise MappingError(
            "Refusing to convert: the weights do not map one-to-one onto the model, so the result would not be the "
            "checkpoint's network.\n" + "\n".join(sections) + "\nPass an unmodified checkpoint of a supported layout."
        )


class UnsupportedVariantError(UserInputError):
    """A ConvNeXt variant the configuration cannot express: converting it would change what it computes."""


# timm `ConvNeXt` arguments this configuration expresses, with the values it can take (None: any value).
TIMM_SUPPORTED_ARGS = {
    "depths": None,
    "dims": None,
    "in_chans": None,
    "num_classes": None,
    "global_pool": ("avg",),
    "conv_mlp": None,
    "use_grn": None,
    "ls_init_value": None,
    "stem_type": ("patch", "overlap_tiered"),
    "patch_size": None,
    "head_norm_first": None,
    "head_hidden_size": None,
    "norm_eps": None,
    "kernel_sizes": (7, [7, 7, 7, 7]),
    "conv_bias": (True,),
    "act_layer": ("gelu",),
    "norm_layer": (None, "layernorm", "layernorm2d"),
    "drop_rate": None,
    "drop_path_rate": None,
}


def _timm_model_args(config: dict | None) -> dict | None:
    """The `model_args` of a timm Hub folder's config.json (None for other folders), refusing by name the arguments
    this model cannot express."""
    if not config or "architecture" not in config:
        return None
    model_args = config.get("model_args") or {}
    if not isinstance(model_args, dict):
        raise UserInputError(f"config.json's model_args must be an object of timm arguments, got {model_args!r}.")
    refused = [
        f"{name}={value!r}"
        for name, value in model_args.items()
        if name not in TIMM_SUPPORTED_ARGS
        or TIMM_SUPPORTED_ARGS[name] is not None and value not in TIMM_SUPPORTED_ARGS[name]
    ]
    if refused:
        raise UnsupportedVariantError(
            f"Refusing to convert timm's {config['architecture']}: {', '.join(refused)} is not supported (the "
            "ConvNeXt configuration has LayerNorm, GELU, 7×7 depthwise convs with bias, the patchify or overlapping "
            "tiered stem, average pooling); converting it would compute something else."
        )
    return model_args


# The LayerNorms of a ConvNeXt in official names: in the blocks, the stem and downsampling layers, the final norm
# (after or before pooling) and the per-stage output norms of dense-prediction backbones.
LAYER_NORM_WEIGHT = re.compile(r"(.*\.)?(norm|norm_pre|norm\d|downsample_layers\.\d+\.\d+)\.weight")


def _refuse_biasless_norms(official: dict[str, torch.Tensor]) -> None:
    """RMSNorm / SimpleNorm (timm's `*_rms`, `norm_layer="simplenorm"`) store a weight without a bias in every
    normalization; a LayerNorm always has both (one missing bias is an incomplete checkpoint, reported as such when
    mapping). Converting them into LayerNorms would compute something else."""
    norms = [key for key, value in official.items() if value.ndim == 1 and LAYER_NORM_WEIGHT.fullmatch(key)]
    biasless = [key for key in norms if key.removesuffix("weight") + "bias" not in official]
    if norms and biasless == norms:
        raise UnsupportedVariantError(
            f"Refusing to convert: its normalizations ({norms[0]}, ...) have a weight and no bias, as in timm's "
            "RMSNorm / SimpleNorm models (`*_rms`, norm_layer='simplenorm'); only LayerNorm ConvNeXts are supported."
        )


def convert(checkpoint: Checkpoint, target: str = CONVNEXT_HF, resolution: int | None = None) -> Conversion:
    """Build the target model holding exactly the checkpoint's weights (as float32). The evaluation `resolution`
    defaults to a timm folder's `pretrained_cfg.input_size`, else 224."""
    if resolution is not None:
        check_resolution(resolution, "--resolution")
    config = checkpoint.config
    timm_args = _timm_model_args(config)
    check_tensors(checkpoint.tensors)
    tensors = {key: value.float() if value.is_floating_point() else value for key, value in checkpoint.tensors.items()}
    layout = detect_layout(tensors)
    official = layout.to_official(tensors)
    _refuse_biasless_norms(official.renamed)
    arch = detect_architecture(official.renamed)
    source = str(checkpoint.files[0]) if checkpoint.files else "the checkpoint"
    mm_meta_claims(checkpoint.meta, tensors, arch, source)
    preprocessing, assumed = None, ()
    if timm_args is not None:
        arch = timm_claims(config, timm_args, arch)
        preprocessing = timm_preprocessing(config, arch.num_channels)
    elif config is not None:
        arch, assumed = transformers_claims(config, arch, weights_place_final_norm=layout.name != "transformers")
        if arch.head_norm_first and "norm.weight" in official.renamed:
            # A convnext_hf folder of a `*_hnf` model: its final LayerNorm has the name it has after pooling.
            official.renamed.update({f"norm_pre.{p}": official.renamed.pop(f"norm.{p}") for p in ("weight", "bias")})
    if resolution is None:
        resolution = (preprocessing or {}).get("input_size", [DEFAULT_RESOLUTION])[-1]
        check_resolution(resolution, "the timm config's pretrained_cfg.input_size")
    labels = _labels(checkpoint, arch)
    config = model_config(arch, labels.id2label, resolution, target)
    check_stride(resolution, total_stride_of(config), "the evaluation resolution")
    model = empty_model(arch, config, target)
    mapped = rename(official.renamed, official_to_transformers(arch.task, arch.isotropic))
    weights = target_parameter_names(mapped.renamed, arch, target)
    _check_mapping(model, weights, official.unmatched + mapped.unmatched)
    model.load_state_dict(weights, strict=True, assign=True)
    processor = image_processor(
        arch, resolution, target, reduce_labels=labels.dataset == "ade20k-150", timm_preprocessing=preprocessing
    )
    return Conversion(
        layout, arch, labels, official.renamed, model.eval(), processor, target, resolution,
        dropped=layout.dropped_modules(tensors), assumed=assumed,
    )


def save(conversion: Conversion, directory: Path, max_shard_size: str) -> None:
    """Write weights (safetensors, sharded above `max_shard_size`), config and image processor config; an UperNet
    goes through `portable_head`: saved over the built-in backbone where it expresses ours, so plain transformers
    loads it, and otherwise with the code that loads it with `trust_remote_code=True`."""
    if conversion.arch.task == SEGMENTATION:
        portable_head(conversion.model)
    conversion.model.save_pretrained(directory, max_shard_size=max_shard_size, safe_serialization=True)
    conversion.processor.save_pretrained(directory)


def reload(conversion: Conversion, directory: Path) -> transformers.PreTrainedModel:
    """The saved model read back through the Auto class of its task, as users will load it."""
    task = conversion.arch.task
    if task == BACKBONE:
        # transformers 5.23's AutoBackbone.from_pretrained asks the Hub whether a local folder is a repository (and
        # falls back to timm when not), so a local backbone folder loads only through its concrete class.
        return model_class(conversion.arch, conversion.target).from_pretrained(directory).eval()
    return AUTO_CLASSES[task].from_pretrained(directory).eval()
