"""ConvNeXt for Hugging Face transformers; importing the package registers it with the Auto classes."""

from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
)
from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING
from transformers.models.auto.video_processing_auto import VIDEO_PROCESSOR_MAPPING

from .backbone_weights import BackboneWeightsReport, load_backbone_weights
from .configuration_convnext import VARIANTS, ConvNextConfig
from .image_processing_convnext import ConvNextHFImageProcessor, ConvNextImageProcessor
from .modeling_convnext import (
    ConvNextBackbone,
    ConvNextForImageClassification,
    ConvNextModel,
    ConvNextPreTrainedModel,
)
from .portable import portable_head

AutoConfig.register(ConvNextConfig.model_type, ConvNextConfig, exist_ok=True)
AutoModel.register(ConvNextConfig, ConvNextModel, exist_ok=True)
AutoModelForImageClassification.register(ConvNextConfig, ConvNextForImageClassification, exist_ok=True)
AutoBackbone.register(ConvNextConfig, ConvNextBackbone, exist_ok=True)
# Not AutoImageProcessor.register: it matches configs by class name, so it would merge in the built-in ConvNext's
# torchvision processor (and warn that torchvision is missing).
IMAGE_PROCESSOR_MAPPING.register(ConvNextConfig, {"pil": ConvNextHFImageProcessor}, exist_ok=True)
# No video processor: pipeline() probes for one, deriving an AutoVideoProcessor entry from the image processor's
# auto_map, and would ask whether to trust that (nonexistent) remote code unless the config says it has none locally.
VIDEO_PROCESSOR_MAPPING.register(ConvNextConfig, {}, exist_ok=True)

# save_pretrained copies the code files next to the weights, so saved folders load as remote code.
ConvNextConfig.register_for_auto_class()
ConvNextModel.register_for_auto_class("AutoModel")
ConvNextForImageClassification.register_for_auto_class("AutoModelForImageClassification")
ConvNextBackbone.register_for_auto_class("AutoBackbone")
ConvNextHFImageProcessor.register_for_auto_class("AutoImageProcessor")

__version__ = "0.1.0"

__all__ = [
    "VARIANTS",
    "BackboneWeightsReport",
    "ConvNextBackbone",
    "ConvNextConfig",
    "ConvNextForImageClassification",
    "ConvNextHFImageProcessor",
    "ConvNextImageProcessor",
    "ConvNextModel",
    "ConvNextPreTrainedModel",
    "load_backbone_weights",
    "portable_head",
]
