"""`convnext-hf evaluate`: score a saved or converted model folder on the user's data, with its own processor.

The folder's task (`convnext_hf.tasks`, from its architecture and problem type) brings the scorer: a classifier gets
top-1/top-5, per-class accuracy and the confusion matrix (`OUT/confusion_matrix.png`), a multi-label classifier mAP,
F1@0.5 and per-label AP, an object detector (with `--validation_annotations`, COCO format) the COCO box table and
per-class AP of the detections `pipeline("object-detection")` makes. Every scorer writes `OUT/metrics.json` (scores
and throughput) and its predictions (`OUT/predictions.csv`, one row per image; a detector's `predictions.json`), and a
short table is printed.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import transformers
from transformers.image_utils import load_image

from .atomic import atomic_directory
from .cli import CommandParser
from .errors import UserInputError
from .tasks import TASKS, task_of_config
from .train.report import CONFUSION_MATRIX_NAME, METRICS_NAME, plot_confusion_matrix, write_json

logger = logging.getLogger(__name__)

PREDICTIONS_NAME = "predictions.csv"


def load_model(args: argparse.Namespace, auto_class: type) -> tuple[transformers.PreTrainedModel, Any]:
    """The folder's model, through `auto_class`, on the device and in eval mode, and its image processor."""
    model = auto_class.from_pretrained(args.model, cache_dir=args.cache_dir).to(args.device).eval()
    return model, transformers.AutoImageProcessor.from_pretrained(args.model, cache_dir=args.cache_dir)


def predict(
    args: argparse.Namespace, model: transformers.PreTrainedModel, processor: Any, images: datasets.Dataset
) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """Logits of every image in batches, their paths, and the report's common entries (data, counts, speed)."""
    files = images.cast_column("image", datasets.Image(decode=False))["image"]
    paths = [file.get("path") or f"<row {row}>" for row, file in enumerate(files)]
    logits, model_seconds = [], 0.0
    started = time.perf_counter()
    for start in range(0, len(images), args.batch_size):
        batch = images[start : start + args.batch_size]["image"]
        inputs = processor([load_image(image) for image in batch], return_tensors="pt").to(model.device)
        model_started = time.perf_counter()
        with torch.inference_mode():
            logits.append(model(**inputs).logits.float().cpu().numpy())
        model_seconds += time.perf_counter() - model_started
    seconds = time.perf_counter() - started
    report = {
        "model": args.model,
        "data": args.validation_dir or args.validation_file or args.dataset_name,
        "num_images": len(paths),
        "throughput_images_per_second": len(paths) / seconds,
        "model_images_per_second": len(paths) / model_seconds,
        "device": str(model.device),
        "batch_size": args.batch_size,
    }
    return np.concatenate(logits), paths, report


def evaluate_folder(args: argparse.Namespace) -> dict[str, Any]:
    """Score the model folder on the data with its task's scorer; the scorer writes the output folder."""
    config = transformers.AutoConfig.from_pretrained(args.model, cache_dir=args.cache_dir)
    task = task_of_config(config)
    scorers = [name for name, record in TASKS.items() if record.module and hasattr(record.hooks, "evaluate")]
    if task is None or task.name not in scorers:
        kind = f"{task.name} ({config.model_type})" if task is not None else config.model_type
        raise UserInputError(f"`convnext-hf evaluate` scores {', '.join(scorers)} folders; {args.model} is {kind}.")
    return task.hooks.evaluate(args, config)


def write_outputs(
    args: argparse.Namespace,
    report: dict[str, Any],
    header: list[str],
    rows: list[tuple],
    counts: np.ndarray | None,
    names: list[str],
) -> None:
    """Write the output folder in one move: metrics.json, predictions.csv and (with counts) the confusion matrix."""
    with atomic_directory(args.output_dir, overwrite=args.overwrite) as staging:
        if counts is not None:
            report["confusion_matrix"] = {"classes": names, "counts": counts.tolist()}
            plot_confusion_matrix(counts, names, str(staging / CONFUSION_MATRIX_NAME))
        write_json(str(staging / METRICS_NAME), report)
        with open(staging / PREDICTIONS_NAME, "w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(header)
            writer.writerows(rows)


def print_table(report: dict[str, Any]) -> None:
    """A few lines on the scores and the speed."""
    scores = [key for key in ("top1_accuracy", "top5_accuracy", "top2_accuracy", "top3_accuracy", "top4_accuracy",
                              "mAP", "f1_micro", "f1_macro", "map", "map_50", "map_75", "mar_100")
              if key in report]  # fmt: skip
    lines = [f"{'images':<22} {report['num_images']}"]
    if "label_matching" in report:
        lines.append(f"{'labels matched':<22} {report['label_matching']}")
    lines += [f"{key:<22} {report[key]:.2%}" for key in scores]
    lines += [
        f"{'throughput':<22} {report['throughput_images_per_second']:.1f} images/s end to end, "
        f"{report['model_images_per_second']:.1f} in the model ({report['device']}, batch {report['batch_size']})"
    ]
    print("\n".join(lines))


def build_parser() -> CommandParser:
    """The command line of `convnext-hf evaluate`."""
    parser = CommandParser(prog="convnext-hf evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", "--model_name_or_path", required=True, help="Saved or converted folder, or Hub id.")
    parser.add_argument("--validation_dir", help="Image folder: one subfolder per class (e.g. ImageNet's val/).")
    parser.add_argument("--validation_file", help="CSV or JSON (lines) file of image paths and labels.")
    parser.add_argument(
        "--validation_annotations", help="Detectors: the COCO annotation file of --validation_dir's images."
    )
    parser.add_argument(
        "--threshold",
        type=float,
        help="Detectors: score threshold of the detections (default: pipeline('object-detection')'s, 0.5).",
    )
    parser.add_argument("--dataset_name", help="A Hub dataset (its validation split; needs network).")
    parser.add_argument("--dataset_config_name")
    parser.add_argument("--image_column_name")
    parser.add_argument("--label_column_name")
    parser.add_argument("--output_dir", required=True, help="Folder for metrics.json, predictions.csv and plots.")
    parser.add_argument("--overwrite", action="store_true", help="Replace a non-empty --output_dir.")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--max_eval_samples", type=int, help="Score at most this many images.")
    parser.add_argument("--on_bad_image", choices=("error", "skip"), default="error")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cache_dir")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse, score, write and print."""
    args = build_parser().parse_args(argv)
    sources = [args.validation_dir, args.validation_file, args.dataset_name]
    if sum(source is not None for source in sources) != 1:
        raise UserInputError("Name exactly one of --validation_dir, --validation_file or --dataset_name.")
    if args.batch_size < 1:
        raise UserInputError(f"--batch_size must be a positive number of images, got {args.batch_size}.")
    Path(args.output_dir).parent.mkdir(parents=True, exist_ok=True)
    report = evaluate_folder(args)
    print_table(report)
    print(f"Written: {os.path.join(args.output_dir, METRICS_NAME)}")
    return report
