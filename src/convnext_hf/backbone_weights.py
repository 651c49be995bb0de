"""Pretrained ConvNeXt weights into the backbone of any transformers head (UperNet, the DETR family, RT-DETR, D-FINE,
DEIMv2, Grounding DINO, Mask2Former, MaskFormer, OneFormer).

transformers v5 has no working idiom for this: `use_pretrained_backbone` is dropped from the head configs, `backbone=`
asks the Hub, and each head keeps its backbone at another module path. `load_backbone_weights` finds the ConvNeXt
backbone (this package's or the built-in ConvNext / ConvNextV2 one) wherever the head keeps it and copies the trunk of
a saved folder into it, strictly.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file
from torch import nn

from .configuration_convnext import BUILTIN_MODEL_TYPES
from .errors import UserInputError
from .finite import refuse_non_finite
from .model_folder import check_saved_folder
from .modeling_convnext import ConvNextBackbone

logger = logging.getLogger(__name__)

BACKBONE_CLASSES = (ConvNextBackbone, transformers.ConvNextBackbone, transformers.ConvNextV2Backbone)

# The first block's depthwise conv exists in every ConvNeXt; whatever precedes it is where a folder keeps the trunk
# (`convnext.`, `convnextv2.`, `backbone.`, `model.backbone.conv_encoder.model.`, nothing for a backbone folder).
TRUNK_ANCHOR = re.compile(r"(.*)encoder\.stages\.0\.layers\.0\.dwconv\.weight")
TRUNK_PARTS = ("embeddings.", "encoder.")
NORMS = "hidden_states_norms."
# How refusals of the source folder begin.
SOURCE = "load_backbone_weights:"

# The built-ins hard-code this eps in every LayerNorm a backbone uses, whatever their config says.
BUILTIN_LAYER_NORM_EPS = 1e-6


@dataclass
class BackboneWeightsReport:
    """What `load_backbone_weights` copied: every backbone tensor is either loaded or (per-stage output norms only)
    left as initialised."""

    source: str
    backbone_path: str
    source_prefix: str
    loaded: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    @property
    def norms_loaded(self) -> list[str]:
        """The stages whose output LayerNorm came from the source."""
        return sorted({name.split(".")[1] for name in self.loaded if name.startswith(NORMS)})

    @property
    def norms_initialised(self) -> list[str]:
        """The stages whose output LayerNorm the source lacks, left as initialised (weight 1, bias 0)."""
        return sorted({name.split(".")[1] for name in self.initialised})

    def __str__(self) -> str:
        where = f"`{self.backbone_path}`" if self.backbone_path else "the backbone"
        prefix = f"`{self.source_prefix}*`" if self.source_prefix else "its top level"
        lines = [
            f"Loaded {len(self.loaded)} tensors into {where} from {self.source} ({prefix}).",
            f"Per-stage output norms loaded: {', '.join(self.norms_loaded) or 'none'}; "
            f"freshly initialised: {', '.join(self.norms_initialised) or 'none'}.",
        ]
        if self.unused:
            lines.append(f"Not used ({len(self.unused)}): {', '.join(self.unused)}.")
        return "\n".join(lines)


def find_backbone(model: nn.Module) -> tuple[str, nn.Module]:
    """The ConvNeXt backbone inside `model` and its module path (`backbone`, `model.backbone.conv_encoder.model`...)."""
    found = [(name, module) for name, module in model.named_modules() if isinstance(module, BACKBONE_CLASSES)]
    if not found:
        raise UserInputError(
            f"{type(model).__name__} holds no ConvNeXt backbone; build the head with backbone_config="
            "convnext_hf.ConvNextConfig(..., out_indices=[...]) (DETR, Conditional and Deformable DETR also need "
            "use_timm_backbone=False)."
        )
    if len(found) > 1:
        raise UserInputError(
            f"{type(model).__name__} holds {len(found)} ConvNeXt backbones ({', '.join(name for name, _ in found)}); "
            "pass the one to load (model.get_submodule(path)) instead of the whole model."
        )
    return found[0]


def _read_folder(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The safetensors weights and the config of a saved folder, through the saved-folder gate (files, index,
    finiteness)."""
    if not folder.is_dir():
        raise UserInputError(f"{folder} is not a folder; pass a saved model folder (config.json + safetensors).")
    weights = check_saved_folder(folder, SOURCE, hub_ids=False)
    tensors: dict[str, torch.Tensor] = {}
    for file in weights.files:
        tensors.update(load_file(file))
    refuse_non_finite(tensors, f"{SOURCE} {folder}", "the saved weights are broken (a diverged run?); pass an "
                      "earlier checkpoint of the model")  # fmt: skip
    return tensors, json.loads((folder / "config.json").read_text())


def _trunk_prefix(tensors: dict[str, torch.Tensor], folder: Path) -> str:
    prefixes = sorted({match.group(1) for key in tensors if (match := TRUNK_ANCHOR.fullmatch(key))})
    if not prefixes:
        raise UserInputError(
            f"{folder} holds no ConvNeXt trunk (no `encoder.stages.0.layers.0.dwconv.weight` under any prefix); pass a "
            "ConvNeXt classification, backbone or converted folder."
        )
    if len(prefixes) > 1:
        raise UserInputError(f"{folder} holds several ConvNeXt trunks (under {prefixes}); pass a folder with one.")
    return prefixes[0]


def _layer_norm_eps(config: dict | transformers.PreTrainedConfig) -> float:
    """The eps the backbone's LayerNorms compute with: the built-ins ignore the configured value."""
    config = config if isinstance(config, dict) else config.to_dict()
    if config.get("model_type") in BUILTIN_MODEL_TYPES:
        return BUILTIN_LAYER_NORM_EPS
    return float(config.get("layer_norm_eps", BUILTIN_LAYER_NORM_EPS))


def _check_numerics(source_config: dict, backbone: nn.Module, folder: Path) -> None:
    """Refuse a source trained with other numerics than the backbone computes: the weights alone do not show them."""
    target = backbone.config
    source_config = source_config.get("backbone_config") or source_config
    differences = []
    source_eps, target_eps = _layer_norm_eps(source_config), _layer_norm_eps(target)
    if source_eps != target_eps:
        differences.append(f"LayerNorm eps {source_eps} vs {target_eps}")
    source_act = source_config.get("hidden_act", "gelu")
    if source_act != target.hidden_act:
        differences.append(f"activation {source_act} vs {target.hidden_act}")
    if differences:
        raise UserInputError(
            f"{folder} was saved with other numerics than the head's backbone computes ({'; '.join(differences)}, "
            "source vs backbone); build the head's backbone_config with the source's values."
        )


def _shape_mismatches(names: list[str], source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> list[str]:
    return [
        f"{name}: source {tuple(source[name].shape)} vs backbone {tuple(target[name].shape)}"
        for name in names
        if source[name].shape != target[name].shape
    ]


@torch.no_grad()
def load_backbone_weights(model: nn.Module, source: str | os.PathLike) -> BackboneWeightsReport:
    """Copy the ConvNeXt trunk of a saved folder (classification, backbone or converted; ours or transformers'
    built-in ConvNext / ConvNextV2; safetensors) into the ConvNeXt backbone of `model`, strictly, and report it.

    Every stem and stage tensor of the backbone must come from the source with the same shape, and the source trunk
    must have no tensor the backbone lacks. The per-stage output norms come from the source where it has them (a
    backbone or dense-prediction folder), else they stay as initialised; the report says which.
    """
    folder = Path(source)
    backbone_path, backbone = find_backbone(model)
    tensors, source_config = _read_folder(folder)
    prefix = _trunk_prefix(tensors, folder)
    _check_numerics(source_config, backbone, folder)
    available = {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}
    target = backbone.state_dict()
    trunk = [name for name in target if name.startswith(TRUNK_PARTS)]
    source_trunk = [name for name in available if name.startswith(TRUNK_PARTS)]
    missing = sorted(set(trunk) - set(available))
    extra = sorted(set(source_trunk) - set(target))
    norms = [name for name in target if name.startswith(NORMS)]
    present_norms = [name for name in norms if name in available]
    mismatched = _shape_mismatches(sorted(set(trunk) & set(available)) + present_norms, available, target)
    if missing or extra or mismatched:
        sections = [
            f"{title} ({len(names)}): {', '.join(names[:8])}{', ...' if len(names) > 8 else ''}"
            for title, names in (
                ("missing from the source", missing),
                ("not in the backbone", extra),
                ("shape mismatch", mismatched),
            )
            if names
        ]
        raise UserInputError(
            f"The ConvNeXt in {folder} (`{prefix}*`) is not the head's backbone: {'; '.join(sections)}. Build the "
            "head's backbone_config with the source's hidden_sizes, depths and stem (e.g. from its config.json)."
        )
    loaded = [name for name in target if name in available]
    for name in loaded:
        target[name].copy_(available[name])
    report = BackboneWeightsReport(
        source=str(folder),
        backbone_path=backbone_path,
        source_prefix=prefix,
        loaded=loaded,
        initialised=[name for name in norms if name not in available],
        unused=sorted(set(available) - set(target)),
    )
    logger.info("%s", report)
    return report
