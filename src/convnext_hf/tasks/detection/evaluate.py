"""`convnext-hf evaluate` on a detector folder: the COCO table of its pipeline detections on the user's boxes.

The images and boxes come from `--validation_dir IMAGES --validation_annotations F.json` (COCO format) or a Hub
dataset in the `objects` layout; categories are matched to the model's labels by name. Detections are made as
`pipeline("object-detection")` makes them (the folder's processor, post-processing at each image's size, the score
threshold, boxes truncated to pixels), so the numbers are the pipeline's. Writes `metrics.json` (the COCO summary,
per-class AP), `predictions.json` (COCO results format) and `predictions.png`. Predictions.csv is not written: a
detection is not one row per image.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import transformers

from ...atomic import atomic_directory
from ...errors import UserInputError
from ...model_folder import load_image_processor
from ...train.arguments import scored_data_arguments
from ...train.report import METRICS_NAME, write_json
from .data import coco_ground_truth, load_detection_data
from .metrics import SUMMARY_KEYS
from .report import PREDICTIONS_NAME, draw_detections, save_prediction_grid
from .scoring import PIPELINE_THRESHOLD, score_dataset

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
    """Score the detector folder on the data; write metrics.json, predictions.json and predictions.png."""
    if args.validation_file is not None:
        raise UserInputError("A detector is scored on --validation_dir IMAGES --validation_annotations F.json.")
    data_args = scored_data_arguments(args, train_annotations=args.validation_annotations)
    data = load_detection_data(data_args, seed=0, cache_dir=args.cache_dir)
    images = data.validation if data.validation is not None else data.train
    if args.max_eval_samples is not None:
        images = images.select(range(min(args.max_eval_samples, len(images))))
    model = transformers.AutoModelForObjectDetection.from_pretrained(args.model, cache_dir=args.cache_dir)
    model = model.to(args.device).eval()
    processor = load_image_processor(args.model, cache_dir=args.cache_dir)
    label_ids = _label_ids(data.label_names, config)
    ground_truth = coco_ground_truth(images, data.label_names)
    extra = [name for name in config.id2label.values() if name not in data.label_names]
    ground_truth["categories"] += [{"id": label_ids[config.label2id[name]], "name": name} for name in extra]
    threshold = PIPELINE_THRESHOLD if args.threshold is None else args.threshold
    started = time.perf_counter()
    scores, detections = score_dataset(
        model, processor, images, ground_truth, label_ids, threshold=threshold, batch_size=args.batch_size
    )
    seconds = time.perf_counter() - started
    report = {
        "model": args.model,
        "data": args.validation_dir or args.dataset_name,
        "num_images": len(images),
        "num_boxes": len(ground_truth["annotations"]),
        "label_matching": "by name",
        "score_threshold": threshold,
        **{key: scores[key] for key in SUMMARY_KEYS},
        "per_class_ap": scores["per_class_ap"],
        "throughput_images_per_second": len(images) / seconds,
        # Reading, processing and post-processing included: the pipeline's work per image.
        "model_images_per_second": len(images) / seconds,
        "device": str(model.device),
        "batch_size": args.batch_size,
    }
    with atomic_directory(args.output_dir, overwrite=args.overwrite) as staging:
        write_json(str(staging / METRICS_NAME), report)
        (staging / DETECTIONS_NAME).write_text(json.dumps(detections) + "\n", encoding="utf-8")
        _picture(images, detections, label_ids, config, str(staging / PREDICTIONS_NAME))
    return report


def _picture(images: Any, detections: list[dict], label_ids: list[int], config: Any, path: str, count: int = 8) -> None:
    """predictions.png of the first images: true boxes white, detections coloured by class."""
    rows = images.select(range(min(count, len(images))))
    model_label = {category: label for label, category in enumerate(label_ids)}
    pictures = []
    for row in rows:
        found = [d for d in detections if d["image_id"] == row["image_id"]]
        result = {
            "scores": [d["score"] for d in found],
            "labels": [model_label[d["category_id"]] for d in found],
            "boxes": [[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in found)],
        }
        names = [str(config.id2label[index]) for index in range(config.num_labels)]
        pictures.append(draw_detections(row["image"], row["objects"]["bbox"], result, names))
    save_prediction_grid(pictures, path)
