"""The one image reader (`convnext_hf.images`): EXIF-rotated and 16-bit copies of an image give every task's loader the
tensors of the plain 8-bit upright image; masks keep their ids; detection sizes and boxes are in the displayed frame."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.image_utils import load_image

from convnext_hf import ConvNextConfig
from convnext_hf.errors import UserInputError
from convnext_hf.image_processing_convnext import ConvNextHFImageProcessor
from convnext_hf.images import image_frames, read_image, read_mask
from convnext_hf.tasks.classification.data import load_image_data, with_transforms
from convnext_hf.tasks.detection.batches import collate_detection, with_detection_transforms
from convnext_hf.tasks.detection.data import coco_ground_truth, load_coco
from convnext_hf.tasks.detection.model import build_detection_processor, new_detector
from convnext_hf.tasks.detection.scoring import score_dataset
from convnext_hf.tasks.segmentation.data import load_segmentation_data, with_segmentation_transforms
from convnext_hf.tasks.segmentation.upernet import segmentation_processor
from convnext_hf.train.arguments import DataArguments, ModelArguments
from convnext_hf.train.data import ImageData

ORIENTATION = 0x0112
# ImageOps.exif_transpose's transposition per orientation; the file stores the upright picture transposed back.
_DISPLAY = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}  # fmt: skip
_UNDO = {Image.Transpose.ROTATE_90: Image.Transpose.ROTATE_270, Image.Transpose.ROTATE_270: Image.Transpose.ROTATE_90}
ORIENTATIONS = sorted(_DISPLAY)
# 8-bit pixels differ by at most rounding when the same picture is stored as 16 bits; tensors by that over the std.
PIXEL_TOLERANCE = 1


def save_variant(upright: Image.Image, path: Path, variant: str) -> Path:
    """Save `upright` (8-bit L or RGB) as `variant`: 'plain', 'exif<o>' (stored turned back, EXIF orientation o),
    or '16bit' (grayscale on the 16-bit scale). PNG keeps every variant lossless."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if variant == "plain":
        upright.save(path)
    elif variant == "16bit":
        wide = np.asarray(upright.convert("L"), dtype=np.uint16) * 257
        Image.fromarray(wide).save(path)
    else:
        orientation = int(variant.removeprefix("exif"))
        method = _DISPLAY[orientation]
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        upright.transpose(_UNDO.get(method, method)).save(path, exif=exif)
    return path


def scene(seed: int = 0, size: tuple[int, int] = (40, 24), gray: bool = False) -> Image.Image:
    """A random picture, not square, so that a wrong orientation changes its shape."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    return image.convert("L").convert("RGB") if gray else image


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_exif_orientation_gives_the_displayed_frame_as_transformers_load_image(tmp_path, orientation):
    upright = scene()
    path = save_variant(upright, tmp_path / "a.png", f"exif{orientation}")
    assert Image.open(path).size != upright.size or orientation in (2, 3, 4)
    read = read_image(path)
    assert read.size == upright.size and read.mode == "RGB"
    np.testing.assert_array_equal(pixels(read), pixels(upright))
    np.testing.assert_array_equal(pixels(read), pixels(load_image(str(path))))
    assert image_frames(path) == (Image.open(path).size, upright.size)
    # A file object and an undecoded datasets entry read the same; an image decoded elsewhere is turned once only.
    np.testing.assert_array_equal(pixels(read_image(io.BytesIO(path.read_bytes()))), pixels(upright))
    np.testing.assert_array_equal(pixels(read_image({"path": None, "bytes": path.read_bytes()})), pixels(upright))
    np.testing.assert_array_equal(pixels(read_image(read_image(path))), pixels(upright))


def test_modes_are_read_with_their_values_as_the_processor_reads_arrays(tmp_path):
    gray = np.random.default_rng(1).integers(0, 256, size=(6, 5), dtype=np.uint8)
    expected = np.repeat(gray[..., None], 3, axis=2)
    files = {"I;16": Image.fromarray(gray.astype(np.uint16) * 257), "L": Image.fromarray(gray),
             "I": Image.fromarray(gray.astype(np.int32) * 257), "P": Image.fromarray(gray).convert("P"),
             "LA": Image.fromarray(np.stack([gray, np.full_like(gray, 255)], axis=2), "LA")}  # fmt: skip
    for mode, image in files.items():
        path = tmp_path / f"{mode.replace(';', '_')}.{'tif' if mode == 'I' else 'png'}"
        image.save(path)
        read = read_image(path)
        assert read.mode == "RGB", mode
        np.testing.assert_allclose(pixels(read), expected, atol=PIXEL_TOLERANCE, err_msg=mode)
        processed = ConvNextHFImageProcessor()(str(path), return_tensors="pt")["pixel_values"]
        from_array = ConvNextHFImageProcessor()(expected.astype(np.uint8), return_tensors="pt")["pixel_values"]
        torch.testing.assert_close(processed, from_array, atol=0.02, rtol=0)
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (4, 3), (0, 255, 255, 0)).save(cmyk, quality=100)
    assert np.abs(pixels(read_image(cmyk)) - [255, 0, 0]).max() <= 3
    transparent = tmp_path / "rgba.png"
    Image.new("RGBA", (4, 3), (10, 20, 30, 0)).save(transparent)
    assert (pixels(read_image(transparent)) == 255).all()  # composited onto white, as the processor does


def test_masks_keep_their_ids_in_the_displayed_frame(tmp_path):
    ids = np.random.default_rng(2).integers(0, 5, size=(4, 7), dtype=np.uint8)
    palette_mask = Image.fromarray(ids, "P")
    palette_mask.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    save_variant(palette_mask, tmp_path / "p.png", "plain")
    mask = read_mask(tmp_path / "p.png")
    assert mask.mode == "P"
    np.testing.assert_array_equal(np.asarray(mask), ids)
    wide = Image.fromarray(ids.astype(np.uint16) * 1000)
    wide.save(tmp_path / "wide.png")
    wide_ids = np.asarray(read_mask(tmp_path / "wide.png"), dtype=np.int64)
    np.testing.assert_array_equal(wide_ids, ids.astype(np.int64) * 1000)
    save_variant(Image.fromarray(ids), tmp_path / "turned.png", "exif6")
    np.testing.assert_array_equal(np.asarray(read_mask(tmp_path / "turned.png")), ids)


def test_unreadable_files_are_refused_in_one_line_naming_them(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    for source in (broken, tmp_path / "missing.png"):
        with pytest.raises(UserInputError, match=source.name) as caught:
            read_image(source)
        assert "\n" not in str(caught.value)


VARIANTS = ["plain", "exif3", "exif6", "exif8", "exif5"]


@pytest.mark.parametrize("variant", [*VARIANTS[1:], "16bit"])
def test_classification_and_multi_label_loaders_read_copies_as_the_plain_image(tmp_path, variant):
    gray = variant == "16bit"

    def batch(kind: str, task: str) -> torch.Tensor:
        for name, seed in (("cat", 0), ("dog", 1)):
            save_variant(scene(seed, gray=gray), tmp_path / kind / name / "a.png", "plain" if kind == "plain" else
                         variant)  # fmt: skip
        args = DataArguments(train_dir=str(tmp_path / kind), train_val_split=0.0)
        data = load_image_data(args, seed=0, cache_dir=str(tmp_path / "cache"), task=task)
        data = with_transforms(data.with_splits(data.train, data.train), lambda image: torch.tensor(pixels(image)),
                               ConvNextHFImageProcessor(size={"shortest_edge": 16}))  # fmt: skip
        train = torch.stack([data.train[row]["pixel_values"] for row in range(2)])
        validation = torch.stack([data.validation[row]["pixel_values"] for row in range(2)])
        return train, validation

    for task in ("image-classification", "multi-label-classification"):
        (plain_train, plain_eval), (train, validation) = batch("plain", task), batch(variant + task, task)
        assert train.shape == plain_train.shape == (2, 24, 40, 3)
        torch.testing.assert_close(train, plain_train, atol=PIXEL_TOLERANCE, rtol=0)
        torch.testing.assert_close(validation, plain_eval, atol=0.02, rtol=0)


@pytest.mark.parametrize("variant", [*VARIANTS[1:], "16bit"])
def test_segmentation_loader_reads_copies_as_the_plain_image_and_masks_in_their_frame(tmp_path, variant):
    rng = np.random.default_rng(3)
    mask = Image.fromarray(rng.integers(0, 3, size=(24, 40), dtype=np.uint8))

    def batch(kind: str) -> dict:
        for index in range(2):
            save_variant(scene(index, gray=variant == "16bit"), tmp_path / kind / "images" / f"{index}.png",
                         "plain" if kind == "plain" else variant)  # fmt: skip
            # Masks drawn in the displayed frame, as annotation tools show the photograph.
            save_variant(mask, tmp_path / kind / "masks" / f"{index}.png", "plain")
        args = DataArguments(train_dir=str(tmp_path / kind / "images"), train_mask_dir=str(tmp_path / kind / "masks"),
                             train_val_split=0.0)  # fmt: skip
        data = load_segmentation_data(args, ["a", "b", "c"], seed=0, cache_dir=str(tmp_path / "cache"))
        data = with_segmentation_transforms(data.with_splits(data.train, data.train), None,
                                            segmentation_processor(32, reduce_labels=False))  # fmt: skip
        return {key: torch.stack([data.validation[row][key] for row in range(2)]) for key in ("pixel_values", "labels")}

    plain, copy = batch("plain"), batch(variant)
    torch.testing.assert_close(copy["pixel_values"], plain["pixel_values"], atol=0.02, rtol=0)
    torch.testing.assert_close(copy["labels"], plain["labels"], atol=0, rtol=0)


def _coco_scene(root: Path, variant: str, declared: str = "displayed", gray: bool = False) -> tuple[str, str]:
    """One 40×24 (displayed) scene saved as `variant`, with two boxes in the displayed frame; the file's width and
    height are the displayed ones, or the stored ones ('stored')."""
    path = save_variant(scene(5, gray=gray), root / "images" / "a.png", variant)
    (stored, displayed) = image_frames(path)
    width, height = displayed if declared == "displayed" else stored
    boxes = [[30, 2, 9, 20], [1, 14, 20, 8]]
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": width, "height": height}],
            "annotations": [{"id": index + 1, "image_id": 1, "category_id": index + 1, "bbox": box,
                             "area": box[2] * box[3], "iscrowd": 0} for index, box in enumerate(boxes)],
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}  # fmt: skip
    (root / "annotations.json").write_text(json.dumps(coco))
    return str(root / "images"), str(root / "annotations.json")


@pytest.mark.parametrize("variant", ["exif6", "exif8", "exif3", "16bit"])
def test_detection_reads_exif_and_16_bit_scenes_with_boxes_in_the_displayed_frame(tmp_path, variant):
    torch.manual_seed(0)
    backbone = ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1])
    model = new_detector("rt_detr", backbone, ["a", "b"], {"num_queries": 10, "num_denoising": 5}).eval()
    processor = build_detection_processor(ModelArguments(image_size=32), model)
    results = {}
    for kind in ("plain", variant):
        dataset, names = load_coco(*_coco_scene(tmp_path / kind, kind, gray=variant == "16bit"), "validation")
        # The first box lies outside the stored frame of a 90-degree copy: it is checked in the displayed frame.
        assert (dataset[0]["width"], dataset[0]["height"]) == (40, 24)
        data = with_detection_transforms(ImageData(dataset, dataset, names, "x"), None, processor)
        batch = collate_detection([data.validation[0]])
        metrics, detections, _ = score_dataset(model, processor, dataset, coco_ground_truth(dataset, names))
        results[kind] = batch, detections
    (plain, plain_detections), (copy, copy_detections) = results["plain"], results[variant]
    torch.testing.assert_close(copy["pixel_values"], plain["pixel_values"], atol=0.02, rtol=0)
    torch.testing.assert_close(copy["labels"][0]["boxes"], plain["labels"][0]["boxes"])
    assert len(copy_detections) == len(plain_detections) > 0
    for mine, theirs in zip(copy_detections, plain_detections, strict=True):
        assert mine["category_id"] == theirs["category_id"]
        np.testing.assert_allclose(mine["bbox"], theirs["bbox"], atol=0.5)
        assert abs(mine["score"] - theirs["score"]) < 0.01


def test_coco_sizes_are_checked_against_both_frames(tmp_path):
    # A tool that wrote the stored size of a rotated photograph: accepted, boxes read in the displayed frame.
    dataset, _ = load_coco(*_coco_scene(tmp_path / "stored", "exif6", declared="stored"), "train")
    assert (dataset[0]["width"], dataset[0]["height"]) == (40, 24)
    images_dir, annotations = _coco_scene(tmp_path / "neither", "exif6")
    coco = json.loads(Path(annotations).read_text())
    coco["images"][0]["width"] = 41
    Path(annotations).write_text(json.dumps(coco))
    with pytest.raises(UserInputError, match=r"a\.png: is 40×24 as displayed \(24×40 as stored.*says 41×24"):
        load_coco(images_dir, annotations, "train")
