"""The checkpoint layouts found in the wild, recognized by their parameter names and shapes, and renamed to the
official facebookresearch/ConvNeXt names (the one layout the rest of the converter reads)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from ..errors import UserInputError
from .naming import BACKBONE, CLASSIFICATION, FEATURE_EXTRACTION, SEGMENTATION, official_to_transformers
from .rename import RenameResult, Rule, invert, prefixed, rename

Tensors = Mapping[str, torch.Tensor]

IDENTITY: list[Rule] = [("{path}", "{path}")]

TIMM_RULES: list[Rule] = [
    ("stem.0.{p}", "downsample_layers.0.0.{p}"),
    ("stem.1.{p}", "downsample_layers.0.1.{p}"),
    ("stages.{i}.downsample.{k}.{p}", "downsample_layers.{i}.{k}.{p}"),
    ("stages.{i}.blocks.{j}.conv_dw.{p}", "stages.{i}.{j}.dwconv.{p}"),
    ("stages.{i}.blocks.{j}.norm.{p}", "stages.{i}.{j}.norm.{p}"),
    ("stages.{i}.blocks.{j}.mlp.fc1.{p}", "stages.{i}.{j}.pwconv1.{p}"),
    ("stages.{i}.blocks.{j}.mlp.fc2.{p}", "stages.{i}.{j}.pwconv2.{p}"),
    ("stages.{i}.blocks.{j}.gamma", "stages.{i}.{j}.gamma"),
    ("head.norm.{p}", "norm.{p}"),
    ("head.fc.{p}", "head.{p}"),
]

# mmcls / mmpretrain name the block's layers after what they are; the backbone sits under `backbone.`.
MMCLS_BACKBONE_RULES: list[Rule] = [
    ("downsample_layers.{i}.{k}.{p}", "downsample_layers.{i}.{k}.{p}"),
    ("stages.{i}.{j}.depthwise_conv.{p}", "stages.{i}.{j}.dwconv.{p}"),
    ("stages.{i}.{j}.norm.{p}", "stages.{i}.{j}.norm.{p}"),
    ("stages.{i}.{j}.pointwise_conv1.{p}", "stages.{i}.{j}.pwconv1.{p}"),
    ("stages.{i}.{j}.pointwise_conv2.{p}", "stages.{i}.{j}.pwconv2.{p}"),
    ("stages.{i}.{j}.gamma", "stages.{i}.{j}.gamma"),
]

# mmcls' classifier normalizes the last stage after global pooling (`gap_before_final_norm`), exactly where the official
# model applies `norm`; its name is that of the per-stage output norm of stage 3.
MMCLS_RULES: list[Rule] = [
    *prefixed(MMCLS_BACKBONE_RULES, "backbone.", ""),
    ("backbone.norm3.{p}", "norm.{p}"),
    ("head.fc.{p}", "head.{p}"),
]

MMSEG_RULES: list[Rule] = [
    *prefixed(MMCLS_BACKBONE_RULES, "backbone.", "backbone."),
    ("backbone.norm{i}.{p}", "backbone.norm{i}.{p}"),
    ("decode_head.{path}", "decode_head.{path}"),
    ("auxiliary_head.{path}", "auxiliary_head.{path}"),
]

# Where transformers keeps the ConvNeXt trunk: classifier, bare model or backbone, UperNet.
HF_PREFIXES = ("convnext.", "", "backbone.")

PASSL_RULES: list[Rule] = [("backbone.{path}", "{path}"), ("head.fc_cls.{p}", "head.{p}")]

# Paddle's Linear stores its weight as [in_features, out_features], the transpose of torch's.
PADDLE_LINEAR_SUFFIXES = (".pwconv1.weight", ".pwconv2.weight")
PADDLE_LINEARS = ("head.weight",)


def _has(*keys: str) -> Callable[[Tensors], bool]:
    return lambda tensors: all(key in tensors for key in keys)


def _fixed(rules: list[Rule]) -> Callable[[Tensors], list[Rule]]:
    return lambda tensors: rules


def _mmcls_classifier(tensors: Tensors) -> bool:
    """mmcls block names, and only the last stage's norm (dense-prediction backbones have one per stage)."""
    return "backbone.stages.0.0.depthwise_conv.weight" in tensors and "backbone.norm0.weight" not in tensors


def _paddle_orientation(tensors: Tensors) -> bool:
    """True when the first block's expansion layer is stored [in, out] (Paddle), False for [out, in] (torch)."""
    weight = tensors.get("backbone.stages.0.0.pwconv1.weight")
    return weight is not None and weight.ndim == 2 and weight.shape[1] == 4 * weight.shape[0]


def _torch_dense(tensors: Tensors) -> bool:
    weight = tensors.get("backbone.stages.0.0.pwconv1.weight")
    return weight is not None and weight.ndim == 2 and weight.shape[0] == 4 * weight.shape[1]


def _transformers_task(tensors: Tensors) -> tuple[str, bool]:
    """Which transformers model saved these weights, and whether it is isotropic (no LayerNorm after the stem)."""
    keys = list(tensors)
    if "decode_head.classifier.weight" in tensors:
        task = SEGMENTATION
    elif any(key.startswith("hidden_states_norms.") for key in keys):
        task = BACKBONE
    elif any(key.startswith("convnext.") for key in keys):
        task = CLASSIFICATION
    else:
        task = FEATURE_EXTRACTION
    isotropic = not any(key.endswith("embeddings.layernorm.weight") for key in keys)
    return task, isotropic


def _transformers_rules(tensors: Tensors) -> list[Rule]:
    return invert(official_to_transformers(*_transformers_task(tensors)))


@dataclass(frozen=True)
class Layout:
    """A way of storing ConvNeXt weights: how to recognize it and how to rename it to the official names."""

    name: str
    description: str
    matches: Callable[[Tensors], bool]
    rules: Callable[[Tensors], list[Rule]]
    paddle_linears: bool = False

    def to_official(self, tensors: Tensors) -> RenameResult:
        """The weights under official names (torch orientation), and the keys this layout does not know."""
        result = rename(tensors, self.rules(tensors))
        if self.paddle_linears:
            for key, value in result.renamed.items():
                if key.endswith(PADDLE_LINEAR_SUFFIXES) or key in PADDLE_LINEARS:
                    result.renamed[key] = value.t().contiguous()
        return result


LAYOUTS: tuple[Layout, ...] = (
    Layout(
        "official",
        "facebookresearch/ConvNeXt classification (`downsample_layers`, `stages.i.j`, `norm`, `head`)",
        _has("downsample_layers.0.0.weight"),
        _fixed(IDENTITY),
    ),
    Layout(
        "official-isotropic",
        "facebookresearch/ConvNeXt isotropic (`stem`, `blocks.j`, `norm`, `head`)",
        _has("stem.weight"),
        _fixed(IDENTITY),
    ),
    Layout(
        "timm",
        "timm `ConvNeXt` (`stem.0/1`, `stages.i.blocks.j`, `head.norm`, `head.fc`)",
        _has("stem.0.weight"),
        _fixed(TIMM_RULES),
    ),
    Layout(
        "mmcls",
        "mmcls / mmpretrain `ImageClassifier` (`backbone.stages.i.j.depthwise_conv`, `backbone.norm3`, `head.fc`)",
        _mmcls_classifier,
        _fixed(MMCLS_RULES),
    ),
    Layout(
        "passl",
        "PaddlePaddle PASSL (`backbone.*` official names, `head.fc_cls`, Linear weights [in, out])",
        _paddle_orientation,
        _fixed(PASSL_RULES),
        paddle_linears=True,
    ),
    Layout(
        "upernet-official",
        "official ADE20K release: UperNet, backbone in official names with per-stage `backbone.norm0..3`",
        _torch_dense,
        _fixed(IDENTITY),
    ),
    Layout(
        "upernet-mmseg",
        "mmsegmentation: UperNet, backbone in mmcls names with per-stage `backbone.norm0..3`",
        _has("backbone.stages.0.0.depthwise_conv.weight", "backbone.norm0.weight"),
        _fixed(MMSEG_RULES),
    ),
    Layout(
        "hf-native",
        "transformers (built-in ConvNext, convnext_hf, or UperNet with a ConvNext backbone)",
        lambda tensors: any(f"{prefix}embeddings.patch_embeddings.weight" in tensors for prefix in HF_PREFIXES),
        _transformers_rules,
    ),
)


def detect_layout(tensors: Tensors) -> Layout:
    """The one layout whose signature these weights carry; a clear error when none or several do."""
    found = [layout for layout in LAYOUTS if layout.matches(tensors)]
    if len(found) == 1:
        return found[0]
    if not found:
        known = "\n".join(f"  - {layout.name}: {layout.description}" for layout in LAYOUTS)
        raise UserInputError(
            f"Unrecognized checkpoint layout (first keys: {sorted(tensors)[:6]}). Supported layouts:\n{known}\n"
            "Pass a ConvNeXt checkpoint in one of them."
        )
    names = [layout.name for layout in found]
    raise UserInputError(
        f"The weights match several layouts ({names}); they mix naming schemes. Pass one model's weights."
    )
