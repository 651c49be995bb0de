"""Object detection's hooks: what `convnext-hf train`, `evaluate` and `demo` call for it (see `convnext_hf.tasks`).

Training uses the detector's own matching loss on box-aware augmentations; evaluation makes detections as
`pipeline("object-detection")` does (the processor's post-processing at each image's size, boxes truncated to
pixels) and scores them under COCO's protocol (every score, 100 per image, crowd boxes ignored: `metrics.py`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import transformers
from torch import nn
from transformers import EvalPrediction
from transformers.trainer_utils import PredictionOutput

from ...errors import UserInputError
from ...images import read_image
from ...portable import needs_convnext_hf_sentence, portable_head
from ...train.arguments import RunArguments
from ...train.card import TaskCard
from ...train.data import ImageData
from ...train.mixup import Mixup
from ...train.report import FinalEvaluation
from .augment import BoxAugment
from .batches import collate_detection, truth_objects, with_detection_transforms
from .data import coco_ground_truth, load_detection_data
from .demo import run_demo
from .evaluate import evaluate
from .metrics import (
    MAX_DETECTIONS,
    NOT_MEASURED,
    PROTOCOL,
    SUMMARY_KEYS,
    coco_metrics,
    detections_from_results,
    not_measured,
)
from .model import DETECTORS, build_detection_processor, build_detector, detector_overrides
from .report import PREDICTIONS_NAME, draw_detections, save_prediction_grid, shown_caption
from .scoring import PIPELINE_THRESHOLD, post_process, predict

__all__ = [
    "CARD",
    "MAIN_METRIC",
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
    "report_fields",
    "run_demo",
    "write_plots",
]

collate = collate_detection
configuration_overrides = detector_overrides
# The metric that picks the best checkpoint when the run evaluates as it trains.
MAIN_METRIC = "map"


def load_data(args: RunArguments) -> ImageData:
    """The run's images and boxes (COCO files or a Hub dataset in the `objects` layout), checked and split."""
    return load_detection_data(args.data, seed=args.training.seed, cache_dir=args.model.cache_dir)


def build_model(args: RunArguments, data: ImageData) -> nn.Module:
    """The detector for the data's classes: new on a variant, on a ConvNeXt folder's weights, or a detector folder."""
    return build_detector(args.model, data.label_names)


def build_processor(args: RunArguments, model: nn.Module) -> transformers.BaseImageProcessor:
    """The detector's image processor at --image_size² (default: the detector folder's, else 640)."""
    return build_detection_processor(args.model, model)


def check_arguments(args: RunArguments) -> None:
    """Refuse the classification augmentations, which would not move the boxes; keep evaluation batches apart."""
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
            f"{', '.join(given)}: classification augmentations, which would not move the boxes with the images; "
            "drop them for object detection (its augmentation is --scale_range, --hflip and --photometric)."
        )
    # Each evaluation batch's targets are a list of per-image dicts, which the Trainer cannot concatenate.
    training.eval_do_concat_batches = False


def attach_transforms(args: RunArguments, data: ImageData, processor: Any) -> ImageData:
    """Box-aware augmentation (--photometric, --scale_range, --hflip) then the processor for training; the processor
    alone for validation."""
    recipe = args.recipe
    if len(recipe.scale_range) != 2 or not 0 < recipe.scale_range[0] <= recipe.scale_range[1]:
        raise UserInputError(f"--scale_range takes two factors 0 < min <= max, got {recipe.scale_range}.")
    if not 0 <= recipe.photometric < 1:
        raise UserInputError(f"--photometric must be in [0, 1), got {recipe.photometric}.")
    augment = BoxAugment(
        scale_range=(recipe.scale_range[0], recipe.scale_range[1]), hflip=recipe.hflip, photometric=recipe.photometric
    )
    return with_detection_transforms(data, augment, processor)


def augmentation_hyperparameters(args: RunArguments, image_size: int) -> dict[str, Any]:
    """The detection rows of the card's hyperparameters."""
    recipe = args.recipe
    return {
        "detector": args.model.detector,
        "scale jitter": f"×{recipe.scale_range[0]:g}–{recipe.scale_range[1]:g} (zoom in: random crop, boxes clipped; "
        "zoom out: padded)",
        "photometric jitter": recipe.photometric,
    }


def _post_processor(model: nn.Module) -> Any:
    """An image processor of the detector's kind, for its post-processing (which needs none of its settings)."""
    return getattr(transformers, DETECTORS[model.config.model_type].processor_class)()


DIVERGED = ("the detector's outputs are NaN or infinite: its weights have grown past what float32 holds (a diverged "
            "run). Lower --learning_rate or the loss weights in --config_overrides, or resume from an earlier "
            "checkpoint")  # fmt: skip


def _refuse_non_finite_outputs(outputs: Any) -> None:
    """Found by the fuzzer: a detector trained at a learning rate of 1e30 keeps finite but huge weights whose boxes
    are NaN, and transformers' matcher or the COCO metrics then fail with a traceback."""
    if not (torch.isfinite(outputs.logits).all() and torch.isfinite(outputs.pred_boxes).all()):
        raise UserInputError(f"{DIVERGED}.")


def compute_loss(model: nn.Module, inputs: dict[str, Any], mixup: Mixup) -> tuple[torch.Tensor, Any]:
    """The detector's own matching loss; while evaluating, also every query post-processed at its image's size."""
    try:
        outputs = model(pixel_values=inputs["pixel_values"], labels=inputs["labels"])
    except ValueError as error:
        # The matcher refuses NaN boxes with a ValueError before any loss exists: name the cause when it is that.
        with torch.no_grad():
            _refuse_non_finite_outputs(model(pixel_values=inputs["pixel_values"]))
        raise error
    if model.training:
        return outputs.loss, outputs
    _refuse_non_finite_outputs(outputs)
    sizes = [tuple(int(side) for side in target["orig_size"]) for target in inputs["labels"]]
    # Every query's detections at any score: evaluation batches then have one row per query.
    results = post_process(_post_processor(model), outputs.logits, outputs.pred_boxes, sizes)
    kept = {key: torch.tensor([result[key] for result in results]) for key in ("scores", "labels", "boxes")}
    return outputs.loss, kept


def _scores(prediction: EvalPrediction, num_labels: int) -> dict[str, Any]:
    """The COCO metrics of evaluation batches (post-processed queries, targets), under COCO's protocol, against the
    boxes as the data gives them (crowd boxes and areas included)."""
    rows: dict[int, dict] = {}
    image_ids, results = [], []
    for (scores, labels, boxes), targets in zip(prediction.predictions, prediction.label_ids, strict=True):
        for score, label, box, target in zip(scores, labels, boxes, targets, strict=True):
            # The processor keeps the id as a one-element array.
            image_id = int(np.asarray(target["image_id"]).item())
            if image_id in rows:  # an image repeated to even out the processes' batches
                continue
            height, width = (int(side) for side in target["orig_size"])
            rows[image_id] = {"image_id": image_id, "width": width, "height": height,
                              "objects": truth_objects(target)}  # fmt: skip
            image_ids.append(image_id)
            results.append({"scores": score, "labels": label, "boxes": box})
    truth = coco_ground_truth(rows.values(), [str(index) for index in range(num_labels)])
    return coco_metrics(truth, detections_from_results(image_ids, results))


def compute_metrics(num_labels: int) -> Callable[[EvalPrediction], dict[str, float]]:
    """The Trainer's `compute_metrics`: the COCO summary (mAP, AP50, AP75, by size, AR) under COCO's protocol."""

    def coco_summary(prediction: EvalPrediction) -> dict[str, float]:
        scores = _scores(prediction, num_labels)
        return {key: scores[key] for key in SUMMARY_KEYS}

    return coco_summary


def final_evaluation(prediction: PredictionOutput, label_names: list[str]) -> FinalEvaluation:
    """The final metrics and the AP of every class."""
    per_class = _scores(prediction, len(label_names))["per_class_ap"]
    return FinalEvaluation(dict(prediction.metrics), per_label={name: per_class[str(index)]
                                                               for index, name in enumerate(label_names)})  # fmt: skip


def report_fields(final: FinalEvaluation, label_names: list[str]) -> dict[str, Any]:
    """metrics.json's protocol, per-class AP and what could not be measured."""
    if final.per_label is None:
        return {}
    scores = {**{key.removeprefix("eval_"): value for key, value in final.metrics.items()},
              "per_class_ap": final.per_label}  # fmt: skip
    return {"protocol": PROTOCOL, "per_class_ap": final.per_label, "not_measured": not_measured(scores)}


def write_plots(trainer: Any, raw_data: ImageData, final: FinalEvaluation, output_dir: str, count: int = 8) -> None:
    """predictions.png: the first validation images with their true (white) and predicted boxes."""
    if raw_data.validation is None or len(raw_data.validation) == 0:
        return
    rows = raw_data.validation.select(range(min(count, len(raw_data.validation))))
    images = [read_image(image) for image in rows["image"]]
    results = predict(trainer.model, trainer.processing_class, images, PIPELINE_THRESHOLD)
    pictures = [
        draw_detections(image, objects["bbox"], result, raw_data.label_names, objects["iscrowd"])
        for image, objects, result in zip(images, rows["objects"], results, strict=True)
    ]
    save_prediction_grid(pictures, os.path.join(output_dir, PREDICTIONS_NAME), shown_caption(PIPELINE_THRESHOLD))


def prepare_for_saving(model: nn.Module) -> str | None:
    """Put the built-in ConvNext backbone in where it expresses ours (plain transformers then loads the folder);
    return the card's note on why convnext_hf is needed where it does not."""
    portable_head(model)
    return needs_convnext_hf_sentence(model.config)


def _usage(repo_or_path: str) -> str:
    # The detector is transformers' own class, and the saved backbone is the built-in ConvNext where it can express
    # ours (`prepare_for_saving`; the card adds a note otherwise).
    return (
        "```python\n"
        "from transformers import pipeline\n\n"
        f'detector = pipeline("object-detection", model="{repo_or_path}")\n'
        'print(detector("photo.jpg"))  # [{"score", "label", "box": {"xmin", "ymin", "xmax", "ymax"}}, ...]\n'
        "```"
    )


def _head(model: nn.Module) -> str:
    config = model.config
    return (
        f"{type(model).__name__} (d_model {config.d_model}, {config.decoder_layers} decoder layers, "
        f"{config.num_queries} queries) on a "
    )


CARD = TaskCard(
    what="An object detector (a transformers DETR-family detector on a ConvNeXt backbone)",
    results=(
        ("eval_map", "mAP", "COCO mAP@[.5:.95]"),
        ("eval_map_50", "mAP@0.5", "AP50"),
        ("eval_map_75", "mAP@0.75", "AP75"),
        ("eval_mar_100", "mAR@100", "AR@100"),
    ),
    pictures=f"The metrics follow COCO's protocol (pycocotools: every detection, up to {MAX_DETECTIONS} per image "
    "ranked by score, no score threshold; crowd boxes are ignore regions; n/a: nothing of that kind to measure in "
    "the validation boxes). Predictions over validation images are in `predictions.png` (true boxes white; the "
    f"detections scored above {PIPELINE_THRESHOLD}, the pipeline's default threshold), the training curves in "
    "`training_curves.png`",
    usage=_usage,
    per_label="AP",
    tags=("detr",),
    head=_head,
    not_measured=NOT_MEASURED,
)
