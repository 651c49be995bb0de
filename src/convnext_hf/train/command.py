"""`convnext-hf train`: `--help` (the flags a run needs, in groups), `--help_all` (every flag, transformers' Trainer's
included) and the run itself, which is imported only when one is asked for: `--help` loads neither torch nor
transformers.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

from .arguments import (
    ALIASES,
    BATCH_SIZE_SPELLINGS,
    MODEL_FLAG,
    PROG,
    SAVE_TOTAL_LIMIT,
    USAGE,
    DataArguments,
    ModelArguments,
    OutputArguments,
    RecipeArguments,
)

HELP_ALL = "--help_all"
# The Trainer flags most runs set: (name, default as this command has it, what it does). The full list is behind
# --help_all; a test checks each name and default against the real parser, so this table cannot drift from it.
COMMON_TRAINER_FLAGS: tuple[tuple[str, Any, str], ...] = (
    ("output_dir", None, "Folder that receives the model, its card, metrics and checkpoints (default: trainer_output, "
     "transformers' default; a non-empty folder is refused unless --overwrite)."),
    ("num_train_epochs", 3.0, "Epochs to train."),
    ("max_steps", -1, "Train this many optimizer steps instead (overrides --num_train_epochs when positive)."),
    ("per_device_train_batch_size", 8, "Training images per device and step."),
    ("per_device_eval_batch_size", 8, "Evaluation images per device."),
    ("gradient_accumulation_steps", 1, "Steps whose gradients add up before each optimizer step."),
    ("learning_rate", 5e-05, "Peak learning rate (see also --base_learning_rate)."),
    ("weight_decay", 0.0, "AdamW weight decay (not on norms, biases and layer scales)."),
    ("lr_scheduler_type", "linear", "Learning-rate schedule: linear, cosine, cosine_with_min_lr, constant..."),
    ("warmup_steps", 0, "Warm-up steps (a number below 1: that fraction of the run)."),
    ("label_smoothing_factor", 0.0, "Label smoothing of the classification loss."),
    ("max_grad_norm", 1.0, "Gradient clipping norm (0 disables)."),
    ("bf16", False, "Train in bfloat16 mixed precision."),
    ("eval_strategy", "epoch", "When to evaluate on the validation images: no, steps or epoch."),
    ("save_strategy", "epoch", "When to write a checkpoint: no, steps, epoch or best."),
    ("save_total_limit", SAVE_TOTAL_LIMIT, "Checkpoints kept (the best one is always kept)."),
    ("metric_for_best_model", None, "Metric that picks the best checkpoint (default: the task's main validation "
     "metric, e.g. accuracy or mean_iou)."),
    ("logging_steps", 0.02, "Log the training loss every N steps (below 1: that fraction of the run)."),
    ("dataloader_num_workers", 0, "Processes that load and augment the images."),
    ("seed", 42, "Random seed of the run."),
    ("resume_from_checkpoint", None, "Resume from this checkpoint folder ('last': the newest in --output_dir)."),
    ("push_to_hub", False, "Upload the model folder to the Hub at the end (needs network and a token)."),
    ("hub_model_id", None, "Repository to push to (default: the --output_dir name)."),
    ("use_cpu", False, "Train on the CPU even when a GPU is present."),
)  # fmt: skip
# Argument groups of the short help: our dataclasses, shown in full.
GROUPS = (
    ("model", ModelArguments),
    ("data", DataArguments),
    ("recipe (the paper's training recipe; --recipe sets several at once)", RecipeArguments),
    ("output", OutputArguments),
)
MODEL_HELP = (
    "Which model: a saved ConvNeXt folder or Hub id to fine-tune (ours or transformers' built-in convnext; for "
    "segmentation also a converted UperNet folder), or a variant preset to train from scratch: convnext_tiny, "
    "convnextv2_atto or tiny (the same as --variant). Alias: --model_name_or_path."
)


def _metavar(field: dataclasses.Field) -> str | tuple[str, str] | None:
    kind = str(field.type)
    if "list" in kind:
        return ("MIN", "MAX")
    if "bool" in kind:
        return None
    if "int" in kind:
        return "N"
    if "float" in kind:
        return "X"
    return field.name.rsplit("_", 1)[-1].upper()


def _add_fields(group: argparse._ArgumentGroup, arguments: type) -> None:
    """Show the fields of one of our argument dataclasses as the full parser has them."""
    for field in dataclasses.fields(arguments):
        if field.name == "model_name_or_path":
            group.add_argument(MODEL_FLAG, "--model_name_or_path", metavar="NAME_OR_PATH", help=MODEL_HELP)
            continue
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        help_text = field.metadata.get("help", "")
        if default not in (None, False) and "default" not in help_text.lower():
            help_text += f" (default: {default})"
        metavar = _metavar(field)
        choices = field.metadata.get("choices")
        if metavar is None:
            group.add_argument(f"--{field.name}", action="store_true", help=help_text)
        else:
            group.add_argument(
                f"--{field.name}",
                metavar="{" + ",".join(choices) + "}" if choices else metavar,
                nargs=2 if isinstance(metavar, tuple) else None,
                help=help_text,
            )


def _alias_lines() -> list[str]:
    pairs = [
        (f"{MODEL_FLAG} PRESET", "--variant (convnext_tiny, tiny...); a folder or Hub id: --model_name_or_path"),
        (f"{'/'.join(BATCH_SIZE_SPELLINGS)} N", "--per_device_train_batch_size N (eval batch too, unless given)"),
        *ALIASES.items(),
    ]
    width = max(len(alias) for alias, _ in pairs)
    return [f"  {alias:<{width}}  {flag}" for alias, flag in pairs]


def _trainer_metavar(name: str, default: Any) -> str:
    if name.endswith("_dir"):
        return "DIR"
    return "N" if isinstance(default, int) else "X" if isinstance(default, float) else "VALUE"


def short_help_parser() -> argparse.ArgumentParser:
    """The parser `--help` prints: our flags in groups and the Trainer flags most runs need."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=USAGE,
        add_help=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train or fine-tune a ConvNeXt (classification, multi-label, UperNet segmentation) with "
        "transformers' Trainer.\nFlags are spelled with underscores; the dashed spelling works too.",
        epilog="aliases (the other commands' and timm's spellings):\n" + "\n".join(_alias_lines()) + "\n\n"
        f"{HELP_ALL} lists every flag, each of transformers' TrainingArguments included "
        "(--fsdp, --deepspeed, --torch_compile, --gradient_checkpointing, --hub_strategy...).",
    )
    parser.add_argument("-h", "--help", action="store_true", help="Show this help.")
    parser.add_argument(HELP_ALL, action="store_true", help="Show every flag, the Trainer's included.")
    for title, arguments in GROUPS:
        _add_fields(parser.add_argument_group(title), arguments)
    trainer = parser.add_argument_group("common training (transformers' Trainer; more with --help_all)")
    for name, default, help_text in COMMON_TRAINER_FLAGS:
        if isinstance(default, bool):
            trainer.add_argument(f"--{name}", action="store_true", help=help_text)
        else:
            shown = "" if default is None or "default" in help_text else f" (default: {default})"
            trainer.add_argument(f"--{name}", metavar=_trainer_metavar(name, default), help=help_text + shown)
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, float] | int:
    """`convnext-hf train`: print a help, or run (see `convnext_hf.train.run`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if HELP_ALL in argv or HELP_ALL.replace("_", "-") in argv:
        from .arguments import build_parser, translate_aliases

        build_parser(translate_aliases(argv)).print_help()
        return 0
    if "-h" in argv or "--help" in argv:
        short_help_parser().print_help()
        return 0
    from .run import main as run_main

    return run_main(argv)
