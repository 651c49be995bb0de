"""What a run leaves for people to read: a metrics JSON, a confusion-matrix image and a training-curve image."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..atomic import atomic_file

logger = logging.getLogger(__name__)

METRICS_NAME = "metrics.json"
CONFUSION_MATRIX_NAME = "confusion_matrix.png"
TRAINING_CURVES_NAME = "training_curves.png"


def confusion_matrix(predictions: np.ndarray, references: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts[i, j] = number of examples of true class i predicted as class j."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (references, predictions), 1)
    return counts


def write_text(path: str, text: str) -> None:
    """Write `text` through a temporary file moved into place, so readers never see half a file."""
    with atomic_file(path) as staging:
        staging.write_text(text, encoding="utf-8")


def write_json(path: str, payload: dict[str, Any]) -> None:
    """Write `payload` as indented JSON, atomically."""
    write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _pyplot():
    """matplotlib's pyplot on a file-only backend, or None (with a note) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no plots (pip install matplotlib).")
        return None
    return plt


def plot_confusion_matrix(counts: np.ndarray, label_names: list[str], path: str) -> bool:
    """Draw the confusion matrix, row-normalized, with the counts written in the cells; False without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return False
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    # Capped, so that 1,000 ImageNet classes make a picture of 24 inches rather than 450; names only where legible.
    size = min(max(4.0, 0.45 * len(label_names) + 2), 24.0)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    image = axes.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of the true class")
    if len(label_names) <= 60:
        ticks = np.arange(len(label_names))
        axes.set_xticks(ticks, labels=label_names, rotation=90 if len(label_names) > 10 else 0)
        axes.set_yticks(ticks, labels=label_names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    axes.set_title(f"Confusion matrix — accuracy {accuracy:.2%} on {counts.sum()} images")
    if len(label_names) <= 30:
        for (row, column), count in np.ndenumerate(counts):
            if count:
                color = "white" if rates[row, column] > 0.5 else "black"
                axes.text(column, row, str(count), ha="center", va="center", fontsize=7, color=color)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def plot_training_curves(log_history: list[dict[str, float]], path: str, final: dict[str, float] | None = None) -> bool:
    """Training loss and learning rate, and validation loss and accuracy, against the step; False without matplotlib.

    `final` (the metrics of the saved model) adds its accuracy at the last step when there was no evaluation during
    training.
    """
    plt = _pyplot()
    if plt is None:
        return False

    def series(key: str) -> tuple[list[float], list[float]]:
        points = [(entry["step"], entry[key]) for entry in log_history if key in entry and "step" in entry]
        return [step for step, _ in points], [value for _, value in points]

    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for key, label in (("loss", "training loss"), ("eval_loss", "validation loss")):
        steps, values = series(key)
        if steps:
            loss_axes.plot(steps, values, marker="." if key == "eval_loss" else None, label=label)
    loss_axes.set_xlabel("step")
    loss_axes.set_ylabel("loss")
    if loss_axes.lines:
        loss_axes.legend(loc="upper right")
    steps, values = series("learning_rate")
    if steps:
        rate_axes = loss_axes.twinx()
        rate_axes.plot(steps, values, color="gray", linestyle=":", label="learning rate")
        rate_axes.set_ylabel("learning rate", color="gray")
    for key, label in (
        ("eval_accuracy", "top-1"),
        ("eval_top5_accuracy", "top-5"),
        ("eval_ema_accuracy", "EMA top-1"),
    ):
        steps, values = series(key)
        if steps:
            accuracy_axes.plot(steps, values, marker=".", label=label)
    accuracy_axes.set_xlabel("step")
    accuracy_axes.set_ylabel("validation accuracy")
    if not accuracy_axes.lines and final and "eval_accuracy" in final:
        last_step = max((entry["step"] for entry in log_history if "step" in entry), default=0)
        accuracy_axes.plot([last_step], [final["eval_accuracy"]], marker="*", markersize=12, linestyle="",
                           label=f"final top-1 {final['eval_accuracy']:.2%}")  # fmt: skip
    if accuracy_axes.lines:
        lowest = min(min(line.get_ydata()) for line in accuracy_axes.lines)
        accuracy_axes.set_ylim(max(0.0, lowest - 0.05), 1.005)
        accuracy_axes.legend(loc="lower right")
    else:
        accuracy_axes.text(0.5, 0.5, "no evaluation", ha="center", va="center")
    figure.suptitle("Training curves")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


@dataclass
class FinalEvaluation:
    """The final weights' validation metrics, confusion counts (images or pixels) and per-label score (AP or IoU)."""

    metrics: dict[str, float]
    counts: np.ndarray | None = None
    per_label: dict[str, float] | None = None
