"""`convnext-hf evaluate`: its top-1 is the pipeline's, image by image; outputs, label matching, refusals."""

import csv
import json

import numpy as np
import pytest
from PIL import Image
from transformers import pipeline

from convnext_hf.cli import main as cli_main
from convnext_hf.train import parse_args, run

CLASSES = ("blue", "green", "red")


def _colour_image(rng, channel, size):
    pixels = rng.integers(0, 120, size=(*size, 3))
    pixels[..., channel] += rng.integers(40, 136)
    return Image.fromarray(pixels.astype(np.uint8))


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A tiny classifier trained a little on colours, so that its predictions vary from image to image."""
    root = tmp_path_factory.mktemp("evaluate")
    rng = np.random.default_rng(0)
    for channel, name in enumerate(CLASSES):
        (root / "train" / name).mkdir(parents=True)
        for index in range(6):
            _colour_image(rng, 2 - channel, (20, 20)).save(root / "train" / name / f"{index}.png")
    argv = [
        "--train_dir", str(root / "train"), "--variant", "atto", "--image_size", "32", "--max_steps", "6",
        "--config_overrides", json.dumps({"hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1]}),
        "--per_device_train_batch_size", "6", "--learning_rate", "3e-3", "--train_val_split", "0",
        "--output_dir", str(root / "model"), "--cache_dir", str(root / "cache"), "--report_to", "none",
        "--plots", "false",
    ]  # fmt: skip
    run(parse_args(argv))
    return root


def _awkward_images(directory, rng):
    """Images the model never saw, in the forms that trip up preprocessing: odd sizes, grey, RGBA, palette, and a
    JPEG whose EXIF orientation rotates it."""
    for channel, name in enumerate(CLASSES):
        folder = directory / name
        folder.mkdir(parents=True)
        for index, size in enumerate([(17, 41), (64, 23), (33, 33)]):
            _colour_image(rng, 2 - channel, size).save(folder / f"plain{index}.png")
        _colour_image(rng, 2 - channel, (30, 18)).convert("RGBA").save(folder / "alpha.png")
        _colour_image(rng, 2 - channel, (25, 25)).convert("P").save(folder / "palette.png")
        _colour_image(rng, 2 - channel, (28, 28)).convert("L").save(folder / "grey.png")
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation: rotate 90° clockwise on display
        _colour_image(rng, 2 - channel, (40, 16)).save(folder / "rotated.jpg", exif=exif)


def test_top1_equals_the_pipeline_image_by_image(classifier, tmp_path, capsys):
    _awkward_images(tmp_path / "val", np.random.default_rng(1))
    argv = ["evaluate", "--model", str(classifier / "model"), "--validation_dir", str(tmp_path / "val"),
            "--output_dir", str(tmp_path / "scores"), "--batch_size", "5",
            "--cache_dir", str(classifier / "cache")]  # fmt: skip
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "top1_accuracy" in printed and "images/s" in printed
    report = json.loads((tmp_path / "scores" / "metrics.json").read_text())
    with open(tmp_path / "scores" / "predictions.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert report["num_images"] == len(rows) == 21
    assert report["label_matching"] == "by name"

    classify = pipeline("image-classification", model=str(classifier / "model"), trust_remote_code=True)
    agree = [classify(row["image"], top_k=1)[0]["label"] == row["predicted"] for row in rows]
    assert all(agree), [row["image"] for row, same in zip(rows, agree, strict=True) if not same]
    top1 = np.mean([row["predicted"] == row["label"] for row in rows])
    assert report["top1_accuracy"] == pytest.approx(top1)
    assert len({row["predicted"] for row in rows}) >= 2, "a model that predicts several classes"
    scores = {key for key in report if key.startswith("top")}
    assert scores == {"top1_accuracy"}, "three classes: top-5 would be 1.0 whatever the model does, so it is left out"
    per_class = report["per_class_accuracy"]
    assert set(per_class) == set(CLASSES)
    assert np.mean(list(per_class.values())) == pytest.approx(top1), "seven images per class"
    assert report["throughput_images_per_second"] > 0 and report["model_images_per_second"] > 0
    assert np.array(report["confusion_matrix"]["counts"]).sum() == 21
    assert (tmp_path / "scores" / "confusion_matrix.png").is_file()


def test_imagenet_style_folders_match_by_position_and_mismatches_are_refused(classifier, tmp_path, capsys):
    rng = np.random.default_rng(2)
    # Synset-like folder names, sorted as the model's classes: folder i is class i.
    for channel, synset in enumerate(("n01", "n02", "n03")):
        (tmp_path / "val" / synset).mkdir(parents=True)
        _colour_image(rng, 2 - channel, (24, 24)).save(tmp_path / "val" / synset / "0.png")
    base = ["evaluate", "--model", str(classifier / "model"), "--cache_dir", str(classifier / "cache")]
    assert cli_main([*base, "--validation_dir", str(tmp_path / "val"), "--output_dir", str(tmp_path / "a")]) == 0
    report = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert report["label_matching"].startswith("by sorted position")
    assert set(report["per_class_accuracy"]) == set(CLASSES)

    capsys.readouterr()
    assert cli_main([*base, "--validation_dir", str(tmp_path / "val"), "--output_dir", str(tmp_path / "a")]) == 2
    assert "already exists and is not empty; pass --overwrite" in capsys.readouterr().err
    (tmp_path / "val" / "n04").mkdir()
    _colour_image(rng, 0, (24, 24)).save(tmp_path / "val" / "n04" / "0.png")
    assert cli_main([*base, "--validation_dir", str(tmp_path / "val"), "--output_dir", str(tmp_path / "b")]) == 2
    assert "cannot be matched by position" in capsys.readouterr().err
    assert cli_main([*base, "--output_dir", str(tmp_path / "c")]) == 2
    assert "exactly one of --validation_dir" in capsys.readouterr().err
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
