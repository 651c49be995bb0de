"""A training loss that is NaN or infinite stops the run in one line (exit 2), before the optimizer steps on it; an
optimizer step that leaves a weight NaN or infinite (a finite loss times a learning rate of 1e30) stops it too, before
any evaluation, report or save runs the broken model."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from ..errors import UserInputError
from ..finite import NAMED_TENSORS, non_finite_tensors


class NonFiniteLossStop(TrainerCallback):
    """Watches the training losses of each optimizer step (`observe`, called where the loss is computed, without a
    device synchronisation) and stops the run before the step when one was NaN or infinite: the weights would
    become so, and every later number with them. All processes take the same decision."""

    def __init__(self) -> None:
        self.finite: torch.Tensor | None = None

    def observe(self, loss: torch.Tensor) -> None:
        """Note whether a training loss (of one batch or micro-batch) is finite."""
        flag = torch.isfinite(loss.detach()).all()
        self.finite = flag if self.finite is None else self.finite & flag

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Stop before the optimizer step when a loss of this step was not finite (on any process)."""
        if self.finite is None:
            return
        finite, self.finite = self.finite.to(torch.int32), None
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if not finite.item():
            raise UserInputError(
                f"Training stopped at step {state.global_step + 1}: the training loss is NaN or infinite, so the "
                "weights would become so too. Lower --learning_rate, check --config_overrides and the data (e.g. "
                "NaN boxes or labels), or resume from an earlier checkpoint; this step was not saved."
            )

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        """Stop after an optimizer step that made a weight NaN or infinite (on any process). Found by the fuzzer: a
        detector trained at a learning rate of 1e30 had a finite loss, then NaN weights that crashed its evaluation
        with a traceback. One reduction per tensor and one synchronisation a step."""
        if model is None:
            return
        bad = non_finite_tensors(dict(model.named_parameters()))
        finite = torch.tensor(0 if bad else 1, dtype=torch.int32, device=next(model.parameters()).device)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if not finite.item():
            shown = ", ".join(bad[:NAMED_TENSORS]) + (" ..." if len(bad) > NAMED_TENSORS else "")
            raise UserInputError(
                f"Training stopped at step {state.global_step}: the optimizer step left {len(bad) or 'some'} "
                f"weight tensor(s) NaN or infinite{f' ({shown})' if shown else ' (on another process)'}. Lower "
                "--learning_rate or the loss weights in --config_overrides, or resume from an earlier checkpoint; this "
                "step was not saved."
            )
