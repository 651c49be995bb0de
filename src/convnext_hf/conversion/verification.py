"""Checking a converted model against the independent reference forward of the source weights."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import transformers

from ..errors import UserInputError
from . import reference
from .architecture import Architecture
from .naming import BACKBONE, CLASSIFICATION, FEATURE_EXTRACTION, SEGMENTATION
from .options import DEFAULT_TOLERANCE

# Divisible by the total stride of every ConvNeXt (32, isotropic 16); not square, so that a swapped height and width
# cannot go unnoticed.
VERIFY_INPUT_SHAPE = (2, 96, 128)


class VerificationError(UserInputError, RuntimeError):
    """The converted model does not reproduce the reference outputs."""


def fixed_input(num_channels: int) -> torch.Tensor:
    """The same pseudo-random, normalized-looking batch on every machine and every run."""
    batch, height, width = VERIFY_INPUT_SHAPE
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, num_channels, height, width, generator=generator)


def reference_outputs(arch: Architecture, official: Mapping[str, torch.Tensor], pixels: torch.Tensor) -> dict:
    """The official forward's outputs, keyed like `model_outputs`."""
    weights = {key: value.float() for key, value in official.items()}
    if arch.task == SEGMENTATION:
        return reference.upernet(weights, pixels, arch.upernet.pool_scales, arch.layer_norm_eps)
    if arch.task == BACKBONE:
        features = reference.dense_features(weights, pixels, arch.layer_norm_eps)
        return {f"feature{k}": feature for k, feature in enumerate(features, start=1)}
    return reference.classification(weights, pixels, arch.layer_norm_eps)


@torch.no_grad()
def model_outputs(arch: Architecture, model: transformers.PreTrainedModel, pixels: torch.Tensor) -> dict:
    """logits / pooled / stage{k} / feature{k} of a converted model, whichever its task has."""
    model.eval()
    if arch.task == SEGMENTATION:
        features = model.backbone(pixels).feature_maps
        outputs = {f"feature{k}": feature for k, feature in enumerate(features, start=1)}
        outputs["logits"] = model(pixels).logits
        return outputs
    if arch.task == BACKBONE:
        return {f"feature{k}": feature for k, feature in enumerate(model(pixels).feature_maps, start=1)}
    result = model(pixels, output_hidden_states=True)
    outputs = {f"stage{k}": state for k, state in enumerate(result.hidden_states[1:], start=1)}
    if arch.task == CLASSIFICATION:
        outputs["logits"] = result.logits
    if arch.task == FEATURE_EXTRACTION:
        outputs["pooled"] = result.pooler_output
    return outputs


def check_tolerance(tolerance: float) -> None:
    """A verification tolerance is a positive, finite number."""
    if not 0 < tolerance < math.inf:
        raise UserInputError(
            f"--tolerance must be positive and finite, got {tolerance}; e.g. --tolerance 1e-4 (the default)."
        )


def verify(
    arch: Architecture,
    model: transformers.PreTrainedModel,
    official: Mapping[str, torch.Tensor],
    tolerance: float = DEFAULT_TOLERANCE,
) -> dict[str, float]:
    """Max |difference| per output between `model` and the reference; raises when any exceeds `tolerance`."""
    check_tolerance(tolerance)
    pixels = fixed_input(arch.num_channels)
    expected = reference_outputs(arch, official, pixels)
    actual = model_outputs(arch, model, pixels)
    overflowing = sorted(name for name, value in expected.items() if not value.isfinite().all())
    if overflowing:
        raise VerificationError(
            f"The reference forward of the source weights gives non-finite outputs ({', '.join(overflowing)}) on a "
            "normal input: the weights are finite but too large for float32 arithmetic. The checkpoint is damaged; "
            "nothing was written."
        )
    diffs = {name: (actual[name].float() - expected[name]).abs().max().item() for name in actual}
    failed = {name: diff for name, diff in diffs.items() if not diff <= tolerance}
    if failed:
        listing = ", ".join(f"{name} {diff:.3g}" for name, diff in sorted(failed.items()))
        raise VerificationError(
            f"The converted model differs from the reference forward of the source weights by more than {tolerance:g} "
            f"({listing}); nothing was written. This means a wrong mapping or a layout the converter misreads: "
            "please report it with the checkpoint's origin."
        )
    return diffs
