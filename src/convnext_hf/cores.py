"""How many CPU cores this process may use, and how many loader workers that gives it."""

from __future__ import annotations

import os


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, which schedulers and `taskset` narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_loader_workers(batches: int | None) -> int:
    """Loader worker processes for one training process: its share of the machine's cores (launchers start
    LOCAL_WORLD_SIZE processes per machine) less one for the training loop, and no more than the batches of an
    epoch (`batches`; None when the length is unknown)."""
    share = available_cores() // max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
    workers = max(share - 1, 0)
    return workers if batches is None else min(workers, batches)
