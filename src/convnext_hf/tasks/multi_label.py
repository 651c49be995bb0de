"""Multi-label classification's hooks: several labels per image, a sigmoid and a binary cross-entropy per label.

It shares image classification's data loading, model and augmentation (`tasks/classification`); labels are multi-hot
rows, the model is marked `problem_type="multi_label_classification"` so that transformers' pipeline scores each label
with a sigmoid, and it is scored by mAP and F1@0.5.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import EvalPrediction
from transformers.trainer_utils import PredictionOutput

from ..evaluation import load_model, predict, write_outputs
from ..metrics.multilabel import average_precision, multilabel_scores, sigmoid
from ..train.arguments import RunArguments
from ..train.card import TaskCard
from ..train.data import ImageData
from ..train.mixup import Mixup
from ..train.report import FinalEvaluation
from . import MULTI_LABEL_CLASSIFICATION
from .classification.data import collate, load_image_data
from .classification.hooks import (
    attach_transforms,
    augmentation_hyperparameters,
    build_processor,
    check_arguments,
    classifier_usage,
    mixed_batch,
)
from .classification.model import build_model as build_classifier
from .classification.scoring import label_ids, load_labelled_images

__all__ = [
    "CARD",
    "attach_transforms",
    "augmentation_hyperparameters",
    "build_model",
    "build_processor",
    "check_arguments",
    "collate",
    "compute_loss",
    "compute_metrics",
    "evaluate",
    "final_evaluation",
    "load_data",
    "report_fields",
]

preprocess_logits = None


def load_data(args: RunArguments) -> ImageData:
    """The labelled images, each label entry a list or a comma- or space-separated string, as multi-hot rows."""
    return load_image_data(
        args.data, seed=args.training.seed, cache_dir=args.model.cache_dir, task=MULTI_LABEL_CLASSIFICATION
    )


def build_model(args: RunArguments, data: ImageData) -> nn.Module:
    """A classifier for the labels, marked multi-label so that the pipeline scores each label with a sigmoid."""
    return build_classifier(args.model, data.label_names, multi_label=True)


def compute_loss(model: nn.Module, inputs: dict[str, torch.Tensor], mixup: Mixup) -> tuple[torch.Tensor, Any]:
    """A binary cross-entropy per label, against mixed (and smoothed) multi-hot targets while training."""
    logits, targets, outputs = mixed_batch(model, inputs, mixup)
    return F.binary_cross_entropy_with_logits(logits, targets.float()), outputs


def evaluation_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    """The binary cross-entropy averaged over the validation images and labels, from their gathered logits."""
    return F.binary_cross_entropy_with_logits(torch.from_numpy(logits).float(), torch.from_numpy(labels).float()).item()


# The validation metric that picks the best checkpoint unless --metric_for_best_model names another.
MAIN_METRIC = "mAP"


def compute_metrics(num_labels: int) -> Callable[[EvalPrediction], dict[str, float]]:
    """The Trainer's `compute_metrics`: mAP and F1@0.5."""
    return lambda prediction: multilabel_scores(sigmoid(prediction.predictions), prediction.label_ids)


def final_evaluation(prediction: PredictionOutput, label_names: list[str]) -> FinalEvaluation:
    """The final metrics and the AP of every label."""
    ap = average_precision(sigmoid(prediction.predictions), prediction.label_ids)
    return FinalEvaluation(dict(prediction.metrics), per_label=dict(zip(label_names, ap.tolist(), strict=True)))


def report_fields(final: FinalEvaluation, label_names: list[str]) -> dict[str, Any]:
    """metrics.json's per-label AP."""
    return {"per_label_ap": final.per_label} if final.per_label is not None else {}


CARD = TaskCard(
    what="A ConvNeXt multi-label image classifier (one sigmoid per label)",
    results=(
        ("eval_mAP", "mAP", "mAP"),
        ("eval_f1_micro", "f1", "F1@0.5 (micro)"),
        ("eval_f1_macro", "f1", "F1@0.5 (macro)"),
        ("eval_ema_mAP", None, "mAP of the EMA weights"),
    ),
    pictures="The training curves are in `training_curves.png`",
    usage=classifier_usage(" (a sigmoid score per label)"),
    per_label="AP",
    per_label_column="label",
)


def evaluate(args: argparse.Namespace, config: transformers.PretrainedConfig) -> dict[str, Any]:
    """Score the multi-label folder on the labelled images: mAP, F1@0.5 and per-label AP; write metrics.json and
    predictions.csv."""
    model, processor = load_model(args, transformers.AutoModelForImageClassification)
    images, data_names = load_labelled_images(args, MULTI_LABEL_CLASSIFICATION)
    ids, matching = label_ids(data_names, config)
    logits, paths, report = predict(args, model, processor, images)
    report["label_matching"] = matching
    model_names = [str(config.id2label[index]) for index in range(config.num_labels)]
    targets = np.zeros_like(logits)
    targets[:, ids] = np.asarray(images["label"])
    probabilities = sigmoid(logits)
    report.update(multilabel_scores(probabilities, targets))
    report["per_label_ap"] = dict(zip(model_names, average_precision(probabilities, targets).tolist(), strict=True))
    rows = [
        (path, " ".join(n for n, t in zip(model_names, target, strict=True) if t), " ".join(
            n for n, p in zip(model_names, probability, strict=True) if p >= 0.5))
        for path, target, probability in zip(paths, targets, probabilities, strict=True)
    ]  # fmt: skip
    write_outputs(args, report, ["image", "labels", "predicted"], rows, None, [])
    return report
