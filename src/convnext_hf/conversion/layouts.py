"""The checkpoint layouts found in the wild, recognized by their parameter names and shapes, and renamed to the
official facebookresearch/ConvNeXt names (the one layout the rest of the converter reads; see `naming.py` for the
names of what ConvNeXt V2 and timm's variants add)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from ..errors import UserInputError
from .naming import BACKBONE, CLASSIFICATION, FEATURE_EXTRACTION, SEGMENTATION, official_to_transformers
from .rename import RenameResult, Rule, invert, prefixed, rename

Tensors = Mapping[str, torch.Tensor]

IDENTITY: list[Rule] = [("{path}", "{path}")]

TIMM_PATCH_STEM_RULES: list[Rule] = [
    ("stem.0.{p}", "downsample_layers.0.0.{p}"),
    ("stem.1.{p}", "downsample_layers.0.1.{p}"),
]

# timm's `stem_type="overlap_tiered"` (`*_ols`): conv, conv, LayerNorm.
TIMM_TIERED_STEM_RULES: list[Rule] = [
    ("stem.0.{p}", "downsample_layers.0.0.0.{p}"),
    ("stem.1.{p}", "downsample_layers.0.0.1.{p}"),
    ("stem.2.{p}", "downsample_layers.0.1.{p}"),
]

TIMM_RULES: list[Rule] = [
    ("stages.{i}.downsample.{k}.{p}", "downsample_layers.{i}.{k}.{p}"),
    ("stages.{i}.blocks.{j}.conv_dw.{p}", "stages.{i}.{j}.dwconv.{p}"),
    ("stages.{i}.blocks.{j}.norm.{p}", "stages.{i}.{j}.norm.{p}"),
    ("stages.{i}.blocks.{j}.mlp.fc1.{p}", "stages.{i}.{j}.pwconv1.{p}"),
    ("stages.{i}.blocks.{j}.mlp.fc2.{p}", "stages.{i}.{j}.pwconv2.{p}"),
    ("stages.{i}.blocks.{j}.mlp.grn.weight", "stages.{i}.{j}.grn.gamma"),
    ("stages.{i}.blocks.{j}.mlp.grn.bias", "stages.{i}.{j}.grn.beta"),
    ("stages.{i}.blocks.{j}.gamma", "stages.{i}.{j}.gamma"),
    ("norm_pre.{p}", "norm_pre.{p}"),
    ("head.norm.{p}", "norm.{p}"),
    ("head.pre_logits.fc.{p}", "pre_logits.fc.{p}"),
    ("head.fc.{p}", "head.{p}"),
]

# open_clip's timm towers: a plain timm ConvNeXt under `visual.trunk.`, beside the CLIP projection and text tower.
OPEN_CLIP_TRUNK = "visual.trunk."

# transformers' DINOv3ConvNextModel: official stage structure under `model.`, the block's layers spelled out.
DINOV3_RULES: list[Rule] = [
    ("model.stages.{i}.downsample_layers.{k}.{p}", "downsample_layers.{i}.{k}.{p}"),
    ("model.stages.{i}.layers.{j}.depthwise_conv.{p}", "stages.{i}.{j}.dwconv.{p}"),
    ("model.stages.{i}.layers.{j}.layer_norm.{p}", "stages.{i}.{j}.norm.{p}"),
    ("model.stages.{i}.layers.{j}.pointwise_conv1.{p}", "stages.{i}.{j}.pwconv1.{p}"),
    ("model.stages.{i}.layers.{j}.pointwise_conv2.{p}", "stages.{i}.{j}.pwconv2.{p}"),
    ("model.stages.{i}.layers.{j}.gamma", "stages.{i}.{j}.gamma"),
    ("layer_norm.{p}", "norm.{p}"),
]

# What an official FCMAE pre-training checkpoint holds besides the sparse encoder: the decoder, dropped on conversion.
FCMAE_DECODER_PREFIXES = ("proj.", "mask_token", "decoder.", "pred.")

# mmcls / mmpretrain name the block's layers after what they are; the backbone sits under `backbone.`.
MMCLS_BACKBONE_RULES: list[Rule] = [
    ("downsample_layers.{i}.{k}.{p}", "downsample_layers.{i}.{k}.{p}"),
    ("stages.{i}.{j}.depthwise_conv.{p}", "stages.{i}.{j}.dwconv.{p}"),
    ("stages.{i}.{j}.norm.{p}", "stages.{i}.{j}.norm.{p}"),
    ("stages.{i}.{j}.pointwise_conv1.{p}", "stages.{i}.{j}.pwconv1.{p}"),
    ("stages.{i}.{j}.pointwise_conv2.{p}", "stages.{i}.{j}.pwconv2.{p}"),
    ("stages.{i}.{j}.gamma", "stages.{i}.{j}.gamma"),
    # mmpretrain's ConvNeXt V2 (`use_grn`), GRN stored as (4C,).
    ("stages.{i}.{j}.grn.gamma", "stages.{i}.{j}.grn.gamma"),
    ("stages.{i}.{j}.grn.beta", "stages.{i}.{j}.grn.beta"),
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

# What an mmdetection detector (Mask R-CNN, Cascade Mask R-CNN) holds besides its backbone: the FPN neck, the RPN head
# and the RoI box and mask heads. No transformers model runs them, so a detection checkpoint converts to its backbone
# and these are dropped by name (and listed); any other key is still refused.
DETECTION_HEADS = ("neck.", "rpn_head.", "roi_head.")

MMDET_RULES: list[Rule] = [
    *prefixed(MMCLS_BACKBONE_RULES, "backbone.", "backbone."),
    ("backbone.norm{i}.{p}", "backbone.norm{i}.{p}"),
]

# Where transformers keeps the ConvNeXt trunk: classifier (ConvNext, ConvNextV2), bare model or backbone, UperNet.
HF_PREFIXES = ("convnext.", "convnextv2.", "", "backbone.")
HF_V2_PREFIX = "convnextv2."

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


def _detector(tensors: Tensors) -> bool:
    return any(key.startswith(DETECTION_HEADS) for key in tensors)


def _mmcls_dense(tensors: Tensors) -> bool:
    """mmcls block names with one output norm per stage: an mmsegmentation or mmdetection backbone."""
    return "backbone.stages.0.0.depthwise_conv.weight" in tensors and "backbone.norm0.weight" in tensors


def _paddle_orientation(tensors: Tensors) -> bool:
    """True when the first block's expansion layer is stored [in, out] (Paddle), False for [out, in] (torch)."""
    weight = tensors.get("backbone.stages.0.0.pwconv1.weight")
    return weight is not None and weight.ndim == 2 and weight.shape[1] == 4 * weight.shape[0]


def _torch_dense(tensors: Tensors) -> bool:
    weight = tensors.get("backbone.stages.0.0.pwconv1.weight")
    return weight is not None and weight.ndim == 2 and weight.shape[0] == 4 * weight.shape[1]


def _timm_rules(tensors: Tensors) -> list[Rule]:
    stem = TIMM_TIERED_STEM_RULES if "stem.2.weight" in tensors else TIMM_PATCH_STEM_RULES
    return [*stem, *TIMM_RULES]


def _open_clip_trunk(tensors: Tensors) -> dict[str, torch.Tensor]:
    """The image trunk alone: CLIP's projection head and text tower are not part of a ConvNeXt."""
    trunk = {key: value for key, value in tensors.items() if key.startswith(OPEN_CLIP_TRUNK)}
    return {key.removeprefix(OPEN_CLIP_TRUNK): value for key, value in trunk.items()}


def _is_transformers(tensors: Tensors) -> bool:
    return any(
        f"{prefix}embeddings.patch_embeddings.{index}weight" in tensors
        for prefix in HF_PREFIXES
        for index in ("", "0.")
    )


def _sparse_kernel_to_dense(kernel: torch.Tensor) -> torch.Tensor:
    """A MinkowskiEngine kernel, (kernel volume, in, out) or depthwise (kernel volume, C), as a dense conv weight."""
    size = math.isqrt(kernel.shape[0])
    if kernel.ndim == 3:
        return kernel.permute(2, 1, 0).reshape(kernel.shape[2], kernel.shape[1], size, size).transpose(3, 2)
    return kernel.permute(1, 0).reshape(kernel.shape[1], 1, size, size).transpose(3, 2)


def fcmae_encoder_to_dense(tensors: Tensors) -> dict[str, torch.Tensor]:
    """An FCMAE pre-training checkpoint's sparse encoder as dense official V2 weights, as the official fine-tuning code
    (`utils.remap_checkpoint_keys`) does it: MinkowskiEngine kernels become conv weights (the kernel volume is stored
    column-major), the `ln` / `linear` wrappers go, (1, C) biases become (C,). The decoder is dropped. The encoder has
    no final LayerNorm: it gets the fresh one (unit weight, zero bias) fine-tuning starts from."""
    dense: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if key.startswith(FCMAE_DECODER_PREFIXES):
            continue
        name = key.removeprefix("encoder.")
        if name.endswith(".kernel"):
            dense[name.removesuffix("kernel") + "weight"] = _sparse_kernel_to_dense(value)
            continue
        name = name.replace(".ln.", ".").replace(".linear.", ".")
        dense[name] = value.reshape(-1) if name.endswith(".bias") else value
    convs = {int(key.split(".")[1]): value for key, value in dense.items() if key.startswith("downsample_layers.")
             and value.ndim == 4}
    if convs:
        width = convs[max(convs)].shape[0]
        dense["norm.weight"], dense["norm.bias"] = torch.ones(width), torch.zeros(width)
    return dense


def _transformers_task(tensors: Tensors) -> tuple[str, bool]:
    """Which transformers model saved these weights, and whether it is isotropic (no LayerNorm after the stem)."""
    keys = list(tensors)
    if "decode_head.classifier.weight" in tensors:
        task = SEGMENTATION
    elif any(key.startswith("hidden_states_norms.") for key in keys):
        task = BACKBONE
    elif any(key.startswith(("convnext.", HF_V2_PREFIX)) for key in keys):
        task = CLASSIFICATION
    else:
        task = FEATURE_EXTRACTION
    isotropic = not any(key.endswith("embeddings.layernorm.weight") for key in keys)
    return task, isotropic


def _transformers_rules(tensors: Tensors) -> list[Rule]:
    rules = invert(official_to_transformers(*_transformers_task(tensors)))
    if any(key.startswith(HF_V2_PREFIX) for key in tensors):
        rules = [(source.replace("convnext.", HF_V2_PREFIX, 1), target) for source, target in rules]
    return rules


def normalize_storage(official: dict[str, torch.Tensor]) -> None:
    """Bring storage-only differences to the official shapes, in place: pointwise layers stored as 1×1 convs (timm's
    `conv_mlp`) become Linear weights, GRN gamma/beta of any storage shape become (1, 1, 1, 4C)."""
    for key, value in official.items():
        if key.endswith((".pwconv1.weight", ".pwconv2.weight")) and value.ndim == 4 and value.shape[2:] == (1, 1):
            official[key] = value.flatten(1)
        elif ".grn." in key:
            official[key] = value.reshape(1, 1, 1, -1)


@dataclass(frozen=True)
class Layout:
    """A way of storing ConvNeXt weights: how to recognize it and how to rename it to the official names."""

    name: str
    description: str
    matches: Callable[[Tensors], bool]
    rules: Callable[[Tensors], list[Rule]]
    paddle_linears: bool = False
    extract: Callable[[Tensors], Tensors] | None = None
    dropped: tuple[str, ...] = ()

    def dropped_modules(self, tensors: Tensors) -> dict[str, int]:
        """The modules this layout drops (e.g. `roi_head.bbox_head`), with their number of tensors, in file order."""
        modules: dict[str, int] = {}
        for key in tensors:
            if key.startswith(self.dropped):
                module = ".".join(key.split(".")[:2])
                modules[module] = modules.get(module, 0) + 1
        return modules

    def to_official(self, tensors: Tensors) -> RenameResult:
        """The weights under official names and shapes, and the keys this layout does not know."""
        if self.extract is not None:
            tensors = self.extract(tensors)
        if self.dropped:
            tensors = {key: value for key, value in tensors.items() if not key.startswith(self.dropped)}
        result = rename(tensors, self.rules(tensors))
        if self.paddle_linears:
            for key, value in result.renamed.items():
                if key.endswith(PADDLE_LINEAR_SUFFIXES) or key in PADDLE_LINEARS:
                    result.renamed[key] = value.t().contiguous()
        normalize_storage(result.renamed)
        return result


LAYOUTS: tuple[Layout, ...] = (
    Layout(
        "official",
        "facebookresearch/ConvNeXt classification (`downsample_layers`, `stages.i.j`, `norm`, `head`)",
        _has("downsample_layers.0.0.weight"),
        _fixed(IDENTITY),
    ),
    Layout(
        "official-v2-fcmae",
        "ConvNeXt-V2 FCMAE pre-training (`encoder.*` sparse MinkowskiEngine layout, decoder dropped)",
        _has("encoder.downsample_layers.0.0.weight"),
        _fixed(IDENTITY),
        extract=fcmae_encoder_to_dense,
    ),
    Layout(
        "official-isotropic",
        "facebookresearch/ConvNeXt isotropic (`stem`, `blocks.j`, `norm`, `head`)",
        _has("stem.weight"),
        _fixed(IDENTITY),
    ),
    Layout(
        "timm",
        "timm `ConvNeXt` / `convnextv2_*` (`stem.0/1`, `stages.i.blocks.j`, `head.norm`, `head.fc`; `conv_mlp`, "
        "`*_ols`, `*_hnf`, MLP head)",
        _has("stem.0.weight"),
        _timm_rules,
    ),
    Layout(
        "open_clip",
        "open_clip / timm CLIP image tower: a timm ConvNeXt under `visual.trunk.` (projection and text tower dropped)",
        _has(f"{OPEN_CLIP_TRUNK}stem.0.weight"),
        _timm_rules,
        extract=_open_clip_trunk,
    ),
    Layout(
        "dinov3_convnext",
        "transformers `DINOv3ConvNextModel` (`model.stages.i.downsample_layers`, `layers.j.depthwise_conv`, "
        "`layer_norm`)",
        _has("model.stages.0.downsample_layers.0.weight"),
        _fixed(DINOV3_RULES),
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
        lambda tensors: _torch_dense(tensors) and not _detector(tensors),
        _fixed(IDENTITY),
    ),
    Layout(
        "upernet-mmseg",
        "mmsegmentation: UperNet, backbone in mmcls names with per-stage `backbone.norm0..3`",
        lambda tensors: _mmcls_dense(tensors) and not _detector(tensors),
        _fixed(MMSEG_RULES),
    ),
    Layout(
        "coco-official",
        "official COCO release (Mask R-CNN, Cascade Mask R-CNN; mmdet 2.11): backbone in official names with "
        "per-stage `backbone.norm0..3`; `neck`, `rpn_head`, `roi_head` dropped",
        lambda tensors: _torch_dense(tensors) and _detector(tensors),
        _fixed(IDENTITY),
        dropped=DETECTION_HEADS,
    ),
    Layout(
        "coco-mmdet",
        "mmdetection (Mask R-CNN, Cascade Mask R-CNN): backbone in mmcls names with per-stage `backbone.norm0..3`; "
        "`neck`, `rpn_head`, `roi_head` dropped",
        lambda tensors: _mmcls_dense(tensors) and _detector(tensors),
        _fixed(MMDET_RULES),
        dropped=DETECTION_HEADS,
    ),
    Layout(
        "transformers",
        "transformers (built-in ConvNext / ConvNextV2, convnext_hf, or UperNet with a ConvNext backbone)",
        _is_transformers,
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
