"""What a conversion produces: the transformers model (convnext_hf or the built-in ConvNext / ConvNextV2) and its image
processor."""

from __future__ import annotations

import torch
import transformers
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling

from .. import (
    ConvNextBackbone,
    ConvNextConfig,
    ConvNextForImageClassification,
    ConvNextHFImageProcessor,
    ConvNextModel,
)
from ..errors import UserInputError
from ..image_processing_convnext import DEFAULT_CROP_PCT, WARP_RESOLUTION
from ..tasks.segmentation.upernet import segmentation_processor, upernet_config
from ..transformers_format import TRANSFORMERS_CLASSES, to_transformers_config, transformers_parameter_name
from .architecture import Architecture
from .labels import label_maps
from .naming import BACKBONE, CLASSIFICATION, FEATURE_EXTRACTION, SEGMENTATION
from .options import CONVNEXT_HF, TARGETS, TRANSFORMERS

# The convnext_hf model of each task; the transformers target's built-in counterpart is in transformers_format.py.
MODEL_CLASSES = {
    CLASSIFICATION: ConvNextForImageClassification,
    FEATURE_EXTRACTION: ConvNextModel,
    BACKBONE: ConvNextBackbone,
}

# timm's `pretrained_cfg` interpolation names.
TIMM_INTERPOLATIONS = {"bicubic": PILImageResampling.BICUBIC, "bilinear": PILImageResampling.BILINEAR}


def model_class(arch: Architecture, target: str) -> type[transformers.PreTrainedModel]:
    """The class of the target model for `arch` (not UperNet, which wraps one)."""
    ours = MODEL_CLASSES[arch.task]
    return TRANSFORMERS_CLASSES[arch.use_grn][ours] if target == TRANSFORMERS else ours


def target_parameter_names(names: dict[str, torch.Tensor], arch: Architecture, target: str) -> dict[str, torch.Tensor]:
    """Parameters named as in convnext_hf, renamed where the built-in ConvNextV2 differs (its `convnextv2.` prefix)."""
    if target != TRANSFORMERS or not arch.use_grn:
        return names
    return {transformers_parameter_name(name, arch.use_grn): value for name, value in names.items()}


# How users load each task's model (and how the converter reloads what it saved before trusting it).
AUTO_CLASSES = {
    CLASSIFICATION: transformers.AutoModelForImageClassification,
    FEATURE_EXTRACTION: transformers.AutoModel,
    BACKBONE: transformers.AutoBackbone,
    SEGMENTATION: transformers.AutoModelForSemanticSegmentation,
}

ALL_STAGES = [1, 2, 3, 4]


def _check_target(arch: Architecture, target: str) -> None:
    if target not in TARGETS:
        raise UserInputError(f"Unknown target {target!r}; choose one of {TARGETS} (--target).")
    if target == TRANSFORMERS and arch.isotropic:
        raise UserInputError(
            "transformers' built-in ConvNext cannot express an isotropic ConvNeXt (it always normalizes the stem and "
            "has four stages); convert it with --target convnext_hf (the default)."
        )


def model_config(
    arch: Architecture, id2label: dict[int, str], image_size: int, target: str
) -> transformers.PreTrainedConfig:
    """The configuration of the target model for an architecture read from the weights."""
    _check_target(arch, target)
    dense = arch.task in (BACKBONE, SEGMENTATION)
    convnext = ConvNextConfig(
        num_channels=arch.num_channels,
        patch_size=arch.patch_size,
        hidden_sizes=list(arch.hidden_sizes),
        depths=list(arch.depths),
        isotropic=arch.isotropic,
        layer_scale_init_value=1e-6 if arch.layer_scale else 0.0,
        use_grn=arch.use_grn,
        stem_type=arch.stem_type,
        head_norm_first=arch.head_norm_first,
        head_hidden_size=arch.head_hidden_size,
        layer_norm_eps=arch.layer_norm_eps,
        image_size=image_size,
        out_indices=ALL_STAGES if dense else None,
        **(label_maps(id2label) if arch.task == CLASSIFICATION else {}),
    )
    if target == TRANSFORMERS:
        convnext = to_transformers_config(convnext)
    if arch.task == SEGMENTATION:
        return upernet_config(arch, convnext, id2label)
    return convnext


def empty_model(arch: Architecture, config: transformers.PreTrainedConfig, target: str) -> transformers.PreTrainedModel:
    """The target model with unallocated parameters, to be filled with `load_state_dict(..., assign=True)`."""
    with torch.device("meta"):
        if arch.task == SEGMENTATION:
            return transformers.UperNetForSemanticSegmentation(config)
        return model_class(arch, target)(config)


def image_processor(
    arch: Architecture, resolution: int, target: str, reduce_labels: bool, timm_preprocessing: dict | None = None
) -> transformers.BaseImageProcessor:
    """The evaluation transform the checkpoint expects at `resolution`; a timm folder's `pretrained_cfg` gives its
    crop_pct, interpolation and mean/std."""
    if arch.task == SEGMENTATION:
        return segmentation_processor(resolution, reduce_labels)
    timm = timm_preprocessing or {}
    interpolation = timm.get("interpolation", "bicubic")
    if interpolation not in TIMM_INTERPOLATIONS:
        raise UserInputError(
            f"The timm config asks for {interpolation!r} interpolation; supported: {sorted(TIMM_INTERPOLATIONS)}."
        )
    processor_class = ConvNextHFImageProcessor if target == CONVNEXT_HF else transformers.ConvNextImageProcessorPil
    return processor_class(
        size={"shortest_edge": resolution},
        crop_pct=timm.get("crop_pct", DEFAULT_CROP_PCT if resolution < WARP_RESOLUTION else 1.0),
        resample=TIMM_INTERPOLATIONS[interpolation],
        image_mean=list(timm.get("mean", IMAGENET_DEFAULT_MEAN)),
        image_std=list(timm.get("std", IMAGENET_DEFAULT_STD)),
    )
