"""Fine-tuning and training ConvNeXt with transformers' Trainer: `convnext-hf train` / `python -m convnext_hf.train`."""

from .arguments import RunArguments, parse_args
from .run import main, run

__all__ = ["RunArguments", "main", "parse_args", "run"]
