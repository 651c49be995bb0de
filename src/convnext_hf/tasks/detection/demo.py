"""The detection demo (`convnext-hf demo --task object-detection`): an RT-DETR on a small ConvNeXt, offline.

Synthetic scenes of randomly coloured shapes on noisy grey backgrounds (the segmentation demo's), with their boxes
in COCO files; an RT-DETR on a small ConvNeXt trained through `convnext-hf train --task object-detection`; scored on
held-out scenes through `pipeline("object-detection")` with the COCO metrics, under COCO's protocol (every
detection, up to 100 per image).
"""

from __future__ import annotations

import json
import math
import os
import time

from tqdm.auto import tqdm

from ...cli import print_box
from ...demo import DemoSettings, prepare_output_dir, time_line, train_and_score
from ...images import read_image
from ...train.shapes import SHAPES, write_detection_folder

DETECTION_ROOT = "convnext-detection-demo"
SCENE_SIDE = 64
SCENES_HELD_OUT = 100
# A ConvNeXt for 64×64 inputs whose last three stages feed an RT-DETR (3 decoder layers, 30 queries and 30 denoising
# ones for scenes of a few objects), trained from scratch within minutes, so (measured in docs/training.md, on
# scenes the demo never draws): a 2-pixel stem (stages of 16, 8 and 4 pixels rather than 8, 4 and 2: small objects
# keep a feature-map cell of their own), layer scale starting at 1 (at the paper's 1e-6 the blocks stay silent for
# hundreds of steps), and a detector of width 64 rather than the backbone's 128, whose steps take 0.6 the time: more
# steps in the same minutes, which is what these runs lack.
DETECTION_CONFIG = {
    "hidden_sizes": [32, 64, 128, 256],
    "depths": [1, 1, 3, 1],
    "patch_size": 2,
    "layer_scale_init_value": 1.0,
    "d_model": 64,
    "num_queries": 30,
    "num_denoising": 30,
}


def detection_arguments(
    settings: DemoSettings, train: tuple[str, str], held_out: tuple[str, str], model_dir: str
) -> list[str]:
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
        "--image_size", str(SCENE_SIDE),
        # No augmentation: measured better within the budget on these scenes (docs/training.md).
        "--scale_range", "1", "1",
        "--photometric", "0",
        "--hflip", "0.5",
        "--learning_rate", str(settings.learning_rate),
        "--weight_decay", "1e-4",
        "--lr_scheduler_type", "cosine",
        "--warmup_steps", "0.05",
        "--per_device_train_batch_size", str(settings.batch_size),
        "--per_device_eval_batch_size", "50",
        # A number of steps rather than epochs: the same training on other data of any size when the data flags are
        # swapped (the demo's --epochs count passes over its own scenes).
        "--max_steps", str(math.ceil(settings.train_images * settings.epochs / settings.batch_size)),
        "--logging_steps", "0.05",
        "--seed", str(settings.seed),
        "--report_to", "none",
        "--output_dir", model_dir,
    ] + (["--overwrite_output_dir"] if settings.overwrite else [])  # fmt: skip


def held_out_detections(model_dir: str, images_dir: str, annotations: str) -> tuple[dict, list[dict]]:
    """The held-out scenes' COCO ground truth, and the detections `pipeline("object-detection")` makes on them from
    the saved folder (COCO's protocol: every score, up to 100 per image)."""
    from transformers import pipeline

    from .data import coco_ground_truth, load_coco
    from .scoring import pipeline_detections

    detector = pipeline("object-detection", model=model_dir, device="cpu")
    scenes, names = load_coco(images_dir, annotations, "held-out")
    images = [read_image(image) for image in tqdm(scenes["image"], desc="Detecting in held-out scenes",
                                                      unit="image")]  # fmt: skip
    detections = pipeline_detections(detector, images, scenes["image_id"], {name: i for i, name in enumerate(names)})
    return coco_ground_truth(scenes, names), detections


def detect_held_out(model_dir: str, images_dir: str, annotations: str) -> dict:
    """Reload the saved folder with `pipeline("object-detection")` and score its boxes on every held-out scene under
    COCO's protocol."""
    from .metrics import coco_metrics

    return coco_metrics(*held_out_detections(model_dir, images_dir, annotations))


def run_demo(settings: DemoSettings) -> dict[str, float]:
    """Write the scenes, train the detector, reload it through the pipeline and score it; print a summary."""
    prepare_output_dir(settings, DETECTION_ROOT)
    started = time.perf_counter()
    scenes = os.path.join(settings.output_dir, "scenes")
    train = write_detection_folder(os.path.join(scenes, "train"), settings.train_images, settings.seed, SCENE_SIDE)
    held_out = write_detection_folder(os.path.join(scenes, "held_out"), SCENES_HELD_OUT, settings.seed + 1, SCENE_SIDE)
    model_dir = os.path.join(settings.output_dir, "model")
    argv = detection_arguments(settings, train, held_out, model_dir)
    # On every core, unlike the other demos: a detector's step is mostly small operations that two threads still
    # share out (0.21 s against 0.30 s on one thread, docs/training.md), and 1200 steps fit 5 minutes only so.
    train_metrics, results, seconds = train_and_score(
        argv, lambda: detect_held_out(model_dir, *held_out), started, one_thread=False
    )
    summary = {
        "held_out_map": results["map"],
        "held_out_map_50": results["map_50"],
        "held_out_map_75": results["map_75"],
        "trainer_eval_map": train_metrics.get("eval_map", float("nan")),
        **seconds,
    }
    per_class = ", ".join(f"{name} {results['per_class_ap'][name]:.3f}" for name in SHAPES)
    print_box([
        "ConvNeXt shapes detection demo — results",
        f"held-out scenes        : {SCENES_HELD_OUT} ({SCENE_SIDE}×{SCENE_SIDE}, never trained on)",
        f"COCO mAP               : {summary['held_out_map']:.3f}  (pipeline on the saved folder, COCO's protocol)",
        f"AP50 / AP75            : {summary['held_out_map_50']:.3f} / {summary['held_out_map_75']:.3f}",
        f"per class AP           : {per_class}",
        f"same mAP, by training  : {summary['trainer_eval_map']:.3f}",
        time_line(summary),
        f"model folder           : {model_dir}",
        "  (config, weights, processor, README.md model card, metrics.json, predictions.png, plots)",
    ])  # fmt: skip
    return summary
