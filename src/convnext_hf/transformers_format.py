"""Export to transformers' built-in ConvNext (model_type "convnext") and ConvNextV2 ("convnextv2"), which load
without remote code.

Hierarchical models share the built-ins' parameter names (ConvNextV2ForImageClassification keeps its trunk under
`convnextv2.` instead of `convnext.`), so only the configuration changes. Loading the built-ins' checkpoints needs
nothing from here: `ConvNextConfig.from_dict` reads their configs and `from_pretrained` maps the V2 prefix.
"""

from __future__ import annotations

import os
from pathlib import Path

import transformers

from .atomic import atomic_directory
from .configuration_convnext import ConvNextConfig
from .errors import UserInputError
from .finite import check_before_saving
from .modeling_convnext import ConvNextBackbone, ConvNextForImageClassification, ConvNextModel, ConvNextPreTrainedModel

TRANSFORMERS_CLASSES: dict[bool, dict[type[ConvNextPreTrainedModel], type[transformers.PreTrainedModel]]] = {
    False: {
        ConvNextModel: transformers.ConvNextModel,
        ConvNextForImageClassification: transformers.ConvNextForImageClassification,
        ConvNextBackbone: transformers.ConvNextBackbone,
    },
    True: {
        ConvNextModel: transformers.ConvNextV2Model,
        ConvNextForImageClassification: transformers.ConvNextV2ForImageClassification,
        ConvNextBackbone: transformers.ConvNextV2Backbone,
    },
}

# Where ConvNextV2ForImageClassification keeps the trunk that ConvNextForImageClassification keeps under `convnext.`.
NATIVE_V2_PREFIX = "convnextv2."


def transformers_classes(
    config: ConvNextConfig,
) -> dict[type[ConvNextPreTrainedModel], type[transformers.PreTrainedModel]]:
    """The built-in classes that express `config`'s models: ConvNextV2's for GRN models, ConvNext's otherwise."""
    return TRANSFORMERS_CLASSES[config.use_grn]


def transformers_parameter_name(name: str, use_grn: bool) -> str:
    """The built-in model's name of one of our parameters."""
    return NATIVE_V2_PREFIX + name.removeprefix("convnext.") if use_grn and name.startswith("convnext.") else name


def inexpressible_reasons(config: ConvNextConfig) -> list[str]:
    """Why transformers' built-in ConvNext / ConvNextV2 cannot express `config` (empty when it can)."""
    reasons = []
    if config.isotropic:
        reasons.append("it is isotropic (the built-in always normalizes the stem and downsamples between stages)")
    if config.layer_norm_eps != 1e-6:
        reasons.append(f"it uses LayerNorm eps {config.layer_norm_eps} (the built-in hard-codes 1e-6 in its blocks)")
    if config.stem_type != "patch":
        reasons.append(f"it has timm's {config.stem_type} stem (the built-in has the patchify stem only)")
    if config.head_norm_first:
        reasons.append("it normalizes before pooling (timm's head_norm_first; the built-in normalizes after)")
    if config.head_hidden_size:
        reasons.append("it has an MLP head (head_hidden_size; the built-in has a linear classifier)")
    if config.use_grn and config.layer_scale_init_value > 0:
        reasons.append("it has both GRN and layer scale (the built-in ConvNextV2 has no layer scale)")
    return reasons


def to_transformers_config(config: ConvNextConfig) -> transformers.ConvNextConfig | transformers.ConvNextV2Config:
    """Translate our configuration to the built-in's, refusing what the built-in cannot express."""
    reasons = inexpressible_reasons(config)
    if reasons:
        raise UserInputError(
            f"transformers' built-in ConvNext cannot express this model: {'; '.join(reasons)}. "
            "Keep it in the convnext_hf format (save_pretrained)."
        )
    common = dict(
        num_channels=config.num_channels,
        patch_size=config.patch_size,
        num_stages=config.num_stages,
        hidden_sizes=list(config.hidden_sizes),
        depths=list(config.depths),
        hidden_act=config.hidden_act,
        initializer_range=config.initializer_range,
        layer_norm_eps=config.layer_norm_eps,
        drop_path_rate=config.drop_path_rate,
        image_size=config.image_size,
        out_features=list(config.out_features),
        problem_type=config.problem_type,
        # A head's backbone config may have no labels (the head has them).
        **({"id2label": dict(config.id2label), "label2id": config.label2id} if config.id2label else {}),
    )
    if config.use_grn:
        return transformers.ConvNextV2Config(**common)
    return transformers.ConvNextConfig(**common, layer_scale_init_value=config.layer_scale_init_value)


def to_transformers(model: ConvNextPreTrainedModel) -> transformers.PreTrainedModel:
    """Return the built-in ConvNext (or ConvNextV2) model holding the same weights as `model`."""
    classes = transformers_classes(model.config)
    builtin_class = classes.get(type(model))
    if builtin_class is None:
        raise TypeError(f"Cannot export {type(model).__name__}; export one of {[c.__name__ for c in classes]}.")
    builtin = builtin_class(to_transformers_config(model.config))
    use_grn = model.config.use_grn
    state = {transformers_parameter_name(name, use_grn): value for name, value in model.state_dict().items()}
    builtin.load_state_dict(state, strict=True)
    return builtin.to(dtype=model.dtype)


def save_as_transformers(
    model: ConvNextPreTrainedModel, output_dir: str | os.PathLike, overwrite: bool = False
) -> Path:
    """Save `model` in the built-in's format: a folder plain transformers loads without `trust_remote_code`."""
    builtin = to_transformers(model)
    check_before_saving(builtin, output_dir)
    with atomic_directory(output_dir, overwrite=overwrite) as staging:
        builtin.save_pretrained(staging)
    return Path(output_dir)
