"""Optimizer parameter groups of the ConvNeXt recipe: weight-decay exclusions and layer-wise learning-rate decay.

AdamW decays every weight matrix and kernel but no 1-D parameter: LayerNorm weights and biases, all biases and the
layer-scale vectors. For fine-tuning, layer-wise decay gives layer i of L the learning rate lr · decay^(L + 1 - i):
the classifier and the final norm train at the full rate, each earlier layer a factor `decay` slower. Which blocks
share a layer follows the official code:

- `group` (ConvNeXt V1): a four-stage network is 12 layers. The stem is layer 0, stage 1 is layer 1, stage 2 with
  its downsampling is layer 2, stage 3 is layers 3-11 (its blocks in threes, which splits the 27 blocks of the S/B/L
  models evenly) and stage 4 with its downsampling is layer 12.
- `single` (ConvNeXt V2): every block is its own layer; a downsampling layer (the stem for stage 1) joins the first
  block of its stage. Works for any number of stages, isotropic models included.
- `stage` (the official UperNet segmentation recipe, `stage_wise` with `num_layers` 6): the stem and every
  downsampling layer are layer 0, stage i is layer i + 1, and the rest (the backbone's output norms, the heads)
  is the top layer, L + 1 with L = stages + 2 — two steps above the last stage, as the official settings put it.
- `detection` (the official COCO recipe, `layer_wise` with `num_layers` 6 for tiny and 12 for small/base/large):
  `group` with stage 4 at layer L = 3 + ⌈depth of stage 3 / 3⌉, so that a 9-block stage 3 is not stretched over the
  12 layers of a 27-block one; the detector's heads are layer L + 1.
"""

from __future__ import annotations

import math
import re
from typing import Any

from torch import nn

from ..configuration_convnext import ConvNextConfig
from ..errors import UserInputError

LAYER_DECAY_TYPES = ("group", "single", "stage", "detection")

# Wrappers (DDP, FSDP, torch.compile) prefix names; searching instead of matching keeps the rule independent of them.
_STAGE = re.compile(r"encoder\.stages\.(\d+)\.(?:layers\.(\d+)|downsampling_layer)\.")
_STEM = re.compile(r"(?:^|\.)embeddings\.")


def excluded_from_weight_decay(name: str, parameter: nn.Parameter) -> bool:
    """The official exclusion rule: no decay for 1-D parameters (norms, layer scale) and biases.

    GRN's gamma and beta are (1, 1, 1, C) tensors named `gamma`/`beta` in the official ConvNeXt-V2 code, so its rule
    decays both; here they are `grn.weight`/`grn.bias`, and the name test must not spare the beta.
    """
    if ".grn." in name:
        return False
    return parameter.ndim <= 1 or name.endswith(".bias")


def num_layers(config: ConvNextConfig, decay_type: str) -> int:
    """L, the number of layers below the classifier, under the given grouping rule."""
    if decay_type == "stage":
        return config.num_stages + 2
    if decay_type == "detection":
        # The official detection configs: num_layers 6 for tiny (9 blocks in stage 3), 12 for 27 blocks.
        return 3 + math.ceil(config.depths[2] / 3)
    return 12 if decay_type == "group" else sum(config.depths)


def layer_id(name: str, config: ConvNextConfig, decay_type: str) -> int:
    """The layer (0..L+1) a parameter belongs to; the final norm and the classifier are layer L+1."""
    if decay_type not in LAYER_DECAY_TYPES:
        raise UserInputError(f"Unknown layer_decay_type {decay_type!r}; choose one of {', '.join(LAYER_DECAY_TYPES)}.")
    if decay_type in ("group", "detection") and (config.isotropic or config.num_stages != 4):
        raise UserInputError(
            f"layer_decay_type '{decay_type}' is the official "
            f"{'12-layer' if decay_type == 'group' else 'detection'} split of four-stage ConvNeXts; this model has "
            f"{config.num_stages} stage(s). Use --layer_decay_type single, which gives every block its own layer."
        )
    top = num_layers(config, decay_type) + 1
    match = _STAGE.search(name)
    if match is None:
        if _STEM.search(name):
            return 0 if decay_type in ("group", "stage", "detection") else 1
        return top
    stage = int(match.group(1))
    block = int(match.group(2)) if match.group(2) is not None else 0
    if decay_type == "stage":
        return stage + 1 if match.group(2) is not None else 0
    if decay_type == "single":
        return sum(config.depths[:stage]) + block + 1
    return {0: 1, 1: 2, 2: 3 + block // 3, 3: num_layers(config, decay_type)}[stage]


def parameter_groups(
    model: nn.Module,
    config: ConvNextConfig,
    learning_rate: float,
    weight_decay: float,
    layer_decay: float = 1.0,
    layer_decay_type: str = "group",
) -> list[dict[str, Any]]:
    """AdamW parameter groups: one per (layer, decayed or not), each with its own `lr` and `weight_decay`.

    Groups are ordered from the classifier down, so the first group carries the base learning rate (the one the
    Trainer logs). With `layer_decay` 1 every group has the base learning rate.
    """
    if not 0.0 < layer_decay <= 1.0:
        raise UserInputError(f"layer_decay must be in (0, 1], got {layer_decay}; 1 disables it, the paper uses 0.8.")
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        layer = layer_id(name, config, layer_decay_type) if layer_decay < 1.0 else 0
        decayed = not excluded_from_weight_decay(name, parameter)
        if (layer, decayed) not in groups:
            scale = layer_decay ** (num_layers(config, layer_decay_type) + 1 - layer) if layer_decay < 1.0 else 1.0
            groups[(layer, decayed)] = {
                "params": [],
                "param_names": [],
                "weight_decay": weight_decay if decayed else 0.0,
                "lr": learning_rate * scale,
                "lr_scale": scale,
                "layer_id": layer,
            }
        groups[(layer, decayed)]["params"].append(parameter)
        groups[(layer, decayed)]["param_names"].append(name)
    return [groups[key] for key in sorted(groups, key=lambda key: (-key[0], not key[1]))]
