"""Metrics that ship inside the package, so evaluation never downloads a metric script from the Hub."""

from __future__ import annotations

from pathlib import Path

import evaluate

TOPK_ACCURACY_PATH = str(Path(__file__).with_name("topk_accuracy.py"))


def load_topk_accuracy(**kwargs) -> evaluate.EvaluationModule:
    """Load the packaged top-1/top-k accuracy metric by path (offline), e.g. `load_topk_accuracy().compute(...)`."""
    return evaluate.load(TOPK_ACCURACY_PATH, **kwargs)


__all__ = ["TOPK_ACCURACY_PATH", "load_topk_accuracy"]
