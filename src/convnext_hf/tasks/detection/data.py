"""Object-detection data: COCO annotation files or Hub datasets in the `objects` layout, checked before training.

Every source becomes a `datasets.Dataset` with the columns of transformers' object-detection example: `image`
(decoded to PIL on access), `image_id`, `width`, `height` and `objects` = {`bbox`: COCO `[x, y, width, height]` in
pixels, `category`: index into the label names, `area`, `iscrowd`}. Problems that would stop a run halfway or
silently skew it (a category id the file does not define, a box outside its image or without area, an image file
that is missing or whose size disagrees with the file) are found here and reported with their counts.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Iterable
from typing import Any

import datasets

from ...annotations import Problems, check_label_names, confined_path
from ...errors import UserInputError
from ...images import image_frames
from ...tasks import OBJECT_DETECTION
from ...train.arguments import DataArguments
from ...train.data import ImageData, hold_out_and_limit
from .annotations import check_objects, read_coco

logger = logging.getLogger(__name__)

BAD_BOX_POLICIES = ("error", "skip")
# Boxes may overhang their image by this many pixels (rounding in the tools that write COCO files).
BOX_TOLERANCE = 1.0
# A box narrower or lower than this many pixels is degenerate: scaled to the image it rounds to 0 in float32, and the
# box losses divide by its area.
MIN_BOX_SIDE = 0.01
OBJECT_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "image_id": datasets.Value("int64"),
        "width": datasets.Value("int32"),
        "height": datasets.Value("int32"),
        "objects": {
            "bbox": datasets.List(datasets.List(datasets.Value("float32"), length=4)),
            "category": datasets.List(datasets.Value("int64")),
            "area": datasets.List(datasets.Value("float32")),
            "iscrowd": datasets.List(datasets.Value("int64")),
        },
    }
)


def _examples(count: Counter, limit: int = 3) -> str:
    return ", ".join(f"{key} ({number}×)" for key, number in count.most_common(limit))


def box_problem(box: Any, width: int, height: int) -> str:
    """Why a COCO box `[x, y, w, h]` cannot be trained on in a width×height image ("" when it can)."""
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        return "not four numbers [x, y, width, height]"
    x, y, w, h = (float(value) for value in box)
    if not all(math.isfinite(value) for value in (x, y, w, h)):
        return "not finite (NaN or infinity)"
    if not w >= MIN_BOX_SIDE or not h >= MIN_BOX_SIDE:
        return f"degenerate (width or height below {MIN_BOX_SIDE} pixel)"
    if x < -BOX_TOLERANCE or y < -BOX_TOLERANCE or x + w > width + BOX_TOLERANCE or y + h > height + BOX_TOLERANCE:
        return f"outside its {width}×{height} image"
    return ""


def coco_label_names(coco: dict, path: str) -> tuple[list[str], dict[int, int]]:
    """The category names in the order of their ids, and each COCO category id's index among them."""
    categories = sorted(coco["categories"], key=lambda category: category["id"])
    names = [str(category["name"]) for category in categories]
    duplicates = [name for name, number in Counter(names).items() if number > 1]
    if duplicates:
        raise UserInputError(f"{path} names categories {duplicates} more than once; give each category one name.")
    if not names:
        raise UserInputError(f"{path} defines no categories; list them as {{'id': 1, 'name': 'cat'}}.")
    return names, {int(category["id"]): index for index, category in enumerate(categories)}


def _image_frames(path: str) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """(width, height) as stored and as displayed (EXIF orientation applied), from the file's header; None when it
    cannot be opened."""
    try:
        return image_frames(path)
    except Exception:  # noqa: BLE001 - any failure to open makes the image unusable
        return None


def _size_problem(image: dict, path: str, frames: tuple[tuple[int, int], tuple[int, int]]) -> str:
    """Why the file's width/height (when given) fit neither the image as stored nor as displayed ("" when it fits):
    boxes are read in the displayed frame, which annotation tools show, and some tools write the stored size."""
    if "width" not in image or "height" not in image:
        return ""
    (stored, displayed), given = frames, (int(image["width"]), int(image["height"]))
    if given in (stored, displayed):
        return ""
    frame = f"{displayed[0]}×{displayed[1]}" + (
        "" if stored == displayed else f" as displayed ({stored[0]}×{stored[1]} as stored, before its EXIF rotation)"
    )
    return f"{path}: is {frame}, the file says {image['width']}×{image['height']}"


def load_coco(
    images_dir: str,
    annotations_path: str,
    split: str,
    label_names: list[str] | None = None,
    on_bad_image: str = "error",
    on_bad_box: str = "error",
) -> tuple[datasets.Dataset, list[str]]:
    """A COCO file's images (`file_name` relative to `images_dir`) and boxes as a dataset, with the label names.

    Category ids the file does not define, annotations of unknown images, and boxes that are degenerate or outside
    their image are refused with their counts (`on_bad_box="skip"` leaves such boxes out instead); missing or
    unreadable images likewise (`on_bad_image="skip"`). `label_names` (the training split's) must match the file's.
    """
    if not os.path.isdir(images_dir):
        raise UserInputError(f"The {split} image folder {images_dir} does not exist.")
    coco = read_coco(annotations_path, split, images_dir)
    names, index_of = coco_label_names(coco, annotations_path)
    if label_names is not None and names != label_names:
        raise UserInputError(
            f"The {split} categories {names} differ from the training categories {label_names}; give both files "
            "the same categories (same ids and names)."
        )
    images = {int(image["id"]): image for image in coco["images"]}
    annotations = coco["annotations"]
    unknown_category = Counter(a.get("category_id") for a in annotations if a.get("category_id") not in index_of)
    if unknown_category:
        raise UserInputError(
            f"{sum(unknown_category.values())} annotation(s) in {annotations_path} have category ids that its "
            f"'categories' do not define: {_examples(unknown_category)}; defined ids: {sorted(index_of)}."
        )
    unknown_image = Counter(a.get("image_id") for a in coco["annotations"] if a.get("image_id") not in images)
    if unknown_image:
        raise UserInputError(
            f"{sum(unknown_image.values())} annotation(s) in {annotations_path} refer to image ids that its 'images' "
            f"do not list: {_examples(unknown_image)}."
        )
    bad_images: dict[int, str] = {}
    for image_id, image in images.items():
        path, _ = confined_path(images_dir, image["file_name"])
        frames = _image_frames(path) if os.path.isfile(path) else None
        if not os.path.isfile(path):
            bad_images[image_id] = f"{path}: missing"
        elif frames is None:
            bad_images[image_id] = f"{path}: unreadable"
        elif _size_problem(image, path, frames):
            bad_images[image_id] = _size_problem(image, path, frames)
        else:
            # Boxes are checked against, and trained in, the displayed frame that `read_image` returns.
            (image["width"], image["height"]), image["path"] = frames[1], path
    if bad_images:
        listing = "\n".join(f"  {line}" for line in list(bad_images.values())[:10])
        if on_bad_image == "error":
            raise UserInputError(
                f"{len(bad_images)} of the {len(images)} {split} image(s) named in {annotations_path} cannot be used "
                f"(file_name is relative to {images_dir}):\n{listing}\nFix them, or pass --on_bad_image skip to "
                "leave them out."
            )
        logger.warning("Leaving out %d %s image(s):\n%s", len(bad_images), split, listing)
    objects: dict[int, dict[str, list]] = {
        image_id: {"bbox": [], "category": [], "area": [], "iscrowd": []} for image_id in images
    }
    bad_boxes: Counter = Counter()
    for annotation in coco["annotations"]:
        image = images[annotation["image_id"]]
        if annotation["image_id"] in bad_images:
            continue
        problem = box_problem(annotation.get("bbox"), image["width"], image["height"])
        if not problem and annotation.get("area", 1) <= 0:
            problem = "area not above 0"
        if problem:
            bad_boxes[problem] += 1
            continue
        box = [float(value) for value in annotation["bbox"]]
        found = objects[annotation["image_id"]]
        found["bbox"].append(box)
        found["category"].append(index_of[annotation["category_id"]])
        found["area"].append(float(annotation.get("area", box[2] * box[3])))
        found["iscrowd"].append(int(annotation.get("iscrowd", 0)))
    if bad_boxes:
        message = f"{sum(bad_boxes.values())} box(es) in {annotations_path} cannot be used: {_examples(bad_boxes)}"
        if on_bad_box == "error":
            raise UserInputError(f"{message}. Fix them, or pass --on_bad_box skip to leave those boxes out.")
        logger.warning("%s; left out (--on_bad_box skip).", message)
    kept = sorted(image_id for image_id in images if image_id not in bad_images)
    if not kept:
        raise UserInputError(f"No usable {split} images in {annotations_path}.")
    rows = {
        "image": [images[i]["path"] for i in kept],
        "image_id": kept,
        "width": [images[i]["width"] for i in kept],
        "height": [images[i]["height"] for i in kept],
        "objects": [objects[i] for i in kept],
    }
    return datasets.Dataset.from_dict(rows, features=OBJECT_FEATURES), names


def _hub_label_names(dataset: datasets.Dataset, args: DataArguments) -> list[str]:
    category = dataset.features["objects"]
    category = category.get("category") if isinstance(category, dict) else getattr(category, "feature", {}).get(
        "category"
    )
    names = getattr(getattr(category, "feature", None), "names", None)
    if names:
        return list(names)
    if args.id2label is not None:
        from ..segmentation.data import parse_id2label

        mapping = parse_id2label(args.id2label)
        return [mapping[index] for index in range(len(mapping))]
    raise UserInputError(
        "The dataset's objects.category holds plain ids without class names; name them with --id2label "
        "'{\"0\": \"cat\", \"1\": \"dog\"}'."
    )


def _from_objects(dataset: datasets.Dataset, split: str, num_labels: int, on_bad_box: str) -> datasets.Dataset:
    """A dataset in the `objects` layout (image, objects.bbox in COCO pixels, objects.category), checked and
    brought to this module's columns."""
    missing = [column for column in ("image", "objects") if column not in dataset.column_names]
    if missing:
        raise UserInputError(
            f"The {split} split lacks the column(s) {missing}; object detection reads an `image` column and an "
            "`objects` column of {'bbox': [[x, y, w, h], ...], 'category': [...]}, as transformers' example."
        )
    check_objects(dataset["objects"], split, num_labels)
    counts: Counter = Counter()

    def convert(batch: dict) -> dict:
        out: dict[str, list] = {"image_id": [], "width": [], "height": [], "objects": []}
        for row, (image, objects) in enumerate(zip(batch["image"], batch["objects"], strict=True)):
            # The displayed frame, in which boxes are read, from the file's header.
            width, height = image_frames(image)[1]
            kept: dict[str, list] = {"bbox": [], "category": [], "area": [], "iscrowd": []}
            # Areas and crowd flags as the dataset gives them, when it does (what COCO's metrics read).
            areas = objects.get("area") or [float(box[2]) * float(box[3]) for box in objects["bbox"]]
            crowd = objects.get("iscrowd") or [0] * len(objects["bbox"])
            for box, category, area, flag in zip(objects["bbox"], objects["category"], areas, crowd, strict=True):
                problem = box_problem(box, width, height)
                if not 0 <= int(category) < num_labels:
                    problem = f"category {category} outside 0..{num_labels - 1}"
                if problem:
                    counts[problem] += 1
                    continue
                kept["bbox"].append([float(value) for value in box])
                kept["category"].append(int(category))
                kept["area"].append(float(area))
                kept["iscrowd"].append(int(flag))
            out["image_id"].append(batch["image_id"][row] if "image_id" in batch else batch["_row"][row])
            out["width"].append(width)
            out["height"].append(height)
            out["objects"].append(kept)
        return out

    dataset = dataset.add_column("_row", list(range(len(dataset)))).cast_column("image", datasets.Image(decode=False))
    converted = dataset.map(convert, batched=True, remove_columns=[c for c in dataset.column_names if c != "image"])
    if counts:
        message = f"{sum(counts.values())} box(es) in the {split} split cannot be trained on: {_examples(counts)}"
        if on_bad_box == "error":
            raise UserInputError(f"{message}. Fix them, or pass --on_bad_box skip to leave those boxes out.")
        logger.warning("%s; left out (--on_bad_box skip).", message)
    return converted.cast(OBJECT_FEATURES)


def _load_hub(args: DataArguments, cache_dir: str | None) -> tuple[dict[str, datasets.Dataset], list[str]]:
    data = datasets.load_dataset(args.dataset_name, args.dataset_config_name, cache_dir=cache_dir)
    if "train" not in data:
        raise UserInputError(f"{args.dataset_name} has no 'train' split (it has {list(data)}).")
    splits = {"train": data["train"]}
    validation = next((name for name in ("validation", "valid", "val", "test") if name in data), None)
    if validation is not None:
        splits["validation"] = data[validation]
    names = _hub_label_names(data["train"], args)
    problems = Problems(f"{args.dataset_name}'s class names")
    check_label_names([(f"names[{index}]", name) for index, name in enumerate(names)], problems)
    problems.refuse("Give each class a different non-empty name on one line (--id2label).")
    checked = {split: _from_objects(dataset, split, len(names), args.on_bad_box) for split, dataset in splits.items()}
    return checked, names


def load_detection_data(args: DataArguments, seed: int, cache_dir: str | None = None) -> ImageData:
    """The training and validation images with their boxes, from COCO files or a Hub dataset; checked and split."""
    if (args.train_dir is None) == (args.dataset_name is None) or args.train_file is not None:
        raise UserInputError(
            "Object-detection data: pass --train_dir IMAGES --train_annotations F.json (COCO format, file_name "
            "relative to IMAGES), or --dataset_name with `image` and `objects` columns."
        )
    if args.train_dir is not None:
        train, names = load_coco(
            args.train_dir, args.train_annotations, "train", None, args.on_bad_image, args.on_bad_box
        )
        splits = {"train": train}
        if args.validation_dir is not None:
            splits["validation"], _ = load_coco(
                args.validation_dir, args.validation_annotations, "validation", names, args.on_bad_image,
                args.on_bad_box,
            )
        elif args.validation_annotations is not None:
            raise UserInputError("--validation_annotations goes with --validation_dir (the images it describes).")
        source = args.train_dir
    else:
        splits, names = _load_hub(args, cache_dir)
        source = args.dataset_name
    crowd = [flag for objects in splits["train"]["objects"] for flag in objects["iscrowd"]]
    boxes = crowd.count(0)
    if boxes == 0:
        crowds = f" ({len(crowd)} crowd region(s), iscrowd 1, which are not objects to learn)" if crowd else ""
        raise UserInputError(
            f"The training data from {source} has no boxes to learn from{crowds}; annotate the objects with iscrowd 0."
        )
    train, validation = splits["train"], splits.get("validation")
    train, validation = hold_out_and_limit(train, validation, args, seed)
    logger.info(
        "Detection data: %d training image(s) with %d box(es), %d validation image(s), classes %s",
        len(train), boxes, len(validation) if validation is not None else 0, names,
    )
    return ImageData(train, validation, names, source, task=OBJECT_DETECTION)


def coco_category_ids(path: str, images_dir: str) -> list[int]:
    """The COCO file's category id of each label index (its categories in the order of their ids)."""
    _, index_of = coco_label_names(read_coco(path, "validation", images_dir), path)
    return sorted(index_of, key=index_of.__getitem__)


def coco_ground_truth(dataset: datasets.Dataset | Iterable[dict], label_names: list[str]) -> dict:
    """The boxes of the dataset (or of rows with its columns) as a COCO ground-truth dict, crowd flags and areas
    as given (category ids 0..n-1 are the label indices)."""
    columns = ["image_id", "width", "height", "objects"]
    rows = dataset.select_columns(columns) if isinstance(dataset, datasets.Dataset) else dataset
    images, annotations = [], []
    for row in rows:
        images.append({"id": int(row["image_id"]), "width": int(row["width"]), "height": int(row["height"])})
        objects = row["objects"]
        for box, category, area, crowd in zip(
            objects["bbox"], objects["category"], objects["area"], objects["iscrowd"], strict=True
        ):
            annotations.append({
                "id": len(annotations) + 1, "image_id": int(row["image_id"]), "category_id": int(category),
                "bbox": [float(value) for value in box], "area": float(area), "iscrowd": int(crowd),
            })  # fmt: skip
    categories = [{"id": index, "name": name} for index, name in enumerate(label_names)]
    return {"images": images, "annotations": annotations, "categories": categories}
