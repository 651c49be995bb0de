"""The parity guarantee: an export runs once in its engine against PyTorch and is refused if they disagree.

Difference of one output on one input = max |engine − PyTorch| / max |PyTorch| (the largest error relative to the
output's largest magnitude, so it neither explodes on near-zero entries nor depends on the output's scale). The
export's difference is the largest over outputs and inputs. PyTorch runs in float32 in every case.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .engines import EngineModel
from .graph import Exportable, OutputTuple

# Relative tolerance per exported dtype: float32 engines must reproduce PyTorch; float16 rounds at 2^-11 per op.
TOLERANCES = {"float32": 1e-5, "float16": 1e-2}
SEED = 0
DEFINITION = "max |engine - pytorch| / max |pytorch|, per output and input; the largest; PyTorch in float32"


def parity_shapes(image_size: int, static_shape: Sequence[int] | None, stride: int = 1) -> list[tuple[int, int, int]]:
    """(batch, height, width) of the two parity inputs: with dynamic axes the second differs from the traced size
    in batch, height and width (odd, non-square, and above the model's total `stride` so that small models accept
    it); a static export has only its size, at two batch sizes."""
    if static_shape is not None:
        return [(2, *static_shape), (1, *static_shape)]
    height = max(image_size * 3 // 4 + 1, stride + 1) | 1
    width = max(image_size * 5 // 8 + 3, stride + 3) | 1
    if width == height:
        width += 2
    return [(2, image_size, image_size), (1, height, width)]


def relative_difference(reference: np.ndarray, actual: np.ndarray) -> float:
    """max |actual − reference| / max |reference| (0 when both are all zero; infinite if the shapes differ)."""
    if actual.shape != reference.shape:
        return float("inf")
    scale = float(np.abs(reference).max())
    error = float(np.abs(actual.astype(np.float64) - reference).max())
    return error / scale if scale > 0 else error


@torch.no_grad()
def measure_parity(
    exportable: Exportable, engine_model: EngineModel, shapes: Sequence[tuple[int, int, int]], channels: int = 3
) -> list[dict]:
    """Run PyTorch and the engine on seeded random inputs of each shape; the relative difference of every output."""
    reference_model = OutputTuple(exportable.model, exportable.fields).eval()
    generator = torch.Generator().manual_seed(SEED)
    results = []
    for batch, height, width in shapes:
        pixel_values = torch.randn(batch, channels, height, width, generator=generator)
        references = [output.float().numpy() for output in reference_model(pixel_values)]
        try:
            actuals = engine_model(pixel_values.numpy())
        except Exception as error:  # an engine that fails at this size disagrees; the report says how
            results.append({"input_shape": [batch, channels, height, width], "engine_error": str(error)[:500],
                            "max_relative_difference": dict.fromkeys(exportable.output_names, float("inf"))})
            continue
        differences = {
            name: relative_difference(reference, actual)
            for name, reference, actual in zip(exportable.output_names, references, actuals, strict=True)
        }
        results.append({"input_shape": [batch, channels, height, width], "max_relative_difference": differences})
    return results
