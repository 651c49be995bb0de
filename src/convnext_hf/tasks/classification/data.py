"""Labelled images for classification: loading, label maps, the split, the batch pipeline.

Every source becomes a `datasets.Dataset` with an `image` column and a `label` ClassLabel column shared by the
training and validation splits. An image folder is listed (`os.scandir`), not indexed by `datasets`' `imagefolder`
builder, so that a run starts at the cost of listing its files. Problems that would otherwise stop a run halfway (a
single class, no images, a label missing) are found here, before training starts; unreadable images are found where
they are read anyway, in the loader (`with_transforms`, `collate`), and skipped or stopped at by the Trainer.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import datasets
import numpy as np
import torch
from datasets.utils.stratify import stratified_shuffle_split_generate_indices
from PIL import Image

from ...annotations import CSV_ENCODING, Problems, check_label_file, check_label_names, confined_path
from ...data_folder import check_data_folder
from ...errors import UserInputError
from ...image_processing_convnext import ConvNextHFImageProcessor
from ...train.arguments import DataArguments
from ...train.data import (
    FILE_BUILDERS,
    IMAGE_COLUMNS,
    KEEP_SLOTS,
    PLACEHOLDER_LABEL,
    UNREADABLE,
    ImageData,
    column_values,
    drop_validation_copies,
    exact_copy_digests,
    find_bad_images,
    hold_out_and_limit,
    image_paths,
    local_files_quietly,
    names_tensor,
    read_images,
    repeated_images,
)
from .. import IMAGE_CLASSIFICATION, MULTI_LABEL_CLASSIFICATION

logger = logging.getLogger(__name__)

LABEL_COLUMNS = ("label", "labels", "class", "category")
_INTEGER = re.compile(r"[+-]?\d+")
# How the messages name the splits: a training run's, or the one split `convnext-hf evaluate` scores.
TRAINING_WORDS = {"train": "training", "validation": "validation"}
SCORING_WORDS = {"train": "scored"}
CLASS_FOLDERS = "a folder with one subfolder per class"


def _flag(split: str, kind: str, words: dict[str, str]) -> str:
    """The flag that named a split's folder (`kind` "dir") or file ("file"): evaluate's --validation_dir or
    --validation_file is loaded as the only split, "train"."""
    return f"--{'validation' if words is SCORING_WORDS or split == 'validation' else 'train'}_{kind}"


def _check_sources(args: DataArguments) -> str:
    """Return which kind of source the arguments name ('folder', 'file' or 'hub'), refusing none or several."""
    given = {
        "folder": args.train_dir is not None,
        "file": args.train_file is not None,
        "hub": args.dataset_name is not None,
    }
    if sum(given.values()) != 1:
        raise UserInputError(
            "Name exactly one training data source: --train_dir (a folder with one subfolder per class), "
            "--train_file (a CSV/JSON of image paths and labels) or --dataset_name (a Hub dataset). To score a model "
            "without training it: convnext-hf evaluate."
        )
    if args.validation_dir is not None and args.train_dir is None:
        raise UserInputError("--validation_dir goes with --train_dir; for files use --validation_file.")
    if args.validation_file is not None and args.train_file is None:
        raise UserInputError("--validation_file goes with --train_file; for folders use --validation_dir.")
    if not 0.0 <= args.train_val_split < 1.0:
        raise UserInputError(f"--train_val_split must be in [0, 1), got {args.train_val_split}.")
    return next(kind for kind, present in given.items() if present)


def _image_files(directory: str, extensions: set[str]) -> list[str]:
    """The image files at any depth under `directory`, hidden files and folders aside, sorted."""
    found, folders = [], [directory]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    folders.append(entry.path)
                elif os.path.splitext(entry.name)[1].lower() in extensions:
                    found.append(entry.path)
    return sorted(found)


def _class_folders(directory: str) -> dict[str, list[str]]:
    """The image files under each immediate subfolder of `directory` (at any depth; "." for files directly in it)."""
    extensions = {ext.lower() for ext in Image.registered_extensions()}
    classes: dict[str, list[str]] = {}
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                files = _image_files(entry.path, extensions)
                if files:
                    classes[entry.name] = files
            elif os.path.splitext(entry.name)[1].lower() in extensions:
                classes.setdefault(".", []).append(entry.path)
    return classes


def _empty_class_folders(directory: str, classes: dict[str, int]) -> list[str]:
    """Subfolders of `directory` (hidden ones aside) that hold no image at any depth."""
    folders = [entry.name for entry in os.scandir(directory) if entry.is_dir() and not entry.name.startswith(".")]
    return sorted(name for name in folders if name not in classes)


def _load_folders(
    args: DataArguments, cache_dir: str | None, words: dict[str, str], notes: list[str]
) -> datasets.DatasetDict:
    splits = {"train": args.train_dir}
    if args.validation_dir is not None:
        splits["validation"] = args.validation_dir
    listed = {}
    for split, directory in splits.items():
        check_data_folder(directory, _flag(split, "dir", words), CLASS_FOLDERS)
        classes = listed[split] = _class_folders(os.path.abspath(directory))
        if not classes:
            raise UserInputError(
                f"No images found in {directory}: arrange the {words[split]} images as "
                f"{directory}/<class_name>/<image>."
            )
        if "." in classes:
            raise UserInputError(
                f"{len(classes['.'])} image(s) lie directly in {directory}, outside any class subfolder; move each "
                f"image into the subfolder of its class: {directory}/<class_name>/<image>."
            )
        empty = _empty_class_folders(directory, classes)
        if empty and words is TRAINING_WORDS and split == "train":
            raise UserInputError(
                f"Class folder(s) {empty} in {directory} hold no images, so a classifier could not learn those "
                "classes; add their images, or remove the empty folder(s)."
            )
        if empty:
            note = f"Class folder(s) {empty} of the {words[split]} folder {directory} hold no images."
            logger.warning(note)
            notes.append(note)
        if split == "train" and words is TRAINING_WORDS and len(classes) == 1:
            raise UserInputError(
                f"{directory} holds one class ({next(iter(classes))!r}); a classifier needs at least two. "
                f"Put each class's images in its own subfolder: {directory}/<class_name>/<image>."
            )
    # Class ids come from the union of both splits' class folders, in sorted order.
    names = sorted({name for classes in listed.values() for name in classes})
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    data = {}
    for split, classes in listed.items():
        rows = [(path, names.index(name)) for name, paths in sorted(classes.items()) for path in paths]
        data[split] = datasets.Dataset.from_dict(
            {"image": [path for path, _ in rows], "label": [label for _, label in rows]}, features=features
        )
    return datasets.DatasetDict(data)


def _csv_as_text(splits: dict[str, str]) -> dict[str, Any]:
    """load_dataset options that read every CSV cell as the text written there: labels `1` and `NA` stay "1" and
    "NA" (not 1.0 and a missing value), and an empty cell is "" (a missing label, found by the label check)."""
    headers = {}
    for split, path in splits.items():
        with open(path, newline="", encoding=CSV_ENCODING) as file:
            headers[split] = next(csv.reader(file), [])
    if len({tuple(header) for header in headers.values()}) > 1:
        raise UserInputError(
            f"The CSV files have different columns ({headers}); give the training and validation files the same "
            "header."
        )
    columns = headers["train"]
    return {
        "features": datasets.Features({column: datasets.Value("string") for column in columns}),
        "keep_default_na": False,
        "na_filter": False,
    }


def _load_files(
    args: DataArguments, cache_dir: str | None, words: dict[str, str], notes: list[str]
) -> datasets.DatasetDict:
    splits = {"train": args.train_file}
    if args.validation_file is not None:
        splits["validation"] = args.validation_file
    extensions = {os.path.splitext(path)[1].lower() for path in splits.values()}
    if len(extensions) != 1 or not extensions <= FILE_BUILDERS.keys():
        given = ", ".join(f"{_flag(split, 'file', words)} {path}" for split, path in splits.items())
        raise UserInputError(f"{given}: the data files must be .csv, or .json/.jsonl (all of one kind).")
    for split, path in splits.items():
        if not os.path.isfile(path):
            kind = "is a folder" if os.path.isdir(path) else "does not exist"
            raise UserInputError(f"{_flag(split, 'file', words)} {path} {kind}; pass a CSV or JSON (lines) file "
                                 "of image paths and labels.")  # fmt: skip
        image_columns = (args.image_column_name,) if args.image_column_name else IMAGE_COLUMNS
        check_label_file(path, _flag(split, "file", words), [image_columns])
    builder = FILE_BUILDERS[extensions.pop()]
    options = _csv_as_text(splits) if builder == "csv" else {}
    with local_files_quietly():
        data = datasets.load_dataset(builder, data_files=splits, cache_dir=cache_dir, **options)
    image_column = find_column(data["train"].column_names, args.image_column_name, IMAGE_COLUMNS, "image")

    # Paths in the file are relative to the file's own folder.
    def absolute_paths(batch: dict, split: str) -> dict:
        base = os.path.dirname(os.path.abspath(splits[split]))
        return {image_column: [confined_path(base, path)[0] for path in batch[image_column]]}

    data = datasets.DatasetDict(
        {split: data[split].map(absolute_paths, batched=True, fn_kwargs={"split": split}) for split in data}
    )
    return data.cast_column(image_column, datasets.Image())


def _load_hub(
    args: DataArguments, cache_dir: str | None, words: dict[str, str], notes: list[str]
) -> datasets.DatasetDict:
    data = datasets.load_dataset(args.dataset_name, args.dataset_config_name, cache_dir=cache_dir)
    if "train" not in data:
        raise UserInputError(f"{args.dataset_name} has no 'train' split (it has {list(data)}).")
    splits = {"train": data["train"]}
    for name in ("validation", "valid", "val", "test"):
        if name in data:
            splits["validation"] = data[name]
            break
    return datasets.DatasetDict(splits)


def find_column(columns: list[str], requested: str | None, candidates: tuple[str, ...], what: str) -> str:
    """The column named `requested`, else the first of `candidates` the data has; refused when there is none."""
    if requested is not None:
        if requested not in columns:
            raise UserInputError(f"Column {requested!r} not found; the data has columns {columns}.")
        return requested
    for name in candidates:
        if name in columns:
            return name
    raise UserInputError(
        f"No {what} column found among {columns}; name it with --{what}_column_name."
        + (" For an image folder, put each class's images in its own subfolder." if what == "label" else "")
    )


def _standardize_columns(data: datasets.DatasetDict, args: DataArguments) -> datasets.DatasetDict:
    """Rename the image and label columns to `image` and `label`, drop the others, and decode images to PIL."""
    image_column = find_column(data["train"].column_names, args.image_column_name, IMAGE_COLUMNS, "image")
    label_column = find_column(data["train"].column_names, args.label_column_name, LABEL_COLUMNS, "label")
    renamed = {}
    for split, dataset in data.items():
        dataset = dataset.select_columns([image_column, label_column])
        dataset = dataset.rename_columns({image_column: "image", label_column: "label"})
        if not isinstance(dataset.features["image"], datasets.Image):
            dataset = dataset.cast_column("image", datasets.Image())
        renamed[split] = dataset
    return datasets.DatasetDict(renamed)


def label_text(value: Any) -> str | None:
    """A class label as the user wrote it, None when it is missing. Whole numbers read as floats (JSON's 1.0, a
    column with a gap) are written as integers, so that class 1 is "1", not "1.0"."""
    if value is None:
        return None
    if isinstance(value, float):
        if value != value:
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    text = str(value).strip()
    return text or None


def class_order(names: Any) -> list[str]:
    """Class names in id order: by value when every name is an integer (2 before 10), else alphabetically."""
    names = set(names)
    if names and all(_INTEGER.fullmatch(name) for name in names):
        return sorted(names, key=int)
    return sorted(names)


def _refuse_missing_labels(data: datasets.DatasetDict, words: dict[str, str]) -> None:
    """Refuse images without a label (an empty cell, null): they would become a class named "None"."""
    for split, dataset in data.items():
        missing = [row for row, value in enumerate(column_values(dataset, "label")) if label_text(value) is None]
        if missing:
            paths = image_paths(dataset.select(missing[:5]))
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise UserInputError(
                f"{len(missing)} {words[split]} image(s) have no label (an empty or null label cell): "
                f"{', '.join(paths)}{more}. Give each image its class, or remove those rows."
            )


def _encode_labels(data: datasets.DatasetDict) -> tuple[datasets.DatasetDict, list[str]]:
    """Give both splits the same ClassLabel; string or integer labels become classes in order (`class_order`)."""
    feature = data["train"].features["label"]
    if isinstance(feature, datasets.ClassLabel):
        for split, dataset in data.items():
            if dataset.features["label"].names != feature.names:
                raise UserInputError(
                    f"The {split} split's classes {dataset.features['label'].names} differ from the training "
                    f"split's {feature.names}; give both splits the same class names."
                )
        return data, list(feature.names)
    names = class_order(label_text(value) for dataset in data.values() for value in column_values(dataset, "label"))
    class_label = datasets.ClassLabel(names=names)

    def encode(batch: dict) -> dict:
        return {"label": [class_label.str2int(label_text(value)) for value in batch["label"]]}

    encoded = {
        split: dataset.map(encode, batched=True, features=datasets.Features({**dataset.features, "label": class_label}))
        for split, dataset in data.items()
    }
    return datasets.DatasetDict(encoded), names


def combined_labels(names: list[str]) -> list[str]:
    """The label names that look like several labels of one small vocabulary joined ("circle red", "circle,blue"),
    when most names do; [] otherwise.

    Names look joined when the same words come in another order ("red circle" beside "circle red"), or when at least
    half the names have several words, four in five of those are made only of words that other names use too, and
    there are no more distinct words than names: a vocabulary combined, not names that happen to share a word ("sea
    lion", "sea otter", "river otter" are not).
    """
    words = {name: split_labels(name) for name in names}
    joined = [name for name in names if len(words[name]) > 1]
    if len(joined) < 2 or 2 * len(joined) < len(names):
        return []
    word_sets = Counter(frozenset(words[name]) for name in joined)
    reordered = [name for name in joined if word_sets[frozenset(words[name])] > 1]
    if reordered:
        return reordered
    vocabulary = {word for name in names for word in words[name]}
    frequency = Counter(word for name in names for word in set(words[name]))
    shared = [name for name in joined if all(frequency[word] > 1 for word in words[name])]
    if len(vocabulary) <= len(names) and 5 * len(shared) >= 4 * len(joined):
        return shared
    return []


def _refuse_combined_labels(names: list[str]) -> None:
    """Refuse a single-label run on labels that look like several labels per image."""
    joined = combined_labels(names)
    if joined:
        vocabulary = sorted({word for name in names for word in split_labels(name)})
        raise UserInputError(
            f"The labels look like several labels per image: {len(joined)} of the {len(names)} label names combine "
            f"the same {len(vocabulary)} words ({', '.join(repr(name) for name in joined[:4])}"
            f"{', …' if len(joined) > 4 else ''}), which would train one class per combination. Pass --task "
            "multi-label-classification to learn each of them as a label, or --task image-classification to keep "
            "each combination as one class."
        )


def _holds_lists(dataset: datasets.Dataset) -> bool:
    """Whether the label column holds a list of labels per image (JSON lists, Hub sequences)."""
    return isinstance(dataset.features["label"], (datasets.List, datasets.LargeList, list))


def split_labels(value: Any) -> list[str]:
    """The label names of one multi-label entry: a list, or a string separated by commas (when it has any) or spaces.

    Commas win so that names with spaces ("golden retriever, cat") stay whole.
    """
    if isinstance(value, (list, tuple)):
        return [str(name).strip() for name in value if str(name).strip()]
    text = "" if value is None else str(value)
    return [name.strip() for name in text.split("," if "," in text else None) if name.strip()]


def _encode_multi_labels(data: datasets.DatasetDict) -> tuple[datasets.DatasetDict, list[str]]:
    """Turn each split's label lists into multi-hot float rows over the sorted union of the label names."""
    feature = data["train"].features["label"]
    class_names = getattr(getattr(feature, "feature", None), "names", None)
    # Class folders give one ClassLabel id per image: its folder's name is the image's one label.
    folder_names = feature.names if isinstance(feature, datasets.ClassLabel) else None

    def names_of(value: Any) -> list[str]:
        # A Hub sequence of ClassLabel holds ids: name them, so that both splits share one label map.
        if class_names is not None and isinstance(value, (list, tuple)):
            return [class_names[index] for index in value]
        if folder_names is not None and isinstance(value, int):
            return [folder_names[value]]
        return split_labels(value)

    values = [value for dataset in data.values() for value in column_values(dataset, "label")]
    names = sorted({name for value in values for name in names_of(value)})
    index = {name: position for position, name in enumerate(names)}
    multi_hot = datasets.List(datasets.Value("float32"), length=len(names))

    def encode(batch: dict) -> dict:
        rows = []
        for value in batch["label"]:
            row = [0.0] * len(names)
            for name in names_of(value):
                row[index[name]] = 1.0
            rows.append(row)
        return {"label": rows}

    encoded = {
        split: dataset.map(encode, batched=True, features=datasets.Features({**dataset.features, "label": multi_hot}))
        for split, dataset in data.items()
    }
    return datasets.DatasetDict(encoded), names


def _drop_bad_images(
    dataset: datasets.Dataset, split: str, policy: str, num_proc: int | None, notes: list[str]
) -> datasets.Dataset:
    bad = find_bad_images(dataset, num_proc)
    if not bad:
        return dataset
    listing = "\n".join(f"  {path}: {reason}" for _, path, reason in bad)
    if policy == "error":
        raise UserInputError(
            f"{len(bad)} unreadable image(s) in the {split} data:\n{listing}\n"
            "Remove or replace them, or pass --on_bad_image skip to go on without them."
        )
    logger.warning("Skipping %d unreadable image(s) in the %s data:\n%s", len(bad), split, listing)
    notes.append(
        f"{len(bad)} unreadable {split} image(s) were left out (--on_bad_image skip): "
        f"{', '.join(path for _, path, _ in bad[:5])}{' …' if len(bad) > 5 else ''}."
    )
    bad_rows = {row for row, _, _ in bad}
    return dataset.select([row for row in range(len(dataset)) if row not in bad_rows])


def _check_multi_labels(data: datasets.DatasetDict, label_names: list[str], source: str, scoring: bool) -> None:
    if len(data["train"]) == 0:
        raise UserInputError(f"The {'scored' if scoring else 'training'} data from {source} has no usable images.")
    if scoring:
        return
    counts = torch.tensor(column_values(data["train"], "label")).sum(dim=0)
    unseen = [name for name, count in zip(label_names, counts.tolist(), strict=True) if count == 0]
    if len(label_names) < 2 or unseen:
        raise UserInputError(
            f"The multi-label data from {source} has labels {label_names}, of which {unseen} never occur in the "
            "training images; a multi-label classifier needs at least two labels, each seen in training."
        )


def _check_classes(data: datasets.DatasetDict, label_names: list[str], source: str, scoring: bool) -> None:
    if len(data["train"]) == 0:
        raise UserInputError(f"The {'scored' if scoring else 'training'} data from {source} has no usable images.")
    if scoring:
        return
    if len(label_names) < 2:
        raise UserInputError(
            f"The data from {source} has {len(label_names)} class(es) {label_names}; a classifier needs at least "
            "two. For an image folder, put each class's images in its own subfolder: DIR/<class_name>/<image>."
        )
    counts = torch.bincount(torch.tensor(column_values(data["train"], "label")), minlength=len(label_names))
    empty = [label_names[index] for index in torch.nonzero(counts == 0).flatten().tolist()]
    if empty:
        raise UserInputError(
            f"Class(es) {empty} have no training images in {source}; add images or remove the classes."
        )


def _split(dataset: datasets.Dataset, fraction: float, num_classes: int, seed: int) -> tuple[datasets.Dataset, ...]:
    """Hold out `fraction` for validation, in every class's proportion when each class can give one image."""
    held_out = math.ceil(fraction * len(dataset))
    if held_out >= len(dataset):
        raise UserInputError(
            f"--train_val_split {fraction} leaves no training images out of {len(dataset)}; lower it or pass "
            "separate validation data."
        )
    if isinstance(dataset.features["label"], datasets.List):
        # Multi-hot rows cannot be stratified by one class.
        split = dataset.train_test_split(test_size=held_out, seed=seed)
        return split["train"], split["test"]
    labels = np.asarray(column_values(dataset, "label"))
    counts = np.bincount(labels, minlength=num_classes)
    if int(counts.min()) >= 2 and num_classes <= held_out <= len(dataset) - num_classes:
        # datasets' own stratified split, fed the labels in one read (train_test_split reads them row by row).
        train_rows, held_out_rows = next(stratified_shuffle_split_generate_indices(
            labels, len(dataset) - held_out, held_out, rng=np.random.default_rng(seed)
        ))  # fmt: skip
        return dataset.select(train_rows), dataset.select(held_out_rows)
    split = dataset.train_test_split(test_size=held_out, seed=seed)
    return split["train"], split["test"]


def _remove_repeats(
    data: datasets.DatasetDict,
    label_names: list[str],
    multi_label: bool,
    cache_dir: str | None,
    words: dict[str, str],
    notes: list[str],
) -> datasets.DatasetDict:
    """One row per image in each split (repeats noted, contradicting labels refused), no file in both splits, and no
    validation image identical to a training one (left out, noted): all before the split, so none leaks into it.
    Copies are found by size and last bytes first, once per listing (`exact_copy_digests`)."""
    if multi_label:
        fix = "merge their label lists into one row"
    else:
        fix = "for several labels per image, train with --task multi-label-classification"
    found = {}
    every_digest = exact_copy_digests(list(data.values()), cache_dir)
    for (split, dataset), digests in zip(data.items(), every_digest, strict=True):
        paths, rows = image_paths(dataset), column_values(dataset, "label")
        if multi_label:
            labels = [" ".join(n for n, hot in zip(label_names, row, strict=True) if hot) for row in rows]
        else:
            labels = [label_names[index] for index in rows]
        kept = repeated_images(words[split], labels, digests, paths, notes, fix)
        if len(kept) < len(dataset):
            dataset = dataset.select(kept)
            digests, paths = [digests[row] for row in kept], [paths[row] for row in kept]
        data[split], found[split] = dataset, (paths, digests)
    if "validation" in data:
        (train_paths, train_digests), (paths, digests) = found["train"], found["validation"]
        data["validation"] = drop_validation_copies(train_paths, train_digests, data["validation"], paths, digests,
                                                    notes)  # fmt: skip
    return data


def load_image_data(
    args: DataArguments,
    seed: int,
    cache_dir: str | None = None,
    num_proc: int | None = None,
    task: str | None = None,
    scoring: bool = False,
    single_label_given: bool = False,
) -> ImageData:
    """Load, check and split the labelled images the arguments name.

    Labels become multi-hot rows for the multi-label task, or when the label column holds lists. Labels that look
    like several per image are refused for a single-label run unless `single_label_given` (the user named the task).
    `scoring` loads the one split `convnext-hf evaluate` scores: its messages speak of the scored images, and one
    class is enough.
    """
    words = SCORING_WORDS if scoring else TRAINING_WORDS
    notes: list[str] = []
    kind = _check_sources(args)
    loader = {"folder": _load_folders, "file": _load_files, "hub": _load_hub}[kind]
    source = {"folder": args.train_dir, "file": args.train_file, "hub": args.dataset_name}[kind]
    data = _standardize_columns(loader(args, cache_dir, words, notes), args)
    multi_label = task == MULTI_LABEL_CLASSIFICATION or _holds_lists(data["train"])
    if multi_label:
        data, label_names = _encode_multi_labels(data)
    else:
        _refuse_missing_labels(data, words)
        data, label_names = _encode_labels(data)
        if not (scoring or single_label_given):
            _refuse_combined_labels(label_names)
    if scoring:
        # Scoring reads the images outside the Trainer, so they are checked here, on every core; a training run
        # finds unreadable images as its loader reads them.
        data = datasets.DatasetDict(
            {
                split: _drop_bad_images(dataset, words[split], args.on_bad_image, num_proc, notes)
                for split, dataset in data.items()
            }
        )
    else:
        # A training run must not learn one image twice or validate on it.
        data = _remove_repeats(data, label_names, multi_label, cache_dir, words, notes)
    (_check_multi_labels if multi_label else _check_classes)(data, label_names, source, scoring)
    train, validation = data["train"], data.get("validation")
    train, validation = hold_out_and_limit(
        train, validation, args, seed, lambda dataset, fraction, seed: _split(dataset, fraction, len(label_names), seed)
    )
    problems = Problems(f"the class names of {source}")
    check_label_names([(f"class {index}", name) for index, name in enumerate(label_names)], problems)
    problems.refuse("Name each class with text on one line (no newlines or terminal escapes).")
    task_name = MULTI_LABEL_CLASSIFICATION if multi_label else IMAGE_CLASSIFICATION
    return ImageData(train, validation, label_names, source, task_name, notes)


def with_transforms(
    data: ImageData,
    train_transform: Callable[[Image.Image], torch.Tensor],
    processor: ConvNextHFImageProcessor,
) -> ImageData:
    """Attach the on-the-fly transforms: augmentation for training, the image processor for validation; both read
    the images with `read_image` (`read_images`: displayed frame; alpha, 16-bit, palette and grayscale as the processor
    converts). An image that cannot be read has no pixel values and is named under `UNREADABLE` (`collate` leaves it
    out)."""

    def train_batch(batch: dict) -> dict:
        images, problems = read_images(batch["image"], convert_rgb=processor.do_convert_rgb)
        pixel_values = [None if image is None else train_transform(image) for image in images]
        return {"pixel_values": pixel_values, "labels": batch["label"], UNREADABLE: problems}

    def eval_batch(batch: dict) -> dict:
        images, problems = read_images(batch["image"], convert_rgb=processor.do_convert_rgb)
        readable = [image for image in images if image is not None]
        pixel_values = iter(processor(readable, return_tensors="pt")["pixel_values"] if readable else [])
        return {"pixel_values": [None if image is None else next(pixel_values) for image in images],
                "labels": batch["label"], UNREADABLE: problems, KEEP_SLOTS: [True] * len(images)}  # fmt: skip

    def undecoded(dataset: Any) -> Any:
        # A stream (`EpochStream`) is undecoded already.
        if isinstance(dataset, datasets.Dataset):
            return dataset.cast_column("image", datasets.Image(decode=False))
        return dataset

    validation = undecoded(data.validation).with_transform(eval_batch) if data.validation is not None else None
    return data.with_splits(undecoded(data.train).with_transform(train_batch), validation)


def collate(examples: list[dict]) -> dict[str, Any]:
    """Stack examples into a batch of `pixel_values` and `labels` (class ids, or float multi-hot rows), leaving out
    the images that could not be read; the batch names those under `UNREADABLE` for the Trainer. Validation examples
    (`KEEP_SLOTS`) keep an unreadable image's slot instead: zero pixels, `PLACEHOLDER_LABEL` labels, and the names as
    a `names_tensor` row per example."""
    readable = [example for example in examples if example["pixel_values"] is not None]
    keep_slots = examples[0].get(KEEP_SLOTS, False)
    names = [example.get(UNREADABLE, "") for example in examples]
    batch: dict[str, Any] = {UNREADABLE: names_tensor(names) if keep_slots else [name for name in names if name]}
    if not readable:
        return batch
    if keep_slots:
        blank, label = torch.zeros_like(readable[0]["pixel_values"]), readable[0]["labels"]
        blank_label = [PLACEHOLDER_LABEL] * len(label) if isinstance(label, list) else PLACEHOLDER_LABEL
        readable = [example if example["pixel_values"] is not None else
                    {"pixel_values": blank, "labels": blank_label} for example in examples]  # fmt: skip
    labels = [example["labels"] for example in readable]
    return {
        "pixel_values": torch.stack([example["pixel_values"] for example in readable]),
        "labels": torch.tensor(labels, dtype=torch.float32 if isinstance(labels[0], list) else torch.long),
        **batch,
    }
