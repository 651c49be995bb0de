"""`convnext-hf evaluate`: score a saved or converted model folder on the user's data, with its own processor.

The folder's task (`convnext_hf.tasks`, from its architecture and problem type) brings the scorer: a classifier gets
top-1 (and top-5 with more than five classes), per-class accuracy and the confusion matrix
(`OUT/confusion_matrix.png`), a multi-label classifier mAP, F1@0.5 and per-label AP, a semantic-segmentation folder
mean IoU, per-class IoU and pixel accuracy on image/mask pairs (`OUT/prediction_overlay.png`), an object detector
(with `--validation_annotations`, COCO format) the COCO box table and per-class AP of the detections
`pipeline("object-detection")` makes, under COCO's protocol (`OUT/predictions.png`). Every scorer writes
`OUT/metrics.json` (scores and throughput) and its predictions (`OUT/predictions.csv`, one row per image, for a
detector one row per detection shown; a detector's scored detections also in `OUT/predictions.json`), and a short
table is printed.
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import transformers

from .atomic import atomic_directory
from .errors import UserInputError
from .images import read_image
from .model_folder import check_model_folder, load_config, load_image_processor, load_model_folder
from .tasks import (
    IMAGE_CLASSIFICATION,
    MULTI_LABEL_CLASSIFICATION,
    OBJECT_DETECTION,
    SEMANTIC_SEGMENTATION,
    TASKS,
    task_of_config,
)
from .train.report import CONFUSION_MATRIX_NAME, METRICS_NAME, plot_confusion_matrix, write_json

logger = logging.getLogger(__name__)

PREDICTIONS_NAME = "predictions.csv"
# Flags that only one task's data has, refused by name for the others.
TASK_FLAGS = {
    "validation_mask_dir": SEMANTIC_SEGMENTATION,
    "mask_column_name": SEMANTIC_SEGMENTATION,
    "validation_annotations": OBJECT_DETECTION,
    "threshold": OBJECT_DETECTION,
}


def load_model(args: argparse.Namespace, auto_class: type) -> tuple[transformers.PreTrainedModel, Any]:
    """The folder's model, through `auto_class`, on the device and in eval mode, and its image processor; refused
    when its weights have no classifier (one would be made up at random) or do not fit its config."""

    def refuse_headless(missing: list[str]) -> None:
        if "classifier.weight" in missing and all(key.startswith("classifier.") for key in missing):
            raise _not_a_classifier(args.model, f"its weights have no classification head ({', '.join(missing)})")

    model = load_model_folder(
        auto_class, args.model, missing_check=refuse_headless, needs_processor=True, cache_dir=args.cache_dir
    )
    model = model.to(args.device).eval()
    return model, load_image_processor(args.model, cache_dir=args.cache_dir)


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
        inputs = processor([read_image(image) for image in batch], return_tensors="pt").to(model.device)
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
    check_model_folder(args.model)
    config = load_config(args.model, cache_dir=args.cache_dir)
    task = task_of_config(config)
    scorers = [name for name, record in TASKS.items() if record.module and hasattr(record.hooks, "evaluate")]
    if task is None and not config.architectures and config.model_type != "upernet":
        # A config.json that names no architecture: the weights tell whether there is a classifier (load_model).
        multi_label = config.problem_type == TASKS[MULTI_LABEL_CLASSIFICATION].problem_type
        task = TASKS[MULTI_LABEL_CLASSIFICATION if multi_label else IMAGE_CLASSIFICATION]
    if task is None or task.name not in scorers:
        named = (config.architectures or [config.model_type])[0]
        kind = f"{named} ({task.name})" if task is not None else named
        raise _not_a_classifier(args.model, f"its config.json names {kind}", scorers)
    foreign = [f"--{flag}" for flag, owner in TASK_FLAGS.items() if owner != task.name and getattr(args, flag)]
    if foreign:
        raise UserInputError(
            f"{', '.join(foreign)}: flags of {TASK_FLAGS[foreign[0][2:]]} data, but {args.model} is a {task.name} "
            "folder; drop them."
        )
    return task.hooks.evaluate(args, config)


def _not_a_classifier(model: str, evidence: str, scorers: Sequence[str] = ()) -> UserInputError:
    scored = f" ({', '.join(scorers)})" if scorers else ""
    return UserInputError(
        f"{model} is not an image classifier: {evidence}, so it has no classes to score. `convnext-hf evaluate` "
        f"scores folders with a head{scored}; fine-tune this one first: convnext-hf train --model {model} "
        "--train_dir DIR ..."
    )


def write_outputs(
    args: argparse.Namespace,
    report: dict[str, Any],
    header: list[str],
    rows: list[tuple],
    counts: np.ndarray | None,
    names: list[str],
    plots: Callable[[Path], None] | None = None,
) -> None:
    """Write the output folder in one move: metrics.json, predictions.csv, (with counts) the confusion matrix and
    what `plots` draws into the folder."""
    with atomic_directory(args.output_dir, overwrite=args.overwrite) as staging:
        if counts is not None:
            report["confusion_matrix"] = {"classes": names, "counts": counts.tolist()}
            plot_confusion_matrix(counts, names, str(staging / CONFUSION_MATRIX_NAME))
        if plots is not None:
            plots(staging)
        write_json(str(staging / METRICS_NAME), report)
        with open(staging / PREDICTIONS_NAME, "w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(header)
            writer.writerows(rows)


def print_table(report: dict[str, Any]) -> None:
    """A few lines on the scores and the speed."""
    keys = ("top1_accuracy", "top5_accuracy", "mAP", "f1_micro", "f1_macro", "mean_iou", "pixel_accuracy", "map",
            "map_50", "map_75", "mar_100")
    scores = [key for key in keys if key in report]
    lines = [f"{'images':<22} {report['num_images']}"]
    if "label_matching" in report:
        lines.append(f"{'labels matched':<22} {report['label_matching']}")
    # COCO's -1: nothing of that kind in the data to measure.
    lines += [f"{key:<22} {'n/a' if report[key] == -1 else f'{report[key]:.2%}'}" for key in scores]
    lines += [
        f"{'throughput':<22} {report['throughput_images_per_second']:.1f} images/s end to end, "
        f"{report['model_images_per_second']:.1f} in the model ({report['device']}, batch {report['batch_size']})"
    ]
    print("\n".join(lines))
