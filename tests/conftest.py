"""Session-wide settings and shared fixtures; importable helpers live in helpers.py."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.manual_seed(0)

# The fuzzer's profiles (tests/test_fuzz.py): `ci`, the default, runs a few derandomized examples per property (the
# same ones every run, seconds in all); `long` (HYPOTHESIS_PROFILE=long) runs many random ones (docs/security.md).
_FUZZ = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]}
settings.register_profile("ci", max_examples=12, derandomize=True, database=None, **_FUZZ)
settings.register_profile("long", max_examples=400, **_FUZZ)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def tiny_config_kwargs() -> dict:
    """A four-stage ConvNeXt small enough to run in milliseconds."""
    return {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 2, 1, 1], "num_labels": 5}
