"""One training run, from arguments to a Hub-ready folder: data, model, recipe, Trainer, final evaluation, report."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
from transformers import EvalPrediction, TrainerCallback, set_seed
from transformers.trainer_utils import get_last_checkpoint

from ..complexity import parameter_count
from ..errors import OutputExistsError, UserInputError
from ..metrics import load_topk_accuracy
from .arguments import RunArguments, parse_args
from .augment import RandAugment, RandomResizedCrop, TrainTransform
from .card import CardFacts
from .data import ImageData, collate, load_image_data, with_transforms
from .ema import EmaCallback, ModelEma
from .mixup import Mixup
from .model import build_model, build_processor
from .report import (
    CONFUSION_MATRIX_NAME,
    METRICS_NAME,
    TRAINING_CURVES_NAME,
    confusion_matrix,
    plot_confusion_matrix,
    plot_training_curves,
    write_json,
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


def _hyperparameters(args: RunArguments, image_size: int, drop_path_rate: float) -> dict[str, Any]:
    """The settings a reader of the model card needs to reproduce the run."""
    training, recipe = args.training, args.recipe
    optimizer = getattr(training.optim, "value", training.optim)
    schedule = getattr(training.lr_scheduler_type, "value", training.lr_scheduler_type)
    total_batch = training.per_device_train_batch_size * training.world_size * training.gradient_accumulation_steps
    return {
        "recipe": recipe.recipe or "(flags)",
        "optimizer": f"{optimizer} (betas {training.adam_beta1}, {training.adam_beta2})",
        "learning rate": training.learning_rate,
        "schedule": f"{schedule}, warmup {training.warmup_steps}",
        "weight decay": f"{training.weight_decay} (not on norms, biases, layer scale)",
        "layer-wise lr decay": recipe.layer_decay if recipe.layer_decay < 1 else "none",
        "total batch size": f"{total_batch} ({training.world_size} process(es))",
        "epochs": training.num_train_epochs if training.max_steps <= 0 else f"{training.max_steps} steps",
        "image size": image_size,
        "random-resized crop": f"scale ({recipe.rrc_scale_min}, 1), "
        f"ratio ({recipe.rrc_ratio[0]:.3g}, {recipe.rrc_ratio[1]:.3g})",
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


def _architecture(model: Any) -> str:
    """One line on the network's shape and size."""
    config = model.config
    kind = "isotropic" if config.isotropic else f"{config.num_stages}-stage"
    parameters = parameter_count(model)
    return (
        f"{kind} ConvNeXt, widths {config.hidden_sizes}, depths {config.depths}, "
        f"{config.patch_size}×{config.patch_size} patchify stem, {parameters / 1e6:.2f} M parameters"
    )


def _final_evaluation(trainer: ConvNextTrainer, data: ImageData) -> tuple[dict[str, float], np.ndarray | None]:
    """Metrics and confusion matrix of the final weights on the validation split."""
    if data.validation is None:
        return {}, None
    prediction = trainer.predict(data.validation, metric_key_prefix="eval")
    counts = confusion_matrix(
        prediction.predictions.argmax(axis=-1), prediction.label_ids, num_classes=len(data.label_names)
    )
    return dict(prediction.metrics), counts


def _model_and_processor(args: RunArguments, label_names: list[str]) -> tuple[Any, Any]:
    """The model for these labels and its processor, refused when the processor's images cannot feed it."""
    model = build_model(args.model, label_names)
    processor = build_processor(args.model, model)
    image_size = processor.size["shortest_edge"]
    if image_size < model.config.total_stride:
        raise UserInputError(
            f"--image_size {image_size} is smaller than the model's total stride {model.config.total_stride}; "
            "train at a larger size or use a smaller patch_size."
        )
    if model.config.num_channels != 3:
        raise UserInputError(
            f"The model takes {model.config.num_channels}-channel images but the image processor makes RGB ones; "
            "train a model with num_channels 3."
        )
    return model, processor


def _build_trainer(
    args: RunArguments, data: ImageData, model: Any, processor: Any, callbacks: Sequence[TrainerCallback]
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
    ema = ModelEma(model, recipe.model_ema_decay) if recipe.model_ema else None
    metric = load_topk_accuracy()

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        return metric.compute(predictions=prediction.predictions, references=prediction.label_ids)

    return ConvNextTrainer(
        model=model,
        args=training,
        train_dataset=data.train,
        eval_dataset=data.validation,
        data_collator=collate,
        processing_class=processor,
        compute_metrics=compute_metrics,
        callbacks=([EmaCallback(ema)] if ema is not None else []) + list(callbacks),
        mixup=mixup,
        layer_decay=recipe.layer_decay,
        layer_decay_type=recipe.layer_decay_type,
        ema=ema,
    )


def run(args: RunArguments, callbacks: Sequence[TrainerCallback] = ()) -> dict[str, float]:
    """Train as the arguments say and write the model folder; return the final metrics."""
    training = args.training
    # The transforms read the `image` column, which the Trainer would drop as unknown to the model's forward.
    training.remove_unused_columns = False
    _check_output_dir(args)
    checkpoint = _resume_checkpoint(training.resume_from_checkpoint, training.output_dir)
    set_seed(training.seed)
    with training.main_process_first(desc="loading and checking the images"):
        data = load_image_data(args.data, seed=training.seed, cache_dir=args.model.cache_dir)
    model, processor = _model_and_processor(args, data.label_names)
    data = with_transforms(data, _train_transform(args, processor), processor)
    trainer = _build_trainer(args, data, model, processor, callbacks)
    if trainer.ema is not None and checkpoint is not None:
        trainer.ema.load(checkpoint)
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    if trainer.ema is not None:
        # The averaged weights are the result: evaluate, save and push them.
        trainer.ema.copy_to(model)
        trainer.ema = None
    eval_metrics, counts = _final_evaluation(trainer, data)
    metrics = {**train_result.metrics, **eval_metrics}
    image_size = processor.size["shortest_edge"]
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
        hyperparameters=_hyperparameters(args, image_size, model.config.drop_path_rate),
        results=eval_metrics,
    )
    trainer.save_model()
    trainer.save_state()
    if trainer.is_world_process_zero():
        _write_report(trainer, args, data, metrics, counts)
    if training.push_to_hub:
        trainer.push_to_hub()
    return metrics


def _write_report(
    trainer: ConvNextTrainer, args: RunArguments, data: ImageData, metrics: dict[str, float], counts: np.ndarray | None
) -> None:
    output_dir = args.training.output_dir
    report: dict[str, Any] = {"metrics": metrics, "label_names": data.label_names}
    if counts is not None:
        report["confusion_matrix"] = counts.tolist()
        report["per_class_accuracy"] = {
            name: float(counts[index, index] / max(counts[index].sum(), 1)) for index, name in enumerate(data.label_names)
        }
    write_json(os.path.join(output_dir, METRICS_NAME), report)
    if args.output.plots:
        if counts is not None:
            plot_confusion_matrix(counts, data.label_names, os.path.join(output_dir, CONFUSION_MATRIX_NAME))
        plot_training_curves(trainer.state.log_history, os.path.join(output_dir, TRAINING_CURVES_NAME), metrics)
    trainer.create_model_card()


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """`convnext-hf train` / `python -m convnext_hf.train`: parse the command line and run."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    return run(parse_args(sys.argv[1:] if argv is None else argv))
