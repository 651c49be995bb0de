"""The model card (README.md) of a trained model: where it came from, what it saw, how it was trained, how it scores."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import transformers
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .. import __version__
from ..card_table import code_span, facts_table
from ..cli import printable
from ..tasks import IMAGE_CLASSIFICATION, get_task


@dataclass(frozen=True)
class TaskCard:
    """What a task's trained-model card says: what the model is, its results (metric key, model-index metric type or
    None for the text only, name), the per-label score and its column, the pictures the run writes, extra tags, the
    usage snippet, and the head named before the ConvNeXt in the architecture line."""

    what: str
    results: tuple[tuple[str, str | None, str], ...]
    pictures: str
    usage: Callable[[str], str]
    per_label: str | None = None
    per_label_column: str = "class"
    tags: tuple[str, ...] = ()
    head: Callable[[Any], str] = lambda model: ""
    # The value a metric takes where there was nothing to measure (COCO's -1), shown as "n/a".
    not_measured: float | None = None

    def measured(self, value: float | None) -> bool:
        """Whether `value` is a measurement (not None, NaN or the task's `not_measured`)."""
        return value is not None and value == value and value != self.not_measured


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
    num_train: int | str  # "streamed" for a stream, whose length is not known
    num_validation: int
    image_size: int
    hyperparameters: dict[str, Any]
    results: dict[str, float]
    task: str = IMAGE_CLASSIFICATION
    per_label: dict[str, float] | None = None
    # For a head whose backbone plain transformers cannot build: why loading it needs convnext_hf.
    loading_note: str | None = None
    # With an EMA: which weights were saved, and the scores that chose them.
    saved_weights: str | None = None
    # What the checks of the data left out or found (ImageData.notes).
    data_notes: list[str] = field(default_factory=list)
    # For a head started from a ConvNeXt folder: what `load_backbone_weights` copied into its backbone.
    backbone_weights: str | None = None


def build_model_card(facts: CardFacts, repo_or_path: str) -> ModelCard:
    """A Hub model card with metadata (base model, dataset, results as model-index) and a readable body."""
    task = get_task(facts.task)
    pipeline_tag, spec = task.pipeline_tag, task.hooks.CARD
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
        for key, metric, name in spec.results
        if key in facts.results and metric is not None and spec.measured(facts.results[key])
    ]
    card_data = ModelCardData(
        model_name=facts.model_name,
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        tags=["convnext", pipeline_tag, "vision", "convnext-hf", *spec.tags],
        # The Hub takes a repository id here; a local folder is named in the text only.
        base_model=facts.base_model if facts.base_model and not os.path.isdir(facts.base_model) else None,
        datasets=[facts.hub_dataset] if facts.hub_dataset else None,
        metrics=sorted({metric for _, metric, _ in spec.results if metric is not None}),
        eval_results=eval_results or None,
    )
    origin = (
        f"fine-tuned from [{code_span(facts.base_model)}]({printable(_link(facts.base_model))})"
        if facts.base_model
        else f"trained from scratch (starting from variant `{facts.variant}`)"
    )
    shown = facts.label_names if len(facts.label_names) <= 20 else facts.label_names[:20] + ["…"]
    results = {name: _percent(facts.results[key], spec) for key, _, name in spec.results if key in facts.results}
    if "eval_loss" in facts.results:
        results["loss"] = f"{facts.results['eval_loss']:.4f}"
    weights = f"\n\nBackbone weights: {facts.backbone_weights}" if facts.backbone_weights else ""
    body = f"""
# {printable(facts.model_name)}

{spec.what} ("A ConvNet for the 2020s", Liu et al., CVPR 2022), {origin} on {printable(facts.dataset)}, with
convnext-hf {__version__} and transformers' `Trainer`.

Architecture: {facts.architecture}.{weights}

## Data

{len(facts.label_names)} classes: {", ".join(code_span(name) for name in shown)}.
{facts.num_train} training images, {facts.num_validation} validation images, at {facts.image_size}×{facts.image_size}.
{"".join(f"{chr(10)}- {printable(note)}" for note in facts.data_notes)}

## Results on the validation images

{facts_table(results) if results else "No validation set was used."}
{_per_label_table(facts, spec)}{_saved_weights(facts)}
{spec.pictures}; all numbers in `metrics.json`.

## Training hyperparameters

{facts_table(facts.hyperparameters)}

## Usage

{spec.usage(repo_or_path)}{f"{chr(10) * 2}{facts.loading_note}" if facts.loading_note else ""}

## Framework versions

transformers {transformers.__version__}, torch {torch.__version__}, convnext-hf {__version__}.
"""
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}")


def _per_label_table(facts: CardFacts, spec: TaskCard) -> str:
    """The task's per-label score (AP, IoU), one row per label; empty when the task has none."""
    if not facts.per_label or spec.per_label is None:
        return ""
    # None, NaN or the task's not-measured value: the label never occurs in validation.
    rows = {name: _percent(value, spec) for name, value in facts.per_label.items()}
    return "\n" + facts_table(rows, header=(spec.per_label_column, spec.per_label)) + "\n"


def _percent(value: float | None, spec: TaskCard) -> str:
    """A score as a percentage, "n/a" where there was nothing to measure."""
    return f"{value:.2%}" if spec.measured(value) else "n/a"


def _saved_weights(facts: CardFacts) -> str:
    """Which weights these are when the run kept an EMA of them."""
    return f"\n{facts.saved_weights}\n\n" if facts.saved_weights else ""


def _link(model: str) -> str:
    return model if os.path.isdir(model) else f"https://huggingface.co/{model}"
