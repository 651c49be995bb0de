"""Semantic segmentation data: class names, image/mask pairs, their check, and the paired augmentation.

Masks are single-channel PNGs of class ids; 255 marks pixels that do not count, as in the official ADE20K setup.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import numpy as np
import torch
import transformers
from PIL import Image

from ...annotations import check_label_file, confined_path
from ...data_folder import check_data_folder
from ...errors import UserInputError
from ...images import ImageSource, image_frames, read_image, read_mask, source_name
from ...train.arguments import DataArguments, ModelArguments
from ...train.augment import to_pixel_values
from ...train.data import (
    FILE_BUILDERS,
    IMAGE_COLUMNS,
    ImageData,
    drop_validation_copies,
    find_bad_images,
    hold_out_and_limit,
    image_digests,
    image_paths,
    local_files_quietly,
    repeated_images,
)
from .. import SEMANTIC_SEGMENTATION

logger = logging.getLogger(__name__)

IGNORE_INDEX = 255
MASK_COLUMNS = ("mask", "label", "annotation", "segmentation_map")
# Single-channel modes whose pixel values are the class ids: 8-bit, palette indices, 16- and 32-bit integers.
MASK_MODES = ("L", "P", "I", "I;16")


# --- labels and data -------------------------------------------------------------------------------------------


def parse_id2label(value: str) -> dict[int, str]:
    """Class names by mask id from a JSON object or list, or a JSON file of one; ids must be 0..n-1, each name
    non-empty and its own."""
    text = value
    try:
        if os.path.isfile(value):
            with open(value, encoding="utf-8") as file:
                text = file.read()
        mapping = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserInputError(
            f'--id2label must be a JSON object or file, e.g. \'{{"0": "sky", "1": "road"}}\': {error}'
        ) from None
    if isinstance(mapping, list):
        mapping = dict(enumerate(mapping))
    if not isinstance(mapping, dict):
        raise UserInputError(f"--id2label must map mask ids to class names (a JSON object or list), got {value!r}.")
    try:
        ids = {int(key): name for key, name in mapping.items()}
    except ValueError:
        raise UserInputError(f"--id2label keys must be mask ids (0, 1, ...), got {list(mapping)}.") from None
    if sorted(ids) != list(range(len(mapping))):
        raise UserInputError(f"--id2label must name every class id 0..n-1 once, got ids {sorted(ids)}.")
    unnamed = [index for index, name in ids.items() if not isinstance(name, str) or not name.strip()]
    if unnamed:
        raise UserInputError(f"--id2label gives id(s) {unnamed} no name; each class needs a non-empty text name.")
    repeated = sorted(name for name, count in Counter(ids.values()).items() if count > 1)
    if repeated:
        raise UserInputError(f"--id2label names {repeated} more than once; each class needs its own name (merge "
                             "their ids in the masks if they are one class).")  # fmt: skip
    if len(mapping) < 2:
        raise UserInputError(f"--id2label names {len(mapping)} class; segmentation needs at least two.")
    if len(mapping) > IGNORE_INDEX:
        raise UserInputError(
            f"--id2label names {len(mapping)} classes, but mask id {IGNORE_INDEX} marks pixels to ignore, so masks "
            f"can name at most {IGNORE_INDEX} classes (ids 0..{IGNORE_INDEX - 1}); merge classes or drop rare ones."
        )
    return ids


def segmentation_labels(args: ModelArguments, data_args: DataArguments) -> list[str]:
    """The class names: --id2label, else those of the segmentation model being fine-tuned."""
    if data_args.id2label is not None:
        return [name for _, name in sorted(parse_id2label(data_args.id2label).items())]
    if args.model_name_or_path is not None:
        config = transformers.AutoConfig.from_pretrained(args.model_name_or_path, revision=args.revision)
        if config.model_type == "upernet":
            return [config.id2label[index] for index in range(config.num_labels)]
    raise UserInputError(
        'Name the classes of the masks with --id2label (e.g. \'{"0": "background", "1": "road"}\'), or fine-tune a '
        "segmentation model whose classes they are."
    )


def _image_files(directory: str) -> dict[str, str]:
    """Image files under `directory` by their path relative to it, without extension."""
    extensions = {ext.lower() for ext in Image.registered_extensions()}
    files = {}
    for folder, _, names in os.walk(directory):
        for name in sorted(names):
            stem, extension = os.path.splitext(name)
            if extension.lower() in extensions:
                files[os.path.relpath(os.path.join(folder, stem), directory)] = os.path.join(folder, name)
    return files


def _require_masks(mask_dir: str | None, split: str) -> None:
    if mask_dir is None:
        flag = "--train_mask_dir" if split == "train" else "--validation_mask_dir"
        raise UserInputError(f"Segmentation needs the {split} masks: pass {flag} (PNG masks with the images' stems).")


def check_mask_folders(args: DataArguments) -> None:
    """Refuse image folders given without their mask folders, before the class names are asked for."""
    if args.train_dir is not None:
        _require_masks(args.train_mask_dir, "train")
    if args.validation_dir is not None:
        _require_masks(args.validation_mask_dir, "validation")


def pairs_from_folders(image_dir: str, mask_dir: str | None, split: str) -> datasets.Dataset:
    """Image and mask paths paired by file stem; every image needs a mask (`split` names the flags in errors)."""
    _require_masks(mask_dir, split)
    flag = "--train_mask_dir" if split == "train" else "--validation_mask_dir"
    check_data_folder(image_dir, f"--{split}_dir", "a folder of images")
    check_data_folder(mask_dir, flag, "a folder of PNG masks with the images' stems")
    images, masks = _image_files(image_dir), _image_files(mask_dir)
    if not images:
        raise UserInputError(f"No images found in {image_dir}.")
    missing = sorted(set(images) - set(masks))
    if missing:
        raise UserInputError(
            f"{len(missing)} {split} image(s) have no mask in {mask_dir} (e.g. {missing[:3]}); every image needs a "
            "mask with the same file stem (photo.jpg → photo.png)."
        )
    stems = sorted(images)
    return datasets.Dataset.from_dict({"image": [images[s] for s in stems], "mask": [masks[s] for s in stems]})


def pairs_from_file(path: str, args: DataArguments, cache_dir: str | None) -> datasets.Dataset:
    """Image and mask paths from a CSV/JSON file's columns, relative to the file's folder."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in FILE_BUILDERS or not os.path.isfile(path):
        raise UserInputError(f"{path} is not an existing .csv, .json or .jsonl file of image and mask paths.")
    columns = [(args.image_column_name,) if args.image_column_name else IMAGE_COLUMNS,
               (args.mask_column_name,) if args.mask_column_name else MASK_COLUMNS]  # fmt: skip
    check_label_file(path, "the file of image and mask paths", columns)
    with local_files_quietly():
        table = datasets.load_dataset(FILE_BUILDERS[extension], data_files={"rows": path}, cache_dir=cache_dir)["rows"]
    image_column = _column(table, args.image_column_name, IMAGE_COLUMNS, "image")
    mask_column = _column(table, args.mask_column_name, MASK_COLUMNS, "mask")
    base = os.path.dirname(os.path.abspath(path))
    return datasets.Dataset.from_dict(
        {
            "image": [confined_path(base, value)[0] for value in table[image_column]],
            "mask": [confined_path(base, value)[0] for value in table[mask_column]],
        }
    )


def _column(table: datasets.Dataset, requested: str | None, candidates: Sequence[str], what: str) -> str:
    if requested is not None and requested in table.column_names:
        return requested
    found = next((name for name in candidates if name in table.column_names), None)
    if requested is not None or found is None:
        raise UserInputError(
            f"No {what} column {requested or ''} among {table.column_names}; name it with --{what}_column_name."
        )
    return found


def drop_bad_pairs(dataset: datasets.Dataset, split: str, policy: str) -> datasets.Dataset:
    """The pairs whose image and mask both read; unreadable ones refused by path, or skipped with a warning."""
    bad = {}
    for column in ("image", "mask"):
        # find_bad_images reads an `image` column of undecoded files.
        files = dataset.select_columns([column]).rename_column(column, "image") if column != "image" else dataset
        for row, path, reason in find_bad_images(files.cast_column("image", datasets.Image())):
            bad[row] = f"{path}: {reason}"
    if not bad:
        return dataset
    listing = "\n".join(f"  {line}" for line in bad.values())
    if policy == "error":
        raise UserInputError(
            f"{len(bad)} unreadable image(s) or mask(s) in the {split} data:\n{listing}\n"
            "Remove or replace them, or pass --on_bad_image skip to go on without them."
        )
    logger.warning("Skipping %d unreadable pair(s) in the %s data:\n%s", len(bad), split, listing)
    return dataset.select([row for row in range(len(dataset)) if row not in bad])


def load_segmentation_data(
    args: DataArguments, label_names: list[str], seed: int, cache_dir: str | None = None
) -> ImageData:
    """Image/mask pairs from folders (`--train_dir` + `--train_mask_dir`) or a CSV/JSON file, checked and split."""
    if (args.train_dir is None) == (args.train_file is None) or args.dataset_name is not None:
        raise UserInputError(
            "Segmentation data: pass --train_dir IMAGES --train_mask_dir MASKS, or --train_file with image and mask "
            "columns (Hub datasets are not supported for segmentation)."
        )
    if args.train_dir is not None:
        splits = {"train": pairs_from_folders(args.train_dir, args.train_mask_dir, "train")}
        if args.validation_dir is not None:
            splits["validation"] = pairs_from_folders(args.validation_dir, args.validation_mask_dir, "validation")
        source = args.train_dir
    else:
        splits = {"train": pairs_from_file(args.train_file, args, cache_dir)}
        if args.validation_file is not None:
            splits["validation"] = pairs_from_file(args.validation_file, args, cache_dir)
        source = args.train_file
    splits = {
        split: drop_bad_pairs(dataset, split, args.on_bad_image).cast_column("image", datasets.Image())
        .cast_column("mask", datasets.Image())
        for split, dataset in splits.items()
    }
    notes: list[str] = []
    for split, dataset in splits.items():
        # Every mask is read once now, so that a wrong mask stops the run before training rather than in it.
        _check_masks(dataset, split, len(label_names))
        splits[split] = _remove_repeated_pairs(dataset, split, notes)
    if "validation" in splits:
        train_paths, validation_paths = image_paths(splits["train"]), image_paths(splits["validation"])
        splits["validation"] = drop_validation_copies(
            train_paths, image_digests(splits["train"]), splits["validation"], validation_paths,
            image_digests(splits["validation"]), notes,
        )  # fmt: skip
    train, validation = splits["train"], splits.get("validation")
    train, validation = hold_out_and_limit(train, validation, args, seed)
    return ImageData(train, validation, label_names, source, SEMANTIC_SEGMENTATION, notes)


def _remove_repeated_pairs(dataset: datasets.Dataset, split: str, notes: list[str]) -> datasets.Dataset:
    """One row per image (repeats with the same mask noted); an image listed with different masks is refused."""
    masks = image_digests(dataset, "mask")
    kept = repeated_images(split, masks, image_digests(dataset), image_paths(dataset), notes, "remove the others")
    return dataset.select(kept) if len(kept) < len(dataset) else dataset


def _listing(paths: Sequence[str], limit: int = 3) -> str:
    return ", ".join(paths[:limit]) + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _check_masks(dataset: datasets.Dataset, split: str, num_labels: int) -> None:
    """Refuse, with counts and paths, masks of another size than their image (they would be stretched over it) and
    masks holding ids beyond the classes (read as the ids they are, 16-bit ones included; 255 is ignored)."""
    images, masks = image_paths(dataset), image_paths(dataset, "mask")
    raw = dataset.cast_column("image", datasets.Image(decode=False)).cast_column("mask", datasets.Image(decode=False))
    mismatched, unknown, wrong_mode = [], Counter(), []
    examples: dict[int, list[str]] = {}
    for row, pair in enumerate(raw):
        mask, image = read_mask(pair["mask"]), pair["image"]
        # The header gives the displayed size; the image itself is decoded by the check of unreadable files.
        image_size = image_frames(image)[1]
        if mask.size != image_size:
            mismatched.append(f"{masks[row]} ({mask.width}×{mask.height}) for {images[row]} "
                              f"({image_size[0]}×{image_size[1]})")  # fmt: skip
        if mask.mode not in MASK_MODES:
            wrong_mode.append(f"{masks[row]} ({mask.mode})")
            continue
        for class_id in np.setdiff1d(np.unique(np.asarray(mask, dtype=np.int64)), [*range(num_labels), IGNORE_INDEX]):
            unknown[int(class_id)] += 1
            examples.setdefault(int(class_id), []).append(masks[row])
    if wrong_mode:
        raise UserInputError(
            f"{len(wrong_mode)} {split} mask(s) are not single-channel images of class ids: {_listing(wrong_mode)}. "
            f"Masks must be one-channel PNGs (8- or 16-bit) whose pixels are class ids (0..{num_labels - 1}, "
            f"{IGNORE_INDEX} ignored)."
        )
    if mismatched:
        raise UserInputError(
            f"{len(mismatched)} {split} mask(s) differ in size from their image: {_listing(mismatched)}. A mask must "
            "label its image pixel for pixel; resize the masks (nearest neighbour) or pair them with their images."
        )
    if unknown:
        found = "; ".join(
            f"id {class_id} in {count} mask(s) (e.g. {_listing(examples[class_id], 2)})"
            for class_id, count in sorted(unknown.items())
        )
        raise UserInputError(
            f"{split} masks hold class ids beyond the {num_labels} classes of --id2label (0..{num_labels - 1}; "
            f"{IGNORE_INDEX} marks ignored pixels): {found}. Name those classes in --id2label, or set their pixels "
            f"to {IGNORE_INDEX}."
        )


def mask_ids(source: ImageSource, num_labels: int) -> np.ndarray:
    """A mask (read by `read_mask`) as an (H, W) array of its pixel values, refused when it is not one channel of
    ids."""
    mask = read_mask(source)
    if mask.mode not in MASK_MODES:
        raise UserInputError(
            f"Mask {source_name(source)} is a {mask.mode} image; masks must be single-channel PNGs whose "
            f"pixels are class ids (0..{num_labels - 1}, {IGNORE_INDEX} ignored)."
        )
    return np.asarray(mask, dtype=np.int64)


def mask_array(source: ImageSource, num_labels: int) -> np.ndarray:
    """A mask as an (H, W) array of class ids, refused when it is not one channel of ids below `num_labels`."""
    ids = mask_ids(source, num_labels)
    unknown = np.setdiff1d(np.unique(ids), [*range(num_labels), IGNORE_INDEX])
    if unknown.size:
        raise UserInputError(
            f"Mask {source_name(source)} holds class id(s) {unknown.tolist()}, but --id2label names "
            f"{num_labels} classes (0..{num_labels - 1}); {IGNORE_INDEX} marks pixels to ignore."
        )
    return ids


# --- augmentation ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedTransform:
    """The official segmentation augmentation, applied to an image and its mask alike.

    Rescale so that the short side is `size` × a factor drawn from `scale_range`, pad to at least `size` (mask padding
    is ignored), random `size`×`size` crop, horizontal flip; then the image is rescaled and normalized as the
    processor does.
    """

    size: int
    scale_range: tuple[float, float]
    hflip: float
    num_labels: int
    rescale_factor: float | None
    image_mean: Sequence[float] | None
    image_std: Sequence[float] | None

    def __call__(self, image: ImageSource, mask: ImageSource) -> tuple[torch.Tensor, torch.Tensor]:
        image, ids = read_image(image), Image.fromarray(mask_array(mask, self.num_labels).astype(np.uint8))
        scale = random.uniform(*self.scale_range) * self.size / min(image.size)
        new_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(new_size, Image.Resampling.BILINEAR)
        ids = ids.resize(new_size, Image.Resampling.NEAREST)
        if min(image.size) < self.size:
            padded = (max(self.size, image.width), max(self.size, image.height))
            image_canvas, ids_canvas = Image.new("RGB", padded), Image.new("L", padded, IGNORE_INDEX)
            image_canvas.paste(image)
            ids_canvas.paste(ids)
            image, ids = image_canvas, ids_canvas
        left = random.randint(0, image.width - self.size)
        top = random.randint(0, image.height - self.size)
        box = (left, top, left + self.size, top + self.size)
        image, ids = image.crop(box), ids.crop(box)
        if random.random() < self.hflip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            ids = ids.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        pixel_values = to_pixel_values(image, self.rescale_factor, self.image_mean, self.image_std)
        return pixel_values, torch.from_numpy(np.asarray(ids, dtype=np.int64))


def with_segmentation_transforms(
    data: ImageData, train_transform: PairedTransform, processor: transformers.BaseImageProcessor
) -> ImageData:
    """Attach the paired augmentation for training and the processor (image and mask resized alike) for validation."""
    num_labels = len(data.label_names)

    def train_batch(batch: dict) -> dict:
        pairs = [train_transform(image, mask) for image, mask in zip(batch["image"], batch["mask"], strict=True)]
        return {"pixel_values": [pixels for pixels, _ in pairs], "labels": [ids for _, ids in pairs]}

    def eval_batch(batch: dict) -> dict:
        images = [read_image(image) for image in batch["image"]]
        masks = [mask_array(mask, num_labels).astype(np.uint8) for mask in batch["mask"]]
        encoded = processor(images, segmentation_maps=masks, return_tensors="pt")
        return {"pixel_values": list(encoded["pixel_values"]), "labels": list(encoded["labels"].long())}

    validation = data.validation.with_transform(eval_batch) if data.validation is not None else None
    return data.with_splits(data.train.with_transform(train_batch), validation)


def collate_segmentation(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack examples into `pixel_values` (N, 3, H, W) and `labels` (N, H, W) of class ids."""
    return {
        "pixel_values": torch.stack([example["pixel_values"] for example in examples]),
        "labels": torch.stack([example["labels"] for example in examples]),
    }
