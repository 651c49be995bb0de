"""Class names: the official heads' label sets (shipped, so that conversion needs no network), and the
id2label / label2id maps a configuration stores, for converted and trained models alike."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
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


def label_maps(names: Sequence[str] | Mapping[int, str]) -> dict[str, dict]:
    """`id2label` and `label2id` for a configuration, from class names in id order or an id -> name map.

    ImageNet-1k names two classes alike ("crane", "maillot"): label2id keeps the first id of each name.
    """
    id2label = dict(names) if isinstance(names, Mapping) else dict(enumerate(names))
    label2id: dict[str, int] = {}
    for index, name in id2label.items():
        label2id.setdefault(name, index)
    return {"id2label": id2label, "label2id": label2id}
