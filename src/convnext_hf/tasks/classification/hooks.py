"""Image classification's hooks: what `convnext-hf train`, `evaluate` and `demo` call for it (see `convnext_hf.tasks`).

Training follows the paper's recipe: random-resized crop, flip, RandAugment, random erasing, Mixup/CutMix against
label-smoothed soft targets; evaluation is the processor's resize and centre crop, scored by top-1/top-5 accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers import EvalPrediction
from transformers.trainer_utils import PredictionOutput

from ...errors import UserInputError
from ...metrics import load_topk_accuracy
from ...train.arguments import RunArguments
from ...train.augment import RandAugment, RandomResizedCrop, TrainTransform
from ...train.card import TaskCard
from ...train.data import ImageData
from ...train.mixup import Mixup, soft_target_cross_entropy
from ...train.report import FinalEvaluation, confusion_matrix
from .data import collate, load_image_data, with_transforms
from .demo import run_demo
from .model import build_model as build_classifier
from .model import build_processor as build_classifier_processor
from .scoring import evaluate
from .streaming import load_streamed_images

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
    "mixed_batch",
    "report_fields",
    "run_demo",
]

preprocess_logits = None
# --streaming: `load_data` streams --dataset_name (tasks/classification/streaming.py).
STREAMS = True


def load_data(args: RunArguments) -> ImageData:
    """The labelled images; a label column holding lists makes them multi-label (`ImageData.task` says so). With
    --streaming, this process's share of the streamed splits."""
    if args.data.streaming:
        return load_streamed_images(args)
    return load_image_data(
        args.data, seed=args.training.seed, cache_dir=args.model.cache_dir, single_label_given=args.task_given
    )


def build_model(args: RunArguments, data: ImageData) -> nn.Module:
    """A new classifier of the variant, or the pretrained one with a classifier for the data's classes."""
    return build_classifier(args.model, data.label_names)


def build_processor(args: RunArguments, model: nn.Module) -> Any:
    """The pretrained model's processor (resized to --image_size when given), or a new one."""
    return build_classifier_processor(args.model, model)


def check_arguments(args: RunArguments) -> None:
    """Refuse the segmentation data flags, which a classification run would ignore: its classes are the class
    folders or the label column."""
    data = args.data
    given = {"--id2label": data.id2label, "--train_mask_dir": data.train_mask_dir,
             "--validation_mask_dir": data.validation_mask_dir, "--mask_column_name": data.mask_column_name}
    flags = [flag for flag, value in given.items() if value is not None]
    if flags:
        raise UserInputError(
            f"{', '.join(flags)}: semantic-segmentation data (class names of mask ids, masks), which {args.model.task} "
            "would ignore: its classes are the class folders or the label column. Drop them, or pass --task "
            "semantic-segmentation."
        )


def train_transform(args: RunArguments, processor: Any) -> TrainTransform:
    """The recipe's per-image augmentation at the processor's size, normalized as the processor does."""
    recipe = args.recipe
    if len(recipe.rrc_ratio) != 2:
        raise UserInputError(f"--rrc_ratio takes two numbers (min max), got {recipe.rrc_ratio}.")
    crop = RandomResizedCrop(
        processor.size["shortest_edge"],
        scale=(recipe.rrc_scale_min, 1.0),
        ratio=(recipe.rrc_ratio[0], recipe.rrc_ratio[1]),
        resample=Image.Resampling(int(processor.resample)),
    )
    return TrainTransform(
        crop=crop,
        hflip=recipe.hflip,
        rand_augment=RandAugment.from_string(recipe.rand_augment) if recipe.rand_augment else None,
        random_erasing=recipe.random_erasing,
        rescale_factor=processor.rescale_factor if processor.do_rescale else None,
        image_mean=processor.image_mean if processor.do_normalize else None,
        image_std=processor.image_std if processor.do_normalize else None,
    )


def attach_transforms(args: RunArguments, data: ImageData, processor: Any) -> ImageData:
    """Augmentation for the training images, the processor for the validation ones."""
    return with_transforms(data, train_transform(args, processor), processor)


def augmentation_hyperparameters(args: RunArguments, image_size: int) -> dict[str, Any]:
    """The crop row of the card's hyperparameters."""
    recipe = args.recipe
    return {
        "random-resized crop": f"scale ({recipe.rrc_scale_min}, 1), "
        f"ratio ({recipe.rrc_ratio[0]:.3g}, {recipe.rrc_ratio[1]:.3g})"
    }


def mixed_batch(
    model: nn.Module, inputs: dict[str, torch.Tensor], mixup: Mixup
) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """(float logits, targets, outputs): training batches mixed (Mixup/CutMix, soft targets), evaluation ones not."""
    labels, pixel_values = inputs["labels"], inputs["pixel_values"]
    if model.training:
        pixel_values, targets = mixup(pixel_values, labels)
    else:
        targets = labels
    outputs = model(pixel_values=pixel_values)
    return outputs.logits.float(), targets, outputs


def compute_loss(model: nn.Module, inputs: dict[str, torch.Tensor], mixup: Mixup) -> tuple[torch.Tensor, Any]:
    """Soft-target cross-entropy on mixed batches while training, cross-entropy while evaluating."""
    logits, targets, outputs = mixed_batch(model, inputs, mixup)
    if model.training:
        return soft_target_cross_entropy(logits, targets), outputs
    return F.cross_entropy(logits, inputs["labels"]), outputs


def evaluation_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    """The cross-entropy averaged over the validation images, from their gathered logits."""
    return F.cross_entropy(torch.from_numpy(logits).float(), torch.from_numpy(labels).long()).item()


# The validation metric that picks the best checkpoint unless --metric_for_best_model names another.
MAIN_METRIC = "accuracy"


def compute_metrics(num_labels: int) -> Callable[[EvalPrediction], dict[str, float]]:
    """The Trainer's `compute_metrics`: top-1 and top-5 accuracy."""
    metric = load_topk_accuracy()
    return lambda prediction: metric.compute(predictions=prediction.predictions, references=prediction.label_ids)


def final_evaluation(prediction: PredictionOutput, label_names: list[str]) -> FinalEvaluation:
    """The final metrics and the confusion matrix of the validation images."""
    predicted = prediction.predictions.argmax(axis=-1)
    return FinalEvaluation(
        dict(prediction.metrics), confusion_matrix(predicted, prediction.label_ids, num_classes=len(label_names))
    )


def report_fields(final: FinalEvaluation, label_names: list[str]) -> dict[str, Any]:
    """metrics.json's per-class accuracy."""
    counts = final.counts
    if counts is None:
        return {}
    return {
        "per_class_accuracy": {
            name: float(counts[index, index] / max(counts[index].sum(), 1)) for index, name in enumerate(label_names)
        }
    }


def classifier_usage(scores: str = "") -> Callable[[str], str]:
    """The card's usage snippet for a classifier folder; `scores` notes what the pipeline's scores are."""

    def usage(repo_or_path: str) -> str:
        return (
            "```python\n"
            "from transformers import pipeline\n\n"
            f'classifier = pipeline("image-classification", model="{repo_or_path}", trust_remote_code=True)\n'
            f'print(classifier("photo.jpg")){"  #" + scores if scores else ""}\n'
            "```\n\n"
            "The model's code travels with the weights (`trust_remote_code=True`); with `convnext-hf` installed, "
            "`import convnext_hf` first and the flag is not needed."
        )

    return usage


CARD = TaskCard(
    what="A ConvNeXt image classifier",
    results=(
        ("eval_accuracy", "accuracy", "top-1 accuracy"),
        ("eval_top5_accuracy", "accuracy", "top-5 accuracy"),
        ("eval_ema_accuracy", None, "top-1 accuracy of the EMA weights"),
    ),
    pictures="The confusion matrix and the training curves are in `confusion_matrix.png` and `training_curves.png`",
    usage=classifier_usage(),
)

