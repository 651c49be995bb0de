"""The detector a run trains: one of transformers' DETR-family detectors on this package's `ConvNextBackbone`, and its
image processor.

A new detector is sized to its backbone: transformers' defaults (d_model 256, 6 decoder layers, 300 queries) are
for backbones whose last stage is 768 channels wide or more; smaller ConvNeXts get d_model = half their last width
rounded down to a power of two (at least 64; the deformable attention prefers such head widths), 3 decoder layers
and 100 queries, which train in minutes on a CPU where the full head would dwarf the backbone. `--config_overrides`
changes any of them (keys of the detector's configuration go to the detector, the rest to the ConvNeXt); a `d_model`
given there sizes the widths that follow from it (encoder width, feed-forward widths, attention heads) as well.

It starts from a variant (all new), from a ConvNeXt folder (classification, backbone or converted COCO backbone:
the backbone weights are copied in and the loaded and new parts are logged), or from a detector folder (everything
kept but the class heads when the classes differ).
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
import transformers
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ...backbone_weights import load_backbone_weights
from ...configuration_convnext import ConvNextConfig
from ...errors import UserInputError
from ...model_folder import load_config, load_image_processor, load_model_folder
from ...train.arguments import ModelArguments
from ...train.model import checked_update, config_fields, config_label_maps, config_overrides
from ...train.ranges import check_model_size

logger = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZE = 640
# The last-stage width from which transformers' full-size detector defaults apply.
FULL_SIZE_WIDTH = 768


@dataclass(frozen=True)
class Detector:
    """A detector transformers can put on a ConvNeXt: its classes and which stages feed it."""

    config_class: str
    model_class: str
    processor_class: str
    # Stages (1..4) whose normalized feature maps the detector reads.
    stages: tuple[int, ...]
    # Whether its config has RT-DETR's encoder inputs (encoder_in_channels, feat_strides, denoising).
    hybrid_encoder: bool


DETECTORS: dict[str, Detector] = {
    "rt_detr": Detector("RTDetrConfig", "RTDetrForObjectDetection", "RTDetrImageProcessorPil", (2, 3, 4), True),
    "rt_detr_v2": Detector(
        "RTDetrV2Config", "RTDetrV2ForObjectDetection", "RTDetrImageProcessorPil", (2, 3, 4), True
    ),
    "d_fine": Detector("DFineConfig", "DFineForObjectDetection", "RTDetrImageProcessorPil", (2, 3, 4), True),
    "deformable_detr": Detector(
        "DeformableDetrConfig", "DeformableDetrForObjectDetection", "DeformableDetrImageProcessorPil", (2, 3, 4), False
    ),
    "conditional_detr": Detector(
        "ConditionalDetrConfig", "ConditionalDetrForObjectDetection", "ConditionalDetrImageProcessorPil", (4,), False
    ),
    "detr": Detector("DetrConfig", "DetrForObjectDetection", "DetrImageProcessorPil", (4,), False),
}


def detector_size(backbone: ConvNextConfig, detector: Detector, d_model: int | None = None) -> dict[str, Any]:
    """The detector settings sized to the backbone, its widths to `d_model` when given (see the module docstring)."""
    width = backbone.hidden_sizes[-1]
    channels = [backbone.hidden_sizes[stage - 1] for stage in detector.stages]
    small = width < FULL_SIZE_WIDTH
    sized: dict[str, Any] = {"decoder_layers": 3, "num_queries": 100} if small else {}
    if small or d_model is not None:
        d_model = d_model or (max(64, 2 ** int(math.log2(width // 2))) if small else 256)
        heads = 8 if d_model % 8 == 0 and d_model >= 256 else 4
        sized.update(
            {
                "d_model": d_model,
                "encoder_attention_heads": heads,
                "decoder_attention_heads": heads,
                "encoder_ffn_dim": 4 * d_model,
                "decoder_ffn_dim": 4 * d_model,
            }
        )
    if detector.hybrid_encoder:
        strides = [backbone.total_stride // 2 ** (backbone.num_stages - stage) for stage in detector.stages]
        sized.update(
            {
                "encoder_in_channels": channels,
                "feat_strides": strides,
                # transformers' default width where the sizing left it.
                "encoder_hidden_dim": sized.get("d_model", 256),
                "decoder_in_channels": [sized.get("d_model", 256)] * len(channels),
                "num_feature_levels": len(channels),
            }
        )
        if small:
            sized["num_denoising"] = sized["num_queries"] // 3
    return sized


def _split_overrides(args: ModelArguments, config_class: type) -> tuple[dict[str, Any], dict[str, Any]]:
    """--config_overrides split into (detector settings, ConvNeXt settings): ConvNeXt keys go to the backbone."""
    backbone_keys = set(config_fields(ConvNextConfig))
    head_fields = {key: kind for key, kind in config_fields(config_class).items() if key not in backbone_keys}
    overrides = config_overrides(args, head_fields)
    backbone = {key: value for key, value in overrides.items() if key in backbone_keys}
    return {key: value for key, value in overrides.items() if key not in backbone_keys}, backbone


def detector_overrides(args: ModelArguments) -> tuple[dict[str, Any], dict[str, Any]]:
    """--config_overrides checked against the --detector's and the ConvNeXt's settings and split between them."""
    if args.detector not in DETECTORS:
        raise UserInputError(f"--detector {args.detector!r} is not one of {', '.join(DETECTORS)}.")
    return _split_overrides(args, getattr(transformers, DETECTORS[args.detector].config_class))


def new_detector(
    name: str, backbone: ConvNextConfig, label_names: list[str], overrides: dict[str, Any] | None = None
) -> transformers.PreTrainedModel:
    """A new `name` detector for `label_names` on a ConvNeXt of this configuration, sized to it."""
    detector = DETECTORS[name]
    backbone.out_indices = list(detector.stages)
    config_class = getattr(transformers, detector.config_class)
    overrides = overrides or {}
    settings = {**detector_size(backbone, detector, overrides.get("d_model")), **overrides}
    config = config_class(backbone_config=backbone, **settings, **config_label_maps(label_names))
    model_class = getattr(transformers, detector.model_class)
    check_model_size(model_class, config, f"--detector {name} with --config_overrides")
    return model_class(config)


def _detector_name(config: transformers.PretrainedConfig) -> str | None:
    return config.model_type if config.model_type in DETECTORS else None


def build_detector(args: ModelArguments, label_names: list[str]) -> transformers.PreTrainedModel:
    """The detector for `label_names`: new on a variant, on a ConvNeXt folder's weights, or a detector folder's."""
    if (args.model_name_or_path is None) == (args.variant is None):
        raise UserInputError(
            "Name exactly one model: --model_name_or_path (a ConvNeXt or detector folder) or --variant."
        )
    hub_kwargs = {"revision": args.revision, "cache_dir": args.cache_dir}
    config = None if args.variant else load_config(args.model_name_or_path, "--model_name_or_path", **hub_kwargs)
    if config is not None and _detector_name(config) is not None:
        return _fine_tune_detector(args, config, label_names, hub_kwargs)
    # Ours, or transformers' built-in ConvNeXt (V1/V2), which ConvNextConfig.from_pretrained reads too.
    if config is not None and config.model_type not in (ConvNextConfig.model_type, "convnext", "convnextv2"):
        raise UserInputError(
            f"{args.model_name_or_path} is a {config.model_type} model; object detection starts from a ConvNeXt "
            f"folder or a detector folder ({', '.join(DETECTORS)})."
        )
    if args.detector not in DETECTORS:
        raise UserInputError(f"--detector {args.detector!r} is not one of {', '.join(DETECTORS)}.")
    detector = DETECTORS[args.detector]
    head, backbone_overrides = _split_overrides(args, getattr(transformers, detector.config_class))
    if args.variant is not None:
        return new_detector(
            args.detector, ConvNextConfig.from_variant(args.variant, **backbone_overrides), label_names, head
        )
    backbone = ConvNextConfig.from_pretrained(args.model_name_or_path, **hub_kwargs)
    backbone.update({**backbone_overrides, "num_labels": 2, "id2label": None, "label2id": None})
    model = new_detector(args.detector, backbone, label_names, head)
    _load_backbone(model, args.model_name_or_path)
    return model


def _load_backbone(model: transformers.PreTrainedModel, source: str) -> None:
    """Copy a ConvNeXt folder's trunk (and output norms, when it has them) into the detector's backbone; log it."""
    report = load_backbone_weights(model, source)
    logger.info("The detector heads are new; backbone: %s", report)


def _fine_tune_detector(
    args: ModelArguments, config: transformers.PretrainedConfig, label_names: list[str], hub_kwargs: dict[str, Any]
) -> transformers.PreTrainedModel:
    """A detector folder fine-tuned: everything kept but its class heads when the classes differ."""
    known = [str(config.id2label[index]) for index in range(config.num_labels)]
    if len(known) == len(label_names) and known != label_names and not args.replace_head:
        raise UserInputError(
            f"The data's classes {label_names} disagree with the classes of {args.model_name_or_path} {known}; "
            "pass --replace_head to train new class heads, or name the categories as the model does."
        )
    head, backbone_overrides = _split_overrides(args, type(config))
    # Saved folders hold transformers' built-in backbone config (portable_head); training runs on ours, which
    # names the same weights.
    config.backbone_config = checked_update(
        ConvNextConfig.from_dict(config.backbone_config.to_dict()), backbone_overrides, args.model_name_or_path
    )
    config.update({**head, **config_label_maps(label_names)})
    model_class = getattr(transformers, DETECTORS[config.model_type].model_class)
    model = load_model_folder(
        model_class, args.model_name_or_path, config=config, class_counts=(len(known), len(label_names)), **hub_kwargs
    )
    if known != label_names:
        # As many classes as before keep their old heads' shapes, so loading kept them: start them afresh too.
        if len(known) == len(label_names):
            fresh = model_class(config).state_dict()
            model.load_state_dict({name: fresh[name] for name in class_head_names(model_class, config)}, strict=False)
        logger.info("New class heads for %d classes: %s", len(label_names), label_names)
    return model


def class_head_names(model_class: type, config: transformers.PretrainedConfig) -> list[str]:
    """The detector's tensors whose shapes follow the number of classes: its class heads."""
    shapes = []
    for count in (config.num_labels, config.num_labels + 1):
        other = copy.deepcopy(config)
        other.update(config_label_maps([str(index) for index in range(count)]))
        with torch.device("meta"):
            shapes.append({name: tensor.shape for name, tensor in model_class(other).state_dict().items()})
    return [name for name, shape in shapes[0].items() if shapes[1][name] != shape]


def build_detection_processor(args: ModelArguments, model: transformers.PreTrainedModel) -> Any:
    """The detector's image processor: resize to --image_size square (default: the detector folder's, else 640),
    rescale and normalize as ImageNet (the ConvNeXt's pre-training), no padding."""
    size = args.image_size
    if size is None and args.model_name_or_path is not None:
        processor = load_image_processor(args.model_name_or_path, "--model_name_or_path", missing_ok=True)
        size = getattr(processor, "size", {}).get("height") if processor is not None else None
    processor_class = getattr(transformers, DETECTORS[model.config.model_type].processor_class)
    return processor_class(
        size={"height": size or DEFAULT_IMAGE_SIZE, "width": size or DEFAULT_IMAGE_SIZE},
        do_normalize=True,
        image_mean=list(IMAGENET_DEFAULT_MEAN),
        image_std=list(IMAGENET_DEFAULT_STD),
        do_pad=False,
    )
