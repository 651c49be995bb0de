"""Session-wide settings and shared fixtures; importable helpers live in helpers.py."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.manual_seed(0)
# Under pytest-xdist (the README's test command runs one worker per core), each worker computes on its share of the
# cores, not on all of them at once.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _WORKERS))

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
