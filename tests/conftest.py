"""Shared fixtures: the golden checkpoints (copied from the reference material) and tiny configurations."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.manual_seed(0)

FIXTURES = Path(__file__).parent / "fixtures"


def golden_expected(case: str) -> dict[str, torch.Tensor]:
    """Inputs and reference outputs of a golden case (`mini`, `iso-mini`, `upernet-mini`)."""
    return load_file(FIXTURES / f"{case}.expected.safetensors")


@pytest.fixture
def tiny_config_kwargs() -> dict:
    """A four-stage ConvNeXt small enough to run in milliseconds."""
    return {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 2, 1, 1], "num_labels": 5}
