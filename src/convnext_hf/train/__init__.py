"""Fine-tuning and training ConvNeXt with transformers' Trainer: `convnext-hf train` / `python -m convnext_hf.train`.

The names below load on first use, so that `convnext-hf train --help` imports neither torch nor transformers.
"""

import sys
from importlib import import_module
from types import ModuleType
from typing import Any

_EXPORTS = {"RunArguments": ".arguments", "parse_args": ".arguments", "main": ".command", "run": ".run"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """The public names, imported on first access."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name], __name__), name)


class _Package(ModuleType):
    """`convnext_hf.train.run` stays the function: importing the submodule of the same name would rebind it."""

    @property
    def run(self) -> Any:
        """The `run` function of the `run` module."""
        return import_module(".run", __name__).run

    @run.setter
    def run(self, value: Any) -> None:
        """Ignore the import system binding the `run` submodule here (it stays in sys.modules)."""


sys.modules[__name__].__class__ = _Package
