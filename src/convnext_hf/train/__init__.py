"""Fine-tuning and training ConvNeXt with transformers' Trainer: `convnext-hf train` / `python -m convnext_hf.train`.

The names below load on first use, so that `convnext-hf train --help` imports neither torch nor transformers.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {"RunArguments": ".arguments", "parse_args": ".arguments", "main": ".command", "run": ".run"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """The public names, imported on first access."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name], __name__), name)
