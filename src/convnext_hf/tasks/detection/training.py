"""What `convnext-hf train --task object-detection` does beyond the common run: the detection hooks of the training
loop (data, model, transforms, loss inputs, metrics, final evaluation, report, card facts)."""

from __future__ import annotations

import os
from typing import Any

import datasets
import torch
import transformers

from ...complexity import parameter_count
from ...errors import UserInputError
from ...train.arguments import RunArguments
from ...train.data import ImageData
from .augment import BoxAugment
from .batches import collate_detection, with_detection_transforms
from .data import coco_ground_truth, load_detection_data
from .metrics import SUMMARY_KEYS
from .model import build_detection_processor, build_detector
from .report import PREDICTIONS_NAME, draw_detections, save_prediction_grid
from .scoring import PIPELINE_THRESHOLD, metric_function, predict, score_dataset

# The Trainer reports these under `eval_` (the card's results, by key, metric type and name).
CARD_RESULTS = (
    ("eval_map", "mAP", "COCO mAP@[.5:.95]"),
    ("eval_map_50", "mAP@0.5", "AP50"),
    ("eval_map_75", "mAP@0.75", "AP75"),
)


def load_data(args: RunArguments) -> ImageData:
    """The run's images and boxes (COCO files or a Hub dataset), checked and split."""
    return load_detection_data(args.data, seed=args.training.seed, cache_dir=args.model.cache_dir)


def model_and_processor(args: RunArguments, data: ImageData) -> tuple[transformers.PreTrainedModel, Any]:
    """The detector for the data's classes and its image processor."""
    model = build_detector(args.model, data.label_names)
    return model, build_detection_processor(args.model, model)


def attach_transforms(args: RunArguments, data: ImageData, processor: Any) -> ImageData:
    """Box-aware augmentation (--scale_range, --hflip, --photometric) and the processor."""
    recipe = args.recipe
    if len(recipe.scale_range) != 2 or not 0 < recipe.scale_range[0] <= recipe.scale_range[1]:
        raise UserInputError(f"--scale_range takes two factors 0 < min <= max, got {recipe.scale_range}.")
    if not 0 <= recipe.photometric < 1:
        raise UserInputError(f"--photometric must be in [0, 1), got {recipe.photometric}.")
    augment = BoxAugment(
        scale_range=(recipe.scale_range[0], recipe.scale_range[1]), hflip=recipe.hflip, photometric=recipe.photometric
    )
    return with_detection_transforms(data, augment, processor)


def trainer_inputs(args: RunArguments, raw_data: ImageData, processor: Any) -> dict[str, Any]:
    """The Trainer's collate function and `compute_metrics` (COCO, at the pipeline's threshold) for detection."""
    # Evaluation batches stay apart: their predictions are post-processed per image, not concatenated.
    args.training.eval_do_concat_batches = False
    metrics = None
    if raw_data.validation is not None:
        rows = raw_data.validation.select_columns(["image_id", "width", "height"])
        metrics = metric_function(
            processor,
            [(int(height), int(width)) for height, width in zip(rows["height"], rows["width"], strict=True)],
            rows["image_id"],
            coco_ground_truth(raw_data.validation, raw_data.label_names),
        )
    return {"data_collator": collate_detection, "compute_metrics": metrics}


def loss_and_outputs(model: torch.nn.Module, inputs: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The detector's own loss (Hungarian matching), and the outputs evaluation keeps: logits and boxes."""
    outputs = model(pixel_values=inputs["pixel_values"], labels=inputs["labels"])
    return outputs.loss, {"logits": outputs.logits, "pred_boxes": outputs.pred_boxes}


def final_evaluation(model: torch.nn.Module, processor: Any, raw_data: ImageData) -> tuple[dict[str, float], dict]:
    """The final weights' COCO table on the validation images, as the pipeline scores them: (`eval_*` metrics,
    per-class AP)."""
    if raw_data.validation is None:
        return {}, {}
    scores, _ = score_dataset(
        model, processor, raw_data.validation, coco_ground_truth(raw_data.validation, raw_data.label_names)
    )
    return {f"eval_{key}": scores[key] for key in SUMMARY_KEYS}, scores["per_class_ap"]


def write_pictures(model: torch.nn.Module, processor: Any, validation: datasets.Dataset | None, label_names: list[str],
                   output_dir: str, count: int = 8) -> None:  # fmt: skip
    """predictions.png: the first validation images with true (white) and predicted boxes."""
    if validation is None or len(validation) == 0:
        return
    rows = validation.select(range(min(count, len(validation))))
    images = [image.convert("RGB") for image in rows["image"]]
    results = predict(model, processor, images, PIPELINE_THRESHOLD)
    pictures = [
        draw_detections(image, objects["bbox"], result, label_names)
        for image, objects, result in zip(images, rows["objects"], results, strict=True)
    ]
    save_prediction_grid(pictures, os.path.join(output_dir, PREDICTIONS_NAME))


def describe(model: transformers.PreTrainedModel) -> str:
    """One line on the detector and its backbone."""
    config, backbone = model.config, model.config.backbone_config
    queries = getattr(config, "num_queries", None)
    return (
        f"{type(model).__name__} (d_model {config.d_model}, {config.decoder_layers} decoder layers, {queries} queries) "
        f"on a {backbone.num_stages}-stage ConvNeXt, widths {backbone.hidden_sizes}, depths {backbone.depths}, stages "
        f"{backbone.out_features} to the detector, {parameter_count(model) / 1e6:.2f} M parameters"
    )


def hyperparameters(args: RunArguments) -> dict[str, Any]:
    """The detection rows of the card's hyperparameter table."""
    recipe = args.recipe
    return {
        "detector": args.model.detector,
        "scale jitter": f"×{recipe.scale_range[0]:g}–{recipe.scale_range[1]:g} (zoom in: random crop, boxes clipped; "
        "zoom out: padded)",
        "photometric jitter": recipe.photometric,
        "score threshold of the reported metrics": f"{PIPELINE_THRESHOLD} (the pipeline's default)",
    }
