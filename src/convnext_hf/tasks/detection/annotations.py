"""The schema of detection annotations, COCO files and a dataset's `objects` rows, checked where they are read.

Everything the run uses is checked before it is used: types (ids are integers, boxes four finite numbers, sizes
positive integers, `iscrowd` 0 or 1, names non-empty strings), uniqueness (category and image ids), references
(category and image ids the file defines) and `file_name`s confined to the image folder. A refusal names the file and
the JSON paths of the first problems (`convnext_hf.annotations.Problems`).
"""

from __future__ import annotations

from typing import Any

from ...annotations import (
    Problems,
    check_label_names,
    confined_path,
    integer_problem,
    is_integer,
    number_problem,
    read_json_file,
    shown_value,
)
from ...errors import UserInputError

COCO_FIX = (
    "Fix these entries: a COCO detection file is an object with lists 'images' ({'id': int, 'file_name': str, "
    "'width': int, 'height': int}), 'annotations' ({'id', 'image_id', 'category_id': int, 'bbox': [x, y, width, "
    "height] numbers, 'iscrowd': 0 or 1}) and 'categories' ({'id': int, 'name': str})."
)
OBJECTS_FIX = (
    "Fix these rows: `objects` holds 'bbox': [[x, y, width, height], ...] (finite numbers in pixels) and "
    "'category': [class index, ...], one per box."
)


def _entries(coco: dict, key: str, problems: Problems) -> list[tuple[int, dict]]:
    """The entries of `coco[key]` that are objects, with their index; the others recorded as problems."""
    kept = []
    for index, entry in enumerate(coco[key]):
        if isinstance(entry, dict):
            kept.append((index, entry))
        else:
            problems.add(f"{key}[{index}]", f"{shown_value(entry)} is not an object")
    return kept


def _unique_ids(entries: list[tuple[int, dict]], key: str, problems: Problems) -> None:
    """Each entry's `id` an integer, none shared (two categories with one id: one never trained)."""
    first: dict[int, int] = {}
    for index, entry in entries:
        if "id" not in entry:
            problems.add(f"{key}[{index}]", "has no 'id'")
        elif integer_problem(entry["id"]):
            problems.add(f"{key}[{index}].id", integer_problem(entry["id"]))
        elif entry["id"] in first:
            problems.add(f"{key}[{index}].id", f"{entry['id']} is also the id of {key}[{first[entry['id']]}]")
        else:
            first[entry["id"]] = index


def _check_box(box: Any, path: str, problems: Problems) -> None:
    if not isinstance(box, list | tuple) or len(box) != 4:
        problems.add(path, f"{shown_value(box)} is not four numbers [x, y, width, height]")
        return
    for position, value in enumerate(box):
        problem = number_problem(value)
        if problem:
            problems.add(f"{path}[{position}]", problem)


def _check_images(images: list[tuple[int, dict]], images_dir: str, problems: Problems) -> None:
    for index, image in images:
        _, refused = confined_path(images_dir, image.get("file_name"))
        if refused:
            problems.add(f"images[{index}].file_name", refused)
        for side in ("width", "height"):
            if side in image and not (is_integer(image[side]) and image[side] > 0):
                problems.add(f"images[{index}].{side}", f"{shown_value(image[side])} is not a positive integer")


def _check_annotations(annotations: list[tuple[int, dict]], problems: Problems) -> None:
    for index, annotation in annotations:
        for key in ("image_id", "category_id"):
            if key not in annotation:
                problems.add(f"annotations[{index}]", f"has no {key!r}")
            elif integer_problem(annotation[key]):
                problems.add(f"annotations[{index}].{key}", integer_problem(annotation[key]))
        if "bbox" not in annotation:
            problems.add(f"annotations[{index}]", "has no 'bbox'")
        else:
            _check_box(annotation["bbox"], f"annotations[{index}].bbox", problems)
        crowd = annotation.get("iscrowd", 0)
        if isinstance(crowd, bool) or crowd not in (0, 1):
            problems.add(f"annotations[{index}].iscrowd", f"{shown_value(annotation['iscrowd'])} is not 0 or 1")
        if "area" in annotation and number_problem(annotation["area"]):
            problems.add(f"annotations[{index}].area", number_problem(annotation["area"]))


def read_coco(path: str | None, split: str, images_dir: str) -> dict:
    """The COCO detection file `path` of the `split`'s images in `images_dir`, its schema checked (see module)."""
    flag = f"--{split}_annotations"
    what = f"a COCO annotation file (.json) of the {split} images"
    if path is None:
        raise UserInputError(f"Object detection needs {flag} F.json: {what}.")
    coco = read_json_file(path, flag, what)
    problems = Problems(f"{flag} {path}")
    if not isinstance(coco, dict):
        problems.add("", f"the file holds a JSON {type(coco).__name__}, not an object")
        problems.refuse(COCO_FIX)
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            problems.add(key, "missing" if key not in coco else f"{shown_value(coco[key])} is not a list")
    problems.refuse(COCO_FIX)
    categories = _entries(coco, "categories", problems)
    images = _entries(coco, "images", problems)
    annotations = _entries(coco, "annotations", problems)
    _unique_ids(categories, "categories", problems)
    _unique_ids(images, "images", problems)
    check_label_names([(f"categories[{index}].name", category.get("name")) for index, category in categories], problems)
    _check_images(images, images_dir, problems)
    _check_annotations(annotations, problems)
    problems.refuse(COCO_FIX)
    return coco


def check_objects(rows: list[Any], split: str, num_labels: int) -> None:
    """A dataset split's `objects` values (one per image) checked: a dict of equally long `bbox` (four finite numbers
    each) and `category` (class indices below `num_labels`) lists."""
    problems = Problems(f"the {split} split's objects")
    for row, objects in enumerate(rows):
        path = f"{split}[{row}].objects"
        if not isinstance(objects, dict) or not isinstance(objects.get("bbox"), list) or not isinstance(
            objects.get("category"), list
        ):
            problems.add(path, f"{shown_value(objects)} is not {{'bbox': [...], 'category': [...]}}")
            continue
        boxes, categories = objects["bbox"], objects["category"]
        if len(boxes) != len(categories):
            problems.add(path, f"{len(boxes)} boxes but {len(categories)} categories")
        for index, box in enumerate(boxes):
            _check_box(box, f"{path}.bbox[{index}]", problems)
        for index, category in enumerate(categories):
            if not is_integer(category) or not 0 <= category < num_labels:
                problems.add(f"{path}.category[{index}]", f"{shown_value(category)} is not a class index 0.."
                             f"{num_labels - 1}")  # fmt: skip
    problems.refuse(OBJECTS_FIX)
