"""COCO box metrics under COCO's own protocol, computed offline with pycocotools (the reference implementation).

The protocol, as pycocotools, mmdetection, detectron2 and transformers' `run_object_detection.py` apply it: every
detection counts, with no score threshold, up to the 100 best-scored per image (`MAX_DETECTIONS`); crowd boxes
(`iscrowd` 1) are ignore regions (a detection on one is neither a hit nor a false positive); the small/medium/large
split uses each box's `area` as the annotation file gives it. Every number this package reports for a detector
(the Trainer's evaluation, a run's final evaluation and metrics.json, `convnext-hf evaluate`) goes through
`detections_from_results` and `coco_metrics`.

mAP is AP averaged over IoU thresholds 0.50:0.05:0.95, 101 recall points and the classes; AP50/AP75 at one
threshold; small/medium/large split the objects at 32² and 96² pixels of area; AR@k is the recall with k detections
per image. Where there is nothing to measure (no box of a size, or no box at all besides crowd boxes) COCO reports
-1 (`NOT_MEASURED`); the per-class AP of a class without boxes is None. Both read "n/a" in the card.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ...errors import UserInputError

# pycocotools' `stats`, in order, under the names this package reports.
SUMMARY_KEYS = (
    "map", "map_50", "map_75", "map_small", "map_medium", "map_large",
    "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large",
)  # fmt: skip
# COCO's largest number of detections per image (its `maxDets` 100); the best-scored are kept.
MAX_DETECTIONS = 100
# Post-processing at this score threshold keeps every detection (scores are probabilities, never below 0).
EVERY_SCORE = -1.0
# COCO's value of a metric with nothing to measure.
NOT_MEASURED = -1.0
PROTOCOL = (
    f"COCO (pycocotools): every detection up to {MAX_DETECTIONS} per image ranked by score, no score threshold; "
    "crowd boxes are ignore regions; areas from the annotations; -1 / null: nothing to measure (n/a)"
)


def _pycocotools() -> tuple[Any, Any]:
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise UserInputError(
            "COCO metrics need pycocotools; install the detection extra: pip install 'convnext-hf[detection]'."
        ) from None
    return COCO, COCOeval


def _index(COCO: Any, dataset: dict) -> Any:
    """A pycocotools COCO object over a copy of `dataset` (pycocotools modifies what it is given)."""
    coco = COCO()
    coco.dataset = copy.deepcopy(dataset)
    coco.createIndex()
    return coco


def coco_metrics(ground_truth: dict, detections: list[dict]) -> dict[str, Any]:
    """COCO box metrics of `detections` ({image_id, category_id, bbox [x, y, w, h], score}) against a COCO
    ground-truth dict (with its `iscrowd` flags and areas); adds `per_class_ap` by category name (None: no box)."""
    COCO, COCOeval = _pycocotools()
    names = {category["id"]: category["name"] for category in ground_truth["categories"]}
    with contextlib.redirect_stdout(io.StringIO()):
        truth = _index(COCO, ground_truth)
        if detections:
            predicted = truth.loadRes(copy.deepcopy(detections))
        else:  # pycocotools' loadRes cannot take an empty list
            predicted = _index(COCO, {"images": ground_truth["images"], "annotations": [],
                                      "categories": ground_truth["categories"]})  # fmt: skip
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
    image_ids: list[int], results: list[dict], label_ids: Sequence[int] | Mapping[int, int] | None = None
) -> list[dict]:
    """COCO detections from post-processed results ({scores, labels, boxes as (x0, y0, x1, y1)}), one per image: the
    `MAX_DETECTIONS` best-scored of each image; `label_ids` maps the model's label index to the ground truth's
    category id (identity when None)."""
    detections = []
    for image_id, result in zip(image_ids, results, strict=True):
        boxes = np.asarray(result["boxes"], dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(result["scores"], dtype=np.float64).reshape(-1)
        # Stable, as pycocotools ranks: equal scores keep the post-processing's order.
        best = np.argsort(-scores, kind="mergesort")[:MAX_DETECTIONS]
        for index in best:
            x0, y0, x1, y1 = boxes[index]
            label = int(result["labels"][index])
            detections.append({
                "image_id": int(image_id), "category_id": label if label_ids is None else label_ids[label],
                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "score": float(scores[index]),
            })  # fmt: skip
    return detections


def not_measured(scores: dict[str, Any]) -> dict[str, str]:
    """What the metrics could not measure, by name, with why (metrics.json's `not_measured`)."""
    reasons = {
        "map_small": "no small box (area < 32²)", "mar_small": "no small box (area < 32²)",
        "map_medium": "no medium box (32² ≤ area < 96²)", "mar_medium": "no medium box (32² ≤ area < 96²)",
        "map_large": "no large box (area ≥ 96²)", "mar_large": "no large box (area ≥ 96²)",
    }  # fmt: skip
    missing = {
        key: reasons.get(key, "no box in the evaluation data besides crowd boxes")
        for key in SUMMARY_KEYS
        if scores.get(key) == NOT_MEASURED
    }
    missing.update({f"per_class_ap.{name}": "no box of this class in the evaluation data (crowd boxes aside)"
                    for name, value in scores.get("per_class_ap", {}).items() if value is None})  # fmt: skip
    return missing
