"""The model and image processor a run starts from: a pretrained ConvNeXt (head replaced when needed) or a new one."""

from __future__ import annotations

import difflib
import json
import logging
import re
import types
import typing
from typing import Any

from torch import nn

from ..configuration_convnext import ConvNextConfig
from ..conversion.labels import label_maps
from ..errors import UserInputError
from ..image_processing_convnext import ConvNextHFImageProcessor
from ..modeling_convnext import ConvNextForImageClassification
from .arguments import ModelArguments

logger = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZE = 224
# transformers names the classes of a config built without labels LABEL_0, LABEL_1, ...
_PLACEHOLDER_LABEL = re.compile(r"LABEL_\d+")
# The stage a backbone parameter belongs to: its block's stage, or the stage whose output a norm normalizes.
_STAGE_PARAMETER = re.compile(r"^encoder\.stages\.(\d+)\.|^hidden_states_norms\.stage(\d+)\.")
MULTI_LABEL_PROBLEM = "multi_label_classification"


def config_label_maps(label_names: list[str]) -> dict[str, Any]:
    """num_labels, id2label and label2id of a config for these class names."""
    return {"num_labels": len(label_names), **label_maps(label_names)}


# Configuration entries the run sets itself from the data and the task; an override of them would be lost.
_SET_BY_THE_RUN = ("num_labels", "id2label", "label2id", "problem_type")
# Accepted by ConvNextConfig beside its fields: transformers' backbone settings and the stage count.
_CONFIG_KEYWORDS = {"out_features": "list[str] | None", "out_indices": "list[int] | None", "num_stages": "int"}


def _annotation(declared: Any) -> Any:
    """A field's type from its annotation (a string under postponed evaluation); None when it names other modules."""
    if not isinstance(declared, str):
        return declared
    try:
        return eval(declared, {"Literal": typing.Literal})  # noqa: S307 - the annotations of our own config classes
    except NameError:
        return None


def _conforms(value: Any, expected: Any) -> bool:
    """Whether a JSON value fits a field's type (int for float is fine; bool is not a number)."""
    if expected is None or expected is Any:
        return True
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, arm) for arm in typing.get_args(expected))
    if origin is typing.Literal:
        return value in typing.get_args(expected)
    if expected is type(None):
        return value is None
    if origin in (list, tuple):
        return isinstance(value, list) and all(_conforms(item, typing.get_args(expected)[0]) for item in value)
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(expected, type):
        return isinstance(value, expected)
    return True


def config_fields(config_class: type) -> dict[str, Any]:
    """The settings a configuration class declares itself (not transformers' common ones), with their types."""
    declared = {name: value for name, value in vars(config_class).get("__annotations__", {}).items()}
    fields = {name.lstrip("_"): _annotation(value) for name, value in declared.items() if not name.startswith("__")}
    if config_class is ConvNextConfig:
        fields.update({name: _annotation(value) for name, value in _CONFIG_KEYWORDS.items()})
    return fields


def check_overrides(overrides: dict[str, Any], fields: dict[str, Any]) -> None:
    """Refuse --config_overrides keys that are not settings of the model (naming the nearest) or values of the
    wrong type."""
    for key, value in overrides.items():
        if key in _SET_BY_THE_RUN:
            raise UserInputError(
                f"--config_overrides sets {key!r}, which the run sets itself from the data's classes and the task; "
                "remove it (the classes are the data's, the task is --task)."
            )
        if key not in fields:
            nearest = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"did you mean {nearest[0]!r}? " if nearest else ""
            raise UserInputError(
                f"--config_overrides: the model's configuration has no {key!r}; {hint}"
                f"its settings are {', '.join(sorted(fields))}."
            )
        if not _conforms(value, fields[key]):
            raise UserInputError(
                f"--config_overrides: {key!r} is {json.dumps(value)}; it takes {_type_name(fields[key])}."
            )


def _type_name(expected: Any) -> str:
    """A field's type in words: "a list of integers", "a number or null"."""
    origin, arms = typing.get_origin(expected), typing.get_args(expected)
    if origin in (typing.Union, types.UnionType):
        kinds = [arm for arm in arms if arm is not type(None) and not (arm is int and float in arms)]
        names = list(dict.fromkeys(_type_name(arm) for arm in kinds))
        return " or ".join(names + (["null"] if type(None) in arms else []))
    if origin is typing.Literal:
        return "one of " + ", ".join(json.dumps(arm) for arm in arms)
    if origin in (list, tuple):
        return "a list of " + {"an integer": "integers", "a string": "strings"}.get(_type_name(arms[0]), "values")
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(expected, str(expected))


def config_overrides(
    args: ModelArguments, head_fields: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Configuration values from --config_overrides and the dedicated flags (flags win), checked against the
    ConvNeXt configuration's settings (and the segmentation head's `head_fields`)."""
    overrides: dict[str, Any] = {}
    if args.config_overrides:
        try:
            overrides = json.loads(args.config_overrides)
        except json.JSONDecodeError as error:
            raise UserInputError(
                f"--config_overrides must be a JSON object, e.g. '{{\"drop_path_rate\": 0.1}}': {error}"
            ) from None
        if not isinstance(overrides, dict):
            raise UserInputError(
                f"--config_overrides must be a JSON object of settings, e.g. '{{\"drop_path_rate\": 0.1}}', got "
                f"{args.config_overrides!r}."
            )
        check_overrides(overrides, {**config_fields(ConvNextConfig), **(head_fields or {})})
    for name in ("drop_path_rate", "head_init_scale", "image_size"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    return overrides


def new_config(variant: str, **settings: Any) -> ConvNextConfig:
    """`ConvNextConfig.from_variant`, its refusal of inconsistent settings said in terms of the command line."""
    try:
        return ConvNextConfig.from_variant(variant, **settings)
    except (ValueError, TypeError) as error:
        raise UserInputError(f"--variant {variant} with --config_overrides: {error}") from None


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
            "Name exactly one model: --model_name_or_path (a saved folder or Hub id to fine-tune) or --variant "
            "(e.g. atto or tiny, trained from scratch)."
        )
    overrides = {**config_overrides(args), "problem_type": MULTI_LABEL_PROBLEM if multi_label else None}
    if args.variant is not None:
        config = new_config(args.variant, **overrides, **config_label_maps(label_names))
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
    config.update({**overrides, **config_label_maps(label_names)})
    model = ConvNextForImageClassification.from_pretrained(
        args.model_name_or_path, config=config, ignore_mismatched_sizes=new_head, **hub_kwargs
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


def freeze_backbone(model: nn.Module, unfreeze_last_stages: int = 0) -> list[str]:
    """Stop training the ConvNeXt trunk but its last `unfreeze_last_stages` stages (and the norms after them).

    Works for the classifier (trunk `convnext`) and for UperNet (trunk `backbone`); returns the frozen names.
    """
    trunk = model.backbone if hasattr(model, "backbone") else model.convnext
    num_stages = trunk.config.num_stages
    if not 0 <= unfreeze_last_stages <= num_stages:
        raise UserInputError(
            f"--unfreeze_last_stages {unfreeze_last_stages} is not between 0 and the model's {num_stages} stages."
        )
    first_trained = num_stages - unfreeze_last_stages
    frozen = []
    for name, parameter in trunk.named_parameters():
        match = _STAGE_PARAMETER.match(name)
        if match is not None:
            stage = int(match.group(1)) if match.group(1) is not None else int(match.group(2)) - 1
        else:
            # The stem comes before every stage; the classifier's final norm comes after the last one.
            stage = -1 if name.startswith("embeddings.") else num_stages - 1
        if stage < first_trained:
            parameter.requires_grad_(False)
            frozen.append(name)
    return frozen
