"""What a conversion produces: the transformers model (convnext_hf or the built-in ConvNext) and its image processor."""

from __future__ import annotations

import torch
import transformers
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling

from .. import (
    ConvNextBackbone,
    ConvNextConfig,
    ConvNextForImageClassification,
    ConvNextImageProcessor,
    ConvNextModel,
)
from ..errors import UserInputError
from ..image_processing_convnext import DEFAULT_CROP_PCT, WARP_RESOLUTION
from ..native import to_native_config
from .architecture import Architecture
from .labels import label_maps
from .naming import BACKBONE, CLASSIFICATION, FEATURE_EXTRACTION, SEGMENTATION
from .segmentation import segmentation_processor, upernet_config

CONVNEXT_HF = "convnext_hf"
TRANSFORMERS = "transformers"
TARGETS = (CONVNEXT_HF, TRANSFORMERS)


MODEL_CLASSES = {
    CONVNEXT_HF: {
        CLASSIFICATION: ConvNextForImageClassification,
        FEATURE_EXTRACTION: ConvNextModel,
        BACKBONE: ConvNextBackbone,
    },
    TRANSFORMERS: {
        CLASSIFICATION: transformers.ConvNextForImageClassification,
        FEATURE_EXTRACTION: transformers.ConvNextModel,
        BACKBONE: transformers.ConvNextBackbone,
    },
}

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
        image_size=image_size,
        out_indices=ALL_STAGES if dense else None,
        **(label_maps(id2label) if arch.task == CLASSIFICATION else {}),
    )
    if target == TRANSFORMERS:
        convnext = to_native_config(convnext)
    if arch.task == SEGMENTATION:
        return upernet_config(arch, convnext, id2label)
    return convnext


def empty_model(arch: Architecture, config: transformers.PreTrainedConfig, target: str) -> transformers.PreTrainedModel:
    """The target model with unallocated parameters, to be filled with `load_state_dict(..., assign=True)`."""
    with torch.device("meta"):
        if arch.task == SEGMENTATION:
            return transformers.UperNetForSemanticSegmentation(config)
        return MODEL_CLASSES[target][arch.task](config)


def image_processor(
    arch: Architecture, resolution: int, target: str, reduce_labels: bool
) -> transformers.BaseImageProcessor:
    """The evaluation transform the checkpoint expects at `resolution`."""
    if arch.task == SEGMENTATION:
        return segmentation_processor(resolution, reduce_labels)
    processor_class = ConvNextImageProcessor if target == CONVNEXT_HF else transformers.ConvNextImageProcessorPil
    return processor_class(
        size={"shortest_edge": resolution},
        crop_pct=DEFAULT_CROP_PCT if resolution < WARP_RESOLUTION else 1.0,
        resample=PILImageResampling.BICUBIC,
        image_mean=IMAGENET_DEFAULT_MEAN,
        image_std=IMAGENET_DEFAULT_STD,
    )
