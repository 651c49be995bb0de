"""Detection batches: each image and its boxes through the augmentation (training) and the detector's own image
processor, which resizes, normalizes and turns COCO boxes into the normalized (cx, cy, w, h) targets of the loss."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ...images import read_image
from ...train.data import ImageData
from .augment import BoxAugment


def coco_target(image_id: int, boxes: Any, categories: Any, crowd: Any = None) -> dict:
    """One image's boxes as the `annotations` argument of a DETR-family image processor."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    crowd = np.zeros(len(boxes), dtype=np.int64) if crowd is None else np.asarray(crowd)
    return {
        "image_id": int(image_id),
        "annotations": [
            {"bbox": box.tolist(), "category_id": int(category), "area": float(box[2] * box[3]), "iscrowd": int(flag)}
            for box, category, flag in zip(boxes, categories, crowd, strict=True)
        ],
    }


# The validation boxes as the data gives them, carried beside the processor's targets (which drop crowd boxes and
# recompute areas) to the metrics: COCO scores against these.
TRUTH_FIELDS = {"bbox": "truth_boxes", "category": "truth_categories", "area": "truth_areas", "iscrowd": "truth_crowd"}


def truth_fields(objects: dict) -> dict[str, torch.Tensor]:
    """One image's `objects` as tensors for its evaluation target (the Trainer gathers tensors only)."""
    boxes = torch.tensor(objects["bbox"], dtype=torch.float64).reshape(-1, 4)
    return {
        TRUTH_FIELDS["bbox"]: boxes,
        TRUTH_FIELDS["category"]: torch.tensor(objects["category"], dtype=torch.int64),
        TRUTH_FIELDS["area"]: torch.tensor(objects["area"], dtype=torch.float64),
        TRUTH_FIELDS["iscrowd"]: torch.tensor(objects["iscrowd"], dtype=torch.int64),
    }


def truth_objects(target: dict) -> dict[str, list]:
    """The `objects` of an image back from its gathered evaluation target."""
    return {key: target[field].tolist() for key, field in TRUTH_FIELDS.items()}


def with_detection_transforms(data: ImageData, augment: BoxAugment | None, processor: Any) -> ImageData:
    """Attach the augmentation and the processor for training, the processor alone for validation."""

    def encode(batch: dict, train: bool) -> dict:
        images, targets = [], []
        for image, image_id, objects in zip(batch["image"], batch["image_id"], batch["objects"], strict=True):
            image = read_image(image)
            boxes, categories, crowd = objects["bbox"], objects["category"], objects["iscrowd"]
            if train and augment is not None:
                not_crowd = [index for index, flag in enumerate(crowd) if not flag]
                image, boxes, categories = augment(
                    image, np.asarray(boxes).reshape(-1, 4)[not_crowd], np.asarray(categories)[not_crowd]
                )
                crowd = None
            images.append(image)
            targets.append(coco_target(image_id, boxes, categories, crowd))
        encoded = processor(images=images, annotations=targets, return_tensors="pt")
        labels = list(encoded["labels"])
        if not train:
            for target, objects in zip(labels, batch["objects"], strict=True):
                target.update(truth_fields(objects))
        return {"pixel_values": list(encoded["pixel_values"]), "labels": labels}

    validation = None
    if data.validation is not None:
        validation = data.validation.with_transform(lambda batch: encode(batch, False))
    return data.with_splits(data.train.with_transform(lambda batch: encode(batch, True)), validation)


def collate_detection(examples: list[dict]) -> dict[str, Any]:
    """Stack the images (all of the processor's size) into `pixel_values`; keep `labels` as one dict per image."""
    return {
        "pixel_values": torch.stack([example["pixel_values"] for example in examples]),
        "labels": [example["labels"] for example in examples],
    }
