"""What every task's data has in common: the splits with their label names, reading an image, finding unreadable
images and exact copies.

Each task loads its own data (`tasks/<task>`) into an `ImageData`. Classification reads its images in the loader
(`read_images`: an unreadable one is reported there, by the Trainer); segmentation and `convnext-hf evaluate` check
them before they start (`find_bad_images`). Exact copies are found from file sizes first and remembered per listing
(`exact_copy_digests`), so that a second run on the same folder hashes nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import stat
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import datasets
import numpy as np
import torch
from PIL import Image

from ..atomic import atomic_file
from ..errors import UserInputError
from ..images import read_image, source_name
from ..tasks import IMAGE_CLASSIFICATION

logger = logging.getLogger(__name__)

IMAGE_COLUMNS = ("image", "img", "image_path", "path", "file")
# The batch entry that names the images the loader could not read ("PATH (WHY)"), for the Trainer to skip or stop at.
UNREADABLE = "unreadable_images"
# Validation batches keep an unreadable image's slot, so that every process's batch has the size the gather across
# processes expects: placeholder pixels, this label (left out of the loss and the metrics), and the image's name as a
# fixed-width row of bytes, which accelerate's dispatching loader (streamed validation) broadcasts and splits between
# the processes like the pixels.
KEEP_SLOTS = "keep_slots"
PLACEHOLDER_LABEL = -100
NAME_BYTES = 512
MEMORY_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
FILE_BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json"}


@dataclass
class ImageData:
    """The training and validation splits, their label names, a description of the source for the model card, and
    the task they were loaded for (a classification label column holding lists makes it multi-label)."""

    train: datasets.Dataset | Any
    validation: datasets.Dataset | Any | None
    label_names: list[str]
    source: str
    task: str = IMAGE_CLASSIFICATION
    # What the checks before training left out or found, one sentence each, for the log and the model card.
    notes: list[str] = field(default_factory=list)
    # Streamed splits (`train.streaming.EpochStream`): no length, read as the run goes.
    streaming: bool = False

    def with_splits(self, train: datasets.Dataset, validation: datasets.Dataset | None) -> ImageData:
        """The same data with other splits (e.g. with their transforms attached)."""
        return replace(self, train=train, validation=validation)


def names_tensor(names: Sequence[str]) -> torch.Tensor:
    """Per example, its "PATH (WHY)" ("" when it was read) as a row of NAME_BYTES UTF-8 bytes, zero-padded (cut when
    longer)."""
    rows = torch.zeros(len(names), NAME_BYTES, dtype=torch.uint8)
    for row, name in zip(rows, names, strict=True):
        encoded = name.encode()[:NAME_BYTES]
        row[: len(encoded)] = torch.tensor(list(encoded), dtype=torch.uint8)
    return rows


def tensor_names(rows: torch.Tensor) -> list[str]:
    """The names of the unreadable images in a `names_tensor`, in order."""
    return [bytes(row.tolist()).rstrip(b"\0").decode(errors="replace") for row in rows.cpu() if row.any()]


def placeholder_rows(labels: np.ndarray) -> np.ndarray:
    """Which gathered validation rows are placeholders of unreadable images (every label PLACEHOLDER_LABEL)."""
    return (labels.reshape(len(labels), -1) == PLACEHOLDER_LABEL).all(axis=1)


def image_problem(image: dict) -> str:
    """Why an undecoded image entry cannot be used ("" when it decodes)."""
    try:
        read_image(image)
    except Exception as error:  # noqa: BLE001 - any decoding failure makes the image unusable
        # The decoder's own error: the listing names the file already.
        while error.__cause__ is not None:
            error = error.__cause__
        return f"{type(error).__name__}: {error}"
    return ""


def read_images(images: Sequence[dict], convert_rgb: bool = True) -> tuple[list[Image.Image | None], list[str]]:
    """Undecoded image entries read as the loader needs them (`read_image`): each image (None when it cannot be read)
    and, per entry, "" or "PATH (WHY)" naming an unreadable one, for the Trainer to skip or stop at."""
    read, problems = [], []
    for image in images:
        try:
            read.append(read_image(image, convert_rgb=convert_rgb))
            problems.append("")
        except Exception as error:  # noqa: BLE001 - any decoding failure makes the image unusable
            name = source_name(image)
            read.append(None)
            # Without the decoder's object addresses, so that the image is named alike each time it is met.
            reason = MEMORY_ADDRESS.sub("", str(error).removeprefix(f"{name}: "))
            problems.append(f"{name} ({reason})")
    return read, problems


@contextlib.contextmanager
def local_files_quietly() -> Iterator[None]:
    """Hide datasets' progress bars while it indexes local files: it labels them "Downloading data"."""
    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if shown:
            datasets.enable_progress_bars()


def find_bad_images(dataset: datasets.Dataset, num_proc: int | None = None) -> list[tuple[int, str, str]]:
    """Decode every image once; return (row, path or '<row N>', reason) for each that fails."""
    raw = dataset.cast_column("image", datasets.Image(decode=False))
    problems = raw.map(
        lambda batch: {"problem": [image_problem(image) for image in batch["image"]]},
        batched=True,
        num_proc=num_proc,
        remove_columns=raw.column_names,
        desc="Checking images",
    )["problem"]
    bad = [row for row, problem in enumerate(problems) if problem]
    images = raw.select(bad)["image"] if bad else []
    return [(row, image.get("path") or f"<row {row}>", problems[row]) for row, image in zip(bad, images, strict=True)]


def _digest(image: dict) -> str:
    """SHA-256 of an undecoded image entry's bytes (embedded, or its file's)."""
    if image.get("bytes"):
        return hashlib.sha256(image["bytes"]).hexdigest()
    digest = hashlib.sha256()
    with open(image["path"], "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def image_digests(dataset: datasets.Dataset, column: str = "image", num_proc: int | None = None) -> list[str]:
    """The SHA-256 of every image's bytes: the same picture listed twice is found whatever its file is called."""
    raw = dataset.select_columns([column]).cast_column(column, datasets.Image(decode=False))
    return raw.map(
        lambda batch: {"digest": [_digest(image) for image in batch[column]]},
        batched=True,
        num_proc=num_proc,
        remove_columns=[column],
        desc="Hashing images",
    )["digest"]


# Exact copies have equal sizes and equal ends: the last bytes of a JPEG (its entropy-coded data) tell most files of
# one size apart, so only files that agree on both are hashed in full.
_TAIL_BYTES = 4096
COPIES_CACHE = "convnext-hf-copies"


def _file_entries(dataset: datasets.Dataset, column: str) -> list[str] | None:
    """The file path of every image entry, or None when some image is embedded (its bytes are in the data)."""
    raw = dataset.select_columns([column]).cast_column(column, datasets.Image(decode=False))
    entries = raw.with_format("arrow")[:][column].combine_chunks()
    if entries.field("bytes").null_count != len(entries):
        return None
    return entries.field("path").to_pylist()


def _status(path: str) -> tuple[int | None, int | None]:
    """(size, modification time) of a regular file; (None, None) for anything else, which the loader reports."""
    try:
        status = os.stat(path)
    except OSError:
        return None, None
    return (status.st_size, status.st_mtime_ns) if stat.S_ISREG(status.st_mode) else (None, None)


def _tail(path: str, size: int) -> bytes:
    with open(path, "rb") as file:
        file.seek(max(size - _TAIL_BYTES, 0))
        return file.read()


def file_copy_digests(paths: Sequence[str]) -> dict[str, str]:
    """A digest per distinct file that two files share exactly when their bytes are equal: the SHA-256 of files that
    another file matches in size and last bytes, the path itself for the others (most files: one stat each)."""
    sizes = {path: _status(path)[0] for path in set(paths)}
    by_size: dict[int, list[str]] = defaultdict(list)
    for path, size in sizes.items():
        if size is not None:
            by_size[size].append(path)
    digests = {path: f"file:{path}" for path in sizes}
    for group in (group for group in by_size.values() if len(group) > 1):
        by_tail: dict[bytes, list[str]] = defaultdict(list)
        for path in group:
            by_tail[_tail(path, sizes[path])].append(path)
        for same in (same for same in by_tail.values() if len(same) > 1):
            digests.update((path, _digest({"path": path})) for path in same)
    return digests


def _listing_key(paths: Sequence[str]) -> str:
    """A name for a set of files as they are now: their paths, sizes and modification times."""
    digest = hashlib.sha256()
    for path in sorted(set(paths)):
        size, modified = _status(path)
        digest.update(f"{path}\0{size}\0{modified}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def exact_copy_digests(
    splits: Sequence[datasets.Dataset], cache_dir: str | None, column: str = "image", num_proc: int | None = None
) -> list[list[str]]:
    """Per split, a digest per image that two images share exactly when their bytes are equal.

    Files: by size and last bytes first (`file_copy_digests`), remembered under `cache_dir` for this listing (paths,
    sizes, modification times), so that a later run on the same files reads none of them. Embedded images: the
    SHA-256 of their bytes (datasets caches the pass with the dataset).
    """
    files = [_file_entries(split, column) for split in splits]
    if any(paths is None for paths in files):
        return [image_digests(split, column, num_proc) for split in splits]
    every = [path for paths in files for path in paths]
    folder = os.path.join(cache_dir or str(datasets.config.HF_DATASETS_CACHE), COPIES_CACHE)
    cached = os.path.join(folder, f"{_listing_key(every)}.json")
    try:
        with open(cached, encoding="utf-8") as file:
            hashed = json.load(file)
        if not isinstance(hashed, dict):
            raise ValueError(f"{cached} is not a search result")
    except (OSError, ValueError):
        digests = file_copy_digests(every)
        hashed = {path: digest for path, digest in digests.items() if not digest.startswith("file:")}
        os.makedirs(folder, exist_ok=True)
        with atomic_file(cached) as staging:
            staging.write_text(json.dumps(hashed), encoding="utf-8")
    return [[hashed.get(path, f"file:{path}") for path in paths] for paths in files]


def column_values(dataset: datasets.Dataset, column: str) -> list:
    """A column's values as a list, read in one go (iterating a `datasets` column formats it row by row); an image
    column gives its undecoded entries."""
    return dataset.select_columns([column]).with_format("arrow")[:][column].to_pylist()


def image_paths(dataset: datasets.Dataset, column: str = "image") -> list[str]:
    """The file of every image entry ('<row N>' for images embedded without one)."""
    return [image.get("path") or f"<row {row}>" for row, image in enumerate(column_values(dataset, column))]


def _listing(paths: Sequence[str], limit: int = 5) -> str:
    """A few paths, and how many more."""
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def repeated_images(
    split: str, labels: Sequence[Any], digests: Sequence[str], paths: Sequence[str], notes: list[str], fix: str
) -> list[int]:
    """The rows to keep: one of each image listed more than once in a split with the same label (the repeats are
    noted); an image listed with different labels is refused (`fix` says what to do instead)."""
    rows_of: dict[str, list[int]] = defaultdict(list)
    for row, digest in enumerate(digests):
        rows_of[digest].append(row)
    repeated, conflicting = set(), []
    for rows in rows_of.values():
        if len(rows) < 2:
            continue
        if len({repr(labels[row]) for row in rows}) > 1:
            conflicting.append(" = ".join(f"{paths[row]} ({labels[row]})" for row in rows))
        else:
            repeated.update(rows[1:])
    if conflicting:
        raise UserInputError(
            f"{len(conflicting)} image(s) of the {split} data are listed more than once with different labels "
            f"(the same file, or identical copies): {_listing(conflicting, 3)}. Give each image one label; {fix}."
        )
    if repeated:
        note = (
            f"{len(repeated)} repeated {split} image(s) (the same file, or an identical copy, listed again) were "
            f"used once: {_listing([paths[row] for row in sorted(repeated)])}."
        )
        logger.warning(note)
        notes.append(note)
    return [row for row in range(len(digests)) if row not in repeated]


def hold_out_and_limit(
    train: datasets.Dataset,
    validation: datasets.Dataset | None,
    args: Any,
    seed: int,
    split: Callable[[datasets.Dataset, float, int], tuple[datasets.Dataset, datasets.Dataset]] | None = None,
) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """Without a validation split, hold out --train_val_split of the training images (`split(train, fraction, seed)`,
    else at random); then keep at most --max_train_samples / --max_eval_samples of each split, drawn with the seed."""
    if validation is None and args.train_val_split > 0:
        if split is not None:
            train, validation = split(train, args.train_val_split, seed)
        else:
            held_out = train.train_test_split(test_size=args.train_val_split, seed=seed)
            train, validation = held_out["train"], held_out["test"]
    if args.max_train_samples is not None:
        train = train.shuffle(seed=seed).select(range(min(args.max_train_samples, len(train))))
    if validation is not None and args.max_eval_samples is not None:
        validation = validation.shuffle(seed=seed).select(range(min(args.max_eval_samples, len(validation))))
    return train, validation


def drop_validation_copies(
    train_paths: Sequence[str],
    train_digests: Sequence[str],
    validation: datasets.Dataset,
    validation_paths: Sequence[str],
    validation_digests: Sequence[str],
    notes: list[str],
) -> datasets.Dataset:
    """Refuse files given in both splits; leave out of validation (noted) the images identical to training ones,
    which would score what the model was trained on."""
    # Embedded images have no file ('<row N>'): only their bytes can show a copy.
    files = {path for path in validation_paths if not path.startswith("<row ")}
    both = sorted(files & set(train_paths))
    if both:
        raise UserInputError(
            f"{len(both)} file(s) are in both the training and the validation data: {_listing(both)}. An image "
            "scored for validation must not be trained on; remove them from one of the two."
        )
    seen = set(train_digests)
    copies = [row for row, digest in enumerate(validation_digests) if digest in seen]
    if not copies:
        return validation
    if len(copies) == len(validation):
        raise UserInputError(
            f"All {len(copies)} validation images are identical to training images (e.g. "
            f"{_listing([validation_paths[row] for row in copies], 3)}), so validation would score what the model "
            "was trained on; give validation images that are not in the training data."
        )
    note = (
        f"{len(copies)} validation image(s) identical to training images were left out of validation: "
        f"{_listing([validation_paths[row] for row in copies])}."
    )
    logger.warning(note)
    notes.append(note)
    left_out = set(copies)
    return validation.select([row for row in range(len(validation)) if row not in left_out])
