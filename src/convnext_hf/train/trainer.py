"""The Trainer of the ConvNeXt recipe: soft-target loss with Mixup/CutMix, recipe parameter groups, EMA evaluation."""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import safetensors.torch
import torch
from huggingface_hub.errors import StrictDataclassError
from torch import nn
from transformers import Trainer
from transformers.trainer_utils import EvalLoopOutput, EvalPrediction, PredictionOutput
from transformers.utils import SAFE_WEIGHTS_NAME

from ..conversion.hub import failure_hint
from ..errors import UserInputError, one_line
from ..finite import check_before_saving
from ..tasks import IMAGE_CLASSIFICATION, get_task
from .card import CardFacts, build_model_card
from .data import UNREADABLE, placeholder_rows, tensor_names
from .ema import ModelEma
from .loss_guard import NonFiniteLossStop
from .mixup import Mixup
from .optim import parameter_groups
from .report import write_text
from .streaming import AfterPlaceholders, EpochStream


def saved_names(model: nn.Module) -> dict[str, str]:
    """The model's parameter and buffer name of each name `save_pretrained` writes: transformers v5 saves some models
    under their former names (RT-DETR's `fc1` for `mlp.fc1`), which a checkpoint then holds."""
    from transformers.core_model_loading import revert_weight_conversion

    state = model.state_dict()
    by_tensor = {id(tensor): name for name, tensor in state.items()}
    # Renaming keeps each tensor, so identity pairs the two names.
    saved = revert_weight_conversion(model, dict(state)) if hasattr(model, "config") else state
    return {name: by_tensor.get(id(tensor), name) for name, tensor in saved.items()}


@dataclass
class SavedWeights:
    """Which weights a run with an EMA saves, and the validation scores that chose them."""

    saved: str  # "EMA" or "live"
    metric: str | None  # the score compared, None without validation images
    scores: dict[str, float]  # per kind of weights, the compared score
    decay: float
    steps: int

    def _comparison(self, other_suffix: str) -> str:
        """The saved weights' score against the other weights' as a phrase; `other_suffix` follows the other's name."""
        other = "live" if self.saved == "EMA" else "EMA"
        return (
            f"{self.saved} weights: {self.metric} {self.scores[self.saved]:.4f} against "
            f"{self.scores[other]:.4f} for the {other}{other_suffix}"
        )

    def sentence(self) -> str:
        """One line for the log, the summary and the model card."""
        horizon = (
            f"EMA decay {self.decay} over {self.steps} steps: the initial weights still make "
            f"{self.decay**self.steps:.1%} of the average"
        )
        if self.metric is None:
            return f"Saved the EMA weights, not compared with the live weights (no validation images); {horizon}."
        return f"Saved the {self._comparison(' weights')} ({horizon})."

    def summary(self) -> str:
        """The choice in a few words, for the results box."""
        if self.metric is None:
            return f"the EMA of the weights (decay {self.decay}; not compared: no validation images)"
        return f"the {self._comparison('')} (EMA decay {self.decay})"

    def as_dict(self) -> dict[str, Any]:
        """The choice as metrics.json states it."""
        return {"saved": self.saved, "compared_on": self.metric, "scores": self.scores, "ema_decay": self.decay,
                "steps": self.steps}  # fmt: skip


def _without_placeholders(prediction: EvalPrediction) -> EvalPrediction:
    """The predictions and labels of the validation images that were read: a classifier's rows without the slots
    kept for unreadable images (every label `PLACEHOLDER_LABEL`)."""
    predictions, labels = prediction.predictions, prediction.label_ids
    if not (isinstance(predictions, np.ndarray) and isinstance(labels, np.ndarray) and labels.ndim <= 2):
        return prediction
    kept = ~placeholder_rows(labels)
    if kept.all():
        return prediction
    return EvalPrediction(predictions=predictions[kept], label_ids=labels[kept])


# What a model built from settings that do not fit together raises as it is built or first run (its own checks,
# transformers' strict config fields, torch's shape errors, a layer's lookup of an unknown name, a width divided by
# zero heads).
BUILD_ERRORS = (
    ValueError, StrictDataclassError, RuntimeError, TypeError, KeyError, IndexError, ZeroDivisionError, AttributeError,
)  # fmt: skip


class ConvNextTrainer(Trainer):
    """transformers' Trainer with three changes that the recipe needs.

    - Loss: the task's (`compute_loss` of its record's module). Classification mixes training batches (Mixup/CutMix)
      and scores them against label-smoothed soft targets, evaluation with plain cross-entropy against the true
      labels; multi-label models score every label with a binary cross-entropy; segmentation models (UperNet) use
      their own per-pixel loss, unmixed.
    - Optimizer: the Trainer's optimizer class and flags (`--optim`, betas, eps) over the recipe's parameter groups
      (no weight decay on norms, biases and layer scale; layer-wise learning-rate decay).
    - Evaluation: with an EMA, every evaluation also scores the averaged weights, as `eval_ema_*` metrics, and the
      run saves whichever of the two validates better (`settle_weights`). A
      classifier's evaluation loss is the mean over the images, computed from the gathered logits, so that it is the
      same number under every launcher (the Trainer's weighs each batch's mean by the batch size, counting the
      images of a short last batch more than once).

    - Unreadable images: the loader leaves them out of their batch and names them; `--on_bad_image error` stops the
      run at the first in one line, `skip` trains on and counts them for the log, metrics.json and the card. A
      validation image keeps its slot (every process's part of a batch keeps its size for the gather), which the
      evaluation leaves out of its predictions and scores.

    Its model card (written at the end of a run and by `push_to_hub`) is the ConvNeXt card built from `card_facts`.
    """

    def __init__(
        self,
        *args: Any,
        mixup: Mixup,
        task: str = IMAGE_CLASSIFICATION,
        layer_decay: float = 1.0,
        layer_decay_type: str = "group",
        ema: ModelEma | None = None,
        on_bad_image: str = "error",
        **kwargs: Any,
    ) -> None:
        with warnings.catch_warnings():
            # The Trainer's own label smoother, which it turns off for multi-label models, is never used here: the
            # loss below smooths multi-hot targets itself.
            warnings.filterwarnings("ignore", "Label smoothing is not compatible with multi-label", UserWarning)
            super().__init__(*args, **kwargs)
        self.mixup = mixup
        self.task = get_task(task)
        self.layer_decay = layer_decay
        self.layer_decay_type = layer_decay_type
        self.ema = ema
        self.card_facts: CardFacts | None = None
        self.loss_guard = NonFiniteLossStop()
        self.add_callback(self.loss_guard)
        self.on_bad_image = on_bad_image
        # Insertion-ordered set of the unreadable images met so far (each epoch meets them again).
        self.unreadable: dict[str, None] = {}

    def _prepare_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The Trainer's, after taking out the images the loader could not read: `--on_bad_image error` stops at
        the first, `skip` counts them (`unreadable_images`) and trains on the rest of the batch."""
        problems = inputs.pop(UNREADABLE, None)
        problems = tensor_names(problems) if isinstance(problems, torch.Tensor) else problems or []
        if problems and self.on_bad_image == "error":
            raise UserInputError(
                f"Unreadable image {problems[0]}: remove or replace it, or pass --on_bad_image skip to train without "
                "the unreadable images (`convnext-hf check` lists them all)."
            )
        self.unreadable.update(dict.fromkeys(problems))
        if problems and "pixel_values" not in inputs:
            raise UserInputError(
                f"No image of a batch could be read ({len(problems)}: {', '.join(problems[:3])}); most of the data "
                "seems unreadable: `convnext-hf check` lists the unreadable images."
            )
        return super()._prepare_inputs(inputs)

    @torch.no_grad()
    def check_model_runs(self) -> None:
        """The task's loss computed once, in eval mode, on the first training example, before the run starts: a
        configuration that builds but cannot compute (a d_model its attention heads do not divide, feature widths
        that do not meet) is refused here in one line rather than as a traceback at the first step, and so is a loss
        that is NaN or infinite before any step."""
        # The examples' random augmentation draws from the generators the run draws its order from: put them back.
        python_state, numpy_state = random.getstate(), np.random.get_state()
        was_training = self.model.training
        try:
            with torch.random.fork_rng(devices=[]):
                inputs = self.data_collator([self.train_dataset[0]])
                inputs.pop(UNREADABLE, None)
                if "pixel_values" not in inputs:  # unreadable and skipped: the first step meets the first readable
                    return
                self.model.eval()
                loss = self.compute_loss(self.model, super()._prepare_inputs(inputs))
        except UserInputError:
            raise
        except BUILD_ERRORS as error:
            raise UserInputError(
                f"The model the flags describe cannot compute its loss on a training image ({type(error).__name__}: "
                f"{one_line(error)[:300]}); check its sizes in --config_overrides (widths, attention heads, feature "
                "levels)."
            ) from None
        finally:
            self.model.train(was_training)
            random.setstate(python_state)
            np.random.set_state(numpy_state)
        if not torch.isfinite(loss).all():
            raise UserInputError(
                "The model the flags describe gives a NaN or infinite loss on a training image before any step; "
                "check --config_overrides (loss weights, temperatures, initial scales) and the data."
            )

    def get_train_dataloader(self) -> Any:
        """The Trainer's, but a stream (`EpochStream`) is already this process's share: it is loaded as it is, not
        handed to accelerate, which would share it out again."""
        if not isinstance(self.train_dataset, EpochStream):
            return super().get_train_dataloader()
        args = self.args
        workers = args.dataloader_num_workers
        return torch.utils.data.DataLoader(
            self.train_dataset, batch_size=self._train_batch_size, collate_fn=self.data_collator,
            num_workers=workers, pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers and workers > 0,
            prefetch_factor=args.dataloader_prefetch_factor if workers > 0 else None,
        )  # fmt: skip

    def get_resumed_dataloader(self, dataloader: Any, num_batches: int) -> Any:
        """Resuming mid-run: a stream starts after the batches already trained on without decoding them; other data
        is skipped as the Trainer does."""
        if isinstance(self.train_dataset, EpochStream):
            placeholders = self.train_dataset.resume_after(num_batches, self.args.dataloader_num_workers)
            return AfterPlaceholders(dataloader, placeholders)
        return super().get_resumed_dataloader(dataloader, num_batches)

    def unreadable_images(self) -> list[str]:
        """The images ("PATH (WHY)") that the loaders of every process could not read and skipped, in order."""
        found = list(self.unreadable)
        if self.args.world_size > 1:
            from accelerate.utils import gather_object

            found = gather_object(found)
        return list(dict.fromkeys(found))

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """Create the --push_to_hub repository, as the Trainer does before training; a Hub that cannot be reached or
        that refuses the token stops the run in one line."""
        try:
            super().init_hf_repo(token, private)
        except Exception as error:  # any failure of the Hub call, network or HTTP, before a step is trained
            raise UserInputError(
                f"--push_to_hub: creating the Hub repository failed before training: {failure_hint(error)} "
                f"({type(error).__name__}). Fix that, or train without --push_to_hub and upload the folder later "
                "with `hf upload`."
            ) from error

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        """Resume the weights of a checkpoint saved under former names (see `saved_names`) under the model's own;
        the Trainer's loader would leave those tensors at their initial values, with a warning only."""
        model = model if model is not None else self.model
        path = os.path.join(resume_from_checkpoint, SAFE_WEIGHTS_NAME)
        names = saved_names(model) if os.path.isfile(path) and not self.is_fsdp_enabled else {}
        if all(saved == own for saved, own in names.items()):
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            return
        state = safetensors.torch.load_file(path, device="cpu")
        self._issue_warnings_after_load(model.load_state_dict({names.get(k, k): v for k, v in state.items()}, False))

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """The task's loss: on mixed batches while training, on the true labels while evaluating."""
        loss, outputs = self.task.hooks.compute_loss(model, inputs, self.mixup)
        if model.training:
            self.loss_guard.observe(loss)
        return (loss, outputs) if return_outputs else loss

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Save the model (final folder or checkpoint) as the Trainer does, unless its weights are not finite."""
        check_before_saving(state_dict if state_dict is not None else self.model, output_dir or self.args.output_dir)
        super()._save(output_dir, state_dict)

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """The Trainer's optimizer over the recipe's parameter groups."""
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            # An UperNet's layers are counted in its ConvNeXt backbone; its heads sit above the last layer.
            config = getattr(self.model.config, "backbone_config", None) or self.model.config
            groups = parameter_groups(
                opt_model,
                config,
                learning_rate=self.args.learning_rate,
                weight_decay=self.args.weight_decay,
                layer_decay=self.layer_decay,
                layer_decay_type=self.layer_decay_type,
            )
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def evaluate(
        self,
        eval_dataset: Any = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        """Evaluate the weights, then the EMA weights when there is an EMA (as `<prefix>_ema_*`)."""
        metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        if self.ema is not None:
            with self.ema.applied_to(self.model):
                metrics.update(super().evaluate(eval_dataset, ignore_keys, f"{metric_key_prefix}_ema"))
        return metrics

    def get_eval_dataloader(self, eval_dataset: Any = None) -> Any:
        """The Trainer's, but never dropping the last incomplete batch: --dataloader_drop_last is for training."""
        with self._last_batch_kept():
            return super().get_eval_dataloader(eval_dataset)

    def get_test_dataloader(self, test_dataset: Any) -> Any:
        """The Trainer's, but never dropping the last incomplete batch (the final evaluation goes through here)."""
        with self._last_batch_kept():
            return super().get_test_dataloader(test_dataset)

    @contextmanager
    def _last_batch_kept(self) -> Iterator[None]:
        drop_last = self.args.dataloader_drop_last
        self.args.dataloader_drop_last = False
        try:
            yield
        finally:
            self.args.dataloader_drop_last = drop_last

    def evaluation_loop(
        self,
        dataloader: Any,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> EvalLoopOutput:
        """The Trainer's loop, with the loss recomputed as the mean over exactly the validation images where the task
        can (`evaluation_loss` of its module: classifiers, from their logits), and the slots of unreadable validation
        images (`--on_bad_image skip`) left out of the predictions, the metrics and the loss."""
        compute_metrics = self.compute_metrics
        if compute_metrics is not None:
            self.compute_metrics = lambda prediction: compute_metrics(_without_placeholders(prediction))
        # The Trainer resets this after its loop.
        self.gather_function = self._gather_for_metrics
        try:
            output = super().evaluation_loop(
                dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
            )
        finally:
            self.compute_metrics = compute_metrics
        kept = _without_placeholders(EvalPrediction(predictions=output.predictions, label_ids=output.label_ids))
        output = output._replace(predictions=kept.predictions, label_ids=kept.label_ids)
        loss = getattr(self.task.hooks, "evaluation_loss", None)
        if loss is not None and isinstance(output.predictions, np.ndarray) and isinstance(output.label_ids, np.ndarray):
            output.metrics[f"{metric_key_prefix}_loss"] = loss(output.predictions, output.label_ids)
        return output

    def _gather_for_metrics(self, data: Any) -> Any:
        """accelerate's `gather_for_metrics`, but labels that are a list of per-image targets (detection) are gathered
        as objects: the last batch's padding is then cut by image, where gathering them as tensors would cut every
        target's tensors (its boxes, its [height, width]) to the number of images left."""
        return self.accelerator.gather_for_metrics(data, use_gather_object=isinstance(data, list))

    def settle_weights(self) -> tuple[SavedWeights | None, PredictionOutput | None]:
        """Put the weights to save into the model: with an EMA, the EMA or the live weights, whichever validates
        better on the metric that picks the best checkpoint (the EMA on a tie, and without validation images).
        Returns the choice and the chosen weights' predictions on the validation images; the EMA is done with
        afterwards."""
        if self.ema is None:
            return None, None
        ema, self.ema = self.ema, None
        steps = self.state.global_step
        if self.eval_dataset is None:
            ema.copy_to(self.model)
            return SavedWeights("EMA", None, {}, ema.decay, steps), None
        # The metric that picks the best checkpoint picks the weights too (the task's main one by default).
        name = self.args.metric_for_best_model or self.task.hooks.MAIN_METRIC
        metric = name if name.startswith("eval_") else f"eval_{name}"
        higher = self.args.greater_is_better if self.args.metric_for_best_model else True
        live = self.predict(self.eval_dataset, metric_key_prefix="eval")
        with ema.applied_to(self.model):
            averaged = self.predict(self.eval_dataset, metric_key_prefix="eval")
        scores = {"live": live.metrics[metric], "EMA": averaged.metrics[metric]}
        if (scores["EMA"] >= scores["live"]) if higher else (scores["EMA"] <= scores["live"]):
            ema.copy_to(self.model)
            return SavedWeights("EMA", metric, scores, ema.decay, steps), averaged
        return SavedWeights("live", metric, scores, ema.decay, steps), live

    def create_model_card(self, **kwargs: Any) -> None:
        """Write README.md into the output folder: the ConvNeXt card once the run has its results."""
        if self.card_facts is None:
            super().create_model_card(**kwargs)
            return
        if self.is_world_process_zero():
            card = build_model_card(self.card_facts, self.args.hub_model_id or self.args.output_dir)
            write_text(os.path.join(self.args.output_dir, "README.md"), str(card))
