"""The UperNet + ConvNeXt a segmentation run trains.

transformers' `UperNetForSemanticSegmentation` over this package's `ConvNextBackbone` (all four stages, each through
its own LayerNorm), as the converter builds it. It starts from a variant (all new), from a ConvNeXt classification
folder (backbone weights kept, heads new) or from a converted UperNet folder (everything kept but the two 1×1
classifiers when the classes differ).
"""

from __future__ import annotations

import logging
from typing import Any

import transformers

from ...configuration_convnext import ConvNextConfig
from ...conversion.architecture import PSP_POOL_SCALES, UperNetHead
from ...conversion.targets import ALL_STAGES
from ...errors import UserInputError
from ...modeling_convnext import ConvNextBackbone
from ...train.arguments import ModelArguments
from ...train.model import config_label_maps, config_overrides
from .upernet import segmentation_processor, upernet_head_config

logger = logging.getLogger(__name__)

DEFAULT_CROP_SIZE = 512
# The head of every official ConvNeXt UperNet: 512 channels, PSPNet pooling, an FCN auxiliary head of 256 on stage 3.
OFFICIAL_HEAD = UperNetHead(
    channels=512,
    pool_scales=PSP_POOL_SCALES,
    auxiliary_channels=256,
    auxiliary_num_convs=1,
    auxiliary_concat_input=False,
)
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


def _split_overrides(args: ModelArguments) -> tuple[dict[str, Any], dict[str, Any]]:
    """--config_overrides and the dedicated flags, split into (UperNet head settings, ConvNeXt backbone settings)."""
    overrides = config_overrides(args)
    head = {key: value for key, value in overrides.items() if key in HEAD_KEYS}
    return head, {key: value for key, value in overrides.items() if key not in HEAD_KEYS}


def _new_upernet(backbone: ConvNextConfig, label_names: list[str], head: dict[str, Any]):
    config = upernet_head_config(OFFICIAL_HEAD, backbone, dict(enumerate(label_names)))
    config.update({**head, **config_label_maps(label_names)})
    return transformers.UperNetForSemanticSegmentation(config)


def build_segmentation_model(
    args: ModelArguments, label_names: list[str]
) -> transformers.UperNetForSemanticSegmentation:
    """An UperNet for `label_names` from a variant, a ConvNeXt classification folder or an UperNet folder."""
    if (args.model_name_or_path is None) == (args.variant is None):
        raise UserInputError(
            "Name exactly one model: --model_name_or_path (a ConvNeXt classification or UperNet folder) or --variant."
        )
    head, backbone_overrides = _split_overrides(args)
    if args.variant is not None:
        backbone = ConvNextConfig.from_variant(args.variant, out_indices=ALL_STAGES, **backbone_overrides)
        return _new_upernet(backbone, label_names, head)
    hub_kwargs = {"revision": args.revision, "cache_dir": args.cache_dir}
    config = transformers.AutoConfig.from_pretrained(args.model_name_or_path, **hub_kwargs)
    if config.model_type == "upernet":
        known = [config.id2label[index] for index in range(config.num_labels)]
        # Portable folders store the built-in backbone config (portable_head); training runs on ours, same weights.
        config.backbone_config = ConvNextConfig.from_dict(config.backbone_config.to_dict())
        config.backbone_config.update(backbone_overrides)
        config.update({**head, **config_label_maps(label_names)})
        model = transformers.UperNetForSemanticSegmentation.from_pretrained(
            args.model_name_or_path, config=config, ignore_mismatched_sizes=True, **hub_kwargs
        )
        if known != label_names or args.replace_head:
            # Same-sized classifiers would have loaded with another dataset's classes: start them afresh.
            for classifier in (model.decode_head.classifier, getattr(model.auxiliary_head, "classifier", None)):
                if classifier is not None:
                    model._init_weights(classifier)
            logger.info("New 1×1 classifiers for %d classes: %s", len(label_names), label_names)
        return model
    backbone = ConvNextConfig.from_pretrained(args.model_name_or_path, **hub_kwargs)
    backbone.update({**backbone_overrides, "num_labels": 2, "id2label": None, "label2id": None})
    backbone.out_indices = ALL_STAGES
    model = _new_upernet(backbone, label_names, head)
    # The classification folder's trunk (`convnext.*`) loads into the backbone; its per-stage output norms and the
    # heads are new.
    pretrained = ConvNextBackbone.from_pretrained(args.model_name_or_path, config=backbone, **hub_kwargs)
    model.backbone.load_state_dict(pretrained.state_dict())
    logger.info("Backbone weights from %s; new UperNet heads for %s", args.model_name_or_path, label_names)
    return model


def build_segmentation_processor(args: ModelArguments) -> transformers.BaseImageProcessor:
    """Resize to --image_size (default: the UperNet folder's size, or 512) and normalize as ImageNet; labels as is."""
    size = args.image_size
    if size is None and args.model_name_or_path is not None:
        try:
            size = transformers.AutoImageProcessor.from_pretrained(args.model_name_or_path).size.get("height")
        except OSError:
            size = None
    return segmentation_processor(size or DEFAULT_CROP_SIZE, reduce_labels=False)
