"""One training run, from arguments to a Hub-ready folder: data, model, recipe, Trainer, final evaluation, report."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import EvalPrediction, TrainerCallback, set_seed
from transformers.trainer_utils import get_last_checkpoint

from ..complexity import parameter_count
from ..errors import OutputExistsError, UserInputError
from ..metrics import load_topk_accuracy
from ..metrics.mean_iou import confusion_counts, iou_scores
from ..metrics.multilabel import average_precision, multilabel_scores, sigmoid
from ..portable import needs_convnext_hf_sentence, portable_head
from ..tasks.detection import training as detection
from ..tasks.detection.model import DETECTORS
from .arguments import (
    CLASSIFICATION,
    DETECTION,
    MULTI_LABEL,
    REFERENCE_BATCH_SIZE,
    SEGMENTATION,
    RunArguments,
    parse_args,
)
from .augment import RandAugment, RandomResizedCrop, TrainTransform
from .card import CardFacts
from .data import ImageData, collate, load_image_data, with_transforms
from .ema import EmaCallback, ModelEma
from .mixup import Mixup
from .model import build_model, build_processor, freeze_backbone
from .report import (
    CONFUSION_MATRIX_NAME,
    METRICS_NAME,
    TRAINING_CURVES_NAME,
    confusion_matrix,
    plot_confusion_matrix,
    plot_training_curves,
    write_json,
)
from .segmentation import (
    OVERLAY_NAME,
    PairedTransform,
    build_segmentation_model,
    build_segmentation_processor,
    collate_segmentation,
    load_segmentation_data,
    plot_prediction_overlay,
    segmentation_labels,
    with_segmentation_transforms,
)
from .trainer import ConvNextTrainer

logger = logging.getLogger(__name__)


def _check_output_dir(args: RunArguments) -> None:
    training = args.training
    if training.output_dir is None:
        raise UserInputError("--output_dir is required: the folder that receives the trained model.")
    if (
        os.path.isdir(training.output_dir)
        and os.listdir(training.output_dir)
        and not training.resume_from_checkpoint
        and not args.output.overwrite_output_dir
    ):
        raise OutputExistsError(
            training.output_dir,
            "pass --overwrite_output_dir to train into it anyway or --resume_from_checkpoint to continue its run",
        )
    if args.recipe.model_ema and (training.fsdp or training.deepspeed):
        raise UserInputError(
            "--model_ema keeps a full copy of the weights on every process and cannot follow sharded weights "
            "(FSDP/DeepSpeed); drop --model_ema or train without sharding."
        )


def _resume_checkpoint(training_resume: str | bool | None, output_dir: str) -> str | None:
    """The checkpoint folder to resume from: the one named, or the last one in output_dir for `True`/'last'."""
    if training_resume in (None, False, "", "False", "false"):
        return None
    if training_resume in (True, "True", "true", "last"):
        checkpoint = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if checkpoint is None:
            raise UserInputError(f"--resume_from_checkpoint: no checkpoint-* folder in {output_dir} to resume from.")
        return checkpoint
    if not os.path.isdir(training_resume):
        raise UserInputError(f"--resume_from_checkpoint {training_resume} is not a checkpoint folder.")
    return str(training_resume)


def _train_transform(args: RunArguments, processor: Any) -> TrainTransform:
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


def _total_batch(training: Any) -> int:
    """Images per optimizer step: per-device batch × processes × gradient accumulation."""
    return training.per_device_train_batch_size * training.world_size * training.gradient_accumulation_steps


def _apply_base_learning_rate(args: RunArguments) -> None:
    """Set --learning_rate from --base_learning_rate by the linear scaling rule, and print it."""
    base = args.recipe.base_learning_rate
    if base is None:
        return
    total = _total_batch(args.training)
    args.training.learning_rate = base * total / REFERENCE_BATCH_SIZE
    logger.info(
        "Learning rate %.3g = base learning rate %.3g × total batch %d / %d",
        args.training.learning_rate, base, total, REFERENCE_BATCH_SIZE,
    )  # fmt: skip


def _trained_part(args: RunArguments) -> str:
    recipe = args.recipe
    if not recipe.freeze_backbone:
        return "everything"
    if recipe.unfreeze_last_stages:
        return f"heads and the last {recipe.unfreeze_last_stages} backbone stage(s)"
    return "heads only (frozen backbone: linear probe)"


def _hyperparameters(args: RunArguments, image_size: int, drop_path_rate: float) -> dict[str, Any]:
    """The settings a reader of the model card needs to reproduce the run."""
    training, recipe = args.training, args.recipe
    optimizer = getattr(training.optim, "value", training.optim)
    schedule = getattr(training.lr_scheduler_type, "value", training.lr_scheduler_type)
    total_batch = _total_batch(training)
    learning_rate = training.learning_rate
    if recipe.base_learning_rate is not None:
        scaling = f"base {recipe.base_learning_rate} × {total_batch} / {REFERENCE_BATCH_SIZE}"
        learning_rate = f"{learning_rate:.3g} ({scaling})"
    return {
        "recipe": recipe.recipe or "(flags)",
        "trained": _trained_part(args),
        "optimizer": f"{optimizer} (betas {training.adam_beta1}, {training.adam_beta2})",
        "learning rate": learning_rate,
        "schedule": f"{schedule}, warmup {training.warmup_steps}",
        "weight decay": f"{training.weight_decay} (not on norms, biases, layer scale)",
        "layer-wise lr decay": recipe.layer_decay if recipe.layer_decay < 1 else "none",
        "total batch size": f"{total_batch} ({training.world_size} process(es))",
        "epochs": training.num_train_epochs if training.max_steps <= 0 else f"{training.max_steps} steps",
        "image size": image_size,
        **(
            detection.hyperparameters(args)
            if args.model.task == DETECTION
            else {"random rescale and crop": f"×{recipe.scale_range[0]:g}–{recipe.scale_range[1]:g}, {image_size}² "
                  "crop"}
            if args.model.task == SEGMENTATION
            else {
                "random-resized crop": f"scale ({recipe.rrc_scale_min}, 1), "
                f"ratio ({recipe.rrc_ratio[0]:.3g}, {recipe.rrc_ratio[1]:.3g})"
            }
        ),
        "horizontal flip": recipe.hflip,
        "RandAugment": recipe.rand_augment or "none",
        "random erasing": recipe.random_erasing,
        "Mixup / CutMix alpha": f"{recipe.mixup_alpha} / {recipe.cutmix_alpha}",
        "label smoothing": training.label_smoothing_factor,
        "stochastic depth": drop_path_rate,
        "EMA": recipe.model_ema_decay if recipe.model_ema else "none",
        "gradient clipping": training.max_grad_norm if training.max_grad_norm > 0 else "none",
        "precision": "bf16" if training.bf16 else "fp16" if training.fp16 else "fp32",
        "seed": training.seed,
    }


def _backbone_config(model: Any) -> Any:
    """The ConvNeXt configuration of a classifier or of an UperNet's backbone."""
    return getattr(model.config, "backbone_config", None) or model.config


def _image_size(processor: Any) -> int:
    """The side of the images the processor makes (shortest edge for classification, height for segmentation)."""
    return processor.size.get("shortest_edge") or processor.size["height"]


def _architecture(model: Any) -> str:
    """One line on the network's shape and size."""
    if getattr(model.config, "model_type", None) in DETECTORS:
        return detection.describe(model)
    config = _backbone_config(model)
    kind = "isotropic" if config.isotropic else f"{config.num_stages}-stage"
    parameters = parameter_count(model)
    head = f"UperNet ({model.config.hidden_size} channels) on a " if config is not model.config else ""
    return (
        f"{head}{kind} ConvNeXt, widths {config.hidden_sizes}, depths {config.depths}, "
        f"{config.patch_size}×{config.patch_size} patchify stem, {parameters / 1e6:.2f} M parameters"
    )


@dataclass
class FinalEvaluation:
    """The final weights' validation metrics, confusion counts (images or pixels) and per-label score (AP or IoU)."""

    metrics: dict[str, float]
    counts: np.ndarray | None = None
    per_label: dict[str, float] | None = None


def _final_evaluation(trainer: ConvNextTrainer, data: ImageData, raw_data: ImageData) -> FinalEvaluation:
    """Metrics, confusion counts and per-label scores of the final weights on the validation split."""
    if data.validation is None:
        return FinalEvaluation({})
    if trainer.task == DETECTION:
        # Scored as pipeline("object-detection") scores the saved folder, image by image at its own size.
        metrics, per_class = detection.final_evaluation(trainer.model, trainer.processing_class, raw_data)
        return FinalEvaluation(metrics, per_label=per_class)
    prediction = trainer.predict(data.validation, metric_key_prefix="eval")
    metrics, names = dict(prediction.metrics), data.label_names
    if trainer.task == MULTI_LABEL:
        ap = average_precision(sigmoid(prediction.predictions), prediction.label_ids)
        return FinalEvaluation(metrics, per_label=dict(zip(names, ap.tolist(), strict=True)))
    if trainer.task == SEGMENTATION:
        counts = confusion_counts(prediction.predictions, prediction.label_ids, len(names))
        iou = iou_scores(counts)["per_class_iou"]
        return FinalEvaluation(metrics, counts, dict(zip(names, iou, strict=True)))
    counts = confusion_matrix(prediction.predictions.argmax(axis=-1), prediction.label_ids, num_classes=len(names))
    return FinalEvaluation(metrics, counts)


def _model_and_processor(args: RunArguments, data: ImageData) -> tuple[Any, Any]:
    """The model for these labels and its processor, refused when the processor's images cannot feed it."""
    if args.model.task == DETECTION:
        model, processor = detection.model_and_processor(args, data)
    elif args.model.task == SEGMENTATION:
        model = build_segmentation_model(args.model, data.label_names)
        processor = build_segmentation_processor(args.model)
    else:
        model = build_model(args.model, data.label_names, multi_label=data.multi_label)
        processor = build_processor(args.model, model)
    config = _backbone_config(model)
    image_size = _image_size(processor)
    if image_size < config.total_stride:
        raise UserInputError(
            f"--image_size {image_size} is smaller than the model's total stride {config.total_stride}; "
            "train at a larger size or use a smaller patch_size."
        )
    if config.num_channels != 3:
        raise UserInputError(
            f"The model takes {config.num_channels}-channel images but the image processor makes RGB ones; "
            "train a model with num_channels 3."
        )
    return model, processor


def _metric_function(task: str, num_labels: int) -> Callable[[EvalPrediction], dict[str, float]]:
    """The Trainer's `compute_metrics` for the task: top-1/top-5, mAP and F1@0.5, or mean IoU and pixel accuracy."""
    if task == MULTI_LABEL:
        return lambda prediction: multilabel_scores(sigmoid(prediction.predictions), prediction.label_ids)
    if task == SEGMENTATION:

        def segmentation_scores(prediction: EvalPrediction) -> dict[str, float]:
            scores = iou_scores(confusion_counts(prediction.predictions, prediction.label_ids, num_labels))
            return {"mean_iou": scores["mean_iou"], "pixel_accuracy": scores["pixel_accuracy"]}

        return segmentation_scores
    metric = load_topk_accuracy()
    return lambda prediction: metric.compute(predictions=prediction.predictions, references=prediction.label_ids)


def _best_class_per_pixel(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Keep only the predicted class maps of a segmentation batch: full-size logits of every image would not fit."""
    return logits.argmax(dim=1)


def _build_trainer(
    args: RunArguments,
    data: ImageData,
    model: Any,
    processor: Any,
    callbacks: Sequence[TrainerCallback],
    task: str,
    raw_data: ImageData,
) -> ConvNextTrainer:
    recipe, training = args.recipe, args.training
    if data.validation is None and training.eval_strategy != "no":
        logger.info("No validation images: evaluation is off.")
        training.eval_strategy = "no"
    mixup = Mixup(
        num_classes=len(data.label_names),
        mixup_alpha=recipe.mixup_alpha,
        cutmix_alpha=recipe.cutmix_alpha,
        probability=recipe.mixup_prob,
        switch_probability=recipe.mixup_switch_prob,
        label_smoothing=training.label_smoothing_factor,
    )
    classification_only = {
        "--mixup_alpha/--cutmix_alpha": mixup.mixes,
        "--label_smoothing_factor": training.label_smoothing_factor > 0,
        "--rand_augment": recipe.rand_augment is not None,
        "--random_erasing": recipe.random_erasing > 0,
    }
    if task in (SEGMENTATION, DETECTION) and any(classification_only.values()):
        given = [flag for flag, used in classification_only.items() if used]
        moved, own = ("masks", "--scale_range, the crop and --hflip") if task == SEGMENTATION else (
            "boxes", "--scale_range, --hflip and --photometric")
        raise UserInputError(
            f"{', '.join(given)}: classification augmentations, which would not move the {moved} with the images; "
            f"drop them for {task} (its augmentation is {own})."
        )
    task_inputs = {
        "data_collator": collate_segmentation if task == SEGMENTATION else collate,
        "compute_metrics": _metric_function(task, len(data.label_names)) if task != DETECTION else None,
    }
    if task == DETECTION:
        task_inputs = detection.trainer_inputs(args, raw_data, processor)
    ema = ModelEma(model, recipe.model_ema_decay) if recipe.model_ema else None
    return ConvNextTrainer(
        model=model,
        args=training,
        train_dataset=data.train,
        eval_dataset=data.validation,
        processing_class=processor,
        **task_inputs,
        preprocess_logits_for_metrics=_best_class_per_pixel if task == SEGMENTATION else None,
        callbacks=([EmaCallback(ema)] if ema is not None else []) + list(callbacks),
        mixup=mixup,
        task=task,
        layer_decay=recipe.layer_decay,
        layer_decay_type=recipe.layer_decay_type,
        ema=ema,
    )


def _load_data(args: RunArguments) -> ImageData:
    """The labelled images (or image/mask pairs) of the run, with their label names."""
    training = args.training
    with training.main_process_first(desc="loading and checking the images"):
        if args.model.task == DETECTION:
            return detection.load_data(args)
        if args.model.task == SEGMENTATION:
            label_names = segmentation_labels(args.model, args.data)
            return load_segmentation_data(args.data, label_names, seed=training.seed, cache_dir=args.model.cache_dir)
        return load_image_data(args.data, seed=training.seed, cache_dir=args.model.cache_dir, task=args.model.task)


def _attach_transforms(args: RunArguments, data: ImageData, processor: Any) -> ImageData:
    if args.model.task == DETECTION:
        return detection.attach_transforms(args, data, processor)
    if args.model.task != SEGMENTATION:
        return with_transforms(data, _train_transform(args, processor), processor)
    recipe = args.recipe
    if len(recipe.scale_range) != 2 or not 0 < recipe.scale_range[0] <= recipe.scale_range[1]:
        raise UserInputError(f"--scale_range takes two factors 0 < min <= max, got {recipe.scale_range}.")
    paired = PairedTransform(
        size=_image_size(processor),
        scale_range=(recipe.scale_range[0], recipe.scale_range[1]),
        hflip=recipe.hflip,
        num_labels=len(data.label_names),
        rescale_factor=processor.rescale_factor if processor.do_rescale else None,
        image_mean=processor.image_mean if processor.do_normalize else None,
        image_std=processor.image_std if processor.do_normalize else None,
    )
    return with_segmentation_transforms(data, paired, processor)


def run(args: RunArguments, callbacks: Sequence[TrainerCallback] = ()) -> dict[str, float]:
    """Train as the arguments say and write the model folder; return the final metrics."""
    training = args.training
    # The transforms read the `image` column, which the Trainer would drop as unknown to the model's forward.
    training.remove_unused_columns = False
    _check_output_dir(args)
    checkpoint = _resume_checkpoint(training.resume_from_checkpoint, training.output_dir)
    set_seed(training.seed)
    _apply_base_learning_rate(args)
    if args.recipe.unfreeze_last_stages and not args.recipe.freeze_backbone:
        raise UserInputError("--unfreeze_last_stages goes with --freeze_backbone: it names what stays trainable.")
    raw_data = _load_data(args)
    task = args.model.task
    if task not in (SEGMENTATION, DETECTION):
        task = MULTI_LABEL if raw_data.multi_label else CLASSIFICATION
    model, processor = _model_and_processor(args, raw_data)
    if args.recipe.freeze_backbone:
        frozen = freeze_backbone(model, args.recipe.unfreeze_last_stages)
        logger.info("Frozen: %d backbone parameter tensors (%s)", len(frozen), _trained_part(args))
    data = _attach_transforms(args, raw_data, processor)
    trainer = _build_trainer(args, data, model, processor, callbacks, task, raw_data)
    if trainer.ema is not None and checkpoint is not None:
        trainer.ema.load(checkpoint)
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    if trainer.ema is not None:
        # The averaged weights are the result: evaluate, save and push them.
        trainer.ema.copy_to(model)
        trainer.ema = None
    final = _final_evaluation(trainer, data, raw_data)
    metrics = {**train_result.metrics, **final.metrics}
    image_size = _image_size(processor)
    trainer.card_facts = CardFacts(
        model_name=os.path.basename(os.path.normpath(training.output_dir)),
        base_model=args.model.model_name_or_path,
        variant=args.model.variant,
        architecture=_architecture(model),
        dataset=data.source,
        hub_dataset=args.data.dataset_name,
        label_names=data.label_names,
        num_train=len(data.train),
        num_validation=len(data.validation) if data.validation is not None else 0,
        image_size=image_size,
        hyperparameters=_hyperparameters(args, image_size, _backbone_config(model).drop_path_rate),
        results=final.metrics,
        task=task,
        per_label=final.per_label,
    )
    if task in (SEGMENTATION, DETECTION):
        # Saved over the built-in backbone where it expresses ours, so that plain transformers loads the folder.
        portable_head(model)
        trainer.card_facts.loading_note = needs_convnext_hf_sentence(model.config)
    trainer.save_model()
    trainer.save_state()
    if trainer.is_world_process_zero():
        _write_report(trainer, args, raw_data, metrics, final)
    if training.push_to_hub:
        trainer.push_to_hub()
    return metrics


def _write_report(
    trainer: ConvNextTrainer, args: RunArguments, raw_data: ImageData, metrics: dict[str, float], final: FinalEvaluation
) -> None:
    output_dir = args.training.output_dir
    names = raw_data.label_names
    report: dict[str, Any] = {"metrics": metrics, "label_names": names}
    counts = final.counts
    if counts is not None:
        report["confusion_matrix"] = counts.tolist()
    if trainer.task == CLASSIFICATION and counts is not None:
        report["per_class_accuracy"] = {
            name: float(counts[index, index] / max(counts[index].sum(), 1)) for index, name in enumerate(names)
        }
    if final.per_label is not None:
        key = {MULTI_LABEL: "per_label_ap", DETECTION: "per_class_ap"}.get(trainer.task, "per_class_iou")
        report[key] = final.per_label
    write_json(os.path.join(output_dir, METRICS_NAME), report)
    if args.output.plots:
        if counts is not None:
            plot_confusion_matrix(counts, names, os.path.join(output_dir, CONFUSION_MATRIX_NAME))
        if trainer.task == DETECTION:
            detection.write_pictures(trainer.model, trainer.processing_class, raw_data.validation, names, output_dir)
        if trainer.task == SEGMENTATION and raw_data.validation is not None:
            plot_prediction_overlay(
                trainer.model, trainer.processing_class, raw_data.validation, os.path.join(output_dir, OVERLAY_NAME)
            )
        plot_training_curves(trainer.state.log_history, os.path.join(output_dir, TRAINING_CURVES_NAME), metrics)
    trainer.create_model_card()


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """`convnext-hf train` / `python -m convnext_hf.train`: parse the command line and run."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    return run(parse_args(sys.argv[1:] if argv is None else argv))
