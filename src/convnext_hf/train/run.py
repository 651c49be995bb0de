"""One training run, from arguments to a Hub-ready folder: data, model, recipe, Trainer, final evaluation, report."""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import shutil
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load_file
from transformers import TrainerCallback, set_seed
from transformers.trainer import OPTIMIZER_NAME, SCHEDULER_NAME, TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint
from transformers.training_args import ParallelMode

from ..atomic import check_apart, claim_output_dir, claims_output_dir, first_missing, release_output_dir
from ..cli import print_box
from ..complexity import parameter_count
from ..conversion.hub import failure_hint
from ..cores import available_cores, default_loader_workers
from ..errors import OutputExistsError, UserInputError, one_line
from ..finite import refuse_non_finite
from ..model_folder import check_model_folder, folder_weights, loading_model
from ..tasks import TASKS, Task, get_task
from .arguments import REFERENCE_BATCH_SIZE, VARIANT_NAMES, RunArguments, parse_args, timm_name
from .card import CardFacts
from .data import ImageData
from .ema import EMA_WEIGHTS_NAME, EmaCallback, ModelEma
from .mixup import Mixup
from .model import config_overrides, freeze_backbone
from .report import (
    CONFUSION_MATRIX_NAME,
    METRICS_NAME,
    TRAINING_CURVES_NAME,
    FinalEvaluation,
    plot_confusion_matrix,
    plot_training_curves,
    write_json,
)
from .summary import RunSummary, summary_lines
from .trainer import BUILD_ERRORS, ConvNextTrainer, SavedWeights, saved_names

logger = logging.getLogger(__name__)


def _check_output_dir(args: RunArguments) -> None:
    training = args.training
    if os.path.exists(training.output_dir) and not os.path.isdir(training.output_dir):
        raise UserInputError(f"--output_dir {training.output_dir} is a file; choose a folder path for the output.")
    data = args.data
    check_apart(training.output_dir, {"--train_dir": data.train_dir, "--validation_dir": data.validation_dir,
                                      "--train_mask_dir": data.train_mask_dir,
                                      "--validation_mask_dir": data.validation_mask_dir})  # fmt: skip
    if (
        os.path.isdir(training.output_dir)
        and os.listdir(training.output_dir)
        and not training.resume_from_checkpoint
        and not args.output.overwrite
    ):
        raise OutputExistsError(
            training.output_dir,
            "pass --overwrite to train into it anyway or --resume_from_checkpoint to continue its run",
        )
    if args.recipe.model_ema and (training.fsdp or training.deepspeed):
        raise UserInputError(
            "--model_ema keeps a full copy of the weights on every process and cannot follow sharded weights "
            "(FSDP/DeepSpeed); drop --model_ema or train without sharding."
        )


def _check_launch(training: Any) -> None:
    """Refuse processes that a launcher started together but that would each train and evaluate alone."""
    if training.world_size > 1 and training.parallel_mode == ParallelMode.NOT_PARALLEL:
        raise UserInputError(
            f"The launcher started {training.world_size} processes but no accelerator is visible and --use_cpu is "
            "off, so each would train its own model on its share of the data; pass --use_cpu (with --ddp_backend "
            "gloo) to train them together on CPU."
        )
    if training.fsdp and training.deepspeed:
        raise UserInputError("--fsdp and --deepspeed each shard the model; pass one of them.")
    if training.fsdp and training.parallel_mode != ParallelMode.DISTRIBUTED and not training.fsdp_config.get("xla"):
        raise UserInputError(
            "--fsdp shards the model across processes, but this run is one process: start it with torchrun or "
            "accelerate launch (docs/training.md, More than one process), or drop --fsdp."
        )


def _check_training_length(training: Any) -> None:
    """Refuse a run that would train zero steps and save its starting weights as a trained model."""
    if training.max_steps <= 0 and training.num_train_epochs <= 0:
        steps = f" and --max_steps {training.max_steps}" if training.max_steps == 0 else " and no --max_steps"
        raise UserInputError(
            f"--num_train_epochs {training.num_train_epochs:g}{steps} train zero steps, which would save the "
            "starting weights as the trained model; give a positive --num_train_epochs or --max_steps."
        )


def _check_evaluation(training: Any) -> None:
    """Refuse the Trainer's evaluation modes under which the metrics would not cover the validation images at once."""
    if training.batch_eval_metrics or not training.eval_do_concat_batches:
        flag = "--batch_eval_metrics" if training.batch_eval_metrics else "--eval_do_concat_batches false"
        raise UserInputError(
            f"{flag}: the metrics (top-k, mAP, mean IoU) are computed over all the validation predictions together, "
            "which this mode does not hand them; drop the flag."
        )


def _check_hub(training: Any) -> None:
    """Refuse --push_to_hub before any work when it cannot work: offline, or without a token."""
    if not training.push_to_hub:
        return
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise UserInputError("--push_to_hub needs the network, but HF_HUB_OFFLINE is set; train without it and upload "
                             "the folder later with `hf upload`.")  # fmt: skip
    if training.hub_token is None and get_token() is None:
        raise UserInputError("--push_to_hub needs a Hugging Face token with write access: log in with `hf auth login`, "
                             "set HF_TOKEN or pass --hub_token.")  # fmt: skip


def _check_reporting(training: Any) -> None:
    """Refuse a --report_to integration that is unknown or not installed before any work: the Trainer builds their
    callbacks (which check their package) only once the data and the model are ready."""
    from transformers.integrations import get_reporting_integration_callbacks

    try:
        for callback in get_reporting_integration_callbacks(training.report_to):
            callback()
    except (ValueError, RuntimeError, ImportError) as error:
        raise UserInputError(f"--report_to: {error}") from error


def _check_model_source(model: Any) -> None:
    """Refuse a --model that names no model before the data is read: a misspelt preset (with the nearest one), a
    folder that is not a model, a Hub id that does not exist or cannot be reached."""
    name = model.model_name_or_path
    if name is None or model.variant is not None:  # none, or two: the model's builder asks for exactly one
        return
    check_model_folder(name)
    if not os.path.isdir(name) and "/" not in name:
        presets = [*VARIANT_NAMES, *(timm_name(variant) for variant in VARIANT_NAMES)]
        close = difflib.get_close_matches(name, presets, n=1)
        raise UserInputError(
            f"--model {name} is no folder, no preset (convnext_tiny, tiny...) and no Hub id (owner/name)"
            + (f"; did you mean {close[0]}?" if close else ".")
        )
    from transformers import AutoConfig

    with loading_model(name):
        AutoConfig.from_pretrained(name, revision=model.revision, cache_dir=model.cache_dir)


def _check_batches(training: Any, num_train: int) -> None:
    """Refuse dropping the last incomplete batch when it is the only one: no training step would run."""
    total = training.per_device_train_batch_size * training.world_size
    if training.dataloader_drop_last and num_train < total:
        raise UserInputError(
            f"--dataloader_drop_last drops every batch: {num_train} training image(s) do not fill one batch of "
            f"{total} (--per_device_train_batch_size × processes); lower the batch size or drop the flag."
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


def _check_checkpoint(checkpoint: str | None, model_ema: bool) -> int | None:
    """Refuse a checkpoint the Trainer could not resume from (missing or unreadable state, weights or EMA file)
    before any work, naming the file; its weights go through the saved-folder gate (`folder_weights`: files, index,
    headers); reads headers only (safetensors) or the zip directory (torch.save files). Returns its global step."""
    if checkpoint is None:
        return None
    state = os.path.join(checkpoint, TRAINER_STATE_NAME)
    try:
        with open(state, encoding="utf-8") as file:
            content = json.load(file)
        if not isinstance(content, dict):
            raise ValueError("not a JSON object")
        step = content.get("global_step", 0)
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"its global_step {step!r} is not a step number")
    except (OSError, ValueError) as error:
        raise UserInputError(f"--resume_from_checkpoint: {state} is missing or unreadable ({error}); resume from "
                             "another checkpoint-* folder.") from error  # fmt: skip
    folder_weights(Path(checkpoint), "--resume_from_checkpoint")
    ema_weights = os.path.join(checkpoint, EMA_WEIGHTS_NAME)
    if model_ema and not os.path.isfile(ema_weights):
        raise UserInputError(f"--resume_from_checkpoint: {checkpoint} has no {EMA_WEIGHTS_NAME}, it was saved without "
                             "--model_ema; resume without --model_ema, or start a new run.")  # fmt: skip
    for path in [ema_weights]:
        try:
            if os.path.isfile(path):
                safe_open(path, "pt").keys()
        except Exception as error:  # safetensors raises its own error types for every kind of damage
            raise UserInputError(f"--resume_from_checkpoint: {path} is not a readable safetensors file ({error}); "
                                 "resume from another checkpoint-* folder.") from error  # fmt: skip
    for name in (OPTIMIZER_NAME, SCHEDULER_NAME, "rng_state.pth"):
        path = os.path.join(checkpoint, name)
        if os.path.isfile(path) and not zipfile.is_zipfile(path):
            raise UserInputError(f"--resume_from_checkpoint: {path} is damaged (not a torch.save archive); resume "
                                 "from another checkpoint-* folder.")  # fmt: skip
    return step


def _check_task_arguments(args: RunArguments, task: Task) -> None:
    """The task's refusal of flags that do not apply to it (its `check_arguments` hook, when it has one), and of
    --streaming for a task that loads its data whole."""
    check_arguments = getattr(task.hooks, "check_arguments", None)
    if check_arguments is not None:
        check_arguments(args)
    if args.data.streaming and not getattr(task.hooks, "STREAMS", False):
        raise UserInputError(f"--streaming: {task.name} loads its data whole (streaming trains single-label "
                             "image-classification); drop --streaming.")  # fmt: skip


def _check_checkpoint_fits(
    checkpoint: str | None, model: Any, model_ema: bool, global_step: int | None, training: Any, num_train: int | None
) -> None:
    """Refuse resuming from a checkpoint of another architecture (other widths, depths, heads or classes) or missing
    a tensor (it would restart from random), naming the file and its first problem; from weights holding NaN or
    infinity; or from a step beyond the run's last. Compares the safetensors headers with the model built from the
    flags, then reads the weights once for their finiteness."""
    if checkpoint is None:
        return
    last_step = _last_step(training, num_train)
    if global_step is not None and global_step > last_step:
        raise UserInputError(
            f"--resume_from_checkpoint: {os.path.join(checkpoint, TRAINER_STATE_NAME)} says global_step {global_step}, "
            f"beyond this run's last step ({last_step} at most, from --max_steps/--num_train_epochs and the data); "
            "resume from a checkpoint of this run, or raise --max_steps."
        )
    # Checkpoints hold the names save_pretrained writes, older ones for some models (`saved_names`).
    state = model.state_dict()
    expected = {saved: tuple(state[own].shape) for saved, own in saved_names(model).items()}
    # Weights tied to others are saved once, under their source's name.
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    # The model's weights (model.safetensors, or the shards its index names), then the EMA's.
    groups = [folder_weights(Path(checkpoint), "--resume_from_checkpoint").files]
    ema_file = Path(checkpoint) / EMA_WEIGHTS_NAME
    if model_ema and ema_file.is_file():
        groups.append([ema_file])
    for files in groups:
        path = files[0] if len(files) == 1 else Path(checkpoint)
        saved = {}
        for file in files:
            with safe_open(file, "pt") as weights:
                saved.update({name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()})
        unknown = sorted(set(saved) - set(expected))
        differ = [f"{name} {list(saved[name])} (the model's {list(expected[name])})"
                  for name in sorted(set(saved) & set(expected)) if saved[name] != expected[name]]  # fmt: skip
        # The EMA file holds the averaged tensors only; the model's weights must hold every one.
        missing = sorted(set(expected) - set(saved) - tied) if files[0] != ema_file else []
        if unknown or differ or missing:
            first = differ[0] if differ else (
                f"{unknown[0]}, which the model does not have" if unknown else f"{missing[0]} is not in the checkpoint"
            )
            raise UserInputError(
                f"--resume_from_checkpoint: {path} holds the weights of another model than the flags describe "
                f"({len(differ)} tensor(s) of other shapes, {len(unknown)} the model lacks, {len(missing)} missing; "
                f"first: {first}). Resume with the flags of that run (--variant/--model_name_or_path, "
                "--config_overrides, the same data), or start a new run."
            )
        for file in files:
            refuse_non_finite(load_file(file), f"--resume_from_checkpoint: {file}", "the run had diverged by then; "
                              "resume from an earlier checkpoint-* folder, or start a new run")  # fmt: skip


def _last_step(training: Any, num_train: int | None) -> int:
    """The most optimizer steps the run can take (an upper bound: every partial batch counted); a stream (no length)
    always has --max_steps."""
    if training.max_steps > 0:
        return training.max_steps
    batches = -(-num_train // (training.per_device_train_batch_size * training.world_size))
    return -(-batches // training.gradient_accumulation_steps) * math.ceil(training.num_train_epochs)


def _set_loader_workers(args: RunArguments, num_train: int | None, shards: int | None = None) -> None:
    """Without --dataloader_num_workers, load with this process's share of the cores but one (no more workers than
    batches in an epoch), kept alive between epochs; a stream gets no more workers than this process has shards (a
    worker reads whole shards). Say how many."""
    training = args.training
    if not args.workers_given:
        batches = None if num_train is None else -(-num_train // training.per_device_train_batch_size)
        training.dataloader_num_workers = default_loader_workers(batches)
        training.dataloader_persistent_workers = training.dataloader_num_workers > 0
    if shards is not None and training.dataloader_num_workers > shards:
        logger.info("%d loader workers for %d shard(s) of the stream in this process: %d, one per shard.",
                    training.dataloader_num_workers, shards, shards)  # fmt: skip
        training.dataloader_num_workers = shards
    workers = training.dataloader_num_workers
    logger.info(
        "Loading images %s (%d CPU core(s) available%s; --dataloader_num_workers sets it).",
        f"in {workers} worker process(es) per training process, each {training.dataloader_prefetch_factor or 2} "
        "batches ahead" if workers else "in the training process itself", available_cores(),
        "" if args.workers_given else ", one left for training",
    )  # fmt: skip


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


def _final_evaluation(trainer: ConvNextTrainer, data: ImageData, prediction: Any = None) -> FinalEvaluation:
    """Metrics, confusion counts and per-label scores of the final weights on the validation split (from their
    `prediction` when it was made already)."""
    if data.validation is None:
        return FinalEvaluation({})
    if prediction is None:
        prediction = trainer.predict(data.validation, metric_key_prefix="eval")
    return trainer.task.hooks.final_evaluation(prediction, data.label_names)


def _model_and_processor(args: RunArguments, task: Task, data: ImageData) -> tuple[Any, Any]:
    """The model for these labels and its processor, refused when the processor's images cannot feed it."""
    try:
        model = task.hooks.build_model(args, data)
        processor = task.hooks.build_processor(args, model)
    except UserInputError:
        raise
    # The configuration's and the processor's own checks of the values the flags gave (transformers' strict config
    # fields, an activation name it does not know, widths its layers cannot take).
    except BUILD_ERRORS as error:
        raise UserInputError(f"The model or image processor the flags describe cannot be built: {one_line(error)}") \
            from None
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
    if training.eval_strategy != "no" and training.metric_for_best_model is None:
        # save_total_limit then keeps the best checkpoint besides the newest.
        training.metric_for_best_model, training.greater_is_better = task.hooks.MAIN_METRIC, True
    mixup = Mixup(
        num_classes=len(data.label_names),
        mixup_alpha=recipe.mixup_alpha,
        cutmix_alpha=recipe.cutmix_alpha,
        probability=recipe.mixup_prob,
        switch_probability=recipe.mixup_switch_prob,
        label_smoothing=training.label_smoothing_factor,
    )
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
        on_bad_image=args.data.on_bad_image,
    )


def _load_data(args: RunArguments, task: Task) -> ImageData:
    """The labelled images (or image/mask pairs) of the run, with their label names."""
    with args.training.main_process_first(desc="loading and checking the images"):
        return task.hooks.load_data(args)


def run(args: RunArguments, callbacks: Sequence[TrainerCallback] = ()) -> dict[str, float]:
    """Train as the arguments say and write the model folder; return the final metrics.

    A refusal leaves nothing behind: the Trainer creates --output_dir as it starts, and some flags are refused only
    later (as the optimizer is built, say), so a folder this run created is removed again unless it already holds a
    checkpoint to resume from.
    """
    training = args.training
    created = first_missing(training.output_dir) if training.output_dir is not None else None
    try:
        return _run(args, callbacks)
    except UserInputError:
        output_dir = training.output_dir
        # Only a folder this run holds is its own to remove: another run may be writing into it.
        if (created is not None and claims_output_dir(output_dir) and os.path.isdir(created)
                and not (os.path.isdir(output_dir) and get_last_checkpoint(output_dir))):  # fmt: skip
            shutil.rmtree(created, ignore_errors=True)
        raise
    finally:
        if training.output_dir is not None:
            release_output_dir(training.output_dir)


def _run(args: RunArguments, callbacks: Sequence[TrainerCallback]) -> dict[str, float]:
    training = args.training
    # The transforms read the `image` column, which the Trainer would drop as unknown to the model's forward.
    training.remove_unused_columns = False
    _check_output_dir(args)
    if training.should_save:
        # The one process that writes the folder holds it for the run: a second run into it is refused.
        claim_output_dir(training.output_dir)
    _check_launch(training)
    _check_training_length(training)
    _check_evaluation(training)
    _check_hub(training)
    _check_reporting(training)
    checkpoint = _resume_checkpoint(training.resume_from_checkpoint, training.output_dir)
    global_step = _check_checkpoint(checkpoint, args.recipe.model_ema)
    set_seed(training.seed)
    _apply_base_learning_rate(args)
    if args.recipe.unfreeze_last_stages and not args.recipe.freeze_backbone:
        raise UserInputError("--unfreeze_last_stages goes with --freeze_backbone: it names what stays trainable.")
    requested = get_task(args.model.task)
    if not requested.trainable:
        trainable = [name for name, task in TASKS.items() if task.trainable]
        raise UserInputError(f"--task {requested.name} is not trained here; train takes {', '.join(trainable)}.")
    # Checked now, so that a misspelt setting or a flag the task cannot use is refused before the data is read.
    getattr(requested.hooks, "configuration_overrides", config_overrides)(args.model)
    _check_task_arguments(args, requested)
    _check_model_source(args.model)
    raw_data = _load_data(args, requested)
    # A stream's length is unknown: --max_steps, which streaming requires, bounds the run instead.
    num_train = None if raw_data.streaming else len(raw_data.train)
    if raw_data.streaming:
        _set_loader_workers(args, None, raw_data.train.n_shards)
    else:
        _check_batches(training, num_train)
        _set_loader_workers(args, num_train)
    # The data may say more than the flag: a classification label column holding lists is multi-label.
    task = get_task(raw_data.task)
    if task is not requested:
        _check_task_arguments(args, task)
    model, processor = _model_and_processor(args, task, raw_data)
    if args.recipe.freeze_backbone:
        frozen = freeze_backbone(model, args.recipe.unfreeze_last_stages)
        logger.info("Frozen: %d backbone parameter tensors (%s)", len(frozen), _trained_part(args))
    _check_checkpoint_fits(checkpoint, model, args.recipe.model_ema, global_step, training, num_train)
    data = task.hooks.attach_transforms(args, raw_data, processor)
    trainer = _build_trainer(args, data, model, processor, callbacks, task)
    if not data.streaming:  # a stream is not read ahead for it
        trainer.check_model_runs()
    if trainer.ema is not None and checkpoint is not None:
        trainer.ema.load(checkpoint)
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    saved_weights, prediction = trainer.settle_weights()
    if saved_weights is not None:
        logger.info(saved_weights.sentence())
    final = _final_evaluation(trainer, data, prediction)
    unreadable = _note_unreadable(trainer, raw_data)
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
        num_train="streamed" if data.streaming else len(data.train),
        num_validation=_validation_count(data, final),
        image_size=image_size,
        hyperparameters=_hyperparameters(args, task, image_size, _backbone_config(model).drop_path_rate),
        results=final.metrics,
        task=task.name,
        per_label=final.per_label,
        saved_weights=saved_weights.sentence() if saved_weights is not None else None,
        data_notes=raw_data.notes,
        backbone_weights=_backbone_weights(model),
    )
    prepare_for_saving = getattr(task.hooks, "prepare_for_saving", None)
    if prepare_for_saving is not None:
        trainer.card_facts.loading_note = prepare_for_saving(model)
    trainer.save_model()
    trainer.save_state()
    if trainer.is_world_process_zero():
        _write_report(trainer, args, raw_data, metrics, final, saved_weights, unreadable)
    if training.push_to_hub:
        try:
            trainer.push_to_hub()
        except Exception as error:  # the model is saved: say so, and how to upload it, rather than a traceback
            raise UserInputError(
                f"The trained model is complete in {training.output_dir}, but pushing it to the Hub failed: "
                f"{failure_hint(error)} ({type(error).__name__}). Upload it with `hf upload REPO_ID "
                f"{training.output_dir} .`"
            ) from error
    if trainer.is_world_process_zero():
        weights = saved_weights.summary() if saved_weights is not None else "the live weights after the last step"
        summary = _run_summary(args, trainer, data, metrics, weights, _validation_count(data, final))
        summary.needs_package = trainer.card_facts.loading_note is not None
        print_box(summary_lines(summary))
    return metrics


def _validation_count(data: ImageData, final: FinalEvaluation) -> int:
    """The validation images: the split's length, or for a stream the images the final evaluation scored."""
    if data.validation is None:
        return 0
    if not data.streaming:
        return len(data.validation)
    return int(final.counts.sum()) if final.counts is not None else 0


def _run_summary(
    args: RunArguments,
    trainer: ConvNextTrainer,
    data: ImageData,
    metrics: dict[str, float],
    saved_weights: str,
    validation_images: int,
) -> RunSummary:
    """What the results box shows: the folder, the final metrics, the weights saved, the checkpoints kept."""
    output_dir = args.training.output_dir
    given = args.data
    if given.validation_dir is not None:
        validation, source = given.validation_dir, ["--validation_dir", given.validation_dir]
        if given.validation_mask_dir is not None:
            source += ["--validation_mask_dir", given.validation_mask_dir]
        if given.validation_annotations is not None:
            source += ["--validation_annotations", given.validation_annotations]
    elif given.validation_file is not None:
        validation, source = given.validation_file, ["--validation_file", given.validation_file]
    elif given.dataset_name is not None:
        validation = f"the validation split of {given.dataset_name}{', streamed' if data.streaming else ''}"
        source = ["--dataset_name", given.dataset_name]
    else:
        validation = f"{given.train_val_split:.0%} of the training data, held out"
        # Placeholders: the held-out images have no folder of their own.
        source = ["--validation_dir", "IMAGES"]
        if given.train_annotations is not None:
            source += ["--validation_annotations", "ANNOTATIONS.json"]
    state = trainer.state
    best = os.path.basename(state.best_model_checkpoint) if state.best_model_checkpoint else None
    metric = args.training.metric_for_best_model
    task = trainer.task
    return RunSummary(
        output_dir=os.path.abspath(output_dir),
        task=task.name,
        pipeline_tag=task.pipeline_tag,
        num_labels=len(data.label_names),
        metrics=metrics,
        saved_weights=saved_weights,
        validation=validation if data.validation is not None else None,
        validation_images=validation_images,
        checkpoints=sorted(
            (name for name in os.listdir(output_dir) if name.startswith(PREFIX_CHECKPOINT_DIR)),
            key=lambda name: int(name.rsplit("-", 1)[-1]) if name.rsplit("-", 1)[-1].isdigit() else -1,
        ),
        best_checkpoint=best,
        best_metric=(metric, state.best_metric) if best and metric and state.best_metric is not None else None,
        evaluate_source=source if getattr(task.hooks, "evaluate", None) is not None else [],
        # Classifiers save this package's classes (loaded as remote code); other heads are transformers' own.
        remote_code=task.auto_class == "AutoModelForImageClassification",
        exportable=bool(task.exports),
        example_image=_example_image(data),
        not_measured=task.hooks.CARD.not_measured,
    )


# How many unreadable images metrics.json, the log and the card name (all are counted).
UNREADABLE_SHOWN = 10


def _note_unreadable(trainer: ConvNextTrainer, raw_data: ImageData) -> dict[str, Any] | None:
    """The images the loaders skipped as unreadable (--on_bad_image skip), counted and the first named, in the log
    and the data notes of the card; metrics.json's entry (None when every image was read)."""
    unreadable = trainer.unreadable_images()
    if not unreadable:
        return None
    note = (
        f"{len(unreadable)} unreadable image(s) were skipped (--on_bad_image skip): "
        f"{'; '.join(unreadable[:UNREADABLE_SHOWN])}{' …' if len(unreadable) > UNREADABLE_SHOWN else ''}."
    )
    logger.warning(note)
    raw_data.notes.append(note)
    return {"count": len(unreadable), "first": unreadable[:UNREADABLE_SHOWN]}


def _example_image(data: ImageData) -> str:
    """The path of the run's first validation (else training) image, for the printed pipeline command."""
    import datasets

    # A stream (not a `datasets.Dataset`) is not read again for it.
    splits = [split for split in (data.validation, data.train) if isinstance(split, datasets.Dataset) and len(split)]
    if not splits or not isinstance(splits[0].features.get("image"), datasets.Image):
        return "image.png"
    # Without the transforms the run attached (which would turn the image into pixel values).
    first = splits[0].with_format(None).cast_column("image", datasets.Image(decode=False))[0]["image"]
    return first.get("path") or "image.png"


def _backbone_weights(model: Any) -> str | None:
    """What `load_backbone_weights` copied into the model's backbone, in one paragraph (None when it did not run)."""
    report = getattr(model, "backbone_weights_report", None)
    return str(report).replace("\n", " ") if report is not None else None


def _write_report(
    trainer: ConvNextTrainer,
    args: RunArguments,
    raw_data: ImageData,
    metrics: dict[str, float],
    final: FinalEvaluation,
    saved_weights: SavedWeights | None,
    unreadable: dict[str, Any] | None = None,
) -> None:
    output_dir = args.training.output_dir
    names = raw_data.label_names
    hooks = trainer.task.hooks
    report: dict[str, Any] = {"metrics": metrics, "label_names": names}
    if unreadable is not None:
        report["unreadable_images"] = unreadable
    if saved_weights is not None:
        report["saved_weights"] = saved_weights.as_dict()
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
    if not sys.stderr.isatty():
        # Redrawn bars (datasets' checks, transformers' shard writing) would fill a log file with terminal codes.
        import datasets
        from transformers.utils import logging as transformers_logging

        datasets.disable_progress_bars()
        transformers_logging.disable_progress_bar()
    return run(parse_args(sys.argv[1:] if argv is None else argv))
