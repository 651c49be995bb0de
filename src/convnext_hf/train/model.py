"""What every task's model has in common: configuration values from the command line, label maps, freezing the trunk.

Each task builds its own model (`tasks/<task>`) with these.
"""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from typing import Any

from torch import nn

from ..configuration_convnext import ConvNextConfig
from ..conversion.labels import label_maps
from ..errors import UserInputError
from .arguments import ModelArguments
from .ranges import check_config_ranges

# The stage a backbone parameter belongs to: its block's stage, or the stage whose output a norm normalizes.
_STAGE_PARAMETER = re.compile(r"^encoder\.stages\.(\d+)\.|^hidden_states_norms\.stage(\d+)\.")


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
    """Refuse --config_overrides keys that are not settings of the model (naming the nearest), values of the wrong
    type, and values outside their range (`ranges.CONFIG_RANGES`)."""
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
    check_config_ranges(overrides, "--config_overrides")


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


def checked_update(config: ConvNextConfig, settings: dict[str, Any], source: str) -> ConvNextConfig:
    """`config` (of the folder `source`) with `settings` applied and checked as a new configuration would be:
    `update` sets attributes without the configuration's own checks."""
    config.update(settings)
    try:
        type(config).from_dict(config.to_dict())
    except (ValueError, TypeError) as error:
        raise UserInputError(f"{source} with --config_overrides and the model flags: {error}") from None
    return config


def freeze_backbone(model: nn.Module, unfreeze_last_stages: int = 0) -> list[str]:
    """Stop training the ConvNeXt trunk but its last `unfreeze_last_stages` stages (and the norms after them).

    Works for the classifier (trunk `convnext`), UperNet (trunk `backbone`) and detectors (the ConvNeXt backbone
    inside, found as `load_backbone_weights` finds it); returns the frozen names.
    """
    trunk = getattr(model, "backbone", None) or getattr(model, "convnext", None)
    if trunk is None:
        from ..backbone_weights import find_backbone

        trunk = find_backbone(model)[1]
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
