"""The valid range of every number a user or a folder can give, in one table: the flags of every command (`RANGES`),
the model settings of `--config_overrides` and of saved configurations, detector and UperNet heads included
(`CONFIG_RANGES`), and the sizes of image processors read from folders (`PROCESSOR_RANGES`).

A value outside its range would fail deep inside the run with a traceback (a batch size of 0, a NaN learning rate),
ask for memory no machine has (a batch of 10^11, a 30000² processor size, a million blocks) or, worse, train and exit
0 meaning nothing (an infinite learning rate, a NaN weight decay, an EMA decay of 2). Each is refused before anything
is allocated, read or written, in one line naming the flag or setting, the value and the range: flags as every
command's parser returns them (`cli.OneLineErrors`), settings where they enter (`check_config_ranges`), processors as
they are loaded (`check_processor_ranges`). A flag left at None (unset) is not checked: its default applies.

Settings each within range may still describe a model too large together (a detector with d_model 8192, 64 layers and
16384-wide feed-forward layers: 10^11 parameters): `check_model_size` counts the parameters the whole model would
hold, built on torch's meta device (no memory), and refuses it above `MAX_PARAMETERS` before it is built, whether
from flags and `--config_overrides` (every task's build) or from a folder (`model_folder.load_model_folder`).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from ..annotations import shown_value
from ..configuration_convnext import MAX_PARAMETERS, MAX_STAGE_DEPTH, MAX_WIDTH
from ..errors import UserInputError
from ..image_processing_convnext import MAX_RESOLUTION

# The most seeds numpy's generator takes (transformers' set_seed seeds it too).
MAX_SEED = 2**32 - 1
# Largest batch of images on one device, and the most steps accumulated into one: beyond them a typo (-b 10^11).
MAX_BATCH_SIZE = 2**16
# Longest run a flag may ask for, in steps and epochs.
MAX_STEPS = 10**9
MAX_EPOCHS = 10**6
# Detector sizes: about ten times the published heads' (300 queries, 6 decoder layers, 8 heads, width 256, 1024-wide
# feed-forward layers), so that no edited number allocates gigabytes.
MAX_QUERIES = 5000
MAX_LAYERS = 64
MAX_HEADS = 64
MAX_FEED_FORWARD = 16384
# Most classes a model may have: ImageNet-22k has 21841, LVIS 1203; transformers builds a label map of this size.
MAX_LABELS = 100_000
# UperNet's pyramid pooling: output sizes of its adaptive pools (the official ones: 1, 2, 3, 6).
MAX_POOL_SCALE = 64


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _at_least(low: float) -> Callable[[Any], bool]:
    return lambda value: _number(value) and value >= low


def _within(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        if not _number(value):
            return False
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        return above and below

    return check


def _interval(low_open: bool = True) -> Callable[[Any], bool]:
    """Two numbers `min max` with 0 < min <= max (0 <= min when not `low_open`)."""

    def check(value: Any) -> bool:
        return (
            isinstance(value, list | tuple)
            and len(value) == 2
            and all(_number(bound) for bound in value)
            and (value[0] > 0 if low_open else value[0] >= 0)
            and value[0] <= value[1]
        )

    return check


def _integer(low: int, high: int) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _integers(low: int, high: int, length: int | None = None) -> Callable[[Any], bool]:
    """A non-empty list of integers from low to high (of `length` items when given)."""
    item = _integer(low, high)
    return lambda value: (
        isinstance(value, list | tuple) and len(value) > 0 and (length is None or len(value) == length)
        and all(item(entry) for entry in value)
    )  # fmt: skip


PROBABILITY = (_within(0, 1), "a probability from 0 to 1")
POSITIVE_INTEGER = (_at_least(1), "an integer >= 1")
BATCH = (_integer(1, MAX_BATCH_SIZE), f"an integer from 1 to {MAX_BATCH_SIZE}")
PIXELS = (_integer(1, MAX_RESOLUTION), f"an integer from 1 to {MAX_RESOLUTION} pixels")
POSITIVE_NUMBER = (_within(0, math.inf, low_open=True), "a finite number > 0")

# flag (the argument's field name) -> (predicate over its parsed value, the valid range in words)
RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    # ModelArguments
    "image_size": (_within(1, MAX_RESOLUTION), f"an integer from 1 to {MAX_RESOLUTION} pixels"),
    "crop_pct": (_within(0, 1, low_open=True), "a fraction in (0, 1] (the official value is 0.875)"),
    "drop_path_rate": (_within(0, 1, high_open=True), "a rate in [0, 1)"),
    "head_init_scale": (_number, "a finite number (the fine-tuning recipe uses 0.001)"),
    # DataArguments
    "train_val_split": (_within(0, 1, high_open=True), "a fraction in [0, 1) (0: no held-out validation)"),
    "max_train_samples": POSITIVE_INTEGER,
    "max_eval_samples": POSITIVE_INTEGER,
    "shuffle_buffer_size": POSITIVE_INTEGER,
    # RecipeArguments
    "layer_decay": (_within(0, 1, low_open=True), "a factor in (0, 1] (1 disables it; the paper fine-tunes with 0.8)"),
    "rrc_scale_min": (_within(0, 1, low_open=True), "an area fraction in (0, 1] (the paper uses 0.08)"),
    "rrc_ratio": (_interval(), "two aspect ratios min max with 0 < min <= max (the paper uses 0.75 1.333)"),
    "scale_range": (_interval(), "two factors min max with 0 < min <= max (the official recipe uses 0.5 2)"),
    "hflip": PROBABILITY,
    "random_erasing": PROBABILITY,
    "mixup_alpha": (_at_least(0), "a finite number >= 0 (0 disables Mixup)"),
    "cutmix_alpha": (_at_least(0), "a finite number >= 0 (0 disables CutMix)"),
    "mixup_prob": PROBABILITY,
    "mixup_switch_prob": PROBABILITY,
    "model_ema_decay": (_within(0, 1, low_open=True, high_open=True), "a decay in (0, 1) (the paper uses 0.9999)"),
    "base_learning_rate": (_within(0, math.inf, low_open=True), "a finite number > 0"),
    "unfreeze_last_stages": (_at_least(0), "an integer >= 0"),
    # TrainingArguments
    "learning_rate": (_within(0, math.inf, low_open=True), "a finite number > 0"),
    "num_train_epochs": (_within(-MAX_EPOCHS, MAX_EPOCHS), f"a number of epochs up to {MAX_EPOCHS:.0e} (with "
                         "--max_steps unset, > 0)"),
    "max_steps": (_integer(-1, MAX_STEPS), f"a number of steps from 0 to {MAX_STEPS:.0e}, or -1 to train "
                  "--num_train_epochs"),
    "per_device_train_batch_size": BATCH,
    "per_device_eval_batch_size": BATCH,
    "gradient_accumulation_steps": BATCH,
    "eval_accumulation_steps": POSITIVE_INTEGER,
    "weight_decay": (_at_least(0), "a finite number >= 0"),
    "adam_beta1": (_within(0, 1, high_open=True), "a decay in [0, 1)"),
    "adam_beta2": (_within(0, 1, high_open=True), "a decay in [0, 1)"),
    "adam_epsilon": (_within(0, math.inf, low_open=True), "a finite number > 0"),
    "max_grad_norm": (_at_least(0), "a finite norm >= 0 (0 disables clipping)"),
    "label_smoothing_factor": (_within(0, 1, high_open=True), "a fraction in [0, 1)"),
    "warmup_steps": (_at_least(0), "a number of steps >= 0 (below 1: that fraction of the run)"),
    "logging_steps": (_within(0, math.inf, low_open=True), "a number of steps > 0 (below 1: that fraction of the run)"),
    "eval_steps": (_within(0, math.inf, low_open=True), "a number of steps > 0 (below 1: that fraction of the run)"),
    "save_steps": (_within(0, math.inf, low_open=True), "a number of steps > 0 (below 1: that fraction of the run)"),
    # transformers keeps every checkpoint for 0 (or any negative number, which says nothing more).
    "save_total_limit": (_at_least(0), "a number of checkpoints >= 0 (0 keeps every checkpoint)"),
    "seed": (_within(0, MAX_SEED), f"an integer from 0 to {MAX_SEED}"),
    "data_seed": (_within(0, MAX_SEED), f"an integer from 0 to {MAX_SEED}"),
    "dataloader_num_workers": (_integer(0, 1024), "a number of processes from 0 to 1024 (0 loads in the main "
                               "process)"),
    "dataloader_prefetch_factor": (_integer(1, 1024), "an integer from 1 to 1024"),
    # convnext-hf evaluate
    "batch_size": BATCH,
    "threshold": (_within(0, 1, high_open=True), "a score threshold in [0, 1)"),
    # (export's --static_shape, --tolerance, --calibration_images and convert's --resolution, --tolerance are checked
    # with their options: export.options, conversion.claims)
    # convnext-hf demo
    "epochs": (_within(0, MAX_EPOCHS, low_open=True), f"a number of epochs in (0, {MAX_EPOCHS:.0e}]"),
    "train_per_class": POSITIVE_INTEGER,
    "train_images": (_integer(1, 1_000_000), "a number of scenes from 1 to 1000000"),
}

WIDTH = (_integer(1, MAX_WIDTH), f"an integer from 1 to {MAX_WIDTH} channels")
FEED_FORWARD = (_integer(1, MAX_FEED_FORWARD), f"an integer from 1 to {MAX_FEED_FORWARD} channels")
HEADS = (_integer(1, MAX_HEADS), f"an integer from 1 to {MAX_HEADS}")
DROPOUT = (_within(0, 1, high_open=True), "a rate in [0, 1)")
WIDTHS = (_integers(1, MAX_WIDTH), f"a list of integers from 1 to {MAX_WIDTH} channels")

# model setting (a key of --config_overrides or of a saved config.json) -> (predicate, the valid range in words).
# The ConvNeXt's stage sizes are bounded by its configuration's MAX_STAGE_DEPTH and MAX_WIDTH (which
# `ConvNextConfig._validate` also enforces, for folders read without this table); the rest are the detector's and
# UperNet's, and any number anywhere must be finite.
CONFIG_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "depths": (_integers(1, MAX_STAGE_DEPTH), f"a list of integers from 1 to {MAX_STAGE_DEPTH} blocks a stage"),
    "hidden_sizes": WIDTHS,
    "image_size": PIXELS,
    "num_labels": (_integer(0, MAX_LABELS), f"a number of classes from 0 to {MAX_LABELS}"),
    # detectors (DETR family)
    "num_queries": (_integer(1, MAX_QUERIES), f"an integer from 1 to {MAX_QUERIES}"),
    "d_model": WIDTH,
    "encoder_hidden_dim": WIDTH,
    "encoder_ffn_dim": FEED_FORWARD,
    "decoder_ffn_dim": FEED_FORWARD,
    "encoder_layers": (_integer(0, MAX_LAYERS), f"an integer from 0 to {MAX_LAYERS}"),
    "decoder_layers": (_integer(1, MAX_LAYERS), f"an integer from 1 to {MAX_LAYERS} (the boxes come from the "
                       "decoder)"),
    "encoder_attention_heads": HEADS,
    "decoder_attention_heads": HEADS,
    "num_feature_levels": (_integer(1, 8), "an integer from 1 to 8"),
    "encoder_n_points": (_integer(1, 64), "an integer from 1 to 64"),
    "num_denoising": (_integer(0, MAX_QUERIES), f"an integer from 0 to {MAX_QUERIES}"),
    "encoder_in_channels": WIDTHS,
    "decoder_in_channels": WIDTHS,
    "dropout": DROPOUT,
    "attention_dropout": DROPOUT,
    "activation_dropout": DROPOUT,
    "encoder_layerdrop": DROPOUT,
    "decoder_layerdrop": DROPOUT,
    # UperNet
    "pool_scales": (_integers(1, MAX_POOL_SCALE), f"a list of integers from 1 to {MAX_POOL_SCALE} (the official: "
                    "[1, 2, 3, 6])"),
    "hidden_size": WIDTH,
    "auxiliary_channels": WIDTH,
    "auxiliary_num_convs": (_integer(0, 8), "an integer from 0 to 8"),
    "auxiliary_loss_weight": (_within(0, 100), "a finite weight from 0 to 100 (the official: 0.4)"),
}

# A processor's size entries (`size`, `crop_size`: an int or a dict of these keys) and the valid range of each.
PROCESSOR_SIZE_KEYS = ("shortest_edge", "longest_edge", "height", "width", "max_height", "max_width")
PROCESSOR_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "size": PIXELS,
    "crop_size": PIXELS,
    "crop_pct": (_within(0, 1, low_open=True), "a fraction in (0, 1]"),
    "rescale_factor": (_within(0, 1, low_open=True), "a factor in (0, 1] (1/255 for 8-bit images)"),
    "image_std": (lambda value: isinstance(value, list | tuple) and all(POSITIVE_NUMBER[0](v) for v in value)
                  or POSITIVE_NUMBER[0](value), "finite numbers > 0"),  # fmt: skip
    "image_mean": (lambda value: isinstance(value, list | tuple) and all(_number(v) for v in value) or _number(value),
                   "finite numbers"),  # fmt: skip
    # A string would be read as true whatever it says ("no" included).
    **dict.fromkeys(("do_resize", "do_center_crop", "do_rescale", "do_normalize", "do_convert_rgb", "do_pad"),
                    (lambda value: isinstance(value, bool), "true or false")),
}


def _shown(value: Any) -> str:
    """A value as it would be typed on the command line."""
    if isinstance(value, list | tuple):
        return " ".join(_shown(item) for item in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def check_ranges(groups: tuple[Any, ...]) -> None:
    """Refuse the first flag of the parsed argument `groups` whose value lies outside its range in `RANGES`."""
    for group in groups:
        for name, (valid, words) in RANGES.items():
            value = getattr(group, name, None)
            if value is not None and not valid(value):
                raise UserInputError(f"--{name} {_shown(value)} is out of range: it takes {words}.")


def _non_finite(value: Any, path: str) -> str | None:
    """The path of the first NaN or infinity in a JSON-like value, None when every number is finite."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, list | tuple):
        return next((found for index, item in enumerate(value) if (found := _non_finite(item, f"{path}[{index}]"))),
                    None)  # fmt: skip
    if isinstance(value, dict):
        return next((found for key, item in value.items() if (found := _non_finite(item, f"{path}.{key}"))), None)
    return None


def check_config_ranges(settings: Mapping[str, Any], source: str, prefix: str = "") -> None:
    """Refuse the first model setting (of `--config_overrides`, or of a saved configuration named by `source`, its
    sub-configurations such as `backbone_config` included) outside its range in `CONFIG_RANGES`, or holding a NaN or
    an infinity anywhere."""
    for key, value in settings.items():
        if isinstance(value, Mapping):
            check_config_ranges(value, source, f"{prefix}{key}.")
            continue
        if key in CONFIG_RANGES and value is not None and not CONFIG_RANGES[key][0](value):
            raise UserInputError(f"{source}: {prefix}{key} {json.dumps(value)} is out of range: it takes "
                                 f"{CONFIG_RANGES[key][1]}.")  # fmt: skip
        found = _non_finite(value, f"{prefix}{key}")
        if found is not None:
            raise UserInputError(f"{source}: {found} is {json.dumps(value)}, not a finite number.")


def _size_entries(key: str, value: Any) -> dict[str, Any]:
    """A processor setting's numbers by name: a size dict's (or transformers' SizeDict's) entries, else the value."""
    if isinstance(value, Mapping) or type(value).__name__ == "SizeDict":
        entries = dict(value)
        return {f"{key}.{name}": entries[name] for name in PROCESSOR_SIZE_KEYS if name in entries}
    return {key: value}


def check_processor_ranges(processor: Any, source: str) -> None:
    """Refuse an image processor (read from the folder `source`) whose sizes or normalisation lie outside
    `PROCESSOR_RANGES`: a 30000² resize would allocate gigabytes for every image before any check downstream."""
    settings = processor if isinstance(processor, Mapping) else vars(processor)
    for key, (valid, words) in PROCESSOR_RANGES.items():
        value = settings.get(key)
        if value is None:
            continue
        for name, entry in _size_entries(key, value).items():
            if entry is not None and not valid(entry):
                raise UserInputError(f"{source}: the image processor's {name} {shown_value(entry)} is out of range: "
                                     f"it takes {words}; fix preprocessor_config.json.")  # fmt: skip


# The settings that make a model large, named in the refusal's fix.
SIZE_SETTINGS = ("depths", "hidden_sizes", "num_labels", "d_model", "encoder_layers", "decoder_layers",
                 "encoder_ffn_dim", "decoder_ffn_dim", "hidden_size", "auxiliary_channels")  # fmt: skip


def meta_model(model_class: Any, config: Any) -> Any:
    """The model `model_class` (a model class or an Auto class) would build from `config`, on torch's meta device:
    shapes only, no weight allocated or initialised (a legacy `torch.Tensor(n, d)` parameter, at most a few
    thousand numbers, aside)."""
    import torch

    config = copy.deepcopy(config)
    with torch.device("meta"):
        if hasattr(model_class, "_model_mapping"):  # an Auto class: never asks to run a folder's code
            return model_class.from_config(config, trust_remote_code=False)
        return model_class.from_config(config) if hasattr(model_class, "from_config") else model_class(config)


def check_model_size(model_class: Any, config: Any, source: str) -> None:
    """Refuse a configuration (from `source`: flags and `--config_overrides`, or a folder's config.json) whose whole
    model, heads included, would hold more than `MAX_PARAMETERS` parameters, before anything is allocated; or one
    that an Auto class cannot build at all (transformers would ask whether to run a folder's code for it)."""
    mapping = getattr(model_class, "_model_mapping", None)
    if mapping is not None and type(config) not in mapping:
        raise UserInputError(
            f"{source}: it describes a {getattr(config, 'model_type', type(config).__name__)!r} model, which "
            f"{model_class.__name__} cannot build; give a configuration of this task's model."
        )
    model = meta_model(model_class, config)
    parameters = sum(parameter.numel() for parameter in model.parameters())
    if parameters > MAX_PARAMETERS:
        raise UserInputError(
            f"{source}: the {type(model).__name__} it describes holds {parameters:.3g} parameters "
            f"({parameters * 4 / 1e9:.0f} GB as float32), over the limit of {MAX_PARAMETERS:.0e} (the largest "
            f"published ConvNeXt holds 0.85e9); lower its sizes ({', '.join(SIZE_SETTINGS)})."
        )
