"""The Trainer of the ConvNeXt recipe: soft-target loss with Mixup/CutMix, recipe parameter groups, EMA evaluation."""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch
from torch import nn
from transformers import Trainer

from ..tasks import IMAGE_CLASSIFICATION, get_task
from .card import CardFacts, build_model_card
from .ema import ModelEma
from .mixup import Mixup
from .optim import parameter_groups
from .report import write_text


class ConvNextTrainer(Trainer):
    """transformers' Trainer with three changes that the recipe needs.

    - Loss: the task's (`compute_loss` of its record's module). Classification mixes training batches (Mixup/CutMix)
      and scores them against label-smoothed soft targets, evaluation with plain cross-entropy against the true
      labels; multi-label models score every label with a binary cross-entropy; segmentation models (UperNet) use
      their own per-pixel loss, unmixed.
    - Optimizer: the Trainer's optimizer class and flags (`--optim`, betas, eps) over the recipe's parameter groups
      (no weight decay on norms, biases and layer scale; layer-wise learning-rate decay).
    - Evaluation: with an EMA, every evaluation also scores the averaged weights, as `eval_ema_*` metrics.

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

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """The task's loss: on mixed batches while training, on the true labels while evaluating."""
        loss, outputs = self.task.hooks.compute_loss(model, inputs, self.mixup)
        return (loss, outputs) if return_outputs else loss

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

    def create_model_card(self, **kwargs: Any) -> None:
        """Write README.md into the output folder: the ConvNeXt card once the run has its results."""
        if self.card_facts is None:
            super().create_model_card(**kwargs)
            return
        if self.is_world_process_zero():
            card = build_model_card(self.card_facts, self.args.hub_model_id or self.args.output_dir)
            write_text(os.path.join(self.args.output_dir, "README.md"), str(card))
