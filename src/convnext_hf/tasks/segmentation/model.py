"""The UperNet + ConvNeXt a segmentation run trains.

transformers' `UperNetForSemanticSegmentation` over this package's `ConvNextBackbone` (all four stages, each through
its own LayerNorm), as the converter builds it. It starts from a variant (all new), from a ConvNeXt classification,
backbone or converted folder (its trunk copied in by `load_backbone_weights`, heads new; the report rides on the model
as `backbone_weights_report` for the card) or from a converted UperNet folder (everything kept but the two 1×1
classifiers when the classes differ).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import Any

import huggingface_hub
import transformers

from ...backbone_weights import load_backbone_weights
from ...configuration_convnext import ConvNextConfig
from ...conversion.architecture import PSP_POOL_SCALES, UperNetHead
from ...conversion.targets import ALL_STAGES
from ...errors import UserInputError
from ...model_folder import load_config, load_image_processor, load_model_folder
from ...train.arguments import ModelArguments
from ...train.model import checked_update, config_fields, config_label_maps, config_overrides, new_config
from ...train.ranges import check_model_size
from .upernet import segmentation_processor, upernet_head_config

logger = logging.getLogger(__name__)

DEFAULT_CROP_SIZE = 512
# The head of every official ConvNeXt UperNet (T to XL): 512 channels, PSPNet pooling, an FCN auxiliary head of 256
# on stage 3.
OFFICIAL_HEAD = UperNetHead(
    channels=512,
    pool_scales=PSP_POOL_SCALES,
    auxiliary_channels=256,
    auxiliary_num_convs=1,
    auxiliary_concat_input=False,
)
# The first-stage width of ConvNeXt-T, the narrowest backbone the official head was made for; narrower backbones get
# a head narrowed in proportion (512 channels on a 0.6 M-parameter backbone would be most of a 113 MB model).
OFFICIAL_HEAD_BASE_WIDTH = 96
# UperNetConfig settings that --config_overrides may change; every other key goes to the ConvNeXt backbone.
HEAD_KEYS = (
    "hidden_size",
    "pool_scales",
    "use_auxiliary_head",
    "auxiliary_loss_weight",
    "auxiliary_channels",
    "auxiliary_num_convs",
    "auxiliary_concat_input",
)


def split_overrides(args: ModelArguments) -> tuple[dict[str, Any], dict[str, Any]]:
    """--config_overrides and the dedicated flags, split into (UperNet head settings, ConvNeXt backbone settings)."""
    head_fields = {key: value for key, value in config_fields(transformers.UperNetConfig).items() if key in HEAD_KEYS}
    overrides = config_overrides(args, head_fields)
    head = {key: value for key, value in overrides.items() if key in HEAD_KEYS}
    return head, {key: value for key, value in overrides.items() if key not in HEAD_KEYS}


def head_for(backbone: ConvNextConfig) -> UperNetHead:
    """The official head for backbones as wide as ConvNeXt-T or wider; for narrower ones, its channels scaled by the
    first-stage width over 96 (rounded up to a multiple of 8), the auxiliary head at half of that."""
    width = backbone.hidden_sizes[0]
    if width >= OFFICIAL_HEAD_BASE_WIDTH:
        return OFFICIAL_HEAD
    channels = _multiple_of_8(OFFICIAL_HEAD.channels * width / OFFICIAL_HEAD_BASE_WIDTH)
    return dataclasses.replace(OFFICIAL_HEAD, channels=channels, auxiliary_channels=_multiple_of_8(channels / 2))


def _multiple_of_8(value: float) -> int:
    return max(8, 8 * math.ceil(value / 8))


def _new_upernet(backbone: ConvNextConfig, label_names: list[str], head: dict[str, Any],
                 source: str = "--config_overrides"):
    config = upernet_head_config(head_for(backbone), backbone, dict(enumerate(label_names)))
    config.update({**head, **config_label_maps(label_names)})
    check_model_size(transformers.UperNetForSemanticSegmentation, config, source)
    return transformers.UperNetForSemanticSegmentation(config)


def build_segmentation_model(
    args: ModelArguments, label_names: list[str]
) -> transformers.UperNetForSemanticSegmentation:
    """An UperNet for `label_names` from a variant, a ConvNeXt classification folder or an UperNet folder."""
    if (args.model_name_or_path is None) == (args.variant is None):
        raise UserInputError(
            "Name exactly one model: --model FOLDER (a ConvNeXt classification or UperNet folder) or --model PRESET "
            "(e.g. convnext_atto, trained from scratch; also --variant)."
        )
    head, backbone_overrides = split_overrides(args)
    if args.variant is not None:
        backbone = new_config(args.variant, out_indices=ALL_STAGES, **backbone_overrides)
        return _new_upernet(backbone, label_names, head, f"--variant {args.variant} with --config_overrides")
    hub_kwargs = {"revision": args.revision, "cache_dir": args.cache_dir}
    config = load_config(args.model_name_or_path, "--model_name_or_path", **hub_kwargs)
    if config.model_type == "upernet":
        known = [config.id2label[index] for index in range(config.num_labels)]
        # Portable folders store the built-in backbone config (portable_head); training runs on ours, same weights.
        config.backbone_config = ConvNextConfig.from_dict(config.backbone_config.to_dict())
        checked_update(config.backbone_config, backbone_overrides, args.model_name_or_path)
        config.update({**head, **config_label_maps(label_names)})
        model = load_model_folder(
            transformers.UperNetForSemanticSegmentation, args.model_name_or_path, config=config,
            class_counts=(len(known), len(label_names)), **hub_kwargs,
        )
        if known != label_names or args.replace_head:
            # Same-sized classifiers would have loaded with another dataset's classes: start them afresh.
            for classifier in (model.decode_head.classifier, getattr(model.auxiliary_head, "classifier", None)):
                if classifier is not None:
                    model._init_weights(classifier)
            logger.info("New 1×1 classifiers for %d classes: %s", len(label_names), label_names)
        return model
    backbone = ConvNextConfig.from_pretrained(args.model_name_or_path, **hub_kwargs)
    checked_update(backbone, backbone_overrides, args.model_name_or_path)
    backbone.update({"num_labels": 2, "id2label": None, "label2id": None})
    backbone.out_indices = ALL_STAGES
    model = _new_upernet(backbone, label_names, head, f"{args.model_name_or_path} with --config_overrides")
    folder = args.model_name_or_path
    if not os.path.isdir(folder):
        folder = huggingface_hub.snapshot_download(folder, allow_patterns=["*.json", "*.safetensors"], **hub_kwargs)
    # The folder's trunk loads into the backbone, strictly; per-stage output norms it lacks (a classifier has none)
    # and the heads are new. The report is logged here and stated in the card.
    model.backbone_weights_report = load_backbone_weights(model, folder)
    logger.info("New UperNet heads for %s", label_names)
    return model


def build_segmentation_processor(args: ModelArguments) -> transformers.BaseImageProcessor:
    """Resize to --image_size (default: the UperNet folder's size, or 512) and normalize as ImageNet; labels as is."""
    size = args.image_size
    if size is None and args.model_name_or_path is not None:
        processor = load_image_processor(args.model_name_or_path, "--model_name_or_path", missing_ok=True)
        size = getattr(processor, "size", {}).get("height") if processor is not None else None
    return segmentation_processor(size or DEFAULT_CROP_SIZE, reduce_labels=False)
