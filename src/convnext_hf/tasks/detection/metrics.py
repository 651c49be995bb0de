"""COCO box metrics, computed offline with pycocotools (the reference implementation of the COCO evaluation).

mAP is AP averaged over IoU thresholds 0.50:0.05:0.95, 101 recall points and the classes, at up to 100 detections
per image; AP50/AP75 at one threshold; small/medium/large split the objects at 32² and 96² pixels of area (−1: no
object of that size, as COCO reports it); AR@k is the recall with k detections per image. Per-class AP is mAP for
one class (None when the class has no object in the data).
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any

import numpy as np

from ...errors import UserInputError

# pycocotools' `stats`, in order, under the names this package reports.
SUMMARY_KEYS = (
    "map", "map_50", "map_75", "map_small", "map_medium", "map_large",
    "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large",
)  # fmt: skip


def _pycocotools() -> tuple[Any, Any]:
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise UserInputError(
            "COCO metrics need pycocotools; install the detection extra: pip install 'convnext-hf[detection]'."
        ) from None
    return COCO, COCOeval


def coco_metrics(ground_truth: dict, detections: list[dict]) -> dict[str, Any]:
    """COCO box metrics of `detections` ({image_id, category_id, bbox [x, y, w, h], score}) against a COCO
    ground-truth dict; adds `per_class_ap` by category name."""
    COCO, COCOeval = _pycocotools()
    names = {category["id"]: category["name"] for category in ground_truth["categories"]}
    if not ground_truth["annotations"] and not detections:
        raise UserInputError("No boxes in the evaluation data and none predicted: there is nothing to score.")
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        # pycocotools reads (and would modify) the dict; it also wants the `iscrowd` flags and areas it was given.
        truth.dataset = copy.deepcopy(ground_truth)
        truth.createIndex()
        if not detections:
            return {**dict.fromkeys(SUMMARY_KEYS, 0.0), "per_class_ap": dict.fromkeys(names.values(), 0.0)}
        predicted = truth.loadRes(copy.deepcopy(detections))
        evaluation = COCOeval(truth, predicted, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    scores: dict[str, Any] = {key: float(value) for key, value in zip(SUMMARY_KEYS, evaluation.stats, strict=True)}
    # precision: [IoU thresholds, recall points, classes, area ranges (all first), max detections (100 last)].
    precision = evaluation.eval["precision"][:, :, :, 0, -1]
    per_class = {}
    for index, category_id in enumerate(evaluation.params.catIds):
        values = precision[:, :, index]
        values = values[values > -1]
        per_class[names[category_id]] = float(values.mean()) if values.size else None
    scores["per_class_ap"] = per_class
    return scores


def detections_from_results(
    image_ids: list[int], results: list[dict], label_ids: list[int] | None = None
) -> list[dict]:
    """COCO detections from post-processed results ({scores, labels, boxes as (x0, y0, x1, y1)}), one per image;
    `label_ids` maps the model's label index to the ground truth's category id (identity when None)."""
    detections = []
    for image_id, result in zip(image_ids, results, strict=True):
        boxes = np.asarray(result["boxes"], dtype=np.float64).reshape(-1, 4)
        for score, label, (x0, y0, x1, y1) in zip(result["scores"], result["labels"], boxes, strict=True):
            category = int(label) if label_ids is None else label_ids[int(label)]
            detections.append({
                "image_id": int(image_id), "category_id": category,
                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "score": float(score),
            })  # fmt: skip
    return detections
