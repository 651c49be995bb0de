"""Annotation files checked where they enter: each hostile COCO file or `objects` row refused with the file, the JSON
path of the problem and the value found there; paths confined to the image folder; crowd-only data refused."""

import json
from pathlib import Path

import datasets
import pytest
from PIL import Image

from convnext_hf.annotations import confined_path
from convnext_hf.errors import UserInputError
from convnext_hf.tasks.detection.data import _from_objects, load_coco, load_detection_data
from convnext_hf.train.arguments import DataArguments


def coco_file(root: Path, edit=None) -> Path:
    """Two 40×30 images with a box each, the annotation file changed by `edit(coco)` (which may return a new value)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name in ("a.png", "b.png"):
        Image.new("RGB", (40, 30), (90, 90, 90)).save(root / "images" / name)
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30},
                   {"id": 2, "file_name": "b.png", "width": 40, "height": 30}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 5], "iscrowd": 0},
                        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [0, 0, 40, 30], "area": 1200}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }  # fmt: skip
    if edit is not None:
        coco = edit(coco) or coco
    path = root / "annotations.json"
    path.write_text(json.dumps(coco, allow_nan=True))
    return path


def _set(path: str, value):
    """An edit setting `coco[a][i][b]...` (dotted path, integers as list indices) to `value`."""

    def edit(coco):
        *steps, last = [int(step) if step.isdigit() else step for step in path.split(".")]
        target = coco
        for step in steps:
            target = target[step]
        target[last] = value

    return edit


def _drop(path: str):
    def edit(coco):
        *steps, last = [int(step) if step.isdigit() else step for step in path.split(".")]
        target = coco
        for step in steps:
            target = target[step]
        del target[last]

    return edit


# edit -> what the one-line refusal says (the JSON path and the problem)
HOSTILE = {
    "bbox string": (_set("annotations.0.bbox.0", "a"), 'annotations[0].bbox[0]: "a" is not a number'),
    "bbox nested": (_set("annotations.0.bbox", [[1, 2], 3, 4, 5]), "annotations[0].bbox[0]: [1, 2] is not a number"),
    "bbox NaN": (_set("annotations.1.bbox.2", float("nan")), "annotations[1].bbox[2]: NaN is not a finite number"),
    "bbox inf": (_set("annotations.1.bbox.3", float("inf")), "annotations[1].bbox[3]: Infinity is not a finite"),
    "bbox three": (_set("annotations.0.bbox", [1, 2, 3]), "annotations[0].bbox: [1, 2, 3] is not four numbers"),
    "bbox bool": (_set("annotations.0.bbox.1", True), "annotations[0].bbox[1]: true is not a number"),
    "bbox missing": (_drop("annotations.0.bbox"), "annotations[0]: has no 'bbox'"),
    "category without id": (_drop("categories.1.id"), "categories[1]: has no 'id'"),
    "category id string": (_set("categories.1.id", "2"), 'categories[1].id: "2" is not an integer'),
    "category ids shared": (_set("categories.1.id", 1), "categories[1].id: 1 is also the id of categories[0]"),
    "category named null": (_set("categories.0.name", None), "categories[0].name: null is not a class name"),
    "category name newline": (_set("categories.0.name", "a\nb"), 'categories[0].name: "a\\nb" holds control'),
    "category names shared": (_set("categories.1.name", "cat"), "categories[1].name: \"cat\" is also the name at"),
    "image ids shared": (_set("images.1.id", 1), "images[1].id: 1 is also the id of images[0]"),
    "image id float": (_set("images.1.id", 2.0), "images[1].id: 2.0 is not an integer"),
    "width wide": (_set("images.0.width", "wide"), 'images[0].width: "wide" is not a positive integer'),
    "height zero": (_set("images.0.height", 0), "images[0].height: 0 is not a positive integer"),
    "annotation a number": (_set("annotations.0", 5), "annotations[0]: 5 is not an object"),
    "image_id string": (_set("annotations.0.image_id", "1"), 'annotations[0].image_id: "1" is not an integer'),
    "category_id missing": (_drop("annotations.0.category_id"), "annotations[0]: has no 'category_id'"),
    "iscrowd null": (_set("annotations.0.iscrowd", None), "annotations[0].iscrowd: null is not 0 or 1"),
    "iscrowd 2": (_set("annotations.0.iscrowd", 2), "annotations[0].iscrowd: 2 is not 0 or 1"),
    "area string": (_set("annotations.1.area", "big"), 'annotations[1].area: "big" is not a number'),
    "file_name escapes": (_set("images.0.file_name", "../../secret.png"), "leads out of"),
    "file_name absolute": (_set("images.0.file_name", "/etc/passwd"), "is an absolute path"),
    "file_name number": (_set("images.0.file_name", 3), "images[0].file_name: 3 is not a file name"),
    "top-level list": (lambda coco: [coco], "the file holds a JSON list, not an object"),
    "images not a list": (_set("images", {"a": 1}), 'images: {"a": 1} is not a list'),
    "categories missing": (_drop("categories"), "categories: missing"),
    "bbox beyond a float": (_set("annotations.0.bbox.0", 10**400), "annotations[0].bbox[0]: 1000000000000000000000000"),
    "image id beyond 64 bits": (_set("images.0.id", 2**70), "images[0].id: 1180591620717411303424 does not fit in 64"),
    "category_id beyond 64 bits": (_set("annotations.0.category_id", -(2**64)), "category_id: -18446744073709551616"),
}


def test_a_box_below_a_hundredth_of_a_pixel_is_degenerate(tmp_path):
    path = coco_file(tmp_path, _set("annotations.0.bbox", [1, 2, 1e-300, 5]))
    with pytest.raises(UserInputError, match=r"1 box\(es\) in .* degenerate \(width or height below 0.01 pixel\)"):
        load_coco(str(tmp_path / "images"), str(path), "train")


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_coco_file_is_refused_at_its_json_path(tmp_path, case):
    edit, expected = HOSTILE[case]
    path = coco_file(tmp_path, edit)
    with pytest.raises(UserInputError) as refusal:
        load_coco(str(tmp_path / "images"), str(path), "train")
    message = str(refusal.value)
    assert expected in message
    assert message.startswith(f"--train_annotations {path}: ")
    assert "\n" not in message
    assert "Fix these entries" in message


def test_first_problems_listed_with_the_count_of_the_rest(tmp_path):
    def many(coco):
        coco["annotations"] = [{"image_id": 1, "category_id": 1, "bbox": ["x", 0, 1, 1]} for _ in range(8)]

    path = coco_file(tmp_path, many)
    with pytest.raises(UserInputError, match=r"annotations\[4\]\.bbox\[0\].*\(and 3 more\)"):
        load_coco(str(tmp_path / "images"), str(path), "train")


def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path):
    coco_file(tmp_path)
    path = tmp_path / "deep.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(UserInputError, match="nests its values too deeply"):
        load_coco(str(tmp_path / "images"), str(path), "train")


def test_not_json_and_missing_file_are_refused(tmp_path):
    coco_file(tmp_path)
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(UserInputError, match="is not JSON"):
        load_coco(str(tmp_path / "images"), str(tmp_path / "bad.json"), "train")
    with pytest.raises(UserInputError, match="does not exist"):
        load_coco(str(tmp_path / "images"), str(tmp_path / "none.json"), "train")


def test_file_name_inside_the_folder_is_read_there(tmp_path):
    path = coco_file(tmp_path, _set("images.0.file_name", "sub/../a.png"))
    dataset, names = load_coco(str(tmp_path / "images"), str(path), "train")
    assert names == ["cat", "dog"]
    assert dataset["objects"][0]["bbox"] == [[1.0, 2.0, 10.0, 5.0]]


def test_confined_path_rules():
    assert confined_path("/data", "a/b.png") == ("/data/a/b.png", "")
    assert confined_path("/data", "a/../b.png") == ("/data/b.png", "")
    assert "leads out of" in confined_path("/data", "a/../../b.png")[1]
    assert "absolute" in confined_path("/data", "/data/b.png")[1]
    assert "NUL" in confined_path("/data", "a\x00.png")[1]
    assert "not a file name" in confined_path("/data", "")[1]


def test_crowd_only_training_data_is_refused(tmp_path):
    def crowd(coco):
        for annotation in coco["annotations"]:
            annotation["iscrowd"] = 1

    path = coco_file(tmp_path, crowd)
    args = DataArguments(train_dir=str(tmp_path / "images"), train_annotations=str(path))
    with pytest.raises(UserInputError, match=r"no boxes to learn from \(2 crowd region\(s\)"):
        load_detection_data(args, seed=0)


def test_crowd_boxes_beside_objects_are_kept(tmp_path):
    path = coco_file(tmp_path, _set("annotations.1.iscrowd", 1))
    dataset, _ = load_coco(str(tmp_path / "images"), str(path), "train")
    assert [objects["iscrowd"] for objects in dataset["objects"]] == [[0], [1]]


def _objects_dataset(objects: list) -> datasets.Dataset:
    images = [Image.new("RGB", (40, 30)) for _ in objects]
    return datasets.Dataset.from_dict({"image": images, "objects": objects})


@pytest.mark.parametrize(
    ("objects", "expected"),
    [
        ({"bbox": [[1, 2, 3, float("nan")]], "category": [0]}, "train[0].objects.bbox[0][3]: NaN is not a finite"),
        ({"bbox": [[1, 2, 3, 4]], "category": [5]}, "train[0].objects.category[0]: 5 is not a class index 0..1"),
        ({"bbox": [[1, 2, 3, 4], [1, 1, 2, 2]], "category": [0]}, "2 boxes but 1 categories"),
    ],
)
def test_hostile_objects_rows_are_refused_at_their_path(objects, expected):
    with pytest.raises(UserInputError) as refusal:
        _from_objects(_objects_dataset([objects]), "train", 2, "error")
    assert expected in str(refusal.value)
    assert "\n" not in str(refusal.value)


def test_good_objects_rows_convert():
    converted = _from_objects(_objects_dataset([{"bbox": [[1, 2, 3, 4]], "category": [1]}]), "train", 2, "error")
    assert converted[0]["objects"]["bbox"] == [[1.0, 2.0, 3.0, 4.0]]
    assert converted[0]["objects"]["category"] == [1]


# label file -> what the one-line refusal says
LABEL_FILES = {
    "ragged.csv": ("image,label\na.png,x\nb.png,y,extra\n", "row 3: 3 cells under a header of 2 columns"),
    "latin1.csv": (b"image,label\na.png,\xe9t\xe9\n", "byte 18: the file is not UTF-8 text"),
    "columns.csv": ("image,image,label\na.png,b.png,x\n", 'the header ["image", "image", "label"] names a column'),
    "header.csv": ("image,label\n", "no rows of images (only a header)"),
    "empty.csv": ("", "row 1: no header (the file is empty)"),
    "quote.csv": ('image,label\n"a.png,x\n', "not a CSV file (unexpected end of data)"),
    "absolute.csv": ("image,label\n/etc/passwd,x\n", "row 2, column 'image': \"/etc/passwd\" is an absolute path"),
    "escape.csv": ("image,label\n../../a.png,x\n", "row 2, column 'image': \"../../a.png\" leads out of"),
    "escape.jsonl": ('{"image": "../a.png", "label": "x"}\n', "row 1, column 'image': \"../a.png\" leads out of"),
    "number.jsonl": ('{"image": "a.png", "label": "x"}\n5\n', 'line 2: 5 is not an object'),
    "broken.jsonl": ('{"image": "a.png", "label": "x"}\n{"image"\n', "line 2: not JSON"),
    "deep.json": ("[" * 100_000 + "]" * 100_000, "values nested too deeply"),
    "newline.csv": ('image,label\na.png,"x\ny"\nb.png,y\n', 'class 0: "x\\ny" holds control characters'),
    "escape code.csv": ('image,label\na.png,"x\x1b[2J"\nb.png,y\n', 'holds control characters'),
}


@pytest.mark.parametrize("name", sorted(LABEL_FILES))
def test_hostile_label_file_is_refused_in_one_line(tmp_path, name):
    from convnext_hf.tasks.classification.data import load_image_data

    content, expected = LABEL_FILES[name]
    for image in ("a.png", "b.png"):
        Image.new("RGB", (8, 8), (len(image), 0, 0)).save(tmp_path / image)
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    args = DataArguments(train_file=str(path), train_val_split=0.0)
    with pytest.raises(UserInputError) as refusal:
        load_image_data(args, seed=0, cache_dir=str(tmp_path / "cache"), scoring=True)
    assert expected in str(refusal.value)
    assert "\n" not in str(refusal.value)


def test_a_csv_with_a_byte_order_mark_reads_as_without(tmp_path):
    """Spreadsheet programs start a UTF-8 CSV with a byte-order mark; it is not part of the first column's name (it
    made datasets' CSV builder fail with a traceback)."""
    from convnext_hf.tasks.classification.data import load_image_data

    for index, image in enumerate(("a.png", "b.png", "c.png", "d.png")):
        Image.new("RGB", (8, 8), (40 * index, 0, 0)).save(tmp_path / image)
    path = tmp_path / "labels.csv"
    path.write_text("\ufeffimage,label\na.png,x\nb.png,y\nc.png,x\nd.png,y\n", encoding="utf-8")
    args = DataArguments(train_file=str(path), train_val_split=0.0)
    data = load_image_data(args, seed=0, cache_dir=str(tmp_path / "cache"), scoring=True)
    assert data.label_names == ["x", "y"] and len(data.train) == 4
