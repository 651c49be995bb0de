"""Semantic segmentation's `convnext-hf evaluate` scorer: mean IoU, per-class IoU and pixel accuracy on image/mask
pairs, with the folder's own processor.

Each image is read as `pipeline("image-segmentation")` reads it (`load_image`: EXIF orientation, RGB), goes through
the folder's processor in batches, and its logits are resized to the image and reduced to the best class per pixel
by the processor's `post_process_semantic_segmentation`, the very call of the pipeline: the scores are those of the
pipeline's masks. Masks are read at the image's size, their ids mapped as the processor maps segmentation maps: with
`do_reduce_labels` (the converted ADE20K models), mask id 0 ("other") is ignored and id k is class k-1, as
mmsegmentation's `reduce_zero_label`; 255 is ignored either way. A mask holding an id beyond the model's classes is
refused, with its path and pixel counts, before the model runs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import transformers

from ...errors import UserInputError
from ...evaluation import load_model, write_outputs
from ...images import read_image
from ...metrics.mean_iou import confusion_counts, iou_scores
from ...train.arguments import DataArguments
from .data import IGNORE_INDEX, drop_bad_pairs, mask_ids, pairs_from_file, pairs_from_folders
from .plots import OVERLAY_NAME, draw_overlay

OVERLAY_ROWS = 4
SHOWN_BAD_MASKS = 10


def load_pairs(args: argparse.Namespace) -> datasets.Dataset:
    """The image and mask paths to score: `--validation_dir` with `--validation_mask_dir`, or `--validation_file`."""
    if args.dataset_name is not None:
        raise UserInputError(
            "Segmentation is scored on image/mask pairs: pass --validation_dir IMAGES --validation_mask_dir MASKS, or "
            "--validation_file with image and mask columns (Hub datasets are not supported for segmentation)."
        )
    if args.validation_dir is not None:
        pairs = pairs_from_folders(args.validation_dir, args.validation_mask_dir, "validation")
    else:
        if args.validation_mask_dir is not None:
            raise UserInputError(
                "--validation_mask_dir goes with --validation_dir; --validation_file names the masks in its own "
                "column (--mask_column_name)."
            )
        data_args = DataArguments(image_column_name=args.image_column_name, mask_column_name=args.mask_column_name)
        pairs = pairs_from_file(args.validation_file, data_args, args.cache_dir)
    pairs = drop_bad_pairs(pairs, "validation", args.on_bad_image)
    if args.max_eval_samples is not None:
        pairs = pairs.select(range(min(args.max_eval_samples, len(pairs))))
    return pairs


def label_map(processor: Any, num_labels: int) -> tuple[bool, str]:
    """Whether the processor reduces labels, and the sentence saying which mask ids are which classes."""
    reduce = bool(getattr(processor, "do_reduce_labels", False))
    if reduce:
        return True, (
            f"reduced as the processor does (do_reduce_labels): mask id 0 is ignored, ids 1..{num_labels} are classes "
            f"0..{num_labels - 1}, {IGNORE_INDEX} is ignored"
        )
    return False, f"as they are: ids 0..{num_labels - 1} are the classes, {IGNORE_INDEX} is ignored"


def model_class_ids(path: str, num_labels: int, reduce: bool) -> np.ndarray:
    """A mask's class ids as the model's classes (reduced when the processor reduces labels; 255 ignored)."""
    ids = mask_ids(path, num_labels)
    if reduce:
        # The processor's own reduce_label: 0 becomes 255 (ignored), every other id moves down by one.
        ids = np.where(ids == 0, IGNORE_INDEX, ids - 1)
        ids[ids == IGNORE_INDEX - 1] = IGNORE_INDEX
    return ids


def check_masks(masks: list[str], num_labels: int, reduce: bool, mapping: str) -> None:
    """Refuse, by path and with pixel counts, masks holding ids beyond the model's classes."""
    bad = []
    for path in masks:
        ids = model_class_ids(path, num_labels, reduce)
        values, counts = np.unique(ids[(ids != IGNORE_INDEX) & ((ids < 0) | (ids >= num_labels))], return_counts=True)
        if values.size:
            shift = 1 if reduce else 0
            found = ", ".join(
                f"id {value + shift} ({count} pixels)" for value, count in zip(values, counts, strict=True)
            )
            bad.append(f"  {path}: {found}")
    if bad:
        listing = "\n".join(bad[:SHOWN_BAD_MASKS]) + (f"\n  ... {len(bad) - SHOWN_BAD_MASKS} more" if len(bad) >
                                                      SHOWN_BAD_MASKS else "")  # fmt: skip
        raise UserInputError(
            f"{len(bad)} mask(s) hold ids beyond the model's {num_labels} classes:\n{listing}\n"
            f"The model reads mask ids {mapping}; fix or remove these masks."
        )


def evaluate(args: argparse.Namespace, config: transformers.PretrainedConfig) -> dict[str, Any]:
    """Score the segmentation folder on the image/mask pairs; write metrics.json, predictions.csv, the confusion
    matrix and the prediction overlay."""
    model, processor = load_model(args, transformers.AutoModelForSemanticSegmentation)
    pairs = load_pairs(args)
    num_labels = config.num_labels
    names = [str(config.id2label[index]) for index in range(num_labels)]
    reduce, mapping = label_map(processor, num_labels)
    check_masks(pairs["mask"], num_labels, reduce, mapping)
    counts = np.zeros((num_labels, num_labels), dtype=np.int64)
    rows, shown, model_seconds = [], [], 0.0
    started = time.perf_counter()
    for start in range(0, len(pairs), args.batch_size):
        batch = pairs[start : start + args.batch_size]
        images = [read_image(path) for path in batch["image"]]
        inputs = processor(images=images, return_tensors="pt").to(model.device)
        model_started = time.perf_counter()
        with torch.inference_mode():
            outputs = model(**inputs)
        model_seconds += time.perf_counter() - model_started
        # The pipeline's post-processing: logits resized to each image (bilinear), then the best class per pixel.
        sizes = [image.size[::-1] for image in images]
        maps = processor.post_process_semantic_segmentation(outputs, target_sizes=sizes)
        for image, image_path, mask_path, predicted in zip(images, batch["image"], batch["mask"], maps, strict=True):
            predicted = predicted.cpu().numpy()
            truth = model_class_ids(mask_path, num_labels, reduce)
            if truth.shape != predicted.shape:
                raise UserInputError(
                    f"Mask {mask_path} is {truth.shape[1]}×{truth.shape[0]} pixels but its image {image_path} is "
                    f"{image.width}×{image.height} (after its EXIF orientation); a mask must label every pixel."
                )
            image_counts = confusion_counts(predicted, truth, num_labels)
            counts += image_counts
            scores = iou_scores(image_counts)
            rows.append((image_path, mask_path, f"{scores['mean_iou']:.6f}", f"{scores['pixel_accuracy']:.6f}"))
            if len(shown) < OVERLAY_ROWS:
                shown.append((image, truth, predicted))
    seconds = time.perf_counter() - started
    scores = iou_scores(counts)
    present = [index for index in range(num_labels) if counts[index].sum() + counts[:, index].sum() > 0]
    report = {
        "model": args.model,
        "data": args.validation_dir or args.validation_file,
        "num_images": len(rows),
        "mask_ids": mapping,
        "mean_iou": scores["mean_iou"],
        "pixel_accuracy": scores["pixel_accuracy"],
        "per_class_iou": dict(zip(names, scores["per_class_iou"], strict=True)),
        "throughput_images_per_second": len(rows) / seconds,
        "model_images_per_second": len(rows) / model_seconds,
        "device": str(model.device),
        "batch_size": args.batch_size,
    }

    def overlay(staging: Path) -> None:
        draw_overlay(shown, num_labels, str(staging / OVERLAY_NAME))

    write_outputs(args, report, ["image", "mask", "mean_iou", "pixel_accuracy"], rows, counts[np.ix_(present, present)],
                  [names[index] for index in present], plots=overlay)  # fmt: skip
    return report
