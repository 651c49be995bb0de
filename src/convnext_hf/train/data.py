"""What every task's data has in common: the splits with their label names, and the up-front check of the images.

Each task loads its own data (`tasks/<task>`) into an `ImageData`; unreadable images are found here, before training
starts, rather than halfway through a run.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import datasets

from ..errors import UserInputError
from ..images import read_image
from ..tasks import IMAGE_CLASSIFICATION

logger = logging.getLogger(__name__)

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
    # What the checks before training left out or found, one sentence each, for the log and the model card.
    notes: list[str] = field(default_factory=list)

    def with_splits(self, train: datasets.Dataset, validation: datasets.Dataset | None) -> ImageData:
        """The same data with other splits (e.g. with their transforms attached)."""
        return replace(self, train=train, validation=validation)


def _image_problem(image: dict) -> str:
    """Why an undecoded image entry cannot be used ("" when it decodes)."""
    try:
        read_image(image)
    except Exception as error:  # noqa: BLE001 - any decoding failure makes the image unusable
        # The decoder's own error: the listing names the file already.
        while error.__cause__ is not None:
            error = error.__cause__
        return f"{type(error).__name__}: {error}"
    return ""


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
        lambda batch: {"problem": [_image_problem(image) for image in batch["image"]]},
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


def image_paths(dataset: datasets.Dataset, column: str = "image") -> list[str]:
    """The file of every image entry ('<row N>' for images embedded without one)."""
    raw = dataset.select_columns([column]).cast_column(column, datasets.Image(decode=False))[column]
    return [image.get("path") or f"<row {row}>" for row, image in enumerate(raw)]


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
