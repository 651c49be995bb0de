"""Image classification's `convnext-hf evaluate` scorer: top-1/top-5, per-class accuracy and the confusion matrix.

Images are read and converted as `pipeline("image-classification")` reads them (`load_image`: EXIF orientation,
RGB), go through the folder's image processor in batches, and the top-1 class of each is the pipeline's.

Folder class names are matched to the model's labels by name; when they are not its label names but there are as
many folders as classes (ImageNet's `val/n01440764/...` against a model that names its classes in words), folder i
in sorted order is class i, the convention that every ImageNet evaluation script follows.
"""

from __future__ import annotations

import argparse
from typing import Any

import datasets
import numpy as np
import torch
import transformers

from ...errors import UserInputError
from ...evaluation import load_model, predict, write_outputs
from ...metrics import load_topk_accuracy
from ...train.arguments import scored_data_arguments
from ...train.report import confusion_matrix
from .data import load_image_data

BY_NAME = "by name"
BY_POSITION = "by sorted position (folder i is class i)"


def label_ids(data_names: list[str], config: transformers.PretrainedConfig) -> tuple[list[int], str]:
    """The model's class id of each data class name, and how they were matched."""
    label2id = {str(name): index for index, name in config.id2label.items()}
    if all(name in label2id for name in data_names):
        return [label2id[name] for name in data_names], BY_NAME
    named = [name for name in data_names if name in label2id]
    if named:
        # Some folders carry the model's label names: matching the rest by position could score one class as another.
        unknown = [name for name in data_names if name not in label2id]
        raise UserInputError(
            f"The data's classes {unknown[:5]}{'…' if len(unknown) > 5 else ''} are not among the model's labels "
            f"(e.g. {list(label2id)[:3]}), while {named[:3]} are; name every class folder as the model's label, or "
            "leave out the classes the model does not know."
        )
    if len(data_names) == config.num_labels:
        return list(range(config.num_labels)), BY_POSITION
    unknown = [name for name in data_names if name not in label2id]
    raise UserInputError(
        f"The data's classes {unknown[:5]}{'…' if len(unknown) > 5 else ''} are not among the model's "
        f"{config.num_labels} labels (e.g. {list(label2id)[:3]}), and there are {len(data_names)} classes, not "
        f"{config.num_labels}, so they cannot be matched by position either. Name the class folders as the model's "
        "labels, or keep one folder per model class."
    )


def load_labelled_images(args: argparse.Namespace, task: str | None = None) -> tuple[datasets.Dataset, list[str]]:
    """The labelled images to score (a Hub dataset's validation split, or the folder or file) and their names."""
    data_args = scored_data_arguments(
        args,
        train_file=args.validation_file,
        image_column_name=args.image_column_name,
        label_column_name=args.label_column_name,
        max_eval_samples=args.max_eval_samples,
    )
    data = load_image_data(data_args, seed=0, cache_dir=args.cache_dir, task=task, scoring=True)
    # A Hub dataset's validation split is the one to score; a folder or file is loaded as the only split.
    images = data.validation if data.validation is not None else data.train
    if data.validation is None and args.max_eval_samples is not None:
        images = images.select(range(min(args.max_eval_samples, len(images))))
    return images, data.label_names


def evaluate(args: argparse.Namespace, config: transformers.PretrainedConfig) -> dict[str, Any]:
    """Score the classifier folder on the labelled images; write metrics.json, predictions.csv and the confusion
    matrix."""
    model, processor = load_model(args, transformers.AutoModelForImageClassification)
    images, data_names = load_labelled_images(args)
    ids, matching = label_ids(data_names, config)
    logits, paths, report = predict(args, model, processor, images)
    report["label_matching"] = matching
    model_names = [str(config.id2label[index]) for index in range(config.num_labels)]
    references = np.asarray(ids)[np.asarray(images["label"])]
    predicted = logits.argmax(axis=1)
    # The training run's metric, so both report the same top-k (top-5, only with more than five classes).
    topk = load_topk_accuracy().compute(predictions=logits, references=references)
    counts = confusion_matrix(predicted, references, config.num_labels)
    present = sorted(set(references.tolist()))
    report.update(
        {
            "top1_accuracy": topk.pop("accuracy"),
            **topk,
            "per_class_accuracy": {
                model_names[index]: float(counts[index, index] / counts[index].sum()) for index in present
            },
        }
    )
    probabilities = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    rows = [
        (path, model_names[reference], model_names[guess], f"{probabilities[row, guess]:.6f}")
        for row, (path, reference, guess) in enumerate(zip(paths, references, predicted, strict=True))
    ]
    write_outputs(args, report, ["image", "label", "predicted", "score"], rows, counts[np.ix_(present, present)],
           [model_names[index] for index in present])  # fmt: skip
    return report


