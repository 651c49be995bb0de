"""Reading a ConvNeXt's architecture from its weights (in official names), never from file names or metadata."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..errors import UserInputError
from .naming import BACKBONE, CLASSIFICATION, FEATURE_EXTRACTION, SEGMENTATION

# UperNet's pyramid pooling scales are not stored in the weights; every released ConvNeXt UperNet uses PSPNet's.
PSP_POOL_SCALES = (1, 2, 3, 6)
# timm's overlapping tiered stem downsamples by 4 like the patchify stem, with two 3×3 stride-2 convs.
TIERED_STEM_STRIDE = 4
# transformers' UperNetFCNHead always reads the third feature map.
TRANSFORMERS_AUXILIARY_INDEX = 2


@dataclass(frozen=True)
class UperNetHead:
    """Sizes of an UperNet decode head and of its optional FCN auxiliary head."""

    channels: int
    pool_scales: tuple[int, ...]
    auxiliary_channels: int | None
    auxiliary_num_convs: int
    auxiliary_concat_input: bool


@dataclass(frozen=True)
class Architecture:
    """What the weights say the network is."""

    task: str
    hidden_sizes: tuple[int, ...]
    depths: tuple[int, ...]
    isotropic: bool
    patch_size: int
    num_channels: int
    layer_scale: bool
    num_labels: int
    upernet: UperNetHead | None = None
    use_grn: bool = False
    stem_type: str = "patch"
    head_norm_first: bool = False
    head_hidden_size: int | None = None
    layer_norm_eps: float = 1e-6

    def describe(self) -> str:
        """One line for logs and model cards."""
        kind = "isotropic" if self.isotropic else "hierarchical"
        version = "ConvNeXt V2 (GRN)" if self.use_grn else "ConvNeXt"
        scale = "with" if self.layer_scale else "without"
        head = f"{self.num_labels} classes" if self.num_labels else "no classification head"
        extras = [
            text
            for condition, text in (
                (self.stem_type != "patch", f"{self.stem_type} stem"),
                (self.head_norm_first, "head norm first"),
                (self.head_hidden_size, f"MLP head of width {self.head_hidden_size}"),
                (self.layer_norm_eps != 1e-6, f"LayerNorm eps {self.layer_norm_eps:g}"),
            )
            if condition
        ]
        return (
            f"{kind} {version}, hidden sizes {self.hidden_sizes}, depths {self.depths}, patch {self.patch_size}, "
            f"{scale} layer scale, {''.join(text + ', ' for text in extras)}{head}, task {self.task}"
        )


def _indices(keys: list[str], pattern: str) -> list[int]:
    """Sorted distinct values of the number captured by `pattern` in `keys`."""
    return sorted({int(match.group(1)) for key in keys if (match := re.fullmatch(pattern, key))})


def _count(keys: list[str], pattern: str) -> int:
    indices = _indices(keys, pattern)
    if indices != list(range(len(indices))):
        raise UserInputError(
            f"Parameters matching {pattern!r} are numbered {indices}, not 0..n-1; the checkpoint is incomplete."
        )
    return len(indices)


def _require(tensors: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in tensors:
        raise UserInputError(
            f"The checkpoint has no {key!r}; it is not a complete ConvNeXt (got e.g. {sorted(tensors)[:5]})."
        )
    return tensors[key]


def _upernet_head(tensors: Mapping[str, torch.Tensor], hidden_sizes: tuple[int, ...]) -> UperNetHead:
    keys = list(tensors)
    num_pools = _count(keys, r"decode_head\.psp_modules\.(\d+)\.1\.conv\.weight")
    if num_pools != len(PSP_POOL_SCALES):
        raise UserInputError(
            f"The UperNet head has {num_pools} pyramid pooling branches; the scales of a head other than PSPNet's "
            f"{PSP_POOL_SCALES} are not stored in the weights, so this checkpoint cannot be converted faithfully."
        )
    auxiliary_channels = None
    num_convs = 0
    if "auxiliary_head.conv_seg.weight" in tensors:
        auxiliary_channels = tensors["auxiliary_head.conv_seg.weight"].shape[1]
        num_convs = _count(keys, r"auxiliary_head\.convs\.(\d+)\.conv\.weight")
        source = tensors["auxiliary_head.convs.0.conv.weight" if num_convs else "auxiliary_head.conv_seg.weight"]
        if source.shape[1] != hidden_sizes[TRANSFORMERS_AUXILIARY_INDEX]:
            raise UserInputError(
                f"The auxiliary head reads {source.shape[1]} channels, but transformers' UperNet feeds it stage "
                f"{TRANSFORMERS_AUXILIARY_INDEX + 1} ({hidden_sizes[TRANSFORMERS_AUXILIARY_INDEX]} channels); "
                "this head cannot be expressed in transformers."
            )
    return UperNetHead(
        channels=tensors["decode_head.conv_seg.weight"].shape[1],
        pool_scales=PSP_POOL_SCALES,
        auxiliary_channels=auxiliary_channels,
        auxiliary_num_convs=num_convs,
        auxiliary_concat_input="auxiliary_head.conv_cat.conv.weight" in tensors,
    )


def detect_architecture(official: Mapping[str, torch.Tensor], layer_norm_eps: float = 1e-6) -> Architecture:
    """Read widths, depths, stem, layer scale, GRN, head and task from weights in official names; the LayerNorm eps
    is not in the weights (timm's `config.json` gives it where it differs from the official 1e-6)."""
    dense = any(key.startswith("backbone.") for key in official)
    trunk = {key.removeprefix("backbone."): value for key, value in official.items() if key.startswith("backbone.")}
    trunk = trunk if dense else dict(official)
    keys = list(trunk)
    isotropic = "stem.weight" in trunk
    tiered = "downsample_layers.0.0.0.weight" in trunk
    if isotropic:
        stem = trunk["stem.weight"]
        hidden_sizes = (stem.shape[0],)
        depths = (_count(keys, r"blocks\.(\d+)\.dwconv\.weight"),)
    else:
        stem = trunk["downsample_layers.0.0.0.weight"] if tiered else _require(trunk, "downsample_layers.0.0.weight")
        num_stages = _count(keys, r"downsample_layers\.(\d+)\.\d+\.weight")
        hidden_sizes = (_require(trunk, "downsample_layers.0.1.weight").shape[0],) + tuple(
            _require(trunk, f"downsample_layers.{i}.1.weight").shape[0] for i in range(1, num_stages)
        )
        depths = tuple(_count(keys, rf"stages\.{i}\.(\d+)\.dwconv\.weight") for i in range(num_stages))
    upernet = None
    if dense:
        task = SEGMENTATION if "decode_head.conv_seg.weight" in official else BACKBONE
        if task == SEGMENTATION:
            upernet = _upernet_head(official, hidden_sizes)
            num_labels = official["decode_head.conv_seg.weight"].shape[0]
        else:
            num_labels = 0
    else:
        task = CLASSIFICATION if "head.weight" in trunk else FEATURE_EXTRACTION
        if task == FEATURE_EXTRACTION and "pre_logits.fc.weight" in trunk:
            raise UserInputError(
                "The checkpoint has an MLP head's hidden layer (pre_logits.fc) but no classifier; convert a checkpoint "
                "with its classifier, or one without the MLP head."
            )
        num_labels = trunk["head.weight"].shape[0] if task == CLASSIFICATION else 0
    if 0 in depths:
        raise UserInputError(f"A stage without blocks (depths {depths}); the checkpoint is incomplete.")
    return Architecture(
        task=task,
        hidden_sizes=tuple(int(size) for size in hidden_sizes),
        depths=depths,
        isotropic=isotropic,
        patch_size=TIERED_STEM_STRIDE if tiered else int(stem.shape[-1]),
        num_channels=int(stem.shape[1]),
        layer_scale=any(key.endswith(".gamma") and ".grn." not in key for key in keys),
        num_labels=int(num_labels),
        upernet=upernet,
        use_grn=any(key.endswith(".grn.gamma") for key in keys),
        stem_type="overlap_tiered" if tiered else "patch",
        head_norm_first="norm_pre.weight" in trunk,
        head_hidden_size=int(trunk["pre_logits.fc.weight"].shape[0]) if "pre_logits.fc.weight" in trunk else None,
        layer_norm_eps=layer_norm_eps,
    )
