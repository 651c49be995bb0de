"""What every task's data has in common: the splits with their label names, and the up-front check of the images.

Each task loads its own data (`tasks/<task>`) into an `ImageData`; unreadable images are found here, before training
starts, rather than halfway through a run.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace

import datasets
from PIL import Image

from ..tasks import IMAGE_CLASSIFICATION

IMAGE_COLUMNS = ("image", "img", "image_path", "path", "file")
FILE_BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json"}


@dataclass
class ImageData:
    """The training and validation splits, their label names, a description of the source for the model card, and
    the task they were loaded for (a classification label column holding lists makes it multi-label)."""

    train: datasets.Dataset
    validation: datasets.Dataset | None
    label_names: list[str]
    source: str
    task: str = IMAGE_CLASSIFICATION

    def with_splits(self, train: datasets.Dataset, validation: datasets.Dataset | None) -> ImageData:
        """The same data with other splits (e.g. with their transforms attached)."""
        return replace(self, train=train, validation=validation)


def _image_problem(image: dict) -> str:
    """Why an undecoded image entry cannot be used ("" when it decodes)."""
    try:
        source = io.BytesIO(image["bytes"]) if image.get("bytes") else image["path"]
        with Image.open(source) as opened:
            opened.load()
    except Exception as error:  # noqa: BLE001 - any decoding failure makes the image unusable
        return f"{type(error).__name__}: {error}"
    return ""


def find_bad_images(dataset: datasets.Dataset, num_proc: int | None = None) -> list[tuple[int, str, str]]:
    """Decode every image once; return (row, path or '<row N>', reason) for each that fails."""
    raw = dataset.cast_column("image", datasets.Image(decode=False))
    problems = raw.map(
        lambda batch: {"problem": [_image_problem(image) for image in batch["image"]]},
        batched=True,
        num_proc=num_proc,
        remove_columns=raw.column_names,
        desc="Checking images",
    )["problem"]
    bad = [row for row, problem in enumerate(problems) if problem]
    images = raw.select(bad)["image"] if bad else []
    return [(row, image.get("path") or f"<row {row}>", problems[row]) for row, image in zip(bad, images, strict=True)]
