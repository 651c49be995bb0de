"""Heads (UperNet, detectors) over convnext_hf's own ConvNeXt backbone, as remote code that travels with their weights.

transformers builds a head's nested `backbone_config` by its `model_type` in its own registry, so a `convnext_hf`
backbone fails with `KeyError: 'convnext_hf'` where this package is not imported. A head folder that `portable_head`
could not move to the built-in backbone holds this file, the configuration and modeling files it imports, and
`"auto_map": {"AutoConfig": "heads_convnext.<HeadConfig>"}` in its config.json. With `trust_remote_code=True`,
AutoConfig imports this module, which registers the `convnext_hf` backbone with AutoConfig and AutoBackbone, and
returns the head's config class below: transformers' own, under its own name (so the Auto model classes and pipelines
pick transformers' head model), whose `_auto_class` makes a re-saved folder ship this code again.

Like the modeling files, it imports nothing of the package but those files, so that it runs as Hub remote code.
"""

from __future__ import annotations

import transformers
from transformers import AutoBackbone, AutoConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from .configuration_convnext import ConvNextConfig
from .modeling_convnext import ConvNextBackbone

# Where convnext_hf is imported, its registration stands, so heads and classifiers share one backbone class.
if ConvNextConfig.model_type not in CONFIG_MAPPING:
    AutoConfig.register(ConvNextConfig.model_type, ConvNextConfig, exist_ok=True)
    AutoBackbone.register(ConvNextConfig, ConvNextBackbone, exist_ok=True)


def _shipped(head_config: type[transformers.PreTrainedConfig]) -> type[transformers.PreTrainedConfig]:
    """`head_config` under its own name, defined in this module and saved with it (`_auto_class`)."""
    return type(
        head_config.__name__,
        (head_config,),
        {
            "__module__": __name__,
            "__doc__": f"transformers' {head_config.__name__}, loadable over convnext_hf's backbone as remote code.",
            "_auto_class": "AutoConfig",
        },
    )


# transformers' heads that take a ConvNeXt backbone (transformers 5.24); each name is an `auto_map` target.
UperNetConfig = _shipped(transformers.UperNetConfig)
DetrConfig = _shipped(transformers.DetrConfig)
ConditionalDetrConfig = _shipped(transformers.ConditionalDetrConfig)
DabDetrConfig = _shipped(transformers.DabDetrConfig)
DeformableDetrConfig = _shipped(transformers.DeformableDetrConfig)
RTDetrConfig = _shipped(transformers.RTDetrConfig)
RTDetrV2Config = _shipped(transformers.RTDetrV2Config)
DFineConfig = _shipped(transformers.DFineConfig)
Deimv2Config = _shipped(transformers.Deimv2Config)
GroundingDinoConfig = _shipped(transformers.GroundingDinoConfig)
Mask2FormerConfig = _shipped(transformers.Mask2FormerConfig)
MaskFormerConfig = _shipped(transformers.MaskFormerConfig)
OneFormerConfig = _shipped(transformers.OneFormerConfig)

# transformers' head config class -> the shipped one.
SHIPPED_HEAD_CONFIGS: dict[type[transformers.PreTrainedConfig], type[transformers.PreTrainedConfig]] = {
    shipped.__mro__[1]: shipped
    for shipped in (
        UperNetConfig, DetrConfig, ConditionalDetrConfig, DabDetrConfig, DeformableDetrConfig, RTDetrConfig,
        RTDetrV2Config, DFineConfig, Deimv2Config, GroundingDinoConfig, Mask2FormerConfig, MaskFormerConfig,
        OneFormerConfig,
    )
}
