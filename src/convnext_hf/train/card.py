"""The model card (README.md) of a trained model: where it came from, what it saw, how it was trained, how it scores."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import transformers
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .. import __version__
from ..card_table import facts_table
from .arguments import CLASSIFICATION, DETECTION, MULTI_LABEL, SEGMENTATION

# Per task: the pipeline, what the model is, the results in the card (metric key, metric type, name, as a percentage),
# the per-label score's name and the pictures the run writes.
_PIPELINE = {
    CLASSIFICATION: "image-classification",
    MULTI_LABEL: "image-classification",
    SEGMENTATION: "image-segmentation",
    DETECTION: "object-detection",
}
_WHAT = {
    CLASSIFICATION: "A ConvNeXt image classifier",
    MULTI_LABEL: "A ConvNeXt multi-label image classifier (one sigmoid per label)",
    SEGMENTATION: "A semantic-segmentation model (UperNet on a ConvNeXt backbone)",
    DETECTION: "An object detector (a transformers DETR-family detector on a ConvNeXt backbone)",
}
_RESULTS = {
    CLASSIFICATION: (
        ("eval_accuracy", "accuracy", "top-1 accuracy"),
        ("eval_top5_accuracy", "accuracy", "top-5 accuracy"),
        ("eval_ema_accuracy", None, "top-1 accuracy of the EMA weights"),
    ),
    MULTI_LABEL: (
        ("eval_mAP", "mAP", "mAP"),
        ("eval_f1_micro", "f1", "F1@0.5 (micro)"),
        ("eval_f1_macro", "f1", "F1@0.5 (macro)"),
        ("eval_ema_mAP", None, "mAP of the EMA weights"),
    ),
    SEGMENTATION: (
        ("eval_mean_iou", "mean_iou", "mean IoU"),
        ("eval_pixel_accuracy", "accuracy", "pixel accuracy"),
        ("eval_ema_mean_iou", None, "mean IoU of the EMA weights"),
    ),
    DETECTION: (
        ("eval_map", "mAP", "COCO mAP@[.5:.95]"),
        ("eval_map_50", "mAP@0.5", "AP50"),
        ("eval_map_75", "mAP@0.75", "AP75"),
        ("eval_mar_100", "mAR@100", "AR@100"),
    ),
}
_PER_LABEL = {MULTI_LABEL: "AP", SEGMENTATION: "IoU", DETECTION: "AP"}
_PICTURES = {
    CLASSIFICATION: "The confusion matrix and the training curves are in `confusion_matrix.png` and "
    "`training_curves.png`",
    MULTI_LABEL: "The training curves are in `training_curves.png`",
    SEGMENTATION: "Predictions over validation images are in `prediction_overlay.png` (image, truth, prediction), the "
    "pixel confusion matrix and the training curves in `confusion_matrix.png` and `training_curves.png`",
    DETECTION: "Predictions over validation images are in `predictions.png` (true boxes white), the training curves in "
    "`training_curves.png`; the metrics count the detections above the pipeline's default score threshold (0.5)",
}


@dataclass
class CardFacts:
    """Everything the card states, gathered by the run."""

    model_name: str
    base_model: str | None
    variant: str | None
    architecture: str
    dataset: str
    hub_dataset: str | None
    label_names: list[str]
    num_train: int
    num_validation: int
    image_size: int
    hyperparameters: dict[str, Any]
    results: dict[str, float]
    task: str = CLASSIFICATION
    per_label: dict[str, float] | None = None
    # For a head whose backbone plain transformers cannot build: why loading it needs convnext_hf.
    loading_note: str | None = None


def _usage(repo_or_path: str, task: str, loading_note: str | None = None) -> str:
    if task == DETECTION:
        # The detector is transformers' own class; its backbone is the built-in ConvNext unless the note says otherwise.
        registration = "import convnext_hf  # registers the ConvNeXt backbone\n" if loading_note else ""
        return (
            "```python\n"
            f"{registration}"
            "from transformers import pipeline\n\n"
            f'detector = pipeline("object-detection", model="{repo_or_path}")\n'
            'print(detector("photo.jpg"))  # [{"score", "label", "box": {"xmin", "ymin", "xmax", "ymax"}}, ...]\n'
            "```"
        )
    if task == SEGMENTATION:
        # UperNet is transformers' own class; its backbone is the built-in ConvNext unless the note says otherwise.
        registration = "import convnext_hf  # registers the ConvNeXt backbone\n" if loading_note else ""
        return (
            "```python\n"
            f"{registration}"
            "from transformers import pipeline\n\n"
            f'segmenter = pipeline("image-segmentation", model="{repo_or_path}")\n'
            'print(segmenter("photo.jpg"))  # one mask per class present\n'
            "```" + (f"\n\n{loading_note}" if loading_note else "")
        )
    scores = " (a sigmoid score per label)" if task == MULTI_LABEL else ""
    return (
        "```python\n"
        "from transformers import pipeline\n\n"
        f'classifier = pipeline("image-classification", model="{repo_or_path}", trust_remote_code=True)\n'
        f'print(classifier("photo.jpg")){"  #" + scores if scores else ""}\n'
        "```\n\n"
        "The model's code travels with the weights (`trust_remote_code=True`); with `convnext-hf` installed, "
        "`import convnext_hf` first and the flag is not needed."
    )


def build_model_card(facts: CardFacts, repo_or_path: str) -> ModelCard:
    """A Hub model card with metadata (base model, dataset, results as model-index) and a readable body."""
    pipeline_tag = _PIPELINE[facts.task]
    eval_results = [
        EvalResult(
            task_type=pipeline_tag,
            dataset_type=facts.hub_dataset or "imagefolder",
            dataset_name=facts.hub_dataset or os.path.basename(os.path.normpath(facts.dataset)),
            dataset_split="validation",
            metric_type=metric,
            metric_name=name,
            metric_value=facts.results[key],
        )
        for key, metric, name in _RESULTS[facts.task]
        if key in facts.results and metric is not None
    ]
    card_data = ModelCardData(
        model_name=facts.model_name,
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        tags=["convnext", pipeline_tag, "vision", "convnext-hf"]
        + (["upernet"] if facts.task == SEGMENTATION else [])
        + ([facts.hyperparameters.get("detector", "")] if facts.task == DETECTION else []),
        # The Hub takes a repository id here; a local folder is named in the text only.
        base_model=facts.base_model if facts.base_model and not os.path.isdir(facts.base_model) else None,
        datasets=[facts.hub_dataset] if facts.hub_dataset else None,
        metrics=sorted({metric for _, metric, _ in _RESULTS[facts.task] if metric is not None}),
        eval_results=eval_results or None,
    )
    origin = (
        f"fine-tuned from [`{facts.base_model}`]({_link(facts.base_model)})"
        if facts.base_model
        else f"trained from scratch (starting from variant `{facts.variant}`)"
    )
    shown = facts.label_names if len(facts.label_names) <= 20 else facts.label_names[:20] + ["…"]
    results = {name: f"{facts.results[key]:.2%}" for key, _, name in _RESULTS[facts.task] if key in facts.results}
    if "eval_loss" in facts.results:
        results["loss"] = f"{facts.results['eval_loss']:.4f}"
    body = f"""
# {facts.model_name}

{_WHAT[facts.task]} ("A ConvNet for the 2020s", Liu et al., CVPR 2022), {origin} on {facts.dataset}, with
convnext-hf {__version__} and transformers' `Trainer`.

Architecture: {facts.architecture}.

## Data

{len(facts.label_names)} classes: {", ".join(f"`{name}`" for name in shown)}.
{facts.num_train} training images, {facts.num_validation} validation images, at {facts.image_size}×{facts.image_size}.

## Results on the validation images

{facts_table(results) if results else "No validation set was used."}
{_per_label_table(facts)}
{_PICTURES[facts.task]}; all numbers in `metrics.json`.

## Training hyperparameters

{facts_table(facts.hyperparameters)}

## Usage

{_usage(repo_or_path, facts.task, facts.loading_note)}

## Framework versions

transformers {transformers.__version__}, torch {torch.__version__}, convnext-hf {__version__}.
"""
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}")


def _per_label_table(facts: CardFacts) -> str:
    """Per-label AP (multi-label) or IoU (segmentation), one row per label; empty for single-label classifiers."""
    if not facts.per_label:
        return ""
    score = _PER_LABEL[facts.task]
    rows = {
        # NaN or None: the label never occurs in validation.
        name: "—" if value is None or value != value else f"{value:.2%}"
        for name, value in facts.per_label.items()
    }
    return "\n" + facts_table(rows, header=("label" if facts.task == MULTI_LABEL else "class", score)) + "\n"


def _link(model: str) -> str:
    return model if os.path.isdir(model) else f"https://huggingface.co/{model}"
