"""Class names for the official heads, shipped with the package so that conversion needs no network."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

# Number of classes -> label file in convnext_hf/data. The 22k file follows the official head order (sorted WordNet
# ids); ADE20K lists its 150 classes without the "other" label 0 that mmsegmentation drops (reduce_zero_label).
LABEL_FILES = {1000: "imagenet-1k", 21841: "imagenet-22k", 150: "ade20k-150"}


@dataclass(frozen=True)
class LabelSet:
    """The dataset a head was trained on (None when unknown) and its id -> name table."""

    dataset: str | None
    id2label: dict[int, str]


def labels_for(num_labels: int) -> LabelSet:
    """The official label set of a head with `num_labels` outputs, or generic names for any other head."""
    name = LABEL_FILES.get(num_labels)
    if name is None:
        return LabelSet(None, {index: f"LABEL_{index}" for index in range(num_labels)})
    entries = json.loads((resources.files(__package__) / "data" / f"{name}.json").read_text())
    id2label = {entry["id"]: entry["label"] for entry in entries}
    if sorted(id2label) != list(range(num_labels)):
        raise ValueError(
            f"Package data {name}.json does not hold ids 0..{num_labels - 1}; reinstall the package."
        )
    return LabelSet(name, id2label)
