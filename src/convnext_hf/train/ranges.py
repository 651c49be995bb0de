"""The valid range of every numeric flag of `convnext-hf train`, ours and the Trainer's common ones, in one table.

A value outside its range would fail deep inside the run with a traceback (a batch size of 0, a NaN learning rate)
or, worse, train and exit 0 meaning nothing (an infinite learning rate, a NaN weight decay, an EMA decay of 2). Each
is refused as the arguments are parsed, before anything is read or written, in one line naming the flag, the value
and the range. A flag left at None (unset) is not checked: its default applies.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..errors import UserInputError
from ..image_processing_convnext import MAX_RESOLUTION

# The most seeds numpy's generator takes (transformers' set_seed seeds it too).
MAX_SEED = 2**32 - 1


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


PROBABILITY = (_within(0, 1), "a probability from 0 to 1")
POSITIVE_INTEGER = (_at_least(1), "an integer >= 1")

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
    "num_train_epochs": (_number, "a finite number (with --max_steps unset, > 0)"),
    "max_steps": (_at_least(-1), "a number of steps >= 0, or -1 to train --num_train_epochs"),
    "per_device_train_batch_size": POSITIVE_INTEGER,
    "per_device_eval_batch_size": POSITIVE_INTEGER,
    "gradient_accumulation_steps": POSITIVE_INTEGER,
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
    "dataloader_num_workers": (_at_least(0), "a number of processes >= 0 (0 loads in the main process)"),
    "dataloader_prefetch_factor": POSITIVE_INTEGER,
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
