"""`convnext-hf evaluate`: score a saved or converted classifier folder on labelled images, with its own processor.

Images are read and converted as `pipeline("image-classification")` reads them (`load_image`: EXIF orientation,
RGB), go through the folder's image processor in batches, and the top-1 class of each is the pipeline's. The result
is `OUT/metrics.json` (top-1/top-5, per-class accuracy, throughput), `OUT/predictions.csv` (one row per image) and
`OUT/confusion_matrix.png`, and a short printed table. Multi-label models get mAP, F1@0.5 and per-label AP instead.

A detector folder (`--validation_dir IMAGES --validation_annotations F.json`, COCO format) gets the COCO box table
instead, from the detections `pipeline("object-detection")` makes (see `convnext_hf.tasks.detection.evaluate`).

Folder class names are matched to the model's labels by name; when they are not its label names but there are as
many folders as classes (ImageNet's `val/n01440764/...` against a model that names its classes in words), folder i
in sorted order is class i, the convention that every ImageNet evaluation script follows.
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
from .metrics.multilabel import average_precision, multilabel_scores, sigmoid
from .tasks.detection import evaluate as detection
from .train.arguments import MULTI_LABEL, DataArguments
from .train.data import load_image_data
from .train.model import MULTI_LABEL_PROBLEM
from .train.report import CONFUSION_MATRIX_NAME, METRICS_NAME, confusion_matrix, plot_confusion_matrix, write_json

logger = logging.getLogger(__name__)

PREDICTIONS_NAME = "predictions.csv"
BY_NAME = "by name"
BY_POSITION = "by sorted position (folder i is class i)"


def _label_ids(data_names: list[str], config: transformers.PretrainedConfig) -> tuple[list[int], str]:
    """The model's class id of each data class name, and how they were matched."""
    label2id = {str(name): index for index, name in config.id2label.items()}
    if all(name in label2id for name in data_names):
        return [label2id[name] for name in data_names], BY_NAME
    if len(data_names) == config.num_labels:
        return list(range(config.num_labels)), BY_POSITION
    unknown = [name for name in data_names if name not in label2id]
    raise UserInputError(
        f"The data's classes {unknown[:5]}{'…' if len(unknown) > 5 else ''} are not among the model's "
        f"{config.num_labels} labels (e.g. {list(label2id)[:3]}), and there are {len(data_names)} classes, not "
        f"{config.num_labels}, so they cannot be matched by position either. Name the class folders as the model's "
        "labels, or keep one folder per model class."
    )


def _load(args: argparse.Namespace, multi_label: bool) -> Any:
    data_args = DataArguments(
        train_dir=args.validation_dir,
        train_file=args.validation_file,
        dataset_name=args.dataset_name,
        dataset_config_name=args.dataset_config_name,
        image_column_name=args.image_column_name,
        label_column_name=args.label_column_name,
        train_val_split=0.0,
        max_eval_samples=args.max_eval_samples,
        on_bad_image=args.on_bad_image,
    )
    data = load_image_data(data_args, seed=0, cache_dir=args.cache_dir, task=MULTI_LABEL if multi_label else None)
    # A Hub dataset's validation split is the one to score; a folder or file is loaded as the only split.
    images = data.validation if data.validation is not None else data.train
    if data.validation is None and args.max_eval_samples is not None:
        images = images.select(range(min(args.max_eval_samples, len(images))))
    return images, data.label_names


def _predict(
    model: transformers.PreTrainedModel, processor: Any, images: Any, batch_size: int
) -> tuple[np.ndarray, list[str], float, float]:
    """Logits of every image, their paths, total seconds and seconds inside the model."""
    files = images.cast_column("image", datasets.Image(decode=False))["image"]
    paths = [file.get("path") or f"<row {row}>" for row, file in enumerate(files)]
    logits, model_seconds = [], 0.0
    started = time.perf_counter()
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]["image"]
        inputs = processor([load_image(image) for image in batch], return_tensors="pt").to(model.device)
        model_started = time.perf_counter()
        with torch.inference_mode():
            logits.append(model(**inputs).logits.float().cpu().numpy())
        model_seconds += time.perf_counter() - model_started
    return np.concatenate(logits), paths, time.perf_counter() - started, model_seconds


def evaluate_folder(args: argparse.Namespace) -> dict[str, Any]:
    """Score the model folder on the data; write metrics.json, predictions.csv and the confusion matrix."""
    config = transformers.AutoConfig.from_pretrained(args.model, cache_dir=args.cache_dir)
    if detection.is_detector(config):
        return detection.evaluate_detector(args, config)
    if args.validation_annotations is not None:
        raise UserInputError(
            f"--validation_annotations is for detectors; {args.model} is a {config.model_type} model."
        )
    if config.model_type == "upernet" or not getattr(config, "id2label", None):
        raise UserInputError(
            f"{args.model} is not an image classifier ({config.model_type}); `convnext-hf evaluate` scores "
            "classification folders."
        )
    model = transformers.AutoModelForImageClassification.from_pretrained(args.model, cache_dir=args.cache_dir)
    model = model.to(args.device).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(args.model, cache_dir=args.cache_dir)
    multi_label = config.problem_type == MULTI_LABEL_PROBLEM
    images, data_names = _load(args, multi_label)
    ids, matching = _label_ids(data_names, config)
    logits, paths, seconds, model_seconds = _predict(model, processor, images, args.batch_size)
    model_names = [str(config.id2label[index]) for index in range(config.num_labels)]
    report: dict[str, Any] = {
        "model": args.model,
        "data": args.validation_dir or args.validation_file or args.dataset_name,
        "num_images": len(paths),
        "label_matching": matching,
        "throughput_images_per_second": len(paths) / seconds,
        "model_images_per_second": len(paths) / model_seconds,
        "device": str(model.device),
        "batch_size": args.batch_size,
    }
    if multi_label:
        targets = np.zeros_like(logits)
        targets[:, ids] = np.asarray(images["label"])
        probabilities = sigmoid(logits)
        report.update(multilabel_scores(probabilities, targets))
        report["per_label_ap"] = dict(zip(model_names, average_precision(probabilities, targets).tolist(), strict=True))
        rows = [
            (path, " ".join(n for n, t in zip(model_names, target, strict=True) if t), " ".join(
                n for n, p in zip(model_names, probability, strict=True) if p >= 0.5))
            for path, target, probability in zip(paths, targets, probabilities, strict=True)
        ]  # fmt: skip
        _write(args, report, ["image", "labels", "predicted"], rows, None, [])
        return report
    references = np.asarray(ids)[np.asarray(images["label"])]
    predicted = logits.argmax(axis=1)
    k = min(5, config.num_labels)
    ranked = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    counts = confusion_matrix(predicted, references, config.num_labels)
    present = sorted(set(references.tolist()))
    report.update(
        {
            "top1_accuracy": float(np.mean(predicted == references)),
            f"top{k}_accuracy": float(np.mean((ranked == references[:, None]).any(axis=1))),
            "per_class_accuracy": {
                model_names[index]: float(counts[index, index] / counts[index].sum()) for index in present
            },
        }
    )
    probabilities = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    rows = [
        (path, model_names[reference], model_names[guess], f"{probabilities[row, guess]:.6f}")
        for row, (path, reference, guess) in enumerate(zip(paths, references, predicted, strict=True))
    ]
    _write(args, report, ["image", "label", "predicted", "score"], rows, counts[np.ix_(present, present)],
           [model_names[index] for index in present])  # fmt: skip
    return report


def _write(
    args: argparse.Namespace,
    report: dict[str, Any],
    header: list[str],
    rows: list[tuple],
    counts: np.ndarray | None,
    names: list[str],
) -> None:
    """Write the output folder in one move: metrics.json, predictions.csv and (classifiers) the confusion matrix."""
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
                              "mAP", "f1_micro", "f1_macro") if key in report]  # fmt: skip
    lines = [f"{'images':<22} {report['num_images']}", f"{'labels matched':<22} {report['label_matching']}"]
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
        "--validation_annotations", help="Detectors: COCO annotation file of --validation_dir's images."
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=detection.PIPELINE_THRESHOLD,
        help=f"Detectors: score threshold of the detections (default {detection.PIPELINE_THRESHOLD}, the pipeline's).",
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
    (detection.print_table if "map" in report else print_table)(report)
    print(f"Written: {os.path.join(args.output_dir, METRICS_NAME)}")
    return report
