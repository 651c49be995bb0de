"""Command-line arguments of `convnext-hf train`: the model, the data and the recipe, beside every Trainer flag.

The dataclasses here are parsed together with transformers' `TrainingArguments` by `HfArgumentParser`, so any
Trainer flag (`--bf16`, `--gradient_accumulation_steps`, `--activation_checkpointing`, `--max_grad_norm`,
`--label_smoothing_factor`, `--push_to_hub`...) works. A `--recipe` preset changes the defaults; flags given on the
command line win over it. The spellings of the other commands and timm's (`--model`, `--epochs`, `--lr`, `-b`...)
are read as their flags here (`ALIASES`).

The module imports neither torch nor transformers until a parser is built, so that `--help` answers at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..cli import OneLineErrors, refuse_two_values, spelled_values
from ..errors import UserInputError
from ..tasks import IMAGE_CLASSIFICATION, TASKS
from .recipes import RECIPES, recipe_defaults

if TYPE_CHECKING:
    from transformers import HfArgumentParser, TrainingArguments

logger = logging.getLogger(__name__)

BAD_IMAGE_POLICIES = ("error", "skip")
# The paper's learning rates are for a total batch of 4096 images (Goyal et al.'s linear scaling rule).
REFERENCE_BATCH_SIZE = 4096
# configuration_convnext.VARIANTS' names, here so that parsing and --help need not import transformers (a test keeps
# the two equal).
VARIANT_NAMES = (
    "atto", "femto", "pico", "nano", "tiny", "small", "base", "large", "xlarge", "huge",
    "isotropic-small", "isotropic-base", "isotropic-large",
    "v2-atto", "v2-femto", "v2-pico", "v2-nano", "v2-tiny", "v2-base", "v2-large", "v2-huge",
)  # fmt: skip


@dataclass
class ModelArguments:
    """Which ConvNeXt to train: a pretrained one (`--model_name_or_path`) or a variant from scratch (`--variant`)."""

    task: str = field(
        default=IMAGE_CLASSIFICATION,
        metadata={
            # Checked by the registry, which also takes the older spellings.
            "help": "; ".join(f"{task.name}: {task.summary}" for task in TASKS.values() if task.trainable) + "."
        },
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A saved ConvNeXt folder or Hub id to fine-tune (ours or transformers' built-in convnext); for "
            "segmentation also a converted UperNet folder (heads kept when the classes match)."
        },
    )
    detector: str = field(
        default="rt_detr",
        metadata={
            "help": "Object detection: transformers' detector put on the ConvNeXt backbone, by its model type: rt_detr "
            "(default, see docs/training.md), rt_detr_v2, d_fine, deformable_detr, conditional_detr or detr; sized to "
            "the backbone unless --config_overrides says otherwise."
        },
    )
    variant: str | None = field(
        default=None, metadata={"help": f"Train this variant from scratch: {', '.join(VARIANT_NAMES)}.",
                          "choices": VARIANT_NAMES}
    )
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": 'JSON object of configuration values to change, e.g. \'{"hidden_sizes": [32, 64, 128, 256], '
            '"depths": [1, 1, 2, 1], "patch_size": 2}\'.'
        },
    )
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "Training resolution (the processor's shortest_edge; the crop side for segmentation). Default: "
            "the model's processor, or 224 (512 for segmentation)."
        },
    )
    crop_pct: float | None = field(
        default=None, metadata={"help": "Center-crop fraction of a new processor at evaluation (below 384 pixels)."}
    )
    drop_path_rate: float | None = field(
        default=None, metadata={"help": "Stochastic depth rate of the last block (linear rule). Default: the model's."}
    )
    head_init_scale: float | None = field(
        default=None, metadata={"help": "Scale of a new classifier's initial weights (the fine-tuning recipe: 0.001)."}
    )
    replace_head: bool = field(
        default=False,
        metadata={"help": "Train a new classifier even when the pretrained one has as many classes as the data."},
    )
    revision: str = field(default="main", metadata={"help": "Branch, tag or commit of a Hub model."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where Hub models and datasets are cached."})


@dataclass
class DataArguments:
    """Where the labelled images come from: an image folder, a CSV/JSON file of paths and labels, or a Hub dataset."""

    train_dir: str | None = field(default=None, metadata={"help": "Image folder: one subfolder per class."})
    validation_dir: str | None = field(default=None, metadata={"help": "Validation image folder, same classes."})
    train_file: str | None = field(
        default=None, metadata={"help": "CSV or JSON (lines) file of image paths (relative to the file) and labels."}
    )
    validation_file: str | None = field(default=None, metadata={"help": "Validation CSV or JSON file."})
    dataset_name: str | None = field(default=None, metadata={"help": "A dataset on the Hub (needs network)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of the Hub dataset."})
    image_column_name: str | None = field(
        default=None, metadata={"help": "Column holding the images (default: 'image', 'img' or 'image_path')."}
    )
    label_column_name: str | None = field(
        default=None, metadata={"help": "Column holding the labels (default: 'label' or 'labels')."}
    )
    train_mask_dir: str | None = field(
        default=None,
        metadata={"help": "Segmentation: folder of PNG masks of class ids (255 ignored), one per image of --train_dir, "
                  "with the same file stem."},
    )
    validation_mask_dir: str | None = field(default=None, metadata={"help": "Masks of --validation_dir's images."})
    train_annotations: str | None = field(
        default=None,
        metadata={"help": "Object detection: COCO annotation file of --train_dir's images (file_name relative to it)."},
    )
    validation_annotations: str | None = field(
        default=None, metadata={"help": "Object detection: COCO annotation file of --validation_dir's images."}
    )
    on_bad_box: str = field(
        default="error",
        metadata={
            "help": "Object detection: a box that is degenerate or outside its image: 'error' stops with the counts, "
            "'skip' leaves those boxes out.",
            "choices": BAD_IMAGE_POLICIES,
        },
    )
    mask_column_name: str | None = field(
        default=None, metadata={"help": "Segmentation CSV/JSON column of mask paths (default: 'mask' or 'label')."}
    )
    id2label: str | None = field(
        default=None,
        metadata={"help": 'Segmentation class names by mask id: a JSON object or a JSON file, e.g. \'{"0": '
                  '"background", "1": "road"}\'. Default: those of a segmentation model being fine-tuned.'},
    )
    train_val_split: float = field(
        default=0.15, metadata={"help": "Fraction of the training data held out for validation when none is given."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use at most this many training images."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use at most this many validation images."})
    on_bad_image: str = field(
        default="error",
        metadata={
            "help": "An image that cannot be read (found as the loader reads it; `convnext-hf check` finds them all "
            "up front): 'error' stops the run at the first, naming it; 'skip' trains on without it and counts it "
            "in the log, metrics.json and the model card.",
            "choices": BAD_IMAGE_POLICIES,
        },
    )
    streaming: bool = field(
        default=False,
        metadata={"help": "Stream --dataset_name (a Hub id, or a folder of parquet or webdataset .tar shards) instead "
                  "of loading it whole: split between processes and loader workers, reshuffled every epoch; needs "
                  "--max_steps."},
    )
    shuffle_buffer_size: int = field(
        default=1000,
        metadata={"help": "With --streaming: examples each loader worker shuffles among (besides the shard order)."},
    )


def scored_data_arguments(args: argparse.Namespace, **fields: Any) -> DataArguments:
    """`convnext-hf evaluate`'s data flags as DataArguments whose training split is all the data to score."""
    return DataArguments(
        train_dir=args.validation_dir,
        dataset_name=args.dataset_name,
        dataset_config_name=args.dataset_config_name,
        train_val_split=0.0,
        on_bad_image=args.on_bad_image,
        **fields,
    )


@dataclass
class RecipeArguments:
    """The paper's training recipe beyond what TrainingArguments covers. Presets: `--recipe`."""

    recipe: str | None = field(
        default=None, metadata={"help": f"Preset of the options below: {', '.join(RECIPES)}.", "choices": list(RECIPES)}
    )
    layer_decay: float = field(
        default=1.0, metadata={"help": "Layer-wise learning-rate decay (1 disables; the paper fine-tunes with 0.8)."}
    )
    layer_decay_type: str = field(
        default="group",
        metadata={
            "help": "'group': the official 12-layer split; 'single': one layer per block; 'stage': one layer per "
            "stage, as the official segmentation recipe; 'detection': the official detection split (stage 3 in "
            "threes, 6 layers for tiny, 12 for 27-block models).",
            "choices": ["group", "single", "stage", "detection"],
        },
    )
    rrc_scale_min: float = field(
        default=0.08, metadata={"help": "Smallest area fraction of the random-resized crop (1 with ratio 1: none)."}
    )
    rrc_ratio: list[float] = field(
        default_factory=lambda: [3 / 4, 4 / 3], metadata={"help": "Aspect-ratio range (min max) of the random crop."}
    )
    scale_range: list[float] = field(
        default_factory=lambda: [0.5, 2.0],
        metadata={"help": "Segmentation: random rescaling of image and mask (min max factor of --image_size) before "
                  "the random crop, as the official recipe. Object detection: the scale jitter (zoom in with a random "
                  "crop above 1, zoom out onto a padded canvas below 1)."},
    )
    photometric: float = field(
        default=0.2,
        metadata={"help": "Object detection: strength of the brightness, contrast, saturation (factors 1 ± strength) "
                  "and hue (± strength / 4 turn) jitter; 0 disables."},
    )
    hflip: float = field(default=0.5, metadata={"help": "Probability of a horizontal flip (0 for digits or text)."})
    rand_augment: str | None = field(
        default=None, metadata={"help": "RandAugment spec, e.g. 'rand-m9-mstd0.5-inc1' (the paper's)."}
    )
    random_erasing: float = field(default=0.0, metadata={"help": "Probability of random erasing (paper: 0.25)."})
    mixup_alpha: float = field(default=0.0, metadata={"help": "Mixup Beta(alpha, alpha); 0 disables (paper: 0.8)."})
    cutmix_alpha: float = field(default=0.0, metadata={"help": "CutMix Beta(alpha, alpha); 0 disables (paper: 1.0)."})
    mixup_prob: float = field(default=1.0, metadata={"help": "Probability of mixing a batch."})
    mixup_switch_prob: float = field(
        default=0.5, metadata={"help": "Probability of CutMix rather than Mixup when both are enabled."}
    )
    model_ema: bool = field(
        default=False,
        metadata={"help": "Keep an EMA of the weights and evaluate it too; at the end the better of the live and the "
                  "EMA weights on the validation images is saved (the EMA without validation images)."},
    )
    model_ema_decay: float = field(default=0.9999, metadata={"help": "EMA decay per optimizer step."})
    base_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": f"Learning rate for a total batch of {REFERENCE_BATCH_SIZE}, scaled linearly: learning_rate = "
            f"base_learning_rate × total batch / {REFERENCE_BATCH_SIZE}, with total batch = per-device batch × "
            "processes × gradient accumulation (the paper's rule). Replaces --learning_rate; printed at start."
        },
    )
    freeze_backbone: bool = field(
        default=False,
        metadata={"help": "Train the head(s) only (linear probe): the ConvNeXt weights stay exactly as loaded."},
    )
    unfreeze_last_stages: int = field(
        default=0,
        metadata={"help": "With --freeze_backbone, still train the last N stages of the backbone (and the norms "
                  "after them): partial fine-tuning."},
    )


@dataclass
class OutputArguments:
    """What happens to the output folder besides the Trainer's own files."""

    overwrite: bool = field(
        default=False, metadata={"help": "Train into a non-empty --output_dir (otherwise refused unless resuming)."}
    )
    plots: bool = field(
        default=True, metadata={"help": "Write confusion-matrix and training-curve PNGs (--plots false: none)."}
    )


OUR_ARGUMENTS = (ModelArguments, DataArguments, RecipeArguments, OutputArguments)

# Other spellings of our and the Trainer's flags: those of the other convnext-hf commands, the old ones, and timm's
# train.py. `--model` and `--batch_size` are read by `translate_aliases` itself.
ALIASES = {
    "--overwrite_output_dir": "--overwrite",
    "--output": "--output_dir",
    "--epochs": "--num_train_epochs",
    "--lr": "--learning_rate",
    "--smoothing": "--label_smoothing_factor",
    "--drop-path": "--drop_path_rate",
    "--mixup": "--mixup_alpha",
    "--cutmix": "--cutmix_alpha",
    "--aa": "--rand_augment",
    "--reprob": "--random_erasing",
    "--ratio": "--rrc_ratio",
    "--clip-grad": "--max_grad_norm",
    "--img-size": "--image_size",
    "-j": "--dataloader_num_workers",
    "--workers": "--dataloader_num_workers",
    "--resume": "--resume_from_checkpoint",
    "--grad-checkpointing": "--gradient_checkpointing",
    "-vb": "--per_device_eval_batch_size",
    "--validation-batch-size": "--per_device_eval_batch_size",
}
PROG = "convnext-hf train"
USAGE = (
    f"{PROG} --train_dir DIR [--validation_dir DIR] [--model FOLDER_OR_HUB_ID | --model PRESET | --variant NAME]\n"
    "       [--task TASK] [--recipe NAME] [--output_dir DIR] [options]"
)
# Checkpoints kept during a run (with --metric_for_best_model, the best one is always among them).
SAVE_TOTAL_LIMIT = 2
BATCH_SIZE_SPELLINGS = ("-b", "--batch-size", "--batch_size")
MODEL_FLAG = "--model"


def timm_name(variant: str) -> str:
    """timm's name of a variant preset (`convnext_tiny`, `convnextv2_atto`), which `--model` accepts too."""
    prefix, size = ("convnextv2", variant[3:]) if variant.startswith("v2-") else ("convnext", variant)
    return f"{prefix}_{size}".replace("-", "_")


def variant_preset(name: str) -> str | None:
    """The variant a `--model` name stands for (`convnext_tiny`, timm's `convnextv2_atto`, or `tiny`), else None."""
    match = re.fullmatch(r"convnext(v2)?_(.+)", name)
    variant = (f"v2-{match.group(2)}" if match.group(1) else match.group(2)) if match else name
    variant = variant.replace("_", "-")
    return variant if variant in VARIANT_NAMES else None


def translate_aliases(argv: Sequence[str]) -> list[str]:
    """`argv` with every alias replaced by the flag it stands for: `--model` becomes `--variant` for a preset name (when
    no folder has that name), else `--model_name_or_path`; `--batch_size N` sets the training batch, and the
    evaluation batch unless that is given too. Each replacement is logged."""
    _refuse_two_values(argv)
    translated: list[str] = []
    eval_flags = ("--per_device_eval_batch_size", "--per-device-eval-batch-size", "-vb", "--validation-batch-size")
    eval_batch_given = any(argument.split("=", 1)[0] in eval_flags for argument in argv)
    arguments = list(argv)
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        flag, equals, value = argument.partition("=")
        if flag == MODEL_FLAG:
            if not equals:
                index += 1
                value = arguments[index] if index < len(arguments) else ""
            preset = None if os.path.isdir(value) else variant_preset(value)
            translated += ["--variant", preset] if preset else ["--model_name_or_path", value]
            if preset:
                logger.info("--model %s: the %s variant, trained from scratch (a folder or Hub id fine-tunes)",
                            value, preset)
        elif flag in BATCH_SIZE_SPELLINGS:
            if not equals:
                index += 1
                value = arguments[index] if index < len(arguments) else ""
            translated += ["--per_device_train_batch_size", value]
            if not eval_batch_given:
                translated += ["--per_device_eval_batch_size", value]
        elif flag in ALIASES:
            translated.append(ALIASES[flag] + equals + value)
            if ALIASES[flag] != flag:
                logger.info("%s read as %s", flag, ALIASES[flag])
        else:
            translated.append(argument)
        index += 1
    return translated


def _setting(spelling: str) -> str | None:
    """The flag a command-line spelling sets: an alias's flag, or the flag itself in the underscore spelling."""
    if spelling in BATCH_SIZE_SPELLINGS:
        return "--per_device_train_batch_size"
    if spelling in ALIASES:
        return ALIASES[spelling]
    return "--" + spelling[2:].replace("-", "_") if spelling.startswith("--") else None


def _refuse_two_values(arguments: Sequence[str]) -> None:
    """Refuse one setting given under two spellings with different values, aliases and `--model` included (`--model
    convnext_femto --variant atto`, `--model A --model_name_or_path B`, `-b 8 --per_device_train_batch_size 16`)."""
    given = []
    for spelling, setting, value in spelled_values(arguments, _setting):
        if setting == MODEL_FLAG:
            preset = None if os.path.isdir(value) else variant_preset(value)
            setting, value = ("--variant", preset) if preset else ("--model_name_or_path", value)
        given.append((spelling, setting, value))
    refuse_two_values(given)


def trainer_defaults() -> dict[str, object]:
    """Defaults that differ from TrainingArguments'. Small runs want an evaluation and a point on the training curve
    more often than every 500 steps; pinned memory only helps a GPU; two checkpoints are kept (the best one among
    them once --metric_for_best_model is set, which the run does by default), not one per epoch with its optimizer
    state."""
    import torch
    from transformers.integrations import is_tensorboard_available

    return {
        # Progress bars redrawn with terminal codes would fill a log file; without a terminal the Trainer prints its
        # logs as lines instead.
        "disable_tqdm": not sys.stderr.isatty(),
        "dataloader_pin_memory": torch.cuda.is_available(),
        "eval_strategy": "epoch",
        "save_strategy": "epoch",
        "save_total_limit": SAVE_TOTAL_LIMIT,
        "logging_strategy": "steps",
        "logging_steps": 0.02,
        "report_to": "tensorboard" if is_tensorboard_available() else "none",
    }


def launched_on_cpu_only() -> bool:
    """Whether a launcher (torchrun, accelerate) started several processes on a machine without an accelerator.

    accelerate makes such processes a distributed CPU run only when told `use_cpu`; without it every process trains
    its own copy of the model on its shard and evaluates its shard alone, so `use_cpu` is the default there.
    """
    import torch

    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available()


class PreParser(OneLineErrors, argparse.ArgumentParser):
    """Reads `--recipe` and `--variant` ahead of the full parser, whose defaults they set; one-line errors."""


def build_parser(argv: Sequence[str]) -> HfArgumentParser:
    """An HfArgumentParser over all the argument dataclasses, with the defaults of the `--recipe` named in `argv`."""
    from transformers import HfArgumentParser, TrainingArguments

    class TrainArgumentParser(OneLineErrors, HfArgumentParser):
        """HfArgumentParser with one-line errors and suggestions for misspelt flags."""

    pre_parser = PreParser(add_help=False)
    pre_parser.add_argument("--recipe", default=None, choices=list(RECIPES))
    pre_parser.add_argument("--variant", default=None)
    known, _ = pre_parser.parse_known_args(argv)
    parser = TrainArgumentParser((*OUR_ARGUMENTS, TrainingArguments), prog=PROG, usage=USAGE)
    parser.set_defaults(**trainer_defaults())
    if launched_on_cpu_only():
        parser.set_defaults(use_cpu=True)
    if known.recipe is not None:
        parser.set_defaults(**recipe_defaults(known.recipe, known.variant))
    return parser


@dataclass
class RunArguments:
    """All the arguments of one run, grouped as they are parsed."""

    model: ModelArguments
    data: DataArguments
    recipe: RecipeArguments
    output: OutputArguments
    training: TrainingArguments
    # Whether --task was on the command line: naming the single-label task keeps labels that look combined.
    task_given: bool = False
    # Whether --dataloader_num_workers was: without it the run takes its share of the machine's cores.
    workers_given: bool = False


def parse_args(argv: Sequence[str]) -> RunArguments:
    """Parse a `convnext-hf train` command line (aliases included); a flag no option takes exits with status 2."""
    argv = translate_aliases(argv)
    parser = build_parser(argv)
    parser.parse_args(argv)  # refuses unknown flags by name, with a suggestion
    flags = {"--" + argument.split("=", 1)[0][2:].replace("-", "_") for argument in argv if argument.startswith("--")}
    try:
        args = RunArguments(*parser.parse_args_into_dataclasses(args=argv), task_given="--task" in flags,
                            workers_given="--dataloader_num_workers" in flags)  # fmt: skip
    except ValueError as error:  # TrainingArguments' own checks of the flags it was given
        raise UserInputError(" ".join(str(error).split())) from error  # one line, as every refusal
    except ImportError as error:  # a flag whose package is not installed (--deepspeed without deepspeed)
        reason = " ".join(str(error).split()).rstrip(".")
        raise UserInputError(f"{reason}; install it, or drop the flag that needs it.") from error
    check_values(args)
    if not any(argument.split("=", 1)[0] in ("--output_dir", "--output-dir") for argument in argv):
        logger.info(
            "No --output_dir: the model goes to %s (transformers' default folder).",
            os.path.abspath(args.training.output_dir),
        )
    return args


def check_values(args: RunArguments) -> None:
    """Refuse values no run can use, before anything is read or written: a RandAugment spec the augmentation cannot
    express (numbers outside their range are refused by the parser, `cli.OneLineErrors`)."""
    from .augment import RandAugment

    if args.recipe.rand_augment is not None:
        RandAugment.from_string(args.recipe.rand_augment)
