"""`convnext-hf evaluate` on a converted UperNet: its scores are those of the pipeline's masks, reduce_labels is
honoured as the processor does, bad masks and foreign flags are refused."""

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from transformers import pipeline

from convnext_hf.cli import main as cli_main
from convnext_hf.metrics.mean_iou import confusion_counts, iou_scores
from convnext_hf.tasks.segmentation.plots import OVERLAY_NAME
from helpers import FIXTURES, run_convert

NUM_LABELS = 6  # the golden UperNet's classes
SIZES = [(37, 53), (61, 29), (45, 45), (80, 33), (19, 70)]  # (width, height): odd, never the processor's 224


@pytest.fixture(scope="module")
def upernet(tmp_path_factory):
    """The golden UperNet converted, and a copy whose processor reduces labels as the ADE20K folders' do."""
    root = tmp_path_factory.mktemp("upernet")
    assert run_convert("--checkpoint", FIXTURES / "upernet-mini.fb-ade20k.pth", "--output_dir", root / "plain") == 0
    shutil.copytree(root / "plain", root / "reduced")
    processor = json.loads((root / "reduced" / "preprocessor_config.json").read_text())
    assert processor["do_reduce_labels"] is False
    processor["do_reduce_labels"] = True
    (root / "reduced" / "preprocessor_config.json").write_text(json.dumps(processor))
    return root


def _pairs(root, highest_id, seed=0):
    """Random images of odd sizes (one an RGBA PNG, one grey) and masks of ids 0..highest_id with an ignored band."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    for index, (width, height) in enumerate(SIZES):
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        image = image.convert("RGBA") if index == 3 else image.convert("L") if index == 4 else image
        image.save(root / "images" / f"{index}.{'jpg' if index < 3 else 'png'}")
        mask = rng.integers(0, highest_id + 1, (height, width)).astype(np.uint8)
        mask[:2] = 255
        Image.fromarray(mask).save(root / "masks" / f"{index}.png")
    return root / "images", root / "masks"


def _evaluate(model, images, masks, output, *extra):
    return cli_main(["evaluate", "--model", str(model), "--validation_dir", str(images), "--validation_mask_dir",
                     str(masks), "--output_dir", str(output), "--batch_size", "2", *extra])  # fmt: skip


def _pipeline_counts(model, images, masks, reduce):
    """The pixel confusion of `pipeline("image-segmentation")`'s masks against the masks, ids mapped by hand."""
    segmenter = pipeline("image-segmentation", model=str(model))
    label2id = {name: index for index, name in segmenter.model.config.id2label.items()}
    counts = np.zeros((NUM_LABELS, NUM_LABELS), dtype=np.int64)
    for image_path in sorted(images.iterdir()):
        truth = np.asarray(Image.open(masks / f"{image_path.stem}.png")).astype(np.int64)
        if reduce:
            truth = np.where((truth == 0) | (truth == 255), 255, truth - 1)
        predicted = np.full(truth.shape, -1)
        for segment in segmenter(str(image_path)):
            predicted[np.asarray(segment["mask"]) > 0] = label2id[segment["label"]]
        assert (predicted >= 0).all(), "every pixel in one segment"
        counts += confusion_counts(predicted, truth, NUM_LABELS)
    return counts


@pytest.mark.parametrize("reduce", [False, True], ids=["ids-as-they-are", "reduce-labels"])
def test_scores_equal_those_of_the_pipeline_masks(upernet, tmp_path, capsys, reduce):
    model = upernet / ("reduced" if reduce else "plain")
    # With reduce_labels, ids 1..6 are the six classes and 0 is ignored; without, 0..5 are.
    images, masks = _pairs(tmp_path / "data", NUM_LABELS if reduce else NUM_LABELS - 1)
    assert _evaluate(model, images, masks, tmp_path / "scores") == 0
    printed = capsys.readouterr().out
    assert "mean_iou" in printed and "pixel_accuracy" in printed
    report = json.loads((tmp_path / "scores" / "metrics.json").read_text())
    expected = _pipeline_counts(model, images, masks, reduce)
    scores = iou_scores(expected)
    assert report["num_images"] == len(SIZES)
    assert report["mean_iou"] == pytest.approx(scores["mean_iou"], abs=1e-6)
    assert report["pixel_accuracy"] == pytest.approx(scores["pixel_accuracy"], abs=1e-6)
    assert list(report["per_class_iou"]) == [f"LABEL_{index}" for index in range(NUM_LABELS)]
    np.testing.assert_allclose(list(report["per_class_iou"].values()), scores["per_class_iou"], atol=1e-6)
    present = report["confusion_matrix"]["classes"]
    rows = [int(name.removeprefix("LABEL_")) for name in present]
    assert np.array_equal(report["confusion_matrix"]["counts"], expected[np.ix_(rows, rows)]), "pixel for pixel"
    ignored = sum(width * 2 for width, _ in SIZES)
    labelled = sum(width * height for width, height in SIZES) - ignored
    if reduce:
        labelled -= sum((np.asarray(Image.open(path)) == 0).sum() for path in masks.iterdir())
    assert expected.sum() == labelled, "255 (and with reduce_labels, 0) left out"
    assert len(np.unique(np.nonzero(expected)[1])) >= 2, "a model that predicts several classes"
    assert ("do_reduce_labels" in report["mask_ids"]) == reduce
    with open(tmp_path / "scores" / "predictions.csv", newline="") as file:
        assert [row["image"] for row in csv.DictReader(file)] == [str(path) for path in sorted(images.iterdir())]
    overlay = Image.open(tmp_path / "scores" / OVERLAY_NAME)
    assert overlay.width == 3 * 80 * 2 and overlay.height == (53 + 29 + 45 + 33) * 2, "4 rows, 3 panels, ×2"
    assert (tmp_path / "scores" / "confusion_matrix.png").is_file()


def test_a_csv_of_pairs_scores_as_the_folders(upernet, tmp_path):
    images, masks = _pairs(tmp_path / "data", NUM_LABELS - 1)
    with open(tmp_path / "data" / "pairs.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["image", "mask"])
        writer.writerows([(f"images/{p.name}", f"masks/{p.stem}.png") for p in sorted(images.iterdir())])
    assert _evaluate(upernet / "plain", images, masks, tmp_path / "folders") == 0
    argv = ["evaluate", "--model", str(upernet / "plain"), "--validation_file", str(tmp_path / "data" / "pairs.csv"),
            "--output_dir", str(tmp_path / "file")]  # fmt: skip
    assert cli_main(argv) == 0
    by_folders, by_file = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("folders", "file"))
    assert by_file["mean_iou"] == by_folders["mean_iou"] and by_file["per_class_iou"] == by_folders["per_class_iou"]


def test_bad_masks_are_refused_by_path_before_anything_is_written(upernet, tmp_path, capsys):
    images, masks = _pairs(tmp_path / "data", NUM_LABELS - 1)
    mask = np.asarray(Image.open(masks / "2.png")).copy()
    mask[10, :5] = 9
    mask[11, :2] = 6
    Image.fromarray(mask).save(masks / "2.png")
    assert _evaluate(upernet / "plain", images, masks, tmp_path / "a") == 2
    error = capsys.readouterr().err
    listed = f"{masks / '2.png'}: id 6 (2 pixels), id 9 (5 pixels)"
    assert f"1 mask(s) hold ids beyond the model's 6 classes: {listed}" in error
    assert "ids 0..5 are the classes, 255 is ignored" in error
    # With reduce_labels, 6 is class 5 and only 9 is beyond the classes.
    assert _evaluate(upernet / "reduced", images, masks, tmp_path / "a") == 2
    error = capsys.readouterr().err
    assert f"{masks / '2.png'}: id 9 (5 pixels) " in error and "mask id 0 is ignored, ids 1..6 are classes" in error

    Image.fromarray(mask[:, :-1].clip(0, 5)).save(masks / "2.png")
    assert _evaluate(upernet / "plain", images, masks, tmp_path / "a") == 2
    error = capsys.readouterr().err
    assert f"Mask {masks / '2.png'} is 44×45 pixels but its image {images / '2.jpg'} is 45×45" in error
    Image.fromarray(np.zeros((45, 45, 3), np.uint8)).save(masks / "2.png")
    assert _evaluate(upernet / "plain", images, masks, tmp_path / "a") == 2
    assert "is a RGB image; masks must be single-channel" in capsys.readouterr().err
    (masks / "2.png").unlink()
    assert _evaluate(upernet / "plain", images, masks, tmp_path / "a") == 2
    assert "1 validation image(s) have no mask" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_mask_flags_are_refused_for_a_classifier_and_hub_data_for_a_segmenter(upernet, tmp_path, capsys):
    from convnext_hf import ConvNextConfig, ConvNextForImageClassification, ConvNextHFImageProcessor

    config = ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_labels=2)
    ConvNextForImageClassification(config).save_pretrained(tmp_path / "classifier")
    ConvNextHFImageProcessor(size={"shortest_edge": 32}).save_pretrained(tmp_path / "classifier")
    images, masks = _pairs(tmp_path / "data", 1)
    assert _evaluate(tmp_path / "classifier", images, masks, tmp_path / "a") == 2
    assert "--validation_mask_dir: flags of semantic-segmentation data, but " in capsys.readouterr().err
    argv = ["evaluate", "--model", str(upernet / "plain"), "--dataset_name", "scene_parse_150",
            "--output_dir", str(tmp_path / "a")]  # fmt: skip
    assert cli_main(argv) == 2
    assert "Hub datasets are not supported for segmentation" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
