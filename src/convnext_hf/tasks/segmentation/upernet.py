"""UperNet + ConvNeXt semantic segmentation as transformers' `UperNetForSemanticSegmentation`.

The backbone is a ConvNeXt backbone returning all four stages through their own LayerNorms (the official
`norm0..3`), which UperNet instantiates through `AutoBackbone` from its `backbone_config`.
"""

from __future__ import annotations

import transformers
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling

from ...conversion.architecture import Architecture, UperNetHead
from ...errors import UserInputError


def upernet_config(
    arch: Architecture, backbone_config: transformers.PreTrainedConfig, id2label: dict[int, str]
) -> transformers.UperNetConfig:
    """UperNet configuration with the head sizes read from the weights and the given ConvNeXt backbone."""
    if arch.upernet is None:
        raise UserInputError(
            f"{arch.describe()} has no UperNet head; only semantic-segmentation checkpoints have one."
        )
    return upernet_head_config(arch.upernet, backbone_config, id2label)


def upernet_head_config(
    head: UperNetHead, backbone_config: transformers.PreTrainedConfig, id2label: dict[int, str]
) -> transformers.UperNetConfig:
    """UperNet configuration with the given head sizes and ConvNeXt backbone."""
    auxiliary = {}
    if head.auxiliary_channels is not None:
        auxiliary = {
            "auxiliary_channels": head.auxiliary_channels,
            "auxiliary_num_convs": head.auxiliary_num_convs,
            "auxiliary_concat_input": head.auxiliary_concat_input,
        }
    return transformers.UperNetConfig(
        backbone_config=backbone_config,
        hidden_size=head.channels,
        pool_scales=list(head.pool_scales),
        use_auxiliary_head=head.auxiliary_channels is not None,
        id2label=id2label,
        **auxiliary,
    )


def segmentation_processor(crop_size: int, reduce_labels: bool) -> transformers.SegformerImageProcessorPil:
    """The evaluation transform of the ADE20K models: resize to the training crop, ImageNet normalization.

    `reduce_labels` shifts segmentation maps by one as mmsegmentation's `reduce_zero_label` does for ADE20K, whose
    label 0 ("other") is not a class. Pillow-only, so it runs where torchvision is absent.
    """
    return transformers.SegformerImageProcessorPil(
        size={"height": crop_size, "width": crop_size},
        resample=PILImageResampling.BILINEAR,
        image_mean=IMAGENET_DEFAULT_MEAN,
        image_std=IMAGENET_DEFAULT_STD,
        do_reduce_labels=reduce_labels,
    )
