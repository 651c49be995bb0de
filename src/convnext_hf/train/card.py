"""The model card (README.md) of a trained model: where it came from, what it saw, how it was trained, how it scores."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import transformers
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .. import __version__


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


def _usage(repo_or_path: str) -> str:
    return (
        "```python\n"
        "from transformers import pipeline\n\n"
        f'classifier = pipeline("image-classification", model="{repo_or_path}", trust_remote_code=True)\n'
        'print(classifier("photo.jpg"))\n'
        "```\n\n"
        "The model's code travels with the weights (`trust_remote_code=True`); with `convnext-hf` installed, "
        "`import convnext_hf` first and the flag is not needed."
    )


def _table(rows: dict[str, Any]) -> str:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows.items()]
    return "\n".join(lines)


def build_model_card(facts: CardFacts, repo_or_path: str) -> ModelCard:
    """A Hub model card with metadata (base model, dataset, results as model-index) and a readable body."""
    eval_results = [
        EvalResult(
            task_type="image-classification",
            dataset_type=facts.hub_dataset or "imagefolder",
            dataset_name=facts.hub_dataset or os.path.basename(os.path.normpath(facts.dataset)),
            dataset_split="validation",
            metric_type=metric,
            metric_name=name,
            metric_value=facts.results[key],
        )
        for key, metric, name in (
            ("eval_accuracy", "accuracy", "Top-1 accuracy"),
            ("eval_top5_accuracy", "accuracy", "Top-5 accuracy"),
        )
        if key in facts.results
    ]
    card_data = ModelCardData(
        model_name=facts.model_name,
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=["convnext", "image-classification", "vision", "convnext-hf"],
        # The Hub takes a repository id here; a local folder is named in the text only.
        base_model=facts.base_model if facts.base_model and not os.path.isdir(facts.base_model) else None,
        datasets=[facts.hub_dataset] if facts.hub_dataset else None,
        metrics=["accuracy"],
        eval_results=eval_results or None,
    )
    origin = (
        f"fine-tuned from [`{facts.base_model}`]({_link(facts.base_model)})"
        if facts.base_model
        else f"trained from scratch (starting from variant `{facts.variant}`)"
    )
    shown = facts.label_names if len(facts.label_names) <= 20 else facts.label_names[:20] + ["…"]
    results = {
        name: f"{facts.results[key]:.2%}"
        for key, name in (
            ("eval_accuracy", "top-1 accuracy"),
            ("eval_top5_accuracy", "top-5 accuracy"),
            ("eval_ema_accuracy", "top-1 accuracy of the EMA weights"),
        )
        if key in facts.results
    }
    if "eval_loss" in facts.results:
        results["loss"] = f"{facts.results['eval_loss']:.4f}"
    body = f"""
# {facts.model_name}

A ConvNeXt image classifier ("A ConvNet for the 2020s", Liu et al., CVPR 2022), {origin} on {facts.dataset}, with
convnext-hf {__version__} and transformers' `Trainer`.

Architecture: {facts.architecture}.

## Data

{len(facts.label_names)} classes: {", ".join(f"`{name}`" for name in shown)}.
{facts.num_train} training images, {facts.num_validation} validation images, at {facts.image_size}×{facts.image_size}.

## Results on the validation images

{_table(results) if results else "No validation set was used."}

The confusion matrix and the training curves are in `confusion_matrix.png` and `training_curves.png`; all numbers in
`metrics.json`.

## Training hyperparameters

{_table(facts.hyperparameters)}

## Usage

{_usage(repo_or_path)}

## Framework versions

transformers {transformers.__version__}, torch {torch.__version__}, convnext-hf {__version__}.
"""
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}")


def _link(model: str) -> str:
    return model if os.path.isdir(model) else f"https://huggingface.co/{model}"
