"""Detections as `pipeline("object-detection")` makes them, and their COCO scores: one code path for the Trainer's
evaluation, the final evaluation of a run and `convnext-hf evaluate`, so that all three equal the pipeline.

The pipeline runs the folder's image processor on each image, the model, then the processor's
`post_process_object_detection` at the image's own size with a score threshold (0.5 unless told), and truncates the
box corners to whole pixels (`box.int()`). The same steps run here on batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import datasets
import torch
from PIL import Image
from transformers import EvalPrediction

from ...images import read_image
from .metrics import SUMMARY_KEYS, coco_metrics, detections_from_results

# pipeline("object-detection")'s default score threshold: what a user of the saved folder gets.
PIPELINE_THRESHOLD = 0.5


def post_process(processor: Any, logits: torch.Tensor, pred_boxes: torch.Tensor, sizes: Sequence[tuple[int, int]],
                 threshold: float) -> list[dict]:  # fmt: skip
    """The processor's post-processing at each image's (height, width), boxes truncated to pixels as the pipeline."""
    outputs = SimpleNamespace(logits=logits.float(), pred_boxes=pred_boxes.float())
    target_sizes = torch.tensor([list(size) for size in sizes], dtype=torch.int32)
    results = processor.post_process_object_detection(outputs, threshold=threshold, target_sizes=target_sizes)
    return [
        {"scores": r["scores"].tolist(), "labels": r["labels"].tolist(), "boxes": r["boxes"].int().tolist()}
        for r in results
    ]


@torch.inference_mode()
def predict(
    model: torch.nn.Module, processor: Any, images: Sequence[Image.Image], threshold: float, batch_size: int = 16
) -> list[dict]:
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
    threshold: float = PIPELINE_THRESHOLD,
    batch_size: int = 16,
) -> tuple[dict[str, Any], list[dict]]:
    """COCO metrics of the model on the dataset's images (rows in `ground_truth`'s image order), and the
    detections; `label_ids` maps model labels to ground-truth category ids."""
    detections: list[dict] = []
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start : start + batch_size]
        images = [read_image(image) for image in rows["image"]]
        results = predict(model, processor, images, threshold, batch_size)
        detections += detections_from_results(rows["image_id"], results, label_ids)
    return coco_metrics(ground_truth, detections), detections


def metric_function(
    processor: Any, sizes: Sequence[tuple[int, int]], image_ids: Sequence[int], ground_truth: dict
) -> Callable[[EvalPrediction], dict[str, float]]:
    """The Trainer's `compute_metrics`: the COCO summary of the evaluation batches (predictions kept per batch, in
    the validation set's order) at the pipeline's threshold."""

    def compute(prediction: EvalPrediction) -> dict[str, float]:
        results: list[dict] = []
        for logits, pred_boxes in prediction.predictions:
            batch_sizes = sizes[len(results) : len(results) + len(logits)]
            results += post_process(processor, torch.as_tensor(logits), torch.as_tensor(pred_boxes), batch_sizes,
                                    PIPELINE_THRESHOLD)  # fmt: skip
        scores = coco_metrics(ground_truth, detections_from_results(list(image_ids), results))
        return {key: scores[key] for key in SUMMARY_KEYS}

    return compute


def pipeline_detections(detector: Any, images: Sequence[Any], image_ids: Sequence[int], label2id: dict[str, int],
                        threshold: float = PIPELINE_THRESHOLD) -> list[dict]:  # fmt: skip
    """COCO detections from a `pipeline("object-detection")` run on the images (category ids by label name)."""
    detections = []
    for image_id, image in zip(image_ids, images, strict=True):
        for found in detector(image, threshold=threshold):
            box = found["box"]
            detections.append({
                "image_id": int(image_id), "category_id": label2id[found["label"]], "score": float(found["score"]),
                "bbox": [box["xmin"], box["ymin"], box["xmax"] - box["xmin"], box["ymax"] - box["ymin"]],
            })  # fmt: skip
    return detections

