"""Exponential moving average of the model weights (Polyak averaging), as the ConvNeXt recipe keeps it.

After every optimizer step, ema ← decay · ema + (1 - decay) · weights for every floating-point parameter and buffer.
The average lives beside the model in fp32, is saved into each checkpoint as `ema.safetensors` so that a resumed run
continues it, and is swapped into the model to evaluate it (and, at the end, to save it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..atomic import atomic_file
from ..errors import UserInputError
from ..finite import check_before_saving

EMA_WEIGHTS_NAME = "ema.safetensors"


class ModelEma:
    """The running average of a model's floating-point state; other entries are copied as they are."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise UserInputError(f"EMA decay must be in (0, 1), got {decay}; the paper uses 0.9999.")
        self.decay = decay
        self.shadow = {
            name: value.detach().float().clone() if value.is_floating_point() else value.detach().clone()
            for name, value in model.state_dict().items()
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights into the average."""
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                self.shadow[name].lerp_(value.detach().float(), 1.0 - self.decay)
            else:
                self.shadow[name].copy_(value)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's weights with the average (in the model's own dtypes)."""
        for name, value in model.state_dict().items():
            value.copy_(self.shadow[name])

    @contextmanager
    def applied_to(self, model: nn.Module) -> Iterator[nn.Module]:
        """Within the block the model holds the averaged weights; its own weights come back afterwards."""
        raw = {name: value.detach().clone() for name, value in model.state_dict().items()}
        self.copy_to(model)
        try:
            yield model
        finally:
            model.load_state_dict(raw)

    def save(self, directory: str) -> None:
        """Write the average to `directory/ema.safetensors` (through a temporary file)."""
        path = os.path.join(directory, EMA_WEIGHTS_NAME)
        check_before_saving(self.shadow, path)
        with atomic_file(path) as staging:
            save_file({name: value.contiguous() for name, value in self.shadow.items()}, str(staging))

    def load(self, directory: str) -> None:
        """Read the average a checkpoint saved; refuse one that does not fit the model."""
        path = os.path.join(directory, EMA_WEIGHTS_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} is missing: the checkpoint was saved without --model_ema. Resume without --model_ema, or "
                "start a new run."
            )
        loaded = load_file(path)
        if loaded.keys() != self.shadow.keys():
            raise UserInputError(f"{path} holds weights of another model (different parameter names); start a new run.")
        self.shadow = loaded


class EmaCallback(TrainerCallback):
    """Updates the EMA after every optimizer step and writes it into every checkpoint the Trainer saves."""

    def __init__(self, ema: ModelEma) -> None:
        self.ema = ema

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model: nn.Module = None, **kwargs
    ) -> None:
        self.ema.update(model)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        if state.is_world_process_zero:
            self.ema.save(os.path.join(args.output_dir, f"checkpoint-{state.global_step}"))
