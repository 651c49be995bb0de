"""What every task's model has in common: configuration values from the command line, label maps, freezing the trunk.

Each task builds its own model (`tasks/<task>`) with these.
"""

from __future__ import annotations

import json
import re
from typing import Any

from torch import nn

from ..conversion.labels import label_maps
from ..errors import UserInputError
from .arguments import ModelArguments

# The stage a backbone parameter belongs to: its block's stage, or the stage whose output a norm normalizes.
_STAGE_PARAMETER = re.compile(r"^encoder\.stages\.(\d+)\.|^hidden_states_norms\.stage(\d+)\.")


def config_label_maps(label_names: list[str]) -> dict[str, Any]:
    """num_labels, id2label and label2id of a config for these class names."""
    return {"num_labels": len(label_names), **label_maps(label_names)}


def config_overrides(args: ModelArguments) -> dict[str, Any]:
    """Configuration values from --config_overrides and the dedicated flags (flags win)."""
    overrides: dict[str, Any] = {}
    if args.config_overrides:
        try:
            overrides = json.loads(args.config_overrides)
        except json.JSONDecodeError as error:
            raise UserInputError(
                f"--config_overrides must be a JSON object, e.g. '{{\"drop_path_rate\": 0.1}}': {error}"
            ) from None
        if not isinstance(overrides, dict):
            raise UserInputError(f"--config_overrides must be a JSON object, got {args.config_overrides!r}.")
    for name in ("drop_path_rate", "head_init_scale", "image_size"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    return overrides


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
