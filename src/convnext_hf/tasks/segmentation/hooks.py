"""Semantic segmentation's hooks: what `convnext-hf train`, `evaluate` and `demo` call for it (see
`convnext_hf.tasks`).

Training follows the official recipe (random rescale, pad and crop, flip, all applied to image and mask alike) and
the model's own per-pixel loss; evaluation scores mean IoU and pixel accuracy, and the run draws its predictions over
validation images. `convnext-hf evaluate` scores a saved folder on image/mask pairs (`scoring`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
import transformers
from torch import nn
from transformers import EvalPrediction
from transformers.trainer_utils import PredictionOutput

from ...errors import UserInputError
from ...metrics.mean_iou import confusion_counts, iou_scores
from ...portable import needs_convnext_hf_sentence, portable_head
from ...train.arguments import RunArguments
from ...train.card import TaskCard
from ...train.data import ImageData
from ...train.mixup import Mixup
from ...train.report import FinalEvaluation
from .data import (
    PairedTransform,
    check_mask_folders,
    collate_segmentation,
    load_segmentation_data,
    parse_id2label,
    segmentation_labels,
    with_segmentation_transforms,
)
from .demo import run_demo
from .model import build_segmentation_model, build_segmentation_processor, split_overrides
from .plots import OVERLAY_NAME, plot_prediction_overlay
from .scoring import evaluate

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
    "configuration_overrides",
    "evaluate",
    "final_evaluation",
    "load_data",
    "prepare_for_saving",
    "preprocess_logits",
    "report_fields",
    "run_demo",
    "write_plots",
]

collate = collate_segmentation
# --config_overrides split between the UperNet head and the ConvNeXt backbone, each checked against its config.
configuration_overrides = split_overrides


def load_data(args: RunArguments) -> ImageData:
    """The image/mask pairs, with the class names of --id2label or of the UperNet being fine-tuned."""
    check_mask_folders(args.data)
    label_names = segmentation_labels(args.model, args.data)
    return load_segmentation_data(args.data, label_names, seed=args.training.seed, cache_dir=args.model.cache_dir)


def build_model(args: RunArguments, data: ImageData) -> nn.Module:
    """An UperNet for the classes, from a variant, a classification folder or an UperNet folder."""
    return build_segmentation_model(args.model, data.label_names)


def build_processor(args: RunArguments, model: nn.Module) -> transformers.BaseImageProcessor:
    """Resize to --image_size (default: the UperNet folder's, or 512) and normalize as ImageNet."""
    return build_segmentation_processor(args.model)


def check_arguments(args: RunArguments) -> None:
    """Refuse the classification augmentations, which would not move the masks with the images."""
    recipe, training = args.recipe, args.training
    classification_only = {
        "--mixup_alpha/--cutmix_alpha": (recipe.mixup_alpha > 0 or recipe.cutmix_alpha > 0) and recipe.mixup_prob > 0,
        "--label_smoothing_factor": training.label_smoothing_factor > 0,
        "--rand_augment": recipe.rand_augment is not None,
        "--random_erasing": recipe.random_erasing > 0,
    }
    given = [flag for flag, used in classification_only.items() if used]
    if given:
        raise UserInputError(
            f"{', '.join(given)}: classification augmentations, which would not move the masks with the images; "
            "drop them for segmentation (its augmentation is --scale_range, the crop and --hflip)."
        )
    if args.data.id2label is not None:
        parse_id2label(args.data.id2label)


def attach_transforms(args: RunArguments, data: ImageData, processor: Any) -> ImageData:
    """The paired augmentation for training, the processor (image and mask resized alike) for validation."""
    recipe = args.recipe
    if len(recipe.scale_range) != 2 or not 0 < recipe.scale_range[0] <= recipe.scale_range[1]:
        raise UserInputError(f"--scale_range takes two factors 0 < min <= max, got {recipe.scale_range}.")
    paired = PairedTransform(
        size=processor.size["height"],
        scale_range=(recipe.scale_range[0], recipe.scale_range[1]),
        hflip=recipe.hflip,
        num_labels=len(data.label_names),
        rescale_factor=processor.rescale_factor if processor.do_rescale else None,
        image_mean=processor.image_mean if processor.do_normalize else None,
        image_std=processor.image_std if processor.do_normalize else None,
    )
    return with_segmentation_transforms(data, paired, processor)


def augmentation_hyperparameters(args: RunArguments, image_size: int) -> dict[str, Any]:
    """The rescale-and-crop row of the card's hyperparameters."""
    scale_range = args.recipe.scale_range
    return {"random rescale and crop": f"×{scale_range[0]:g}–{scale_range[1]:g}, {image_size}² crop"}


def compute_loss(model: nn.Module, inputs: dict[str, torch.Tensor], mixup: Mixup) -> tuple[torch.Tensor, Any]:
    """UperNet's own per-pixel loss (with its auxiliary head), unmixed."""
    outputs = model(pixel_values=inputs["pixel_values"], labels=inputs["labels"])
    return outputs.loss, outputs


# The validation metric that picks the best checkpoint unless --metric_for_best_model names another.
MAIN_METRIC = "mean_iou"


def compute_metrics(num_labels: int) -> Callable[[EvalPrediction], dict[str, float]]:
    """The Trainer's `compute_metrics`: mean IoU and pixel accuracy."""

    def segmentation_scores(prediction: EvalPrediction) -> dict[str, float]:
        scores = iou_scores(confusion_counts(prediction.predictions, prediction.label_ids, num_labels))
        return {"mean_iou": scores["mean_iou"], "pixel_accuracy": scores["pixel_accuracy"]}

    return segmentation_scores


def preprocess_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Keep only the predicted class maps of a batch: full-size logits of every image would not fit."""
    return logits.argmax(dim=1)


def final_evaluation(prediction: PredictionOutput, label_names: list[str]) -> FinalEvaluation:
    """The final metrics, the pixel confusion counts and the IoU of every class."""
    counts = confusion_counts(prediction.predictions, prediction.label_ids, len(label_names))
    iou = iou_scores(counts)["per_class_iou"]
    return FinalEvaluation(dict(prediction.metrics), counts, dict(zip(label_names, iou, strict=True)))


def report_fields(final: FinalEvaluation, label_names: list[str]) -> dict[str, Any]:
    """metrics.json's per-class IoU."""
    return {"per_class_iou": final.per_label} if final.per_label is not None else {}


def write_plots(trainer: Any, raw_data: ImageData, final: FinalEvaluation, output_dir: str) -> None:
    """The predictions over the first validation images."""
    if raw_data.validation is not None:
        plot_prediction_overlay(
            trainer.model, trainer.processing_class, raw_data.validation, os.path.join(output_dir, OVERLAY_NAME)
        )


def prepare_for_saving(model: nn.Module) -> str | None:
    """Put the built-in ConvNext backbone in where it expresses ours (plain transformers then loads the folder);
    return the card's note on why convnext_hf is needed where it does not."""
    portable_head(model)
    return needs_convnext_hf_sentence(model.config)


def _usage(repo_or_path: str) -> str:
    # UperNet is transformers' own class, and the saved backbone is the built-in ConvNext where it can express ours
    # (`prepare_for_saving`; the card adds a note otherwise).
    return (
        "```python\n"
        "from transformers import pipeline\n\n"
        f'segmenter = pipeline("image-segmentation", model="{repo_or_path}")\n'
        'print(segmenter("photo.jpg"))  # one mask per class present\n'
        "```"
    )


CARD = TaskCard(
    what="A semantic-segmentation model (UperNet on a ConvNeXt backbone)",
    results=(
        ("eval_mean_iou", "mean_iou", "mean IoU"),
        ("eval_pixel_accuracy", "accuracy", "pixel accuracy"),
        ("eval_ema_mean_iou", None, "mean IoU of the EMA weights"),
    ),
    pictures="Predictions over validation images are in `prediction_overlay.png` (image, truth, prediction), the "
    "pixel confusion matrix and the training curves in `confusion_matrix.png` and `training_curves.png`",
    usage=_usage,
    per_label="IoU",
    tags=("upernet",),
    head=lambda model: f"UperNet ({model.config.hidden_size} channels) on a ",
)
