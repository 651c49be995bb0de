"""Training data that would not mean what the user meant, one row per class of case: each is refused before training
with exit status 2 and one message naming the input and the fix, or trained on with what was left out counted in
the model card. Every dataset is a few tiny images built in tmp_path."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convnext_hf.cli import main as cli_main
from convnext_hf.train import parse_args, run

TINY = json.dumps({"hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1]})


def noise(path: Path, seed: int, size: tuple[int, int] = (12, 12), mode: str = "RGB") -> Path:
    """A small image of seeded noise: every seed gives other bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


def folder(root: Path, classes: dict[str, int], first_seed: int = 0) -> Path:
    """An image folder with `classes[name]` images in each class subfolder (0: an empty folder)."""
    seed = first_seed
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            noise(root / name / f"{index}.png", seed)
            seed += 1
    return root


def table(path: Path, rows: list[tuple[str, object]], images: bool = True) -> Path:
    """A CSV (or, for a .jsonl path, JSON lines) of image paths and labels, with the images it names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if images:
        for seed, image in enumerate(dict.fromkeys(image for image, _ in rows)):
            noise(path.parent / image, 100 + seed)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps({"image": image, "label": label}) + "\n" for image, label in rows))
        return path
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["image", "label"])
        writer.writerows(rows)
    return path


def scenes(root: Path, count: int, mask_size: tuple[int, int] | None = None, ids: tuple[int, ...] = (0, 1),
           sixteen_bit: bool = False) -> tuple[Path, Path]:  # fmt: skip
    """Segmentation folders: `count` 16×16 images and masks of class `ids` (of `mask_size`, default the image's)."""
    images, masks = root / "images", root / "masks"
    for index in range(count):
        noise(images / f"{index}.png", index, (16, 16))
        width, height = mask_size or (16, 16)
        values = np.array(ids, dtype=np.int32)[np.arange(width * height) % len(ids)].reshape(height, width)
        masks.mkdir(parents=True, exist_ok=True)
        # uint16 makes a 16-bit PNG (mode I;16), uint8 an 8-bit one (mode L).
        Image.fromarray(values.astype(np.uint16 if sixteen_bit else np.uint8)).save(masks / f"{index}.png")
    return images, masks


@dataclass
class Case:
    """One hostile dataset: `build(tmp_path)` writes it and returns its flags; the run is refused with every piece of
    `refused` in its message, or trains and `check(output_dir)` holds."""

    build: Callable[[Path], list[str]]
    refused: tuple[str, ...] = ()
    check: Callable[[Path], None] | None = None
    flags: list[str] = field(default_factory=list)


def _card(output_dir: Path) -> str:
    return (output_dir / "README.md").read_text()


def _labels(output_dir: Path) -> dict[str, str]:
    return json.loads((output_dir / "config.json").read_text())["id2label"]


def _csv_empty_label(tmp: Path) -> list[str]:
    rows = [("a.png", "cat"), ("b.png", ""), ("c.png", "dog"), ("d.png", "dog")]
    return ["--train_file", str(table(tmp / "data" / "train.csv", rows))]


def _json_null_label(tmp: Path) -> list[str]:
    rows = [("a.png", "cat"), ("b.png", None), ("c.png", "dog")]
    return ["--train_file", str(table(tmp / "data" / "train.jsonl", rows))]


def _csv_integer_labels(tmp: Path) -> list[str]:
    rows = [(f"{index}.png", label) for index, label in enumerate([0, 1, 2, 10, 0, 1, 2, 10])]
    return ["--train_file", str(table(tmp / "data" / "train.csv", rows)), "--train_val_split", "0"]


def _json_float_labels(tmp: Path) -> list[str]:
    rows = [(f"{index}.png", label) for index, label in enumerate([0.0, 1.0, 0.0, 1.0])]
    return ["--train_file", str(table(tmp / "data" / "train.jsonl", rows)), "--train_val_split", "0"]


def _csv_na_is_a_name(tmp: Path) -> list[str]:
    rows = [(f"{index}.png", label) for index, label in enumerate(["NA", "EU", "NA", "EU"])]
    return ["--train_file", str(table(tmp / "data" / "train.csv", rows)), "--train_val_split", "0"]


def _csv_repeated_rows(tmp: Path) -> list[str]:
    rows = [("a.png", "cat")] * 4 + [(f"{index}.png", ("cat", "dog")[index % 2]) for index in range(8)]
    return ["--train_file", str(table(tmp / "data" / "train.csv", rows)), "--train_val_split", "0.25"]


def _csv_conflicting_labels(tmp: Path) -> list[str]:
    rows = [("a.png", "cat"), ("a.png", "dog"), ("b.png", "dog"), ("c.png", "cat")]
    return ["--train_file", str(table(tmp / "data" / "train.csv", rows))]


def _csv_file_in_both_splits(tmp: Path) -> list[str]:
    train = table(tmp / "data" / "train.csv", [("a.png", "cat"), ("b.png", "dog"), ("c.png", "cat")])
    validation = table(tmp / "data" / "val.csv", [("a.png", "cat"), ("d.png", "dog")], images=False)
    noise(tmp / "data" / "d.png", 7)
    return ["--train_file", str(train), "--validation_file", str(validation)]


def _folder_copy_in_validation(tmp: Path) -> list[str]:
    train = folder(tmp / "train", {"cat": 3, "dog": 3})
    validation = folder(tmp / "val", {"cat": 2, "dog": 2}, first_seed=50)
    shutil.copy(train / "dog" / "1.png", validation / "dog" / "copy.png")
    return ["--train_dir", str(train), "--validation_dir", str(validation)]


def _folder_validation_all_copies(tmp: Path) -> list[str]:
    train = folder(tmp / "train", {"cat": 2, "dog": 2})
    shutil.copytree(train, tmp / "val")
    return ["--train_dir", str(train), "--validation_dir", str(tmp / "val")]


def _folder_empty_training_class(tmp: Path) -> list[str]:
    return ["--train_dir", str(folder(tmp / "train", {"cat": 3, "dog": 3, "bird": 0}))]


def _folder_empty_validation_class(tmp: Path) -> list[str]:
    train = folder(tmp / "train", {"bird": 2, "cat": 2, "dog": 2})
    validation = folder(tmp / "val", {"bird": 0, "cat": 1, "dog": 1}, first_seed=50)
    (validation / ".ipynb_checkpoints").mkdir()
    return ["--train_dir", str(train), "--validation_dir", str(validation)]


def _csv_combined_labels(tmp: Path) -> list[str]:
    combos = [f"{shape} {colour}" for shape in ("circle", "square") for colour in ("red", "blue")]
    rows = [(f"{index}.png", combos[index % 4]) for index in range(8)]
    return ["--train_file", str(table(tmp / "data" / "train.csv", rows)), "--train_val_split", "0"]


def _segmentation(tmp: Path, **kwargs) -> list[str]:
    images, masks = scenes(tmp / "train", 4, **kwargs)
    return ["--task", "semantic-segmentation", "--train_dir", str(images), "--train_mask_dir", str(masks),
            "--id2label", '["background", "shape"]']  # fmt: skip


def _segmentation_mask_of_another_size(tmp: Path) -> list[str]:
    flags = _segmentation(tmp)
    Image.new("L", (8, 16)).save(tmp / "train" / "masks" / "2.png")
    return flags


CASES = {
    "empty CSV label": Case(
        _csv_empty_label,
        refused=("1 training image(s) have no label (an empty or null label cell):", "data/b.png",
                 "Give each image its class, or remove those rows."),  # fmt: skip
    ),
    "null JSON label": Case(_json_null_label, refused=("1 training image(s) have no label", "data/b.png")),
    "integer labels": Case(
        _csv_integer_labels,
        check=lambda out: _labels(out) == {"0": "0", "1": "1", "2": "2", "3": "10"} or pytest.fail(str(_labels(out))),
    ),
    "whole-number float labels": Case(
        _json_float_labels, check=lambda out: _labels(out) == {"0": "0", "1": "1"} or pytest.fail(str(_labels(out)))
    ),
    "NA is a class name": Case(
        _csv_na_is_a_name, check=lambda out: _labels(out) == {"0": "EU", "1": "NA"} or pytest.fail(str(_labels(out)))
    ),
    "repeated rows before the split": Case(
        _csv_repeated_rows,
        check=lambda out: (
            "- 3 repeated training image(s) (the same file, or an identical copy, listed again) were used once: "
            in _card(out) and "6 training images, 3 validation images" in _card(out)
        ) or pytest.fail(_card(out)),
    ),
    "one image, two labels": Case(
        _csv_conflicting_labels,
        refused=("1 image(s) of the training data are listed more than once with different labels",
                 "data/a.png (cat) = ", "data/a.png (dog)", "--task multi-label-classification"),  # fmt: skip
    ),
    "file in both splits": Case(
        _csv_file_in_both_splits,
        refused=("1 file(s) are in both the training and the validation data:", "data/a.png",
                 "remove them from one of the two"),  # fmt: skip
    ),
    "copy of a training image in validation": Case(
        _folder_copy_in_validation,
        check=lambda out: (
            "- 1 validation image(s) identical to training images were left out of validation: " in _card(out)
            and "val/dog/copy.png" in _card(out) and "6 training images, 4 validation images" in _card(out)
        ) or pytest.fail(_card(out)),
    ),
    "validation made of training copies": Case(
        _folder_validation_all_copies,
        refused=("All 4 validation images are identical to training images", "val/cat/0.png",
                 "give validation images that are not in the training data"),  # fmt: skip
    ),
    "empty training class folder": Case(
        _folder_empty_training_class,
        refused=("Class folder(s) ['bird'] in", "hold no images", "add their images, or remove the empty folder(s)"),
    ),
    "empty validation class folder": Case(
        _folder_empty_validation_class,
        check=lambda out: "- Class folder(s) ['bird'] of the validation folder " in _card(out)
        or pytest.fail(_card(out)),
    ),
    "labels that combine a vocabulary": Case(
        _csv_combined_labels,
        refused=("The labels look like several labels per image: 4 of the 4 label names combine the same 4 words",
                 "'circle red'", "Pass --task multi-label-classification",
                 "or --task image-classification to keep each combination as one class"),  # fmt: skip
    ),
    "combined labels kept as classes when the task is named": Case(
        _csv_combined_labels,
        flags=["--task", "image-classification"],
        check=lambda out: len(_labels(out)) == 4 or pytest.fail(str(_labels(out))),
    ),
    "mask of another size than its image": Case(
        _segmentation_mask_of_another_size,
        refused=("1 train mask(s) differ in size from their image:", "masks/2.png (8×16) for ", "images/2.png (16×16)",
                 "resize the masks (nearest neighbour)"),  # fmt: skip
    ),
    "16-bit mask ids beyond 255": Case(
        lambda tmp: _segmentation(tmp, ids=(0, 1, 300), sixteen_bit=True),
        refused=("train masks hold class ids beyond the 2 classes of --id2label (0..1; 255 marks ignored pixels): "
                 "id 300 in 4 mask(s)", "Name those classes in --id2label, or set their pixels to 255."),  # fmt: skip
    ),
    "mask ids beyond the classes": Case(
        lambda tmp: _segmentation(tmp, ids=(0, 1, 5, 255)),
        refused=("id 5 in 4 mask(s) (e.g. ",),
    ),
    "more classes than 8-bit ids": Case(
        lambda tmp: [*_segmentation(tmp), "--id2label", json.dumps([f"class{index}" for index in range(300)])],
        refused=("--id2label names 300 classes, but mask id 255 marks pixels to ignore",),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_training_data(name, tmp_path, capsys):
    case = CASES[name]
    output_dir = tmp_path / "out"
    argv = [
        "--variant", "atto", "--config_overrides", TINY, "--image_size", "32", "--max_steps", "1",
        "--per_device_train_batch_size", "2", "--output_dir", str(output_dir), "--cache_dir", str(tmp_path / "cache"),
        "--report_to", "none", "--plots", "false", *case.build(tmp_path), *case.flags,
    ]  # fmt: skip
    if case.refused:
        assert cli_main(["train", *argv]) == 2
        # Progress bars of the loading come before the message on stderr.
        error = capsys.readouterr().err.rpartition("\r")[2]
        assert error.count("convnext-hf train: error: ") == 1 and error.endswith(".\n"), error
        error = error.partition("convnext-hf train: error: ")[2]
        assert error.count("\n") == 1, error
        for piece in case.refused:
            assert piece in error, (piece, error)
        assert not output_dir.exists(), "refused before training"
    else:
        run(parse_args(argv))
        case.check(output_dir)
