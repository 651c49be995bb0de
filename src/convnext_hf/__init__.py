"""ConvNeXt for Hugging Face transformers; importing the package registers it with the Auto classes.

The import itself is light: the classes load on first use, and the registration runs as soon as transformers is
imported (`auto_registration`), so the `convnext-hf` command answers `--help` without loading torch.
"""

from importlib import import_module
from typing import Any

from .auto_registration import register_on_transformers_import

__version__ = "0.1.0"

# Public name -> the module that defines it, imported on first access.
_EXPORTS = {
    "BackboneWeightsReport": ".backbone_weights",
    "load_backbone_weights": ".backbone_weights",
    "portable_head": ".portable",
    "VARIANTS": ".configuration_convnext",
    "ConvNextConfig": ".configuration_convnext",
    "ConvNextHFImageProcessor": ".image_processing_convnext",
    "ConvNextImageProcessor": ".image_processing_convnext",
    "ConvNextBackbone": ".modeling_convnext",
    "ConvNextForImageClassification": ".modeling_convnext",
    "ConvNextModel": ".modeling_convnext",
    "ConvNextPreTrainedModel": ".modeling_convnext",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """The public classes, imported on first access."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the lazily imported ones included."""
    return sorted({*globals(), *_EXPORTS})


register_on_transformers_import()
