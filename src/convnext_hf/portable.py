"""Heads (UperNet, detectors) saved so that plain transformers loads them.

A head builds its backbone from the nested `backbone_config`, which transformers resolves by `model_type` in its own
registry before any remote code could run: a `convnext_hf` backbone config fails with `KeyError: 'convnext_hf'` where
this package is not imported, even with `trust_remote_code=True`. When transformers' built-in ConvNext / ConvNextV2
expresses the backbone (the papers' models), `portable_head` swaps in the built-in backbone holding the same weights
under the same names, so the saved folder needs nothing from this package. Otherwise (isotropic, tiered stem, other
eps...) the head's config becomes its `heads_convnext` class, so that the saved folder carries the code that registers
our backbone (`heads_convnext.py` and the files it imports, with an `auto_map`) and loads with `trust_remote_code=True`.
"""

from __future__ import annotations

import logging

import transformers

from .backbone_weights import find_backbone
from .configuration_convnext import ConvNextConfig
from .errors import UserInputError
from .heads_convnext import SHIPPED_HEAD_CONFIGS
from .modeling_convnext import ConvNextBackbone
from .transformers_format import inexpressible_reasons, to_transformers_config, transformers_classes

logger = logging.getLogger(__name__)

# The model cards' sentences for a head whose backbone only this package expresses; {why} lists the reasons.
SHIPS_CONVNEXT_HF = (
    "Its ConvNeXt backbone{why} is convnext_hf's own, which transformers' built-in ConvNext cannot express. The code "
    "that builds it travels with the weights: load with `trust_remote_code=True` (also in `pipeline(...)`), or "
    "`pip install convnext-hf` and `import convnext_hf` first; without either, transformers stops with "
    "`KeyError: 'convnext_hf'`."
)
NEEDS_CONVNEXT_HF = (
    "Its ConvNeXt backbone{why} is convnext_hf's own, so loading this model needs `pip install convnext-hf` and "
    "`import convnext_hf` first (plain transformers stops with `KeyError: 'convnext_hf'`)."
)


def needs_convnext_hf_sentence(config: transformers.PreTrainedConfig) -> str | None:
    """The model card's sentence saying that a head with this config needs convnext_hf to load; None when plain
    transformers loads it."""
    backbone_config = getattr(config, "backbone_config", None)
    if not isinstance(backbone_config, ConvNextConfig):
        return None
    reasons = inexpressible_reasons(backbone_config)
    sentence = SHIPS_CONVNEXT_HF if config._auto_class == "AutoConfig" else NEEDS_CONVNEXT_HF
    return sentence.format(why=f" ({'; '.join(reasons)})" if reasons else "")


def _ship_code(config: transformers.PreTrainedConfig, ship: bool) -> None:
    """Make `config` save the `heads_convnext` code and its `auto_map` (`ship`), or neither."""
    head_class = next((base for base in type(config).__mro__ if base in SHIPPED_HEAD_CONFIGS), None)
    if head_class is None:
        if ship:
            logger.warning(
                "%s is not among the heads whose code convnext_hf ships; its folder loads only where convnext_hf is "
                "imported.", type(config).__name__,
            )
        return
    config.__class__ = SHIPPED_HEAD_CONFIGS[head_class] if ship else head_class
    auto_map = getattr(config, "auto_map", None) or {}
    if not ship and auto_map.get("AutoConfig", "").startswith("heads_convnext."):
        # Loaded from a folder that shipped the code: the built-in backbone needs none.
        del auto_map["AutoConfig"]
        if not auto_map:
            del config.auto_map


def portable_head(model: transformers.PreTrainedModel) -> transformers.PreTrainedModel:
    """Make a head loadable by plain transformers, in place, and return it: call it before every save of a head.

    When the built-in ConvNext / ConvNextV2 expresses the head's ConvNeXt backbone, the backbone becomes the built-in
    one with the same weights (same names, same outputs), and `config.backbone_config` the built-in config. Otherwise
    the head keeps our backbone and its config becomes its `heads_convnext` class, so that `save_pretrained` writes
    the code that loads it with `trust_remote_code=True` (`needs_convnext_hf_sentence` says so).
    """
    path, backbone = find_backbone(model)
    if not path:
        raise UserInputError(
            f"{type(model).__name__} is a bare backbone, not a head; save it in the built-in format with "
            "convnext_hf.transformers_format.save_as_transformers."
        )
    if not isinstance(backbone, ConvNextBackbone):
        return model
    reasons = inexpressible_reasons(backbone.config)
    _ship_code(model.config, ship=bool(reasons))
    if reasons:
        logger.info("The head keeps the convnext_hf backbone and ships its code: %s.", "; ".join(reasons))
        return model
    builtin_config = to_transformers_config(backbone.config)
    builtin = transformers_classes(backbone.config)[ConvNextBackbone](builtin_config)
    builtin.load_state_dict(backbone.state_dict(), strict=True)
    trainable = {name: parameter.requires_grad for name, parameter in backbone.named_parameters()}
    for name, parameter in builtin.named_parameters():
        parameter.requires_grad_(trainable[name])
    parameter = next(backbone.parameters())
    builtin.to(device=parameter.device, dtype=parameter.dtype).train(backbone.training)
    parent, _, attribute = path.rpartition(".")
    setattr(model.get_submodule(parent), attribute, builtin)
    model.config.backbone_config = builtin_config
    return model
