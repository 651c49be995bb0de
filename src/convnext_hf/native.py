"""Export to transformers' built-in ConvNext (model_type "convnext"), which loads without remote code.

Hierarchical models share the built-in's parameter names, so only the configuration changes. Loading the built-in's
checkpoints needs nothing from here: `ConvNextConfig.from_dict` reads their configs.
"""

from __future__ import annotations

import os
from pathlib import Path

import transformers

from .atomic import atomic_directory
from .configuration_convnext import ConvNextConfig
from .errors import UserInputError
from .modeling_convnext import ConvNextBackbone, ConvNextForImageClassification, ConvNextModel, ConvNextPreTrainedModel

NATIVE_CLASSES: dict[type[ConvNextPreTrainedModel], type[transformers.PreTrainedModel]] = {
    ConvNextModel: transformers.ConvNextModel,
    ConvNextForImageClassification: transformers.ConvNextForImageClassification,
    ConvNextBackbone: transformers.ConvNextBackbone,
}


def to_native_config(config: ConvNextConfig) -> transformers.ConvNextConfig:
    """Translate our configuration to the built-in's, refusing what the built-in cannot express."""
    reasons = []
    if config.isotropic:
        reasons.append("it is isotropic (the built-in always normalizes the stem and downsamples between stages)")
    if config.layer_norm_eps != 1e-6:
        reasons.append(f"it uses LayerNorm eps {config.layer_norm_eps} (the built-in hard-codes 1e-6 in its blocks)")
    if reasons:
        raise UserInputError(
            f"transformers' built-in ConvNext cannot express this model: {'; '.join(reasons)}. "
            "Keep it in the convnext_hf format (save_pretrained)."
        )
    return transformers.ConvNextConfig(
        num_channels=config.num_channels,
        patch_size=config.patch_size,
        num_stages=config.num_stages,
        hidden_sizes=list(config.hidden_sizes),
        depths=list(config.depths),
        hidden_act=config.hidden_act,
        initializer_range=config.initializer_range,
        layer_norm_eps=config.layer_norm_eps,
        layer_scale_init_value=config.layer_scale_init_value,
        drop_path_rate=config.drop_path_rate,
        image_size=config.image_size,
        out_features=list(config.out_features),
        id2label=dict(config.id2label),
        label2id=config.label2id,
        problem_type=config.problem_type,
    )


def to_native(model: ConvNextPreTrainedModel) -> transformers.PreTrainedModel:
    """Return the built-in ConvNext model holding the same weights as `model`."""
    native_class = NATIVE_CLASSES.get(type(model))
    if native_class is None:
        raise TypeError(f"Cannot export {type(model).__name__}; export one of {[c.__name__ for c in NATIVE_CLASSES]}.")
    native = native_class(to_native_config(model.config))
    native.load_state_dict(model.state_dict(), strict=True)
    return native.to(dtype=model.dtype)


def save_native(model: ConvNextPreTrainedModel, output_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Save `model` in the built-in's format: a folder plain transformers loads without `trust_remote_code`."""
    native = to_native(model)
    with atomic_directory(output_dir, overwrite=overwrite) as staging:
        native.save_pretrained(staging)
    return Path(output_dir)
