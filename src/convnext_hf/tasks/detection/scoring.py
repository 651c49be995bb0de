"""Detections as `pipeline("object-detection")` makes them, scored under COCO's protocol: one code path for the
Trainer's evaluation, the final evaluation of a run and `convnext-hf evaluate`.

The pipeline runs the folder's image processor on each image, the model, then the processor's
`post_process_object_detection` at the image's own size, and truncates the box corners to whole pixels
(`box.int()`). The same steps run here on batches, with no score threshold: the metrics take every detection (up to
100 per image, `metrics.py`). The pipeline's score threshold (0.5 unless told) is what a user of the folder sees, so
it chooses what is drawn (predictions.png) and listed (evaluate's predictions.csv), never what is scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import datasets
import torch
from PIL import Image

from ...images import read_image
from .metrics import EVERY_SCORE, coco_metrics, detections_from_results

# pipeline("object-detection")'s default score threshold: what a user of the saved folder gets.
PIPELINE_THRESHOLD = 0.5


def post_process(processor: Any, logits: torch.Tensor, pred_boxes: torch.Tensor, sizes: Sequence[tuple[int, int]],
                 threshold: float = EVERY_SCORE) -> list[dict]:  # fmt: skip
    """The processor's post-processing at each image's (height, width), boxes truncated to pixels as the pipeline."""
    outputs = SimpleNamespace(logits=logits.float(), pred_boxes=pred_boxes.float())
    target_sizes = torch.tensor([list(size) for size in sizes], dtype=torch.int32)
    results = processor.post_process_object_detection(outputs, threshold=threshold, target_sizes=target_sizes)
    return [
        {"scores": r["scores"].tolist(), "labels": r["labels"].tolist(), "boxes": r["boxes"].int().tolist()}
        for r in results
    ]


def above(result: dict, threshold: float) -> dict:
    """The detections of one image that the pipeline shows at `threshold` (scores above it)."""
    kept = [index for index, score in enumerate(result["scores"]) if score > threshold]
    return {key: [result[key][index] for index in kept] for key in ("scores", "labels", "boxes")}


@torch.inference_mode()
def predict(
    model: torch.nn.Module, processor: Any, images: Sequence[Image.Image], threshold: float = EVERY_SCORE,
    batch_size: int = 16,
) -> list[dict]:  # fmt: skip
    """Detections ({scores, labels, boxes (x0, y0, x1, y1)}) of every image, as the pipeline gives them."""
    model.eval()
    results = []
    for start in range(0, len(images), batch_size):
        batch = [read_image(image) for image in images[start : start + batch_size]]
        inputs = processor(images=batch, return_tensors="pt").to(model.device)
        outputs = model(**inputs)
        sizes = [(image.height, image.width) for image in batch]
        results += post_process(processor, outputs.logits.cpu(), outputs.pred_boxes.cpu(), sizes, threshold)
    return results


def score_dataset(
    model: torch.nn.Module,
    processor: Any,
    dataset: datasets.Dataset,
    ground_truth: dict,
    label_ids: list[int] | None = None,
    batch_size: int = 16,
) -> tuple[dict[str, Any], list[dict], list[dict]]:
    """COCO metrics of the model on the dataset's images under COCO's protocol, the detections scored (COCO results,
    at most 100 per image) and every image's post-processed results; `label_ids` maps model labels to ground-truth
    category ids."""
    results: list[dict] = []
    for start in range(0, len(dataset), batch_size):
        images = [read_image(image) for image in dataset[start : start + batch_size]["image"]]
        results += predict(model, processor, images, EVERY_SCORE, batch_size)
    detections = detections_from_results(dataset["image_id"], results, label_ids)
    return coco_metrics(ground_truth, detections), detections, results


def pipeline_detections(detector: Any, images: Sequence[Any], image_ids: Sequence[int],
                        label2id: dict[str, int]) -> list[dict]:  # fmt: skip
    """COCO detections (COCO's protocol: every score, 100 per image) from a `pipeline("object-detection")` run on the
    images, category ids by label name."""
    results = []
    for image in images:
        found = detector(image, threshold=EVERY_SCORE)
        results.append({
            "scores": [item["score"] for item in found], "labels": [label2id[item["label"]] for item in found],
            "boxes": [[item["box"][key] for key in ("xmin", "ymin", "xmax", "ymax")] for item in found],
        })  # fmt: skip
    return detections_from_results(list(image_ids), results)
