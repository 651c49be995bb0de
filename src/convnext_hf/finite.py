"""Numbers that end up in a model: weights holding NaN or infinity are refused where they enter and before any save.

One check (`refuse_non_finite`) serves every place: the saved-folder loader (`model_folder`), resume checkpoints,
the converter, export, and every save of a training run (its checkpoints and final folder).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from .errors import UserInputError

NAMED_TENSORS = 3  # tensors named in a refusal; the rest are counted


def _local(value: torch.Tensor) -> torch.Tensor:
    """The part of a tensor this process holds: a sharded DTensor's local shard, any other tensor itself."""
    return value.to_local() if hasattr(value, "to_local") else value


def non_finite_tensors(tensors: Mapping[str, torch.Tensor] | nn.Module) -> list[str]:
    """The names of the floating-point tensors (parameters and buffers of a module) holding NaN or infinity."""
    if isinstance(tensors, nn.Module):
        tensors = tensors.state_dict()
    names = [name for name, value in tensors.items() if torch.is_tensor(value) and value.is_floating_point()]
    if not names:
        return []
    # A sum is finite only when every element is (NaN and infinity propagate), and is a fast reduction: one flag per
    # tensor, read back at once (a single device synchronisation). Only a tensor whose sum is not finite (a NaN, an
    # infinity, or finite values overflowing the sum) is checked element by element. A sharded tensor (DTensor) is
    # checked on the part this process holds.
    sums = [_local(tensors[name]).sum(dtype=torch.promote_types(tensors[name].dtype, torch.float32)) for name in names]
    sums_finite = torch.isfinite(torch.stack([value.to(sums[0].device) for value in sums])).tolist()
    suspects = [name for name, ok in zip(names, sums_finite, strict=True) if not ok]
    return [name for name in suspects if not torch.isfinite(_local(tensors[name])).all()]


def refuse_non_finite(tensors: Mapping[str, torch.Tensor] | nn.Module, what: str, fix: str) -> None:
    """Refuse, in one line, weights (`what` names them) holding NaN or infinity; `fix` says what to do instead."""
    bad = non_finite_tensors(tensors)
    if bad:
        more = len(bad) - NAMED_TENSORS
        shown = ", ".join(bad[:NAMED_TENSORS]) + (f" and {more} more" if more > 0 else "")
        raise UserInputError(f"{what}: {len(bad)} tensor(s) hold NaN or infinite values ({shown}); {fix}.")


def check_before_saving(weights: Mapping[str, torch.Tensor] | nn.Module, path: str | os.PathLike) -> None:
    """The check before any model is saved (a training run's checkpoints and final folder, its EMA weights, convert,
    export): weights holding NaN or infinity are refused, and nothing is written to `path`."""
    refuse_non_finite(weights, f"Not saving {os.fspath(path)}", "the weights hold numbers no model can compute with "
                      "(a diverged run, or a NaN in a setting such as --config_overrides); lower the learning rate or "
                      "fix the setting, and start again from an earlier checkpoint")  # fmt: skip
