"""Session-wide settings and shared fixtures; importable helpers live in helpers.py."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.manual_seed(0)


@pytest.fixture
def tiny_config_kwargs() -> dict:
    """A four-stage ConvNeXt small enough to run in milliseconds."""
    return {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 2, 1, 1], "num_labels": 5}
