"""`convnext-hf check`: the full check of a new classification dataset, once, on every core.

A training run reads its images in the loader and finds an unreadable one only when it gets there; this pass decodes
every image up front (in parallel), lists the unreadable ones and runs the checks a training run makes before it
starts (classes, labels, repeated images and copies between the splits). The exact-copy search it makes is remembered
for this listing of the files, so the training runs that follow on the same files read none of them for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .cli import CommandParser
from .cores import available_cores

# Exit status when the check finds unreadable images (2 is a refused command line or data).
FOUND_UNREADABLE = 1


def build_parser() -> CommandParser:
    """The command line of `convnext-hf check`."""
    parser = CommandParser(
        prog="convnext-hf check",
        description="Decode every image of a classification dataset on every core, list the unreadable ones, and "
        "run the checks a training run makes before it starts (classes, labels, repeated images, copies between "
        "the splits). Exit status 1 when some image is unreadable.",
    )
    parser.add_argument("--train_dir", help="Image folder: one subfolder per class.")
    parser.add_argument("--validation_dir", help="Validation image folder, same classes.")
    parser.add_argument("--train_file", help="CSV or JSON (lines) file of image paths and labels.")
    parser.add_argument("--validation_file", help="Validation CSV or JSON file.")
    parser.add_argument("--dataset_name", help="A Hub dataset (needs network).")
    parser.add_argument("--dataset_config_name")
    parser.add_argument("--image_column_name")
    parser.add_argument("--label_column_name")
    parser.add_argument("--task", help="image-classification or multi-label-classification (default: from the data).")
    parser.add_argument("--num_proc", type=int, default=None, help="Processes that decode (default: every core).")
    parser.add_argument("--cache_dir", help="Where datasets and the exact-copy search are cached.")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | int:
    """Parse, check, print what was found; exit status 1 when some image cannot be read."""
    args = build_parser().parse_args(argv)
    from .errors import UserInputError

    num_proc = args.num_proc if args.num_proc is not None else available_cores()
    if num_proc < 1:
        raise UserInputError(f"--num_proc {num_proc} is out of range: it takes a number of processes >= 1.")
    from .tasks.classification.data import load_image_data
    from .train.arguments import DataArguments
    from .train.data import find_bad_images

    data_args = DataArguments(
        train_dir=args.train_dir, validation_dir=args.validation_dir, train_file=args.train_file,
        validation_file=args.validation_file, dataset_name=args.dataset_name,
        dataset_config_name=args.dataset_config_name, image_column_name=args.image_column_name,
        label_column_name=args.label_column_name, train_val_split=0.0,
    )  # fmt: skip
    data = load_image_data(data_args, seed=0, cache_dir=args.cache_dir, task=args.task, single_label_given=True)
    splits = {"training": data.train, **({"validation": data.validation} if data.validation is not None else {})}
    report: dict[str, Any] = {"images": {}, "unreadable": {}, "notes": data.notes, "classes": len(data.label_names)}
    for split, dataset in splits.items():
        # Processes cost more to start than a few hundred images take to decode.
        bad = find_bad_images(dataset, num_proc=num_proc if len(dataset) >= 100 * num_proc else None)
        report["images"][split] = len(dataset)
        report["unreadable"][split] = [f"{path} ({reason})" for _, path, reason in bad]
    for split, count in report["images"].items():
        unreadable = report["unreadable"][split]
        print(f"{split}: {count} image(s), {len(unreadable)} unreadable")
        for line in unreadable:
            print(f"  {line}")
    for note in data.notes:
        print(f"note: {note}")
    print(f"{report['classes']} classes; {num_proc} process(es) decoded.")
    return FOUND_UNREADABLE if any(report["unreadable"].values()) else report
