"""`convnext-hf train` end to end on tiny models and images: outputs, Trainer integration, resume, faults, CLI, demo."""

import fnmatch
import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file
from transformers import TrainerCallback, TrainingArguments, pipeline
from transformers.integrations import is_tensorboard_available

from convnext_hf import ConvNextConfig, ConvNextForImageClassification
from convnext_hf.cli import main as cli_main
from convnext_hf.train import parse_args, run
from convnext_hf.train.ema import EMA_WEIGHTS_NAME
from convnext_hf.train.mixup import Mixup, smooth_one_hot, soft_target_cross_entropy
from convnext_hf.train.trainer import ConvNextTrainer
from helpers import ban_network

ROOT = Path(__file__).parents[1]
CLASSES = ("blue", "green", "red")
TINY_CONFIG = json.dumps({"hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1]})


def write_color_images(directory, per_class, seed, classes=CLASSES):
    """Noisy 20×24 images whose class is the dominant colour channel."""
    rng = np.random.default_rng(seed)
    for channel, name in enumerate(classes):
        os.makedirs(directory / name, exist_ok=True)
        for index in range(per_class):
            pixels = rng.integers(0, 90, size=(24, 20, 3))
            pixels[..., channel % 3] += 150
            Image.fromarray(pixels.astype(np.uint8)).save(directory / name / f"{index}.png")
    return directory


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    return write_color_images(root / "train", 8, seed=0), write_color_images(root / "val", 3, seed=1)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def tiny_args(train_dir, output_dir, cache_dir, *extra, validation_dir=None, report_to="none"):
    """A command line for a tiny model on tiny images; `extra` flags come last and win."""
    argv = [
        "--train_dir", str(train_dir),
        "--variant", "atto",
        "--config_overrides", TINY_CONFIG,
        "--image_size", "32",
        "--per_device_train_batch_size", "4",
        "--per_device_eval_batch_size", "16",
        "--learning_rate", "2e-3",
        "--output_dir", str(output_dir),
        "--cache_dir", cache_dir,
        "--plots", "false",
        "--seed", "0",
    ]  # fmt: skip
    if report_to is not None:
        argv += ["--report_to", report_to]
    if validation_dir is not None:
        argv += ["--validation_dir", str(validation_dir)]
    return argv + list(extra)


@pytest.fixture(scope="module")
def full_recipe_run(folders, cache_dir, tmp_path_factory):
    """A run with every recipe option on: returns (output folder, returned metrics)."""
    train_dir, val_dir = folders
    output_dir = tmp_path_factory.mktemp("runs") / "full"
    argv = tiny_args(
        train_dir, output_dir, cache_dir,
        "--num_train_epochs", "2",
        "--rand_augment", "rand-m9-mstd0.5-inc1",
        "--mixup_alpha", "0.8",
        "--cutmix_alpha", "1.0",
        "--label_smoothing_factor", "0.1",
        "--random_erasing", "0.25",
        "--drop_path_rate", "0.1",
        "--layer_decay", "0.8",
        "--layer_decay_type", "single",
        "--model_ema",
        "--model_ema_decay", "0.5",
        "--lr_scheduler_type", "cosine",
        "--warmup_steps", "0.2",
        "--plots", "true",
        validation_dir=val_dir,
        report_to=None,
    )  # fmt: skip
    return output_dir, run(parse_args(argv))


# --- the output folder ------------------------------------------------------------------------------------------


def test_output_folder_is_hub_ready(full_recipe_run):
    output_dir, metrics = full_recipe_run
    for name in (
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "configuration_convnext.py",
        "modeling_convnext.py",
        "inference_convnext.py",
        "image_processing_convnext.py",
        "README.md",
        "metrics.json",
        "confusion_matrix.png",
        "training_curves.png",
    ):
        assert (output_dir / name).is_file(), name
    config = json.loads((output_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "blue", "1": "green", "2": "red"}
    assert config["drop_path_rate"] == 0.1
    assert config["auto_map"]["AutoModelForImageClassification"] == "modeling_convnext.ConvNextForImageClassification"
    processor = json.loads((output_dir / "preprocessor_config.json").read_text())
    assert processor["size"] == {"shortest_edge": 32}
    assert processor["auto_map"]["AutoImageProcessor"] == "image_processing_convnext.ConvNextHFImageProcessor"
    for name in ("confusion_matrix.png", "training_curves.png"):
        with Image.open(output_dir / name) as image:
            assert image.width > 300 and image.height > 200


def documented_outputs(page, heading):
    """The names in the first column of the first table under `heading` (`a`, `b` in one cell give two)."""
    table = page.read_text().split(f"\n{heading}\n", 1)[1].split("\n\n|", 1)[1].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([^`]+)`", row.split("|")[1])}


def test_output_table_in_the_docs_lists_exactly_what_a_run_writes(full_recipe_run):
    output_dir, _ = full_recipe_run
    documented = documented_outputs(ROOT / "docs" / "training.md", "## Output")
    written = {path.name + ("/" if path.is_dir() else "") for path in output_dir.iterdir()}
    undocumented = {name for name in written if not any(fnmatch.fnmatch(name, pattern) for pattern in documented)}
    assert undocumented == set(), "docs/training.md's output table must name every file a run writes"
    # What this classification run has no reason to write: the segmentation overlay, and runs/ without TensorBoard.
    conditional = {"prediction_overlay.png"} | (set() if is_tensorboard_available() else {"runs/"})
    missing = {pattern for pattern in documented - conditional if not fnmatch.filter(written, pattern)}
    assert missing == set(), "docs/training.md's output table names files a run does not write"


def test_tensorboard_logs_when_installed(full_recipe_run):
    output_dir, _ = full_recipe_run
    if not is_tensorboard_available():
        assert parse_args(["--variant", "atto", "--output_dir", "x"]).training.report_to == []
        return
    events = [name for _, _, names in os.walk(output_dir / "runs") for name in names]
    assert any(name.startswith("events.out.tfevents") for name in events)


def test_metrics_json_and_confusion_matrix_agree(full_recipe_run):
    output_dir, metrics = full_recipe_run
    report = json.loads((output_dir / "metrics.json").read_text())
    counts = np.array(report["confusion_matrix"])
    assert counts.shape == (3, 3) and counts.sum() == 9 and (counts.sum(axis=1) == 3).all()
    assert report["metrics"]["eval_accuracy"] == pytest.approx(np.trace(counts) / 9)
    assert metrics["eval_accuracy"] == report["metrics"]["eval_accuracy"]
    assert report["label_names"] == list(CLASSES)
    per_class = [report["per_class_accuracy"][name] for name in CLASSES]
    assert per_class == pytest.approx(list(np.diag(counts) / 3))
    assert "eval_top5_accuracy" not in metrics, "three classes: top-5 would be 1.0 whatever the model does"


def test_model_card_states_origin_data_hyperparameters_results_and_usage(full_recipe_run):
    output_dir, metrics = full_recipe_run
    card = ModelCard.load(output_dir / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "image-classification"
    results = card.data.eval_results
    assert results[0].metric_value == pytest.approx(metrics["eval_accuracy"])
    assert results[0].dataset_type == "imagefolder" and results[0].dataset_name == "train"
    text = card.text
    assert "trained from scratch (starting from variant `atto`)" in text
    assert "4-stage ConvNeXt, widths [8, 16, 32, 64], depths [1, 1, 1, 1], 4×4 patchify stem" in text
    assert "3 classes: `blue`, `green`, `red`" in text
    assert "24 training images, 9 validation images, at 32×32" in text
    for row in (
        "| RandAugment | rand-m9-mstd0.5-inc1 |",
        "| Mixup / CutMix alpha | 0.8 / 1.0 |",
        "| label smoothing | 0.1 |",
        "| random erasing | 0.25 |",
        "| layer-wise lr decay | 0.8 |",
        "| EMA | 0.5 |",
        "| stochastic depth | 0.1 |",
        f"| top-1 accuracy | {metrics['eval_accuracy']:.2%} |",
    ):
        assert row in text, row
    assert 'pipeline("image-classification"' in text


def test_final_weights_are_the_better_of_live_and_ema_and_every_evaluation_scores_both(full_recipe_run):
    output_dir, metrics = full_recipe_run
    state = json.loads((output_dir / "trainer_state.json").read_text())
    last = state["global_step"]
    assert last == 12  # 24 images / batch 4 × 2 epochs
    evaluations = [entry for entry in state["log_history"] if "eval_ema_accuracy" in entry]
    assert [entry["epoch"] for entry in evaluations] == [1.0, 2.0]
    choice = json.loads((output_dir / "metrics.json").read_text())["saved_weights"]
    assert choice["compared_on"] == "eval_accuracy" and choice["steps"] == 12 and choice["ema_decay"] == 0.5
    assert choice["saved"] == ("EMA" if choice["scores"]["EMA"] >= choice["scores"]["live"] else "live")
    assert metrics["eval_accuracy"] == choice["scores"][choice["saved"]], "the final metrics are the saved weights'"
    final = load_file(output_dir / "model.safetensors")
    ema = load_file(output_dir / f"checkpoint-{last}" / EMA_WEIGHTS_NAME)
    raw = load_file(output_dir / f"checkpoint-{last}" / "model.safetensors")
    for name in final:
        torch.testing.assert_close(final[name], (ema if choice["saved"] == "EMA" else raw)[name])
    assert not torch.equal(ema["classifier.weight"], raw["classifier.weight"])


def test_a_slow_ema_on_a_short_run_is_not_saved_and_the_card_says_so(folders, cache_dir, tmp_path):
    """At the paper's decay 0.9999, 18 steps leave the EMA 99.8% initial weights: near chance, where the live weights
    score every validation image. The live weights are saved, and metrics.json and the card give both scores."""
    train_dir, val_dir = folders
    output_dir = tmp_path / "out"
    argv = tiny_args(train_dir, output_dir, cache_dir, "--num_train_epochs", "3", "--model_ema",
                     validation_dir=val_dir)  # fmt: skip
    metrics = run(parse_args(argv))
    choice = json.loads((output_dir / "metrics.json").read_text())["saved_weights"]
    assert choice["saved"] == "live" and choice["steps"] == 18 and choice["ema_decay"] == 0.9999
    assert choice["scores"]["live"] == metrics["eval_accuracy"] == 1.0
    assert choice["scores"]["EMA"] <= 0.5
    final = load_file(output_dir / "model.safetensors")
    raw = load_file(output_dir / "checkpoint-18" / "model.safetensors")
    assert all(torch.equal(final[name], raw[name]) for name in final)
    card = (output_dir / "README.md").read_text()
    assert (
        f"Saved the live weights: eval_accuracy 1.0000 against {choice['scores']['EMA']:.4f} for the EMA weights "
        "(EMA decay 0.9999 over 18 steps: the initial weights still make 99.8% of the average)."
    ) in card


def test_saved_folder_reloads_with_pipeline_and_scores_like_the_trainer(full_recipe_run, folders):
    output_dir, metrics = full_recipe_run
    _, val_dir = folders
    classifier = pipeline("image-classification", model=str(output_dir), trust_remote_code=True)
    correct = 0
    for name in CLASSES:
        for path in sorted((val_dir / name).iterdir()):
            correct += classifier(str(path), top_k=1)[0]["label"] == name
    assert correct / 9 == pytest.approx(metrics["eval_accuracy"])


@pytest.mark.slow
def test_saved_folder_loads_without_the_package(full_recipe_run, folders):
    output_dir, _ = full_recipe_run
    _, val_dir = folders
    image = val_dir / "red" / "0.png"
    script = (
        "import sys, json\n"
        "sys.modules['convnext_hf'] = None\n"
        "from transformers import pipeline\n"
        f"classifier = pipeline('image-classification', model={str(output_dir)!r}, trust_remote_code=True)\n"
        "print(type(classifier.model).__module__)\n"
        f"print(json.dumps(classifier({str(image)!r}, top_k=3)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    module, predictions = result.stdout.strip().splitlines()[-2:]
    assert module.startswith("transformers_modules.")
    in_process = pipeline("image-classification", model=str(output_dir), trust_remote_code=True)(str(image), top_k=3)
    assert [p["label"] for p in json.loads(predictions)] == [p["label"] for p in in_process]
    assert [p["score"] for p in json.loads(predictions)] == pytest.approx([p["score"] for p in in_process], abs=1e-5)


# --- the Trainer's loss, optimizer and schedule -----------------------------------------------------------------


def make_trainer(tmp_path, mixup=None, layer_decay=1.0, **training):
    config = ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 3, 1], num_labels=3)
    model = ConvNextForImageClassification(config)
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", **training)
    return ConvNextTrainer(
        model=model, args=args, mixup=mixup or Mixup(num_classes=3), layer_decay=layer_decay
    )


def test_training_loss_is_soft_target_cross_entropy_on_the_mixed_batch(tmp_path):
    mixup = Mixup(num_classes=3, mixup_alpha=0.8, label_smoothing=0.1)
    trainer = make_trainer(tmp_path, mixup=mixup)
    model = trainer.model
    pixels, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    model.eval()
    torch.manual_seed(5)
    mixed, targets = mixup(pixels, labels)
    expected = soft_target_cross_entropy(model(pixel_values=mixed).logits, targets)
    model.train()
    torch.manual_seed(5)
    # Train mode without stochastic depth or dropout: only the mixing is random.
    loss = trainer.compute_loss(model, {"pixel_values": pixels, "labels": labels})
    torch.testing.assert_close(loss, expected)
    model.eval()
    eval_loss = trainer.compute_loss(model, {"pixel_values": pixels, "labels": labels})
    torch.testing.assert_close(eval_loss, torch.nn.functional.cross_entropy(model(pixel_values=pixels).logits, labels))
    assert not torch.allclose(loss, soft_target_cross_entropy(model(pixel_values=pixels).logits,
                                                              smooth_one_hot(labels, 3, 0.1)))


def test_trainer_optimizer_has_the_recipe_groups_and_warmup_cosine_schedule(tmp_path):
    trainer = make_trainer(
        tmp_path, layer_decay=0.5, learning_rate=1e-3, weight_decay=0.05, warmup_steps=4,
        lr_scheduler_type="cosine", max_steps=20, optim="adamw_torch",
    )  # fmt: skip
    trainer.create_optimizer_and_scheduler(num_training_steps=20)
    optimizer, scheduler = trainer.optimizer, trainer.lr_scheduler
    assert isinstance(optimizer, torch.optim.AdamW)
    scales = {group["layer_id"]: group["lr_scale"] for group in optimizer.param_groups}
    assert scales[13] == 1.0 and scales[12] == 0.5 and scales[0] == 0.5**13
    head = next(group for group in optimizer.param_groups if "classifier.weight" in group["param_names"])
    stem = next(g for g in optimizer.param_groups if "convnext.embeddings.patch_embeddings.weight" in g["param_names"])
    assert head["weight_decay"] == 0.05
    observed = []
    for _ in range(21):
        observed.append((head["lr"], stem["lr"]))
        optimizer.step()
        scheduler.step()
    for step in (0, 2, 4, 10, 15, 20):
        factor = step / 4 if step < 4 else 0.5 * (1 + np.cos(np.pi * (step - 4) / 16))
        assert observed[step][0] == pytest.approx(1e-3 * factor, abs=1e-12), step
        assert observed[step][1] == pytest.approx(1e-3 * 0.5**13 * factor, abs=1e-15), step
    assert observed[4][0] == pytest.approx(1e-3) and observed[20][0] == pytest.approx(0.0, abs=1e-12)


# --- resuming an interrupted run --------------------------------------------------------------------------------


class Interrupt(TrainerCallback):
    """Stops the process abruptly after `step` optimizer steps, as a crash or a kill would."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt(f"simulated interruption at step {self.step}")


@pytest.mark.slow
def test_resume_from_checkpoint_finishes_the_run_exactly(folders, cache_dir, tmp_path):
    train_dir, val_dir = folders
    # The Trainer restores the random state one batch after resuming, so per-image augmentation of that batch would
    # differ; with a fixed crop the resumed run must land on the very weights of the uninterrupted one, Mixup, EMA,
    # optimizer and schedule included.
    recipe = [
        "--max_steps", "6", "--save_strategy", "steps", "--save_steps", "2", "--eval_strategy", "no",
        "--rrc_scale_min", "1", "--rrc_ratio", "1", "1", "--hflip", "0",
        "--mixup_alpha", "0.8", "--drop_path_rate", "0.2", "--model_ema", "--model_ema_decay", "0.5",
    ]  # fmt: skip
    straight = run(parse_args(tiny_args(train_dir, tmp_path / "straight", cache_dir, *recipe, validation_dir=val_dir)))
    interrupted_dir = tmp_path / "interrupted"
    argv = tiny_args(train_dir, interrupted_dir, cache_dir, *recipe, validation_dir=val_dir)
    with pytest.raises(KeyboardInterrupt):
        run(parse_args(argv), callbacks=[Interrupt(3)])
    assert sorted(os.listdir(interrupted_dir)) == ["checkpoint-2"]
    resumed = run(parse_args(argv + ["--resume_from_checkpoint", str(interrupted_dir / "checkpoint-2")]))
    state = json.loads((interrupted_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    expected = load_file(tmp_path / "straight" / "model.safetensors")
    actual = load_file(interrupted_dir / "model.safetensors")
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-6)
    assert resumed["eval_accuracy"] == straight["eval_accuracy"]
    model = ConvNextForImageClassification.from_pretrained(interrupted_dir)
    assert model(torch.randn(1, 3, 32, 32)).logits.shape == (1, 3)


@pytest.mark.slow
def test_resume_true_picks_the_last_checkpoint(folders, cache_dir, tmp_path):
    train_dir, _ = folders
    argv = tiny_args(train_dir, tmp_path, cache_dir, "--max_steps", "4", "--save_steps", "2",
                     "--save_strategy", "steps", "--train_val_split", "0")  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        run(parse_args(argv), callbacks=[Interrupt(3)])
    run(parse_args(argv + ["--resume_from_checkpoint", "true"]))
    assert json.loads((tmp_path / "trainer_state.json").read_text())["global_step"] == 4
    with pytest.raises(ValueError, match="no checkpoint"):
        run(parse_args(tiny_args(train_dir, tmp_path / "empty", cache_dir, "--resume_from_checkpoint", "true")))


# --- faults found before training -------------------------------------------------------------------------------


@pytest.fixture
def folder_with_corrupt_image(tmp_path):
    train_dir = write_color_images(tmp_path / "train", 4, seed=2)
    (train_dir / "red" / "broken.jpg").write_bytes(b"this is not a JPEG")
    truncated = (train_dir / "green" / "0.png").read_bytes()
    (train_dir / "green" / "truncated.png").write_bytes(truncated[: len(truncated) // 2])
    return train_dir


def test_corrupt_images_stop_the_run_in_one_line_naming_the_first(folder_with_corrupt_image, cache_dir, tmp_path,
                                                                   capsys):  # fmt: skip
    # One epoch without validation reads every training image, so the loader meets a broken one.
    argv = tiny_args(folder_with_corrupt_image, tmp_path / "out", cache_dir, "--num_train_epochs", "1",
                     "--train_val_split", "0")  # fmt: skip
    assert cli_main(["train", *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    prefix = f"convnext-hf train: error: Unreadable image {folder_with_corrupt_image}/"
    named = [name for name in ("red/broken.jpg", "green/truncated.png") if lines[-1].startswith(prefix + name + " (")]
    assert len(named) == 1 and "--on_bad_image skip" in lines[-1]
    assert not any("Traceback" in line for line in lines)
    assert not (tmp_path / "out").exists(), "a refused run leaves no folder behind"


def test_corrupt_images_are_skipped_and_counted_without_a_pre_pass(folder_with_corrupt_image, cache_dir, tmp_path,
                                                                     caplog, monkeypatch):  # fmt: skip
    import convnext_hf.tasks.classification.data as classification_data

    def no_pre_pass(*args, **kwargs):
        raise AssertionError("a training run must not decode every image before it starts")

    monkeypatch.setattr(classification_data, "find_bad_images", no_pre_pass)
    argv = tiny_args(
        folder_with_corrupt_image, tmp_path / "out", cache_dir,
        "--on_bad_image", "skip", "--num_train_epochs", "1", "--train_val_split", "0.25",
    )  # fmt: skip
    with caplog.at_level("WARNING"):
        run(parse_args(argv))
    assert "2 unreadable image(s) were skipped" in caplog.text
    assert "broken.jpg" in caplog.text and "truncated.png" in caplog.text
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["global_step"] == 3  # 14 listed images, 10 for training, batch 4
    unreadable = json.loads((tmp_path / "out" / "metrics.json").read_text())["unreadable_images"]
    assert unreadable["count"] == 2
    expected = [folder_with_corrupt_image / "green" / "truncated.png", folder_with_corrupt_image / "red" / "broken.jpg"]
    assert sorted(path.split(" (")[0] for path in unreadable["first"]) == [str(path) for path in expected]
    card = (tmp_path / "out" / "README.md").read_text()
    assert "2 unreadable image(s) were skipped (--on_bad_image skip)" in card and "broken.jpg" in card


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"only": 3}, "holds one class .* needs at least two"),
        ({}, "No images found"),
        ({".": 4}, "lie directly in .* outside any class subfolder"),
    ],
)
def test_unusable_folders_are_refused_before_training(layout, message, cache_dir, tmp_path):
    train_dir = tmp_path / "train"
    train_dir.mkdir()
    for name, count in layout.items():
        (train_dir / name).mkdir(exist_ok=True)
        for index in range(count):
            Image.new("RGB", (8, 8), (index, 0, 0)).save(train_dir / name / f"{index}.png")
    with pytest.raises(ValueError, match=message):
        run(parse_args(tiny_args(train_dir, tmp_path / "out", cache_dir)))
    assert not (tmp_path / "out").exists()


def test_labels_that_disagree_with_the_model_are_refused(full_recipe_run, cache_dir, tmp_path):
    pretrained, _ = full_recipe_run
    other = write_color_images(tmp_path / "other", 4, seed=3, classes=("cyan", "magenta", "yellow"))
    argv = ["--train_dir", str(other), "--model_name_or_path", str(pretrained), "--output_dir", str(tmp_path / "out"),
            "--cache_dir", cache_dir, "--report_to", "none", "--max_steps", "1", "--plots", "false"]  # fmt: skip
    with pytest.raises(ValueError, match=r"disagree with the classes .* Pass --replace_head"):
        run(parse_args(argv))
    metrics = run(parse_args(argv + ["--replace_head"]))
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["id2label"] == {"0": "cyan", "1": "magenta", "2": "yellow"}
    assert "eval_accuracy" in metrics


def test_non_empty_output_dir_and_ambiguous_sources_are_refused(folders, cache_dir, tmp_path):
    train_dir, _ = folders
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match="pass --overwrite "):
        run(parse_args(tiny_args(train_dir, tmp_path / "out", cache_dir)))
    with pytest.raises(ValueError, match="exactly one training data source"):
        run(parse_args(tiny_args(train_dir, tmp_path / "new", cache_dir, "--dataset_name", "cifar10")))
    with pytest.raises(ValueError, match="exactly one model"):
        run(parse_args(tiny_args(train_dir, tmp_path / "new", cache_dir, "--model_name_or_path", "x")))
    assert (tmp_path / "out" / "precious.txt").read_text() == "keep me"


# --- other sources and models -----------------------------------------------------------------------------------


def test_csv_of_paths_and_labels_and_fine_tuning_with_a_new_head(full_recipe_run, folders, cache_dir, tmp_path):
    pretrained, _ = full_recipe_run
    train_dir, _ = folders
    # Paths in a label file stay inside its folder: the file lies at the root of the data.
    labels = train_dir.parent / "labels-new-head.csv"
    rows = ["file,category"] + [
        f"{os.path.relpath(train_dir / name / f'{index}.png', labels.parent)},{'warm' if name == 'red' else 'cold'}"
        for name in CLASSES
        for index in range(8)
    ]
    labels.write_text("\n".join(rows) + "\n")
    argv = [
        "--train_file", str(labels), "--model_name_or_path", str(pretrained),
        "--recipe", "paper-finetune", "--max_steps", "2", "--per_device_train_batch_size", "4",
        "--output_dir", str(tmp_path / "out"), "--cache_dir", cache_dir, "--report_to", "none", "--plots", "false",
    ]  # fmt: skip
    metrics = run(parse_args(argv))
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["id2label"] == {"0": "cold", "1": "warm"}
    assert config["head_init_scale"] == 0.001
    weights = load_file(tmp_path / "out" / "model.safetensors")
    # A new head initialized 1000× smaller than the trunk (std 2e-5) moves by at most ~lr per step (5e-5).
    assert weights["classifier.weight"].abs().max() < 5e-4
    base = load_file(pretrained / "model.safetensors")
    assert (weights["convnext.embeddings.patch_embeddings.weight"]
            - base["convnext.embeddings.patch_embeddings.weight"]).abs().max() < 1e-3, "the trunk was kept"
    assert metrics["eval_samples_per_second"] > 0
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.base_model is None, "a local folder is not a Hub id"
    assert f"fine-tuned from [`{pretrained}`]" in card.text
    assert "| layer-wise lr decay | 0.8 |" in card.text and "| recipe | paper-finetune |" in card.text


def test_json_lines_files_share_one_label_map(folders, cache_dir, tmp_path):
    train_dir, val_dir = folders
    # Paths in a label file stay inside its folder: the files lie at the root of the data.
    root = train_dir.parent

    def write(path, directory, names):
        lines = [json.dumps({"image_path": os.path.relpath(directory / name / f"{index}.png", root), "labels": name})
                 for name in names for index in range(3)]  # fmt: skip
        path.write_text("\n".join(lines) + "\n")

    train_file, val_file = root / "train-shared-map.jsonl", root / "val-shared-map.jsonl"
    write(train_file, train_dir, ["red", "blue"])
    write(val_file, val_dir, ["red"])
    argv = ["--train_file", str(train_file), "--validation_file", str(val_file),
            "--variant", "atto", "--config_overrides", TINY_CONFIG, "--image_size", "32", "--max_steps", "1",
            "--cache_dir", cache_dir, "--report_to", "none", "--plots", "false"]  # fmt: skip
    run(parse_args(argv + ["--output_dir", str(tmp_path / "out")]))
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert report["label_names"] == ["blue", "red"]
    assert np.array(report["confusion_matrix"]).sum(axis=1).tolist() == [0, 3], "the validation reds are class 1"
    write(val_file, val_dir, ["green"])
    with pytest.raises(ValueError, match=r"\['green'\] have no training images"):
        run(parse_args(argv + ["--output_dir", str(tmp_path / "out2")]))


class RecordTrainerSettings(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.checkpointing = model.is_activation_checkpointing

    def on_step_end(self, args, state, control, **kwargs):
        self.last_step = state.global_step


def test_trainer_flags_for_memory_and_precision_work(folders, cache_dir, tmp_path):
    train_dir, _ = folders
    recorder = RecordTrainerSettings()
    argv = tiny_args(
        train_dir, tmp_path / "out", cache_dir, "--activation_checkpointing", "--gradient_accumulation_steps", "2",
        "--use_cpu", "--bf16", "--max_grad_norm", "0.5", "--max_steps", "2", "--train_val_split", "0",
    )  # fmt: skip
    metrics = run(parse_args(argv), callbacks=[recorder])
    assert recorder.checkpointing and recorder.last_step == 2
    assert np.isfinite(metrics["train_loss"])
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] in ("float32", None)


# --- the command line and the demo ------------------------------------------------------------------------------


def test_cli_dispatches_train_and_reports_usage(folders, cache_dir, tmp_path, capsys):
    train_dir, _ = folders
    assert cli_main(["train", *tiny_args(train_dir, tmp_path / "out", cache_dir, "--max_steps", "1")]) == 0
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert cli_main([]) == 2 and "commands:" in capsys.readouterr().out
    assert cli_main(["fly"]) == 2 and "unknown command 'fly'" in capsys.readouterr().err


def test_python_dash_m_entry_point_shows_trainer_flags(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["convnext_hf.train", "--help_all"])
    with pytest.raises(SystemExit) as exit_status:
        runpy.run_module("convnext_hf.train", run_name="__main__")
    assert exit_status.value.code == 0
    printed = capsys.readouterr().out
    for flag in ("--train_dir", "--variant", "--recipe", "--mixup_alpha", "--activation_checkpointing", "--bf16"):
        assert flag in printed, flag


@pytest.mark.slow
def test_demo_runs_end_to_end_on_a_few_digits(tmp_path, capsys, monkeypatch):
    from convnext_hf.demo import main as demo_main

    attempts = ban_network(monkeypatch)
    summary = demo_main(["--output_dir", str(tmp_path / "demo"), "--train_per_class", "6", "--epochs", "1"])
    assert attempts == [], "the demo must not reach for the network"
    printed = capsys.readouterr().out
    assert "top-1 accuracy" in printed and "held-out digits" in printed
    assert summary["held_out_top1_accuracy"] == pytest.approx(summary["trainer_eval_accuracy"])
    assert 0.0 <= summary["held_out_top1_accuracy"] <= summary["held_out_top5_accuracy"] <= 1.0
    digits = tmp_path / "demo" / "digits"
    assert sum(len(os.listdir(digits / "held_out" / str(d))) for d in range(10)) == 1000
    assert sum(len(os.listdir(digits / "train" / str(d))) for d in range(10)) == 60
    assert (tmp_path / "demo" / "model" / "README.md").is_file()
