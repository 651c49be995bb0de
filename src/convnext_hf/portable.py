"""Heads (UperNet, detectors) saved so that plain transformers loads them.

A head builds its backbone from the nested `backbone_config`, which transformers resolves by `model_type` in its own
registry before any remote code could run: a `convnext_hf` backbone config fails with `KeyError: 'convnext_hf'` where
this package is not imported, even with `trust_remote_code=True`. When transformers' built-in ConvNext / ConvNextV2
expresses the backbone (the papers' models), `portable_head` swaps in the built-in backbone holding the same weights
under the same names, so the saved folder needs nothing from this package.
"""

from __future__ import annotations

import logging

import transformers

from .backbone_weights import find_backbone
from .configuration_convnext import ConvNextConfig
from .errors import UserInputError
from .modeling_convnext import ConvNextBackbone
from .transformers_format import inexpressible_reasons, to_transformers_config, transformers_classes

logger = logging.getLogger(__name__)

# The model cards' sentence for a head whose backbone only this package expresses; {why} lists the reasons.
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
    return NEEDS_CONVNEXT_HF.format(why=f" ({'; '.join(reasons)})" if reasons else "")


def portable_head(model: transformers.PreTrainedModel) -> transformers.PreTrainedModel:
    """Make a head loadable by plain transformers, in place, and return it: call it before every save of a head.

    When the built-in ConvNext / ConvNextV2 expresses the head's ConvNeXt backbone, the backbone becomes the built-in
    one with the same weights (same names, same outputs), and `config.backbone_config` the built-in config. Otherwise
    the head is left as it is, and its folder needs convnext_hf to load (`needs_convnext_hf_sentence` says so).
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
    if reasons:
        logger.info("The head keeps the convnext_hf backbone: %s.", "; ".join(reasons))
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
