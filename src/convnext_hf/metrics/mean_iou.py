"""Semantic-segmentation scores: mean IoU, per-class IoU and pixel accuracy, as an `evaluate` metric loaded by path.

This file is an `evaluate` metric script: `evaluate.load` copies it into its module cache and imports it on its own,
so it imports nothing from its package. The training code imports its numpy functions directly and accumulates the
confusion matrix batch by batch.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Semantic-segmentation scores from the pixel confusion matrix, as mmsegmentation computes them: the IoU of a class is
intersection / union of its predicted and true pixels; mean IoU averages the classes whose union is not empty;
pixel accuracy is the fraction of labelled pixels predicted right. Pixels labelled `ignore_index` do not count.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of 2-D `list` of `int`): the predicted class id of every pixel, one map per image.
    references (`list` of 2-D `list` of `int`): the true class ids, maps of the same shapes.
    num_labels (`int`): the number of classes.
    ignore_index (`int`, defaults to 255): the label of pixels that do not count.
Returns:
    mean_iou (`float`), pixel_accuracy (`float`): in [0, 1].
    per_class_iou (`list` of `float`): the IoU of every class, NaN where the class is neither present nor predicted.
Examples:
    >>> metric = evaluate.load("path/to/mean_iou.py")
    >>> metric.compute(predictions=[[[0, 1], [1, 1]]], references=[[[0, 1], [0, 255]]], num_labels=2)
    {'mean_iou': 0.5, 'pixel_accuracy': 0.6666666666666666, 'per_class_iou': [0.5, 0.5]}
"""


def confusion_counts(
    predictions: np.ndarray, references: np.ndarray, num_labels: int, ignore_index: int = 255
) -> np.ndarray:
    """Counts[i, j] = number of pixels of true class i predicted as class j, over labelled pixels."""
    predictions, references = np.asarray(predictions).ravel(), np.asarray(references).ravel()
    labelled = (references != ignore_index) & (references >= 0)
    if labelled.any() and references[labelled].max() >= num_labels:
        raise ValueError(
            f"References hold class id {references[labelled].max()} but there are {num_labels} classes; masks "
            f"must hold ids 0..{num_labels - 1}, or {ignore_index} for pixels to ignore."
        )
    pairs = references[labelled].astype(np.int64) * num_labels + predictions[labelled].astype(np.int64)
    return np.bincount(pairs, minlength=num_labels * num_labels).reshape(num_labels, num_labels)


def iou_scores(counts: np.ndarray) -> dict[str, float | list[float]]:
    """Mean IoU, pixel accuracy and per-class IoU (NaN for a class neither present nor predicted) of a confusion."""
    intersection = np.diag(counts).astype(np.float64)
    union = counts.sum(axis=0) + counts.sum(axis=1) - intersection
    per_class = np.where(union > 0, intersection / np.maximum(union, 1), np.nan)
    total = counts.sum()
    return {
        "mean_iou": float(np.nanmean(per_class)) if (union > 0).any() else 0.0,
        "pixel_accuracy": float(intersection.sum() / total) if total else 0.0,
        "per_class_iou": per_class.tolist(),
    }


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MeanIoU(evaluate.Metric):
    """Mean IoU, pixel accuracy and per-class IoU of predicted segmentation maps."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
                    "references": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
                }
            ),
        )

    def _compute(
        self, predictions: list, references: list, num_labels: int, ignore_index: int = 255
    ) -> dict[str, float | list[float]]:
        counts = sum(
            confusion_counts(np.asarray(prediction), np.asarray(reference), num_labels, ignore_index)
            for prediction, reference in zip(predictions, references, strict=True)
        )
        return iou_scores(counts)
