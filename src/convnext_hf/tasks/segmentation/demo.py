"""The shapes demo (`convnext-hf demo --task semantic-segmentation`): an UperNet on a small ConvNeXt, offline.

Synthetic scenes of coloured shapes with their masks, an UperNet on a small ConvNeXt trained through `convnext-hf train
--task semantic-segmentation`, scored on held-out scenes through `pipeline("image-segmentation")`.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
from tqdm.auto import tqdm

from ...cli import print_box
from ...demo import DemoSettings, prepare_output_dir, time_line, train_and_score
from ...images import read_image, read_mask
from ...train.shapes import SEGMENTATION_LABELS, write_segmentation_folders

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
    ] + (["--overwrite"] if settings.overwrite else [])  # fmt: skip


def segment_held_out(model_dir: str, images_dir: str, masks_dir: str) -> dict[str, float]:
    """Reload the saved folder with `pipeline("image-segmentation")` and score its masks on every held-out scene."""
    from transformers import pipeline

    from ...metrics.mean_iou import confusion_counts, iou_scores

    segmenter = pipeline("image-segmentation", model=model_dir, device="cpu")
    label2id = segmenter.model.config.label2id
    counts = np.zeros((len(label2id), len(label2id)), dtype=np.int64)
    for name in tqdm(sorted(os.listdir(images_dir)), desc="Segmenting held-out scenes", unit="image"):
        truth = np.asarray(read_mask(os.path.join(masks_dir, name)))
        predicted = np.zeros_like(truth)
        for segment in segmenter(read_image(os.path.join(images_dir, name))):
            predicted[np.asarray(segment["mask"]) > 0] = label2id[segment["label"]]
        counts += confusion_counts(predicted, truth, len(label2id))
    return iou_scores(counts)


def run_demo(settings: DemoSettings) -> dict[str, float]:
    """Write the scenes, train the UperNet, reload it through the pipeline and score it; print a summary."""
    prepare_output_dir(settings, SEGMENTATION_ROOT)
    started = time.perf_counter()
    scenes = os.path.join(settings.output_dir, "scenes")
    train = write_segmentation_folders(os.path.join(scenes, "train"), settings.train_images, settings.seed, SCENE_SIDE)
    held_out = write_segmentation_folders(
        os.path.join(scenes, "held_out"), SCENES_HELD_OUT, settings.seed + 1, SCENE_SIDE
    )
    model_dir = os.path.join(settings.output_dir, "model")
    argv = segmentation_arguments(settings, train, held_out, model_dir)
    train_metrics, results, seconds = train_and_score(argv, lambda: segment_held_out(model_dir, *held_out), started)
    summary = {
        "held_out_mean_iou": results["mean_iou"],
        "held_out_pixel_accuracy": results["pixel_accuracy"],
        "trainer_eval_mean_iou": train_metrics.get("eval_mean_iou", float("nan")),
        **seconds,
    }
    per_class = ", ".join(
        f"{name} {iou:.0%}" for name, iou in zip(SEGMENTATION_LABELS, results["per_class_iou"], strict=True)
    )
    print_box([
        "ConvNeXt shapes segmentation demo — results",
        f"held-out scenes        : {SCENES_HELD_OUT} ({SCENE_SIDE}×{SCENE_SIDE}, never trained on)",
        f"mean IoU               : {summary['held_out_mean_iou']:.2%}  (pipeline on the saved folder)",
        f"per class IoU          : {per_class}",
        f"pixel accuracy         : {summary['held_out_pixel_accuracy']:.2%}",
        f"same mIoU, by Trainer  : {summary['trainer_eval_mean_iou']:.2%}",
        time_line(summary),
        f"model folder           : {model_dir}",
        "  (config, weights, processor, README.md model card, metrics.json, prediction_overlay.png, plots)",
    ])  # fmt: skip
    return summary
