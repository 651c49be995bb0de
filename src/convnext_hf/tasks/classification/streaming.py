"""Streamed classification data (`--streaming --dataset_name NAME_OR_FOLDER`): a Hub dataset, or a local folder of
parquet or webdataset (.tar) shards, read as `datasets` streams it (splits from the file names: train-*,
validation-*...), never materialised.

Class names come from a ClassLabel column (parquet written by `datasets`, most Hub datasets); otherwise (webdataset's
`.cls` integers, text labels) the label column is read once, alone, to find them. Exact copies are not searched for
in a stream, and `--train_val_split` does not apply: validation is the stream's validation split, when it has one.
"""

from __future__ import annotations

import logging
from typing import Any

import datasets

from ...errors import UserInputError
from ...train.arguments import RunArguments
from ...train.data import IMAGE_COLUMNS, ImageData
from ...train.streaming import EpochStream
from .. import IMAGE_CLASSIFICATION
from .data import LABEL_COLUMNS, class_order, find_column, label_text

logger = logging.getLogger(__name__)

# webdataset names a sample's members by their extension: the image is `jpg`/`png`..., the class `cls`.
STREAM_IMAGE_COLUMNS = (*IMAGE_COLUMNS, "jpg", "jpeg", "png", "webp")
STREAM_LABEL_COLUMNS = (*LABEL_COLUMNS, "cls")
VALIDATION_SPLITS = ("validation", "valid", "val", "test")


def _check_flags(args: RunArguments) -> None:
    data, training = args.data, args.training
    if data.dataset_name is None or data.train_dir or data.train_file:
        raise UserInputError(
            "--streaming reads --dataset_name: a Hub id, or a folder of parquet or webdataset (.tar) shards; an image "
            "folder (--train_dir) or file (--train_file) starts at the cost of listing it without --streaming."
        )
    if training.max_steps <= 0:
        raise UserInputError(
            "--streaming reads data of unknown length, so epochs cannot set the run's length: give --max_steps N "
            "(optimizer steps; each takes --per_device_train_batch_size × processes × accumulation images)."
        )


def _open(args: RunArguments) -> datasets.IterableDatasetDict:
    data = args.data
    try:
        streams = datasets.load_dataset(
            data.dataset_name, data.dataset_config_name, streaming=True, cache_dir=args.model.cache_dir
        )
    except (FileNotFoundError, ValueError) as error:
        raise UserInputError(
            f"--dataset_name {data.dataset_name} cannot be streamed: {' '.join(str(error).split())}"
        ) from error
    if "train" not in streams:
        raise UserInputError(
            f"--dataset_name {data.dataset_name} has no 'train' split (it has {list(streams)}); name the training "
            "shards train-*.parquet or train-*.tar."
        )
    return streams


def _columns(stream: datasets.IterableDataset) -> list[str]:
    """The stream's columns, from its features, else from its first example."""
    return list(stream.column_names or next(iter(stream)).keys())


def _label_map(splits: dict[str, datasets.IterableDataset], label_column: str) -> tuple[list[str], Any]:
    """The class names, and a function from a stored label to its class id (None when the labels are ids already)."""
    feature = (splits["train"].features or {}).get(label_column)
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names), None
    logger.info("The streamed labels have no class names: reading the %r column once to find them.", label_column)
    values = set()
    for split, stream in splits.items():
        for example in stream.select_columns([label_column]):
            value = label_text(example[label_column])
            if value is None:
                raise UserInputError(f"A {split} example of {label_column!r} has no label; give every example one.")
            values.add(value)
    names = class_order(values)
    index = {name: position for position, name in enumerate(names)}
    return names, lambda value: index[label_text(value)]


def load_streamed_images(args: RunArguments) -> ImageData:
    """The training and validation streams of --dataset_name, this process's share of them, and their class names."""
    _check_flags(args)
    data, training = args.data, args.training
    streams = _open(args)
    splits = {"train": streams["train"]}
    validation = next((name for name in VALIDATION_SPLITS if name in streams), None)
    if validation is not None:
        splits["validation"] = streams[validation]
    columns = _columns(splits["train"])
    image_column = find_column(columns, data.image_column_name, STREAM_IMAGE_COLUMNS, "image")
    label_column = find_column(columns, data.label_column_name, STREAM_LABEL_COLUMNS, "label")
    names, to_id = _label_map(splits, label_column)
    if len(names) < 2:
        raise UserInputError(f"The data of {data.dataset_name} has {len(names)} class(es) {names}; a classifier needs "
                             "at least two.")  # fmt: skip
    prepared = {}
    for split, stream in splits.items():
        # Undecoded from the source on: datasets would decode a webdataset image as it reads it (cast later, after
        # the column is picked), where an unreadable one would end the run without `--on_bad_image`.
        stream = stream.cast_column(image_column, datasets.Image(decode=False))
        stream = stream.select_columns([image_column, label_column])
        renamed = {old: new for old, new in ((image_column, "image"), (label_column, "label")) if old != new}
        stream = stream.rename_columns(renamed) if renamed else stream
        if to_id is not None:
            stream = stream.map(lambda example: {"label": to_id(example["label"])})
        limit = data.max_train_samples if split == "train" else data.max_eval_samples
        prepared[split] = stream.take(limit) if limit is not None else stream
    notes = []
    if validation is None:
        note = (f"{data.dataset_name} has no validation split to stream ({', '.join(VALIDATION_SPLITS)}): trained "
                "without validation (--train_val_split does not apply to streams).")  # fmt: skip
        logger.warning(note)
        notes.append(note)
    train = EpochStream(prepared["train"], training.per_device_train_batch_size, training=True,
                        seed=training.data_seed if training.data_seed is not None else training.seed,
                        buffer_size=data.shuffle_buffer_size, rank=training.process_index,
                        world_size=training.world_size)  # fmt: skip
    # Validation is read whole by the first process, which hands each process its part of every batch (accelerate's
    # dispatching loader), so that every image is scored once.
    validation_stream = EpochStream(prepared["validation"], training.per_device_eval_batch_size) if validation else None
    return ImageData(train, validation_stream, names, data.dataset_name, IMAGE_CLASSIFICATION, notes, streaming=True)
