"""From loaded weights to a transformers model: detect the layout and the architecture, map every parameter."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import transformers

from ..errors import UserInputError
from .architecture import Architecture, detect_architecture
from .checkpoint_io import Checkpoint
from .labels import LabelSet, labels_for
from .layouts import Layout, detect_layout
from .naming import BACKBONE, official_to_transformers
from .rename import rename
from .targets import AUTO_CLASSES, CONVNEXT_HF, MODEL_CLASSES, empty_model, image_processor, model_config


class MappingError(UserInputError):
    """Some weights of the checkpoint have no place in the target model, or some parameters of it no weight."""


@dataclass
class Conversion:
    """A converted model with everything needed to save, verify and describe it."""

    layout: Layout
    arch: Architecture
    labels: LabelSet
    official: dict[str, torch.Tensor]
    model: transformers.PreTrainedModel
    processor: transformers.BaseImageProcessor
    target: str


def _labels(checkpoint: Checkpoint, num_labels: int) -> LabelSet:
    """Class names stored with the checkpoint (transformers folders), else the official ones for this head size."""
    stored = (checkpoint.config or {}).get("id2label") or {}
    if len(stored) == num_labels and num_labels:
        return LabelSet("checkpoint config", {int(index): name for index, name in stored.items()})
    return labels_for(num_labels)


def _check_mapping(
    model: transformers.PreTrainedModel, mapped: dict[str, torch.Tensor], unmatched: list[str]
) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(unmatched) + sorted(set(mapped) - set(expected))
    mismatched = [
        f"{key}: checkpoint {tuple(mapped[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in sorted(set(mapped) & set(expected))
        if mapped[key].shape != expected[key].shape
    ]
    if missing or unexpected or mismatched:
        sections = [
            f"{title} ({len(keys)}):\n" + "\n".join(f"  {key}" for key in keys)
            for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
            if keys
        ]
        raise MappingError(
            "Refusing to convert: the weights do not map one-to-one onto the model, so the result would not be the "
            "checkpoint's network.\n" + "\n".join(sections) + "\nPass an unmodified checkpoint of a supported layout."
        )


def convert(checkpoint: Checkpoint, target: str = CONVNEXT_HF, resolution: int = 224) -> Conversion:
    """Build the target model holding exactly the checkpoint's weights (as float32)."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise UserInputError(
            f"resolution must be a positive number of pixels, got {resolution!r}; e.g. --resolution 224."
        )
    tensors = {key: value.float() if value.is_floating_point() else value for key, value in checkpoint.tensors.items()}
    layout = detect_layout(tensors)
    official = layout.to_official(tensors)
    arch = detect_architecture(official.renamed)
    labels = _labels(checkpoint, arch.num_labels)
    model = empty_model(arch, model_config(arch, labels.id2label, resolution, target), target)
    mapped = rename(official.renamed, official_to_transformers(arch.task, arch.isotropic))
    _check_mapping(model, mapped.renamed, official.unmatched + mapped.unmatched)
    model.load_state_dict(mapped.renamed, strict=True, assign=True)
    processor = image_processor(arch, resolution, target, reduce_labels=labels.dataset == "ade20k-150")
    return Conversion(layout, arch, labels, official.renamed, model.eval(), processor, target)


def save(conversion: Conversion, directory: Path, max_shard_size: str) -> None:
    """Write weights (safetensors, sharded above `max_shard_size`), config and image processor config."""
    conversion.model.save_pretrained(directory, max_shard_size=max_shard_size, safe_serialization=True)
    conversion.processor.save_pretrained(directory)


def reload(conversion: Conversion, directory: Path) -> transformers.PreTrainedModel:
    """The saved model read back through the Auto class of its task, as users will load it."""
    task = conversion.arch.task
    if task == BACKBONE:
        # transformers 5.23's AutoBackbone.from_pretrained asks the Hub whether a local folder is a repository (and
        # falls back to timm when not), so a local backbone folder loads only through its concrete class.
        return MODEL_CLASSES[conversion.target][task].from_pretrained(directory).eval()
    return AUTO_CLASSES[task].from_pretrained(directory).eval()
