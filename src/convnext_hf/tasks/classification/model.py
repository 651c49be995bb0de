"""The classifier and processor a run starts from: a pretrained ConvNeXt (head replaced when needed) or a new one."""

from __future__ import annotations

import logging
import re
from typing import Any

from torch import nn

from ...configuration_convnext import ConvNextConfig
from ...errors import UserInputError
from ...image_processing_convnext import ConvNextHFImageProcessor
from ...model_folder import load_model_folder
from ...modeling_convnext import ConvNextForImageClassification
from ...train.arguments import ModelArguments
from ...train.model import checked_update, config_label_maps, config_overrides, new_config
from ...train.ranges import check_model_size
from .. import MULTI_LABEL_CLASSIFICATION, TASKS

logger = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZE = 224
# transformers names the classes of a config built without labels LABEL_0, LABEL_1, ...
_PLACEHOLDER_LABEL = re.compile(r"LABEL_\d+")
# transformers' problem type that makes its pipeline score each label with a sigmoid.
MULTI_LABEL_PROBLEM = TASKS[MULTI_LABEL_CLASSIFICATION].problem_type


def _labels_disagree(config: ConvNextConfig, label_names: list[str]) -> bool:
    names = [config.id2label[index] for index in range(config.num_labels)]
    if all(_PLACEHOLDER_LABEL.fullmatch(str(name)) for name in names):
        return False
    return names != label_names


def build_model(
    args: ModelArguments, label_names: list[str], multi_label: bool = False
) -> ConvNextForImageClassification:
    """A new model of `args.variant`, or the pretrained one with a classifier for `label_names`.

    A multi-label model is marked `problem_type="multi_label_classification"`, so that transformers' pipeline scores
    each label with a sigmoid.

    The classifier is replaced when the class count differs or `--replace_head` is given; a pretrained classifier
    whose class names disagree with the data is refused rather than silently relabelled.
    """
    if (args.model_name_or_path is None) == (args.variant is None):
        raise UserInputError(
            "Name exactly one model: --model FOLDER_OR_HUB_ID (a saved model to fine-tune) or --model PRESET "
            "(e.g. convnext_atto or tiny, trained from scratch; also --variant)."
        )
    overrides = {**config_overrides(args), "problem_type": MULTI_LABEL_PROBLEM if multi_label else None}
    if args.variant is not None:
        config = new_config(args.variant, **overrides, **config_label_maps(label_names))
        check_model_size(ConvNextForImageClassification, config, f"--variant {args.variant} with --config_overrides")
        return ConvNextForImageClassification(config)
    # This package's classes load the weights: code in a Hub repository is never run.
    hub_kwargs = {"revision": args.revision, "cache_dir": args.cache_dir}
    config = ConvNextConfig.from_pretrained(args.model_name_or_path, **hub_kwargs)
    new_head = args.replace_head or config.num_labels != len(label_names)
    if not new_head and _labels_disagree(config, label_names):
        model_labels = [config.id2label[index] for index in range(config.num_labels)]
        raise UserInputError(
            f"The data's classes {label_names} disagree with the classes of {args.model_name_or_path} "
            f"{model_labels}. Pass --replace_head to train a new classifier for your classes, or name the class "
            "folders as the model does."
        )
    known_classes = config.num_labels
    checked_update(config, {**overrides, **config_label_maps(label_names)}, args.model_name_or_path)
    model = load_model_folder(
        ConvNextForImageClassification, args.model_name_or_path, config=config,
        class_counts=(known_classes, config.num_labels) if new_head else None, head="classifier.", **hub_kwargs,
    )
    if new_head:
        # A same-shaped head would have loaded from the checkpoint: start it afresh, with the model's own init.
        # Same input width as the built head: the last stage's, or the MLP head's hidden size.
        model.classifier = nn.Linear(model.classifier.in_features, config.num_labels)
        model._init_weights(model.classifier)
        logger.info("New classifier for %d classes: %s", config.num_labels, label_names)
    return model


def build_processor(args: ModelArguments, model: ConvNextForImageClassification) -> ConvNextHFImageProcessor:
    """The pretrained model's processor (resized to --image_size when given), or a new one for a new model."""
    processor_kwargs: dict[str, Any] = {}
    if args.image_size is not None:
        processor_kwargs["size"] = {"shortest_edge": args.image_size}
    if args.crop_pct is not None:
        processor_kwargs["crop_pct"] = args.crop_pct
    if args.model_name_or_path is not None:
        return ConvNextHFImageProcessor.from_pretrained(
            args.model_name_or_path, revision=args.revision, cache_dir=args.cache_dir, **processor_kwargs
        )
    processor_kwargs.setdefault("size", {"shortest_edge": model.config.image_size or DEFAULT_IMAGE_SIZE})
    return ConvNextHFImageProcessor(**processor_kwargs)
