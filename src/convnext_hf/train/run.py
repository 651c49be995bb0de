"""One training run, from arguments to a Hub-ready folder: data, model, recipe, Trainer, final evaluation, report."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from transformers import TrainerCallback, set_seed
from transformers.trainer_utils import get_last_checkpoint

from ..complexity import parameter_count
from ..errors import OutputExistsError, UserInputError
from ..tasks import TASKS, Task, get_task
from .arguments import REFERENCE_BATCH_SIZE, RunArguments, parse_args
from .card import CardFacts
from .data import ImageData
from .ema import EmaCallback, ModelEma
from .mixup import Mixup
from .model import freeze_backbone
from .report import (
    CONFUSION_MATRIX_NAME,
    METRICS_NAME,
    TRAINING_CURVES_NAME,
    FinalEvaluation,
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


def _hyperparameters(args: RunArguments, task: Task, image_size: int, drop_path_rate: float) -> dict[str, Any]:
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
        **task.hooks.augmentation_hyperparameters(args, image_size),
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
    """The ConvNeXt configuration of a classifier or of a head's backbone."""
    return getattr(model.config, "backbone_config", None) or model.config


def _image_size(processor: Any) -> int:
    """The side of the images the processor makes (its shortest edge, or its height)."""
    return processor.size.get("shortest_edge") or processor.size["height"]


def _architecture(model: Any, task: Task) -> str:
    """One line on the network's shape and size."""
    config = _backbone_config(model)
    kind = "isotropic" if config.isotropic else f"{config.num_stages}-stage"
    parameters = parameter_count(model)
    head = task.hooks.CARD.head(model)
    return (
        f"{head}{kind} ConvNeXt, widths {config.hidden_sizes}, depths {config.depths}, "
        f"{config.patch_size}×{config.patch_size} patchify stem, {parameters / 1e6:.2f} M parameters"
    )


def _final_evaluation(trainer: ConvNextTrainer, data: ImageData) -> FinalEvaluation:
    """Metrics, confusion counts and per-label scores of the final weights on the validation split."""
    if data.validation is None:
        return FinalEvaluation({})
    prediction = trainer.predict(data.validation, metric_key_prefix="eval")
    return trainer.task.hooks.final_evaluation(prediction, data.label_names)


def _model_and_processor(args: RunArguments, task: Task, data: ImageData) -> tuple[Any, Any]:
    """The model for these labels and its processor, refused when the processor's images cannot feed it."""
    model = task.hooks.build_model(args, data)
    processor = task.hooks.build_processor(args, model)
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


def _build_trainer(
    args: RunArguments,
    data: ImageData,
    model: Any,
    processor: Any,
    callbacks: Sequence[TrainerCallback],
    task: Task,
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
    check_arguments = getattr(task.hooks, "check_arguments", None)
    if check_arguments is not None:
        check_arguments(args)
    ema = ModelEma(model, recipe.model_ema_decay) if recipe.model_ema else None
    return ConvNextTrainer(
        model=model,
        args=training,
        train_dataset=data.train,
        eval_dataset=data.validation,
        data_collator=task.hooks.collate,
        processing_class=processor,
        compute_metrics=task.hooks.compute_metrics(len(data.label_names)),
        preprocess_logits_for_metrics=getattr(task.hooks, "preprocess_logits", None),
        callbacks=([EmaCallback(ema)] if ema is not None else []) + list(callbacks),
        mixup=mixup,
        task=task.name,
        layer_decay=recipe.layer_decay,
        layer_decay_type=recipe.layer_decay_type,
        ema=ema,
    )


def _load_data(args: RunArguments, task: Task) -> ImageData:
    """The labelled images (or image/mask pairs) of the run, with their label names."""
    with args.training.main_process_first(desc="loading and checking the images"):
        return task.hooks.load_data(args)


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
    requested = get_task(args.model.task)
    if not requested.trainable:
        trainable = [name for name, task in TASKS.items() if task.trainable]
        raise UserInputError(f"--task {requested.name} is not trained here; train takes {', '.join(trainable)}.")
    raw_data = _load_data(args, requested)
    # The data may say more than the flag: a classification label column holding lists is multi-label.
    task = get_task(raw_data.task)
    model, processor = _model_and_processor(args, task, raw_data)
    if args.recipe.freeze_backbone:
        frozen = freeze_backbone(model, args.recipe.unfreeze_last_stages)
        logger.info("Frozen: %d backbone parameter tensors (%s)", len(frozen), _trained_part(args))
    data = task.hooks.attach_transforms(args, raw_data, processor)
    trainer = _build_trainer(args, data, model, processor, callbacks, task)
    if trainer.ema is not None and checkpoint is not None:
        trainer.ema.load(checkpoint)
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    if trainer.ema is not None:
        # The averaged weights are the result: evaluate, save and push them.
        trainer.ema.copy_to(model)
        trainer.ema = None
    final = _final_evaluation(trainer, data)
    metrics = {**train_result.metrics, **final.metrics}
    image_size = _image_size(processor)
    trainer.card_facts = CardFacts(
        model_name=os.path.basename(os.path.normpath(training.output_dir)),
        base_model=args.model.model_name_or_path,
        variant=args.model.variant,
        architecture=_architecture(model, task),
        dataset=data.source,
        hub_dataset=args.data.dataset_name,
        label_names=data.label_names,
        num_train=len(data.train),
        num_validation=len(data.validation) if data.validation is not None else 0,
        image_size=image_size,
        hyperparameters=_hyperparameters(args, task, image_size, _backbone_config(model).drop_path_rate),
        results=final.metrics,
        task=task.name,
        per_label=final.per_label,
    )
    prepare_for_saving = getattr(task.hooks, "prepare_for_saving", None)
    if prepare_for_saving is not None:
        trainer.card_facts.loading_note = prepare_for_saving(model)
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
    hooks = trainer.task.hooks
    report: dict[str, Any] = {"metrics": metrics, "label_names": names}
    counts = final.counts
    if counts is not None:
        report["confusion_matrix"] = counts.tolist()
    report.update(hooks.report_fields(final, names))
    write_json(os.path.join(output_dir, METRICS_NAME), report)
    if args.output.plots:
        if counts is not None:
            plot_confusion_matrix(counts, names, os.path.join(output_dir, CONFUSION_MATRIX_NAME))
        write_plots = getattr(hooks, "write_plots", None)
        if write_plots is not None:
            write_plots(trainer, raw_data, final, output_dir)
        plot_training_curves(trainer.state.log_history, os.path.join(output_dir, TRAINING_CURVES_NAME), metrics)
    trainer.create_model_card()


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """`convnext-hf train` / `python -m convnext_hf.train`: parse the command line and run."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    return run(parse_args(sys.argv[1:] if argv is None else argv))
