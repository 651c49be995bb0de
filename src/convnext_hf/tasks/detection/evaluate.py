"""`convnext-hf evaluate` on a detector folder: the COCO table of its pipeline detections on the user's boxes.

The images and boxes come from `--validation_dir IMAGES --validation_annotations F.json` (COCO format) or a Hub
dataset in the `objects` layout; categories are matched to the model's labels by name. Detections are made as
`pipeline("object-detection")` makes them (the folder's processor, post-processing at each image's size, boxes
truncated to pixels) and scored under COCO's protocol (`metrics.py`: every score, 100 per image, crowd boxes
ignored), so the numbers are those of pycocotools run on `predictions.json` and the annotation file. Writes
`metrics.json` (the COCO summary, per-class AP), `predictions.json` (the scored detections in COCO's results format,
with the annotation file's category ids), and, at `--threshold` (the pipeline's 0.5 unless told), the detections a
user of the folder sees: `predictions.csv` (one row per detection) and `predictions.png`.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from typing import Any

import datasets
import transformers

from ...atomic import atomic_directory
from ...errors import UserInputError
from ...evaluation import PREDICTIONS_NAME as CSV_NAME
from ...evaluation import load_model
from ...images import read_image
from ...train.arguments import scored_data_arguments
from ...train.report import METRICS_NAME, write_json
from .data import coco_category_ids, coco_ground_truth, load_detection_data
from .metrics import PROTOCOL, SUMMARY_KEYS, not_measured
from .report import PREDICTIONS_NAME, draw_detections, save_prediction_grid, shown_caption
from .scoring import PIPELINE_THRESHOLD, above, score_dataset

DETECTIONS_NAME = "predictions.json"


def _label_ids(data_names: list[str], config: transformers.PretrainedConfig) -> list[int]:
    """The data's category index of each model label, refused unless every data category is a model label."""
    model_names = [str(config.id2label[index]) for index in range(config.num_labels)]
    unknown = [name for name in data_names if name not in model_names]
    if unknown:
        raise UserInputError(
            f"The data's categories {unknown} are not among the detector's labels {model_names}; name the "
            "categories as the model does."
        )
    # Model labels the data does not have are scored as a category without objects (their detections are false).
    return [data_names.index(name) if name in data_names else len(data_names) + index
            for index, name in enumerate(model_names)]  # fmt: skip


def evaluate(args: argparse.Namespace, config: transformers.PretrainedConfig) -> dict[str, Any]:
    """Score the detector folder on the data; write metrics.json, predictions.json, predictions.csv and
    predictions.png."""
    if args.validation_file is not None or (args.validation_dir is not None and args.validation_annotations is None):
        raise UserInputError(
            "A detector is scored on --validation_dir IMAGES --validation_annotations F.json (the COCO annotation "
            "file of the images), or on --dataset_name in the `objects` layout."
        )
    data_args = scored_data_arguments(args, train_annotations=args.validation_annotations)
    data = load_detection_data(data_args, seed=0, cache_dir=args.cache_dir)
    images = data.validation if data.validation is not None else data.train
    if args.max_eval_samples is not None:
        images = images.select(range(min(args.max_eval_samples, len(images))))
    model, processor = load_model(args, transformers.AutoModelForObjectDetection)
    label_ids = _label_ids(data.label_names, config)
    ground_truth = coco_ground_truth(images, data.label_names)
    extra = [name for name in config.id2label.values() if name not in data.label_names]
    ground_truth["categories"] += [{"id": label_ids[config.label2id[name]], "name": name} for name in extra]
    threshold = PIPELINE_THRESHOLD if args.threshold is None else args.threshold
    started = time.perf_counter()
    scores, detections, results = score_dataset(
        model, processor, images, ground_truth, label_ids, batch_size=args.batch_size
    )
    seconds = time.perf_counter() - started
    report = {
        "model": args.model,
        "data": args.validation_dir or args.dataset_name,
        "num_images": len(images),
        "num_boxes": len(ground_truth["annotations"]),
        "num_crowd_boxes": sum(annotation["iscrowd"] for annotation in ground_truth["annotations"]),
        "label_matching": "by name",
        "protocol": PROTOCOL,
        **{key: scores[key] for key in SUMMARY_KEYS},
        "per_class_ap": scores["per_class_ap"],
        "not_measured": not_measured(scores),
        # Not a setting of the metrics: what predictions.csv and predictions.png show.
        "shown_score_threshold": threshold,
        "throughput_images_per_second": len(images) / seconds,
        # Reading, processing and post-processing included: the pipeline's work per image.
        "model_images_per_second": len(images) / seconds,
        "device": str(model.device),
        "batch_size": args.batch_size,
    }
    names = [str(config.id2label[index]) for index in range(config.num_labels)]
    shown = [above(result, threshold) for result in results]
    file_ids = (coco_category_ids(args.validation_annotations, args.validation_dir) if args.validation_annotations
                else None)
    with atomic_directory(args.output_dir, overwrite=args.overwrite) as staging:
        write_json(str(staging / METRICS_NAME), report)
        written = json.dumps(_results_file(detections, len(data.label_names), file_ids))
        (staging / DETECTIONS_NAME).write_text(written + "\n", encoding="utf-8")
        _write_csv(str(staging / CSV_NAME), images, shown, names)
        _picture(images, shown, names, str(staging / PREDICTIONS_NAME), shown_caption(threshold))
    return report


def _results_file(detections: list[dict], num_categories: int, file_ids: list[int] | None) -> list[dict]:
    """The scored detections in COCO's results format for the annotation file: its category ids (the data's
    category index where there is no file); labels the data does not have are left out, as COCO scores no category
    the annotations do not define."""
    ids = file_ids if file_ids is not None else list(range(num_categories))
    return [{**found, "category_id": ids[found["category_id"]]} for found in detections
            if found["category_id"] < num_categories]  # fmt: skip


def _write_csv(path: str, images: datasets.Dataset, shown: list[dict], names: list[str]) -> None:
    """predictions.csv: one row per detection the pipeline shows (image, label, score, box corners)."""
    files = images.cast_column("image", datasets.Image(decode=False))["image"]
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["image", "image_id", "label", "score", "xmin", "ymin", "xmax", "ymax"])
        for image, image_id, result in zip(files, images["image_id"], shown, strict=True):
            for score, label, box in zip(result["scores"], result["labels"], result["boxes"], strict=True):
                writer.writerow([image.get("path") or "", image_id, names[label], f"{score:.6f}", *box])


def _picture(images: datasets.Dataset, shown: list[dict], names: list[str], path: str, caption: str,
             count: int = 8) -> None:  # fmt: skip
    """predictions.png of the first images: true boxes white, the detections the pipeline shows coloured by class."""
    rows = images.select(range(min(count, len(images))))
    pictures = [
        draw_detections(read_image(row["image"]), row["objects"]["bbox"], result, names, row["objects"]["iscrowd"])
        for row, result in zip(rows, shown, strict=False)
    ]
    save_prediction_grid(pictures, path, caption)
