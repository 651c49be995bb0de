"""What the files beside the weights claim, checked against what the weights say.

The architecture is read from the weights (architecture.py). A config.json may add what the weights cannot tell (the
LayerNorm eps; in a transformers folder, whether the final LayerNorm comes before pooling: its weights have one name
either way) and the image processor's settings. Anything it says that the weights can check must agree with them, or
the conversion is refused naming both; what they cannot check is carried over only from a config whose checkable
fields all agree, and reported as taken from the config, never as verified.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

import torch

from ..configuration_convnext import HIERARCHICAL_VARIANTS, V2_VARIANTS
from ..errors import UserInputError
from ..image_processing_convnext import MAX_RESOLUTION
from .architecture import Architecture
from .naming import CLASSIFICATION, FEATURE_EXTRACTION, SEGMENTATION

# Integer tensors a checkpoint may hold: BatchNorm's step counter (mmseg UperNet heads).
INTEGER_BUFFER_SUFFIXES = (".num_batches_tracked",)

# model_type of the transformers configs whose fields are ours or the built-ins'.
CONVNEXT_HF_MODEL_TYPE = "convnext_hf"
BUILTIN_MODEL_TYPES = ("convnext", "convnextv2")

# The LayerNorm eps of the official code, and the default of every layout without a config.
DEFAULT_EPS = 1e-6

# The activation every supported ConvNeXt uses (and the reference forward computes).
GELU = "gelu"


def check_tensors(tensors: Mapping[str, torch.Tensor]) -> None:
    """Refuse by name weights that are not real floating-point numbers, or not finite."""
    wrong_type = [
        f"{name} ({str(value.dtype).removeprefix('torch.')})"
        for name, value in tensors.items()
        if not value.is_floating_point() and not name.endswith(INTEGER_BUFFER_SUFFIXES)
    ]
    if wrong_type:
        listing = ", ".join(wrong_type[:5]) + (f" and {len(wrong_type) - 5} more" if len(wrong_type) > 5 else "")
        raise UserInputError(
            f"Refusing to convert: {len(wrong_type)} weights are not real floating-point tensors: {listing}. A "
            "ConvNeXt checkpoint holds float weights; this file is damaged or holds something else (quantized "
            "weights: convert the float checkpoint)."
        )
    # Checked in float32, the precision the model is saved in: float64 values beyond its range become Inf.
    non_finite = [
        name for name, value in tensors.items() if value.is_floating_point() and not value.float().isfinite().all()
    ]
    if non_finite:
        listing = ", ".join(non_finite[:5]) + (f" and {len(non_finite) - 5} more" if len(non_finite) > 5 else "")
        raise UserInputError(
            f"Refusing to convert: {len(non_finite)} weights hold non-finite values (NaN or Inf, or beyond float32's "
            f"range): {listing}. The "
            "checkpoint is damaged (or training diverged); convert an intact checkpoint."
        )


def positive_number(value: Any, what: str) -> float:
    """`value` as a positive, finite float, or an error naming `what`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise UserInputError(f"{what} must be a positive number, got {value!r}.")
    return float(value)


def check_resolution(resolution: Any, source: str) -> int:
    """A resolution in pixels: a positive integer no larger than MAX_RESOLUTION."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise UserInputError(
            f"resolution must be a positive number of pixels, got {resolution!r} ({source}); e.g. --resolution 224."
        )
    if resolution > MAX_RESOLUTION:
        raise UserInputError(
            f"resolution {resolution} ({source}) is beyond {MAX_RESOLUTION} pixels, far above any released ConvNeXt's "
            "(224 to 512); pass the resolution the checkpoint was evaluated at, e.g. --resolution 224."
        )
    return resolution


# A timm model name: `convnext_<size>` or `convnextv2_<size>`, then suffixes choosing another stem, head or norm
# (`_ols`, `_hnf`, `_mlp`, `_384_in22ft1k`, ...; they keep the size's widths and depths) and a `.tag` naming the
# weights. Names of other forms, or sizes the variant table lacks (`xxlarge`, `zepto`), say nothing checkable.
TIMM_NAME = re.compile(r"convnext(?P<v2>v2)?_(?P<size>[a-z]+)(?:_\w+)?(?:\.[\w.-]+)?")


def timm_name_sizes(name: str) -> tuple[str, tuple[int, ...], tuple[int, ...]] | None:
    """The variant a timm model name selects, with its widths and depths (None: a name the variant table cannot
    map)."""
    match = TIMM_NAME.fullmatch(name)
    if match is None:
        return None
    size = match["size"]
    if match["v2"]:
        size = V2_VARIANTS.get(f"v2-{size}", "")
    if size not in HIERARCHICAL_VARIANTS:
        return None
    return (f"v2-{size}" if match["v2"] else size, *HIERARCHICAL_VARIANTS[size])


def _timm_name_claims(name: Any, model_args: Mapping[str, Any], arch: Architecture) -> None:
    """Refuse a timm `architecture` whose variant has other widths or depths than the weights, where model_args do
    not override them (timm builds the name's defaults updated by model_args). Only widths and depths are compared:
    the suffixes change the stem, head or norm, which the weights and model_args already tell."""
    if not isinstance(name, str):
        raise UserInputError(
            f"config.json's architecture is {name!r}; timm writes a model name there (e.g. 'convnext_tiny'). The "
            "config is damaged: fix the field, or pass the weights alone."
        )
    variant = timm_name_sizes(name)
    if variant is None:
        return
    size, hidden_sizes, depths = variant
    named = {"dims": hidden_sizes, "depths": depths}
    actual = {"dims": arch.hidden_sizes, "depths": arch.depths}
    wrong = [field for field in named if field not in model_args and tuple(named[field]) != tuple(actual[field])]
    if wrong:
        said = " and ".join(f"{field} {list(named[field])}" for field in wrong)
        have = " and ".join(f"{field} {tuple(actual[field])}" for field in wrong)
        raise UserInputError(
            f"Refusing to convert: config.json's architecture {name!r} is ConvNeXt-{size} ({said}), but the weights "
            f"have {have}, and its model_args do not override them. The config describes another model; pass the "
            "weights with their own config (or alone)."
        )


# One claim of a config: its name, the value claimed, whether the weights agree, what the weights have.
Claim = tuple[str, Any, bool, Any]


def _same(name: str, claimed: Any, actual: Any) -> Claim:
    """A claim the weights hold the value of (lists and tuples compare alike)."""
    claimed_value = list(claimed) if isinstance(claimed, list | tuple) else claimed
    actual_value = list(actual) if isinstance(actual, list | tuple) else actual
    return name, claimed, claimed_value == actual_value, actual


def _refuse_contradictions(claims: list[Claim], where: str) -> None:
    """Refuse when any claim disagrees with the weights, naming each claim and what the weights have."""
    wrong = [f"{name}={claimed!r} but the weights have {actual}" for name, claimed, agrees, actual in claims
             if not agrees]
    if wrong:
        raise UserInputError(
            f"Refusing to convert: {where} contradicts the weights: {'; '.join(wrong)}. The config does not describe "
            "these weights; pass them with their own config (or alone)."
        )


def _integers(value: Any, allow_none: bool = False) -> bool:
    """Whether `value` is an integer (not a bool), or a list of them (None too when `allow_none`)."""
    if value is None:
        return allow_none
    values = value if isinstance(value, list) else [value]
    return all(isinstance(item, int) and not isinstance(item, bool) for item in values)


def _layer_scale(name: str, claimed: Any, arch: Architecture) -> Claim:
    shown = "layer scale (`gamma`)" if arch.layer_scale else "no layer scale"
    return name, claimed, bool(claimed) == arch.layer_scale, shown


def timm_claims(config: Mapping[str, Any], model_args: Mapping[str, Any], arch: Architecture) -> Architecture:
    """A timm Hub folder's config.json checked against the weights; returns `arch` with its LayerNorm eps."""
    final_norm = "the final LayerNorm as `norm_pre` (before pooling)" if arch.head_norm_first else (
        "the final LayerNorm as `head.norm` (after pooling)")
    for where, fields in ((model_args, ("dims", "depths", "in_chans", "head_hidden_size", "num_classes")),
                          (config, ("num_classes",))):
        for name in fields:
            if name in where and not _integers(where[name], allow_none=name == "head_hidden_size"):
                raise UserInputError(
                    f"config.json's {name} is {where[name]!r}; timm writes "
                    f"{'a list of integers' if name in ('dims', 'depths') else 'an integer'} there. The config is "
                    "damaged: fix the field, or pass the weights alone."
                )
    claims = [
        _same(name, model_args[name], actual)
        for name, actual in (("dims", arch.hidden_sizes), ("depths", arch.depths), ("in_chans", arch.num_channels),
                             ("head_hidden_size", arch.head_hidden_size))
        if name in model_args
    ]
    if "use_grn" in model_args:
        claims.append((*_same("use_grn", bool(model_args["use_grn"]), arch.use_grn)[:3], "GRN" if arch.use_grn
                       else "no GRN"))
    if model_args.get("ls_init_value") is not None:
        claims.append(_layer_scale("ls_init_value", model_args["ls_init_value"], arch))
    for where in (model_args, config):
        if "head_norm_first" in where:
            claimed = where["head_norm_first"]
            claims.append(("head_norm_first", claimed, claimed is arch.head_norm_first, final_norm))
        if "num_classes" in where:
            claims.append(_same("num_classes", where["num_classes"], arch.num_labels))
    _refuse_contradictions(claims, "its timm config.json")
    _timm_name_claims(config.get("architecture"), model_args, arch)
    if model_args.get("norm_eps") is None:
        return arch
    eps = positive_number(model_args["norm_eps"], "model_args.norm_eps (timm config.json, the LayerNorm eps)")
    return dataclasses.replace(arch, layer_norm_eps=eps)


def transformers_claims(
    config: Mapping[str, Any], arch: Architecture, weights_place_final_norm: bool = False
) -> tuple[Architecture, tuple[str, ...]]:
    """A transformers config.json checked against the weights. Returns `arch` with what only the config can say
    (convnext_hf: layer_norm_eps, and head_norm_first unless `weights_place_final_norm`: in the transformers layout
    the final LayerNorm has one name either way) and those claims, to be reported as taken from the config."""
    convnext = config.get("backbone_config") if config.get("model_type") == "upernet" else config
    if not isinstance(convnext, Mapping):
        raise UserInputError(f"config.json's backbone_config is {type(convnext).__name__}, not a ConvNeXt config.")
    model_type = convnext.get("model_type")
    if model_type not in (CONVNEXT_HF_MODEL_TYPE, *BUILTIN_MODEL_TYPES):
        return arch, ()
    drop_path_rate = convnext.get("drop_path_rate", 0.0)
    if isinstance(drop_path_rate, bool) or not isinstance(drop_path_rate, int | float) or not 0 <= drop_path_rate < 1:
        raise UserInputError(
            f"config.json's drop_path_rate must be a stochastic-depth probability in [0, 1), got {drop_path_rate!r}; "
            "the config is damaged: fix or remove the field (the converted model is written with 0.0, a training "
            "setting)."
        )
    hidden_act = convnext.get("hidden_act", GELU)
    if hidden_act != GELU:
        raise UserInputError(
            f"Refusing to convert: config.json says hidden_act={hidden_act!r}; the converter (and its verification) "
            "supports ConvNeXt's GELU only."
        )
    claims = [
        _same(name, convnext[name], actual)
        for name, actual in (("hidden_sizes", arch.hidden_sizes), ("depths", arch.depths),
                             ("num_channels", arch.num_channels), ("patch_size", arch.patch_size))
        if name in convnext
    ]
    if "layer_scale_init_value" in convnext and model_type != "convnextv2":
        claims.append(_layer_scale("layer_scale_init_value", convnext["layer_scale_init_value"], arch))
    if model_type != CONVNEXT_HF_MODEL_TYPE:
        if convnext.get("head_norm_first"):
            raise UserInputError(
                f"Refusing to convert: config.json says head_norm_first=true, but its model_type {model_type!r} "
                "(transformers' built-in) has no such option: it always normalizes after pooling. The config does not "
                "describe these weights; pass their own config."
            )
        _refuse_contradictions(claims, "its config.json")
        return arch, ()
    claims += [
        _same(name, convnext[name], actual)
        for name, actual in (("use_grn", arch.use_grn), ("isotropic", arch.isotropic), ("stem_type", arch.stem_type),
                             ("head_hidden_size", arch.head_hidden_size))
        if name in convnext
    ]
    head_norm_first = convnext.get("head_norm_first", False)
    if not isinstance(head_norm_first, bool):
        raise UserInputError(f"config.json's head_norm_first must be true or false, got {head_norm_first!r}.")
    if weights_place_final_norm:
        final_norm = f"the final LayerNorm {'before' if arch.head_norm_first else 'after'} pooling"
        claims.append(("head_norm_first", head_norm_first, head_norm_first is arch.head_norm_first, final_norm))
    _refuse_contradictions(claims, "its config.json")
    eps = positive_number(convnext.get("layer_norm_eps", arch.layer_norm_eps), "config.json's layer_norm_eps")
    assumed = []
    if head_norm_first and arch.task in (CLASSIFICATION, FEATURE_EXTRACTION) and not weights_place_final_norm:
        assumed.append("head_norm_first=True")
    if eps != DEFAULT_EPS:
        assumed.append(f"layer_norm_eps={eps:g}")
    return dataclasses.replace(arch, head_norm_first=head_norm_first, layer_norm_eps=eps), tuple(assumed)


def id2label(config: Mapping[str, Any] | None, arch: Architecture) -> dict[int, str] | None:
    """A transformers config's class names, checked to number exactly the head's classes (None: it has none)."""
    stored = (config or {}).get("id2label")
    if "model_type" not in (config or {}) or not stored or not arch.num_labels:
        return None
    if not isinstance(stored, Mapping):
        raise UserInputError(f"config.json's id2label must map class numbers to names, got {type(stored).__name__}.")
    if not all(isinstance(name, str) and name for name in stored.values()):
        bad = next(name for name in stored.values() if not isinstance(name, str) or not name)
        raise UserInputError(
            f"config.json's id2label holds the class name {bad!r}; class names must be non-empty text."
        )
    try:
        labels = {int(index): name for index, name in stored.items()}
    except ValueError:
        bad = next(index for index in stored if not str(index).lstrip("-").isdigit())
        raise UserInputError(f"config.json's id2label has the key {bad!r}; its keys must be class numbers.") from None
    if len(labels) == arch.num_labels and sorted(labels) != list(range(arch.num_labels)):
        missing = sorted(set(range(arch.num_labels)) - set(labels))
        raise UserInputError(
            f"config.json's id2label numbers its {len(labels)} classes {sorted(labels)}, not 0..{arch.num_labels - 1} "
            f"(missing {missing}); number the classes in the order of the head's outputs."
        )
    if sorted(labels) != list(range(arch.num_labels)):
        raise UserInputError(
            f"Refusing to convert: config.json's id2label names {len(labels)} classes, but the weights' head has "
            f"{arch.num_labels}; the config belongs to another model. Pass the weights with their own config."
        )
    return labels


def timm_label_names(config: Mapping[str, Any], arch: Architecture) -> dict[int, str] | None:
    """A timm config's `label_names` (class names in head order), checked to name each of the head's classes once."""
    names = config.get("label_names")
    if names is None or not arch.num_labels:
        return None
    if not isinstance(names, list) or not all(isinstance(name, str) and name for name in names):
        raise UserInputError(f"config.json's label_names must be a list of non-empty class names, got {names!r:.80}.")
    if len(names) != arch.num_labels:
        raise UserInputError(
            f"Refusing to convert: config.json's label_names names {len(names)} classes, but the weights' head has "
            f"{arch.num_labels}; the config belongs to another model. Pass the weights with their own config."
        )
    return dict(enumerate(names))


def check_stride(resolution: int, stride: int, source: str) -> None:
    """Refuse a resolution below the model's total stride: the last stage would get no pixels."""
    if resolution < stride:
        raise UserInputError(
            f"resolution {resolution} ({source}) is smaller than the model's total stride {stride}: its last stage "
            f"would get no pixels. Pass a resolution of at least {stride}, e.g. --resolution 224."
        )


def timm_preprocessing(config: Mapping[str, Any], num_channels: int) -> dict[str, Any]:
    """A timm config's `pretrained_cfg`, checked before it becomes an image processor."""
    cfg = config.get("pretrained_cfg") or {}
    if not isinstance(cfg, Mapping):
        raise UserInputError(f"config.json's pretrained_cfg must be an object, got {type(cfg).__name__}.")
    checked = dict(cfg)
    for name in ("mean", "std"):
        if name not in cfg:
            continue
        values = cfg[name]
        if not isinstance(values, list | tuple) or len(values) != num_channels:
            raise UserInputError(
                f"config.json's pretrained_cfg.{name} is {values!r}; it needs one number per input channel "
                f"({num_channels})."
            )
        if name == "std":
            checked[name] = [positive_number(value, "every pretrained_cfg.std value (config.json)") for value in values]
        elif any(isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) for v in values):
            raise UserInputError(f"config.json's pretrained_cfg.mean must hold finite numbers, got {values!r}.")
    if "input_size" in cfg:
        size = cfg["input_size"]
        if not isinstance(size, list | tuple) or len(size) != 3:
            raise UserInputError(
                f"config.json's pretrained_cfg.input_size is {size!r}; timm writes [channels, height, width]."
            )
        if size[0] != num_channels:
            raise UserInputError(
                f"Refusing to convert: config.json's pretrained_cfg.input_size {size!r} says {size[0]} input channels, "
                f"but the weights' stem takes {num_channels}. The config does not describe these weights."
            )
        for side in size[1:]:
            check_resolution(side, "config.json's pretrained_cfg.input_size")
        if size[1] != size[2]:
            raise UserInputError(
                f"config.json's pretrained_cfg.input_size {size!r} is not square; the converted image processor "
                "resizes and crops to a square, so it would not preprocess as timm does. Pass --resolution N to "
                "convert for N x N inputs."
            )
    if "crop_pct" in cfg:
        crop_pct = positive_number(cfg["crop_pct"], "config.json's pretrained_cfg.crop_pct")
        if crop_pct > 1:
            raise UserInputError(f"config.json's pretrained_cfg.crop_pct must be in (0, 1], got {crop_pct}.")
    if cfg.get("crop_mode", "center") != "center":
        raise UserInputError(
            f"config.json's pretrained_cfg.crop_mode is {cfg['crop_mode']!r}; the converted image processor does "
            "timm's 'center' crop only, so it would not preprocess as timm does. Edit crop_mode to 'center' to accept "
            "that preprocessing."
        )
    if "interpolation" in cfg and not isinstance(cfg["interpolation"], str):
        raise UserInputError(
            "config.json's pretrained_cfg.interpolation must be a name such as 'bicubic', got "
            f"{cfg['interpolation']!r}."
        )
    return checked


# mmdetection's two-stage box heads classify into the dataset's classes plus background (softmax over num_classes + 1).
DETECTOR_CLASSIFIER = re.compile(r"roi_head\.bbox_head(\.\d+)?\.fc_cls\.weight")
# An mmcv / mmengine config (Python text) naming its backbone's variant: `arch='tiny'` (or "arch": "tiny").
CONFIG_ARCH = re.compile(r"""\barch['"]?\s*[=:]\s*['"]([a-z]+)['"]""")


def _head_classes(tensors: Mapping[str, torch.Tensor], arch: Architecture) -> tuple[int, str] | None:
    """How many classes the checkpoint's head tells apart, and which head says so (None: no head counts classes)."""
    if arch.num_labels and arch.task == CLASSIFICATION:
        return arch.num_labels, "classification head"
    if arch.num_labels and arch.task == SEGMENTATION:
        return arch.num_labels, "decode head"
    rows = {tuple(value.shape)[0] for key, value in tensors.items() if DETECTOR_CLASSIFIER.fullmatch(key)}
    if len(rows) == 1:
        return rows.pop() - 1, "box head (roi_head.bbox_head fc_cls, less the background row)"
    return None


def mm_meta_claims(
    meta: Mapping[str, Any] | None, tensors: Mapping[str, torch.Tensor], arch: Architecture, source: str
) -> None:
    """An mmcls/mmpretrain, mmseg or mmdet checkpoint's `meta` checked against the weights: its class names
    (`CLASSES`, mmpretrain's `dataset_meta.classes`) must number the head's classes, and the backbone variant its
    config text names (`arch='tiny'`) must have the weights' widths and depths. The config is only searched as text;
    nothing in `meta` is run."""
    if not isinstance(meta, Mapping):
        return
    dataset_meta = meta.get("dataset_meta")
    head = _head_classes(tensors, arch)
    for where, classes in (("meta.CLASSES", meta.get("CLASSES")),
                           ("meta.dataset_meta.classes",
                            dataset_meta.get("classes") if isinstance(dataset_meta, Mapping) else None)):
        if isinstance(classes, list | tuple) and head is not None and len(classes) != head[0]:
            raise UserInputError(
                f"Refusing to convert: {source}'s {where} names {len(classes)} classes, but the weights' {head[1]} has "
                f"{head[0]}; the metadata belongs to another model (or the head was replaced). Pass an intact "
                "checkpoint."
            )
    for where in ("config", "cfg"):
        text = meta.get(where)
        named = set(CONFIG_ARCH.findall(text)) if isinstance(text, str) else set()
        if len(named) != 1 or (size := named.pop()) not in HIERARCHICAL_VARIANTS:
            continue  # no variant, several (another model's in the config too), or a custom one: nothing to check
        hidden_sizes, depths = HIERARCHICAL_VARIANTS[size]
        if (tuple(hidden_sizes), tuple(depths)) != (arch.hidden_sizes, arch.depths):
            raise UserInputError(
                f"Refusing to convert: {source}'s meta.{where} names the backbone arch='{size}' (widths "
                f"{list(hidden_sizes)}, depths {list(depths)}), but the weights have widths {arch.hidden_sizes} and "
                f"depths {arch.depths}; the metadata belongs to another model. Pass an intact checkpoint."
            )
