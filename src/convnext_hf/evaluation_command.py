"""`convnext-hf evaluate`'s command line. Light to import, so that `--help` loads neither torch nor transformers; the
scoring is `evaluation.evaluate_folder`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from .cli import CommandParser, printable
from .errors import UserInputError


def build_parser() -> CommandParser:
    """The command line of `convnext-hf evaluate`."""
    parser = CommandParser(
        prog="convnext-hf evaluate",
        description="Score a saved or converted folder on labelled images, with its own processor: top-1/top-5, "
        "per-class accuracy and speed; mAP and F1 for multi-label models; mean IoU for segmentation; the COCO box "
        "table for detectors.",
    )
    parser.add_argument("--model", "--model_name_or_path", required=True, help="Saved or converted folder, or Hub id.")
    parser.add_argument("--validation_dir", help="Image folder: one subfolder per class (e.g. ImageNet's val/).")
    parser.add_argument("--validation_mask_dir", help="Segmentation: PNG masks of class ids with the images' stems.")
    parser.add_argument(
        "--validation_annotations", help="Detectors: the COCO annotation file of --validation_dir's images."
    )
    parser.add_argument(
        "--threshold",
        type=float,
        help="Detectors: score threshold of the detections shown in predictions.csv and predictions.png (default: "
        "pipeline('object-detection')'s, 0.5). The metrics take every detection, up to 100 per image, as COCO's "
        "protocol does.",
    )
    parser.add_argument("--validation_file", help="CSV or JSON (lines) file of image paths and labels.")
    parser.add_argument("--dataset_name", help="A Hub dataset (its validation split; needs network).")
    parser.add_argument("--dataset_config_name")
    parser.add_argument("--image_column_name")
    parser.add_argument("--label_column_name")
    parser.add_argument("--mask_column_name", help="Segmentation: the --validation_file column of mask paths.")
    parser.add_argument(
        "--output_dir", "--output", required=True, help="Folder for metrics.json, predictions.csv and plots."
    )
    parser.add_argument("--overwrite", action="store_true", help="Replace a non-empty --output_dir.")
    parser.add_argument("--batch_size", "-b", type=int, default=64, help="Images per forward pass (default 64).")
    parser.add_argument("--max_eval_samples", type=int, help="Score at most this many images.")
    parser.add_argument("--on_bad_image", choices=("error", "skip"), default="error")
    parser.add_argument("--device", help="cpu, cuda, cuda:1... (default: cuda when available, else cpu).")
    parser.add_argument("--cache_dir")
    return parser


def check_device(name: str) -> str:
    """`--device` as given, refused unless it names a device this machine has."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise UserInputError(f"--device {name} is not a device name ({error}); pass cpu, cuda or cuda:N.") from error
    accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    count = torch.accelerator.device_count() if accelerator is not None else 0
    on_accelerator = accelerator is not None and device.type == accelerator.type and (device.index or 0) < count
    if device.type == "cpu" or on_accelerator:
        return name
    have = f"cpu and {accelerator.type}:0 to {accelerator.type}:{count - 1}" if accelerator is not None else "cpu only"
    raise UserInputError(f"--device {name} is not available on this machine (it has {have}); pass one of those.")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse, score, write and print."""
    args = build_parser().parse_args(argv)
    sources = [args.validation_dir, args.validation_file, args.dataset_name]
    if sum(source is not None for source in sources) != 1:
        raise UserInputError("Name exactly one of --validation_dir, --validation_file or --dataset_name.")
    import torch

    from .atomic import check_apart, check_output_dir
    from .evaluation import evaluate_folder, print_table
    from .train.report import METRICS_NAME

    args.device = check_device(args.device) if args.device else ("cuda" if torch.cuda.is_available() else "cpu")
    check_output_dir(args.output_dir, args.overwrite)
    check_apart(args.output_dir, {"--model": args.model, "--validation_dir": args.validation_dir,
                                  "--validation_mask_dir": args.validation_mask_dir,
                                  "--validation_annotations": args.validation_annotations,
                                  "--validation_file": args.validation_file})  # fmt: skip
    report = evaluate_folder(args)
    print_table(report)
    print(f"Written: {printable(os.path.join(args.output_dir, METRICS_NAME))}")
    return report
