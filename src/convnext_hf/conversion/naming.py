"""Parameter names of the official ConvNeXt code and of the transformers models they become.

The converter brings every source layout to the official names first (see `layouts.py`); these rules take the
official names to the transformers ones. Both the convnext_hf models and transformers' built-in ConvNext use the same
names, and UperNet nests the backbone under `backbone.`. Official dense-prediction checkpoints (UperNet, detection)
keep the backbone under `backbone.` with one LayerNorm per returned stage, `norm0`..`norm3`.

The official names are extended, in the official style, to what the rest of the family adds: ConvNeXt V2's GRN is
`stages.i.j.grn.{gamma,beta}` (official V2 names, shape (1, 1, 1, 4C)); timm's overlapping tiered stem is
`downsample_layers.0.0.{0,1}` (its two convs) with its LayerNorm at `downsample_layers.0.1`; timm's head-norm-first
LayerNorm is `norm_pre` (instead of `norm`); the hidden layer of timm's MLP head is `pre_logits.fc`.
"""

from __future__ import annotations

from ..tasks import IMAGE_CLASSIFICATION, IMAGE_FEATURE_EXTRACTION, SEMANTIC_SEGMENTATION, Task, get_task
from .rename import Rule, prefixed

# What a checkpoint converts to: the model of a task (the registry's names), or a backbone, which is a converter target
# kind rather than a task: its folder serves image-feature-extraction with one feature map per stage.
CLASSIFICATION = IMAGE_CLASSIFICATION
FEATURE_EXTRACTION = IMAGE_FEATURE_EXTRACTION
SEGMENTATION = SEMANTIC_SEGMENTATION
BACKBONE = "backbone"
TARGET_KINDS = (CLASSIFICATION, FEATURE_EXTRACTION, BACKBONE, SEGMENTATION)

BLOCK_RULES: list[Rule] = [
    ("dwconv.{p}", "dwconv.{p}"),
    ("norm.{p}", "layernorm.{p}"),
    ("pwconv1.{p}", "pwconv1.{p}"),
    ("pwconv2.{p}", "pwconv2.{p}"),
    ("gamma", "layer_scale_parameter"),
    ("grn.gamma", "grn.weight"),
    ("grn.beta", "grn.bias"),
]

HIERARCHICAL_TRUNK_RULES: list[Rule] = [
    ("downsample_layers.0.0.{k}.{p}", "embeddings.patch_embeddings.{k}.{p}"),
    ("downsample_layers.0.0.{p}", "embeddings.patch_embeddings.{p}"),
    ("downsample_layers.0.1.{p}", "embeddings.layernorm.{p}"),
    ("downsample_layers.{i}.{k}.{p}", "encoder.stages.{i}.downsampling_layer.{k}.{p}"),
    *prefixed(BLOCK_RULES, "stages.{i}.{j}.", "encoder.stages.{i}.layers.{j}."),
]

# Isotropic ConvNeXt (§3.3): a 16×16 patchify stem without LayerNorm, then one stage of blocks.
ISOTROPIC_TRUNK_RULES: list[Rule] = [
    ("stem.{p}", "embeddings.patch_embeddings.{p}"),
    *prefixed(BLOCK_RULES, "blocks.{j}.", "encoder.stages.0.layers.{j}."),
]

# The final LayerNorm, after pooling (`norm`) or, in timm's `*_hnf`, before it (`norm_pre`): one module in the models,
# placed by `head_norm_first`. Going back, the weights alone read as `norm`.
FINAL_NORM_RULES: list[Rule] = [("norm.{p}", "layernorm.{p}"), ("norm_pre.{p}", "layernorm.{p}")]

STAGE_NORM_RULES: list[Rule] = [(f"norm{k}.{{p}}", f"hidden_states_norms.stage{k + 1}.{{p}}") for k in range(4)]

# mmseg's ConvModule is conv/bn/activation; transformers' UperNetConvModule names them conv/batch_norm/activation, and
# calls the final 1×1 conv `classifier` instead of `conv_seg`.
UPERNET_HEAD_RULES: list[Rule] = [
    rule
    for head in ("decode_head", "auxiliary_head")
    for rule in (
        (f"{head}.conv_seg.{{p}}", f"{head}.classifier.{{p}}"),
        (f"{head}.{{path}}.conv.{{p}}", f"{head}.{{path}}.conv.{{p}}"),
        (f"{head}.{{path}}.bn.{{p}}", f"{head}.{{path}}.batch_norm.{{p}}"),
    )
]


def official_to_transformers(task: str, isotropic: bool) -> list[Rule]:
    """Rules from official names to the names of the transformers model that serves `task`."""
    trunk = ISOTROPIC_TRUNK_RULES if isotropic else HIERARCHICAL_TRUNK_RULES
    if task == CLASSIFICATION:
        head = [("head.{p}", "classifier.{p}"), ("pre_logits.fc.{p}", "pre_logits.fc.{p}")]
        return [*prefixed([*trunk, *FINAL_NORM_RULES], "", "convnext."), *head]
    if task == FEATURE_EXTRACTION:
        return [*trunk, *FINAL_NORM_RULES]
    if task == BACKBONE:
        return prefixed([*trunk, *STAGE_NORM_RULES], "backbone.", "")
    if task == SEGMENTATION:
        return [*prefixed([*trunk, *STAGE_NORM_RULES], "backbone.", "backbone."), *UPERNET_HEAD_RULES]
    raise ValueError(f"Unknown target kind {task!r}; expected one of {TARGET_KINDS}.")


def served_task(kind: str) -> Task:
    """The task whose pipeline a converted folder of this kind serves (a backbone's is image-feature-extraction)."""
    return get_task(FEATURE_EXTRACTION if kind == BACKBONE else kind)
