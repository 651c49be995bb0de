"""Metrics that ship inside the package, so evaluation never downloads a metric script from the Hub."""

from __future__ import annotations

from pathlib import Path

import evaluate

TOPK_ACCURACY_PATH = str(Path(__file__).with_name("topk_accuracy.py"))
MULTILABEL_PATH = str(Path(__file__).with_name("multilabel.py"))
MEAN_IOU_PATH = str(Path(__file__).with_name("mean_iou.py"))


def load_topk_accuracy(**kwargs) -> evaluate.EvaluationModule:
    """Load the packaged top-1/top-k accuracy metric by path (offline), e.g. `load_topk_accuracy().compute(...)`."""
    return evaluate.load(TOPK_ACCURACY_PATH, **kwargs)


def load_multilabel(**kwargs) -> evaluate.EvaluationModule:
    """Load the packaged multi-label metric (mAP, F1@0.5) by path (offline)."""
    return evaluate.load(MULTILABEL_PATH, **kwargs)


def load_mean_iou(**kwargs) -> evaluate.EvaluationModule:
    """Load the packaged segmentation metric (mean IoU, per-class IoU, pixel accuracy) by path (offline)."""
    return evaluate.load(MEAN_IOU_PATH, **kwargs)


__all__ = [
    "MEAN_IOU_PATH",
    "MULTILABEL_PATH",
    "TOPK_ACCURACY_PATH",
    "load_mean_iou",
    "load_multilabel",
    "load_topk_accuracy",
]
