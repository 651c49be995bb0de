"""Real two-process data-parallel runs on CPU (gloo), through torchrun and through `accelerate launch`: disjoint
shards, weights kept in step, an evaluation that scores every validation image once, one saved model that reloads."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import convnext_hf
from convnext_hf import ConvNextForImageClassification
from helpers import DRIVER, GREY_STEP

NUM_TRAIN = 32
TINY_CONFIG = json.dumps({"hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1]})



def write_grey_images(directory, numbers, side=12):
    """Flat grey images, GREY_STEP × their number; validation ones get another `side`, so that no validation image is
    a copy of a training one (the run would leave those out)."""
    for number in numbers:
        label = directory / ("even" if number % 2 == 0 else "odd")
        label.mkdir(parents=True, exist_ok=True)
        grey = np.full((side, side, 3), GREY_STEP * number, dtype=np.uint8)
        Image.fromarray(grey).save(label / f"{number:02d}.png")


def _environment():
    return {
        **os.environ,
        "PYTHONPATH": os.path.dirname(os.path.dirname(convnext_hf.__file__)),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }


@pytest.mark.slow
def test_two_process_data_parallel_run_on_cpu(tmp_path):
    write_grey_images(tmp_path / "train", range(NUM_TRAIN))
    write_grey_images(tmp_path / "val", range(4), side=14)
    (tmp_path / "driver.py").write_text(DRIVER)
    output_dir = tmp_path / "out"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(tmp_path / "driver.py"), str(tmp_path),
        "--train_dir", str(tmp_path / "train"), "--validation_dir", str(tmp_path / "val"),
        "--variant", "atto", "--config_overrides", TINY_CONFIG,
        "--image_size", "32", "--rrc_scale_min", "1", "--rrc_ratio", "1", "1", "--hflip", "0",
        "--per_device_train_batch_size", "4", "--num_train_epochs", "1", "--ddp_backend", "gloo",
        "--output_dir", str(output_dir), "--cache_dir", str(tmp_path / "cache"), "--report_to", "none",
        "--plots", "false", "--dataloader_num_workers", "0",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=_environment(), timeout=300)
    assert result.returncode == 0, result.stderr[-5000:]

    records = [json.loads((tmp_path / f"seen-rank{rank}.json").read_text()) for rank in (0, 1)]
    seen = [record["seen"] for record in records]
    assert len(seen[0]) == len(seen[1]) == NUM_TRAIN // 2, "each rank trains on half of the images"
    assert not set(seen[0]) & set(seen[1]), "the shards are disjoint"
    assert sorted(seen[0] + seen[1]) == list(range(NUM_TRAIN)), "together they cover the data once"
    assert records[0]["weight_sums"] == records[1]["weight_sums"], "both ranks hold the same (averaged) weights"

    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == NUM_TRAIN // (2 * 4), "one optimizer step per pair of per-rank batches"
    report = json.loads((output_dir / "metrics.json").read_text())
    assert np.array(report["confusion_matrix"]).sum() == 4, "the evaluation gathers all four images, once"
    model = ConvNextForImageClassification.from_pretrained(output_dir)
    assert model.config.id2label == {0: "even", 1: "odd"}
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 32, 32)).logits.shape == (2, 2)
    assert not any(name.startswith("module.") for name in model.state_dict()), "saved unwrapped from DDP"



def _scores(output_dir):
    """The confusion matrix and the validation scores (not the timings) of a run's metrics.json."""
    report = json.loads((output_dir / "metrics.json").read_text())
    scores = {key: value for key, value in report["metrics"].items() if key in ("eval_accuracy", "eval_loss")}
    return report["confusion_matrix"], scores


@pytest.mark.slow
def test_two_process_evaluation_scores_each_image_once(tmp_path):
    """19 validation images in batches of 2: five batches per rank, the last one short on one rank only. The documented
    CPU line (torchrun, gloo, no --use_cpu) must score exactly what one process scores; the learning rate is 1e-12 (0 is
    refused as a run that learns nothing) so that both runs hold the seeded weights, to far below any score's change."""
    write_grey_images(tmp_path / "train", range(8))
    (tmp_path / "val" / "even").mkdir(parents=True)
    (tmp_path / "val" / "odd").mkdir()
    for number in range(19):
        noise = np.random.default_rng(number).integers(0, 256, (12, 12, 3), dtype=np.uint8)
        Image.fromarray(noise).save(tmp_path / "val" / ("even" if number % 2 == 0 else "odd") / f"{number:02d}.png")
    run = [
        "--train_dir", str(tmp_path / "train"), "--validation_dir", str(tmp_path / "val"),
        "--variant", "atto", "--config_overrides", TINY_CONFIG, "--image_size", "32", "--learning_rate", "1e-12",
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "2", "--num_train_epochs", "1",
        "--cache_dir", str(tmp_path / "cache"), "--report_to", "none", "--plots", "false",
        "--dataloader_num_workers", "0",
    ]  # fmt: skip
    launchers = {
        "one": [sys.executable, "-m", "convnext_hf.train"],
        "two": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "convnext_hf.train", "--ddp_backend", "gloo"],
    }  # fmt: skip
    for name, launcher in launchers.items():
        command = [*launcher, *run, "--output_dir", str(tmp_path / name)]
        result = subprocess.run(command, capture_output=True, text=True, env=_environment(), timeout=300)
        assert result.returncode == 0, result.stderr[-5000:]

    single_counts, single_scores = _scores(tmp_path / "one")
    counts, scores = _scores(tmp_path / "two")
    assert np.array(counts).sum(axis=1).tolist() == [10, 9], "every validation image is scored once"
    assert counts == single_counts
    assert scores["eval_accuracy"] == single_scores["eval_accuracy"]
    assert scores["eval_loss"] == pytest.approx(single_scores["eval_loss"], rel=1e-6)


@pytest.mark.slow
def test_accelerate_launch_splits_the_data_between_two_cpu_processes(tmp_path):
    """The launch line of docs/training.md. accelerate's `--cpu` alone starts one process (its multi-CPU path is MPI),
    so two CPU processes come from its torchrun launcher (`--multi_gpu`) with no GPU visible and the Trainer's
    `--use_cpu`; every setting is a flag, so no accelerate config file is read or needed."""
    write_grey_images(tmp_path / "train", range(NUM_TRAIN))
    write_grey_images(tmp_path / "val", range(19), side=14)
    output_dir = tmp_path / "out"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "convnext_hf.train", "--use_cpu", "--ddp_backend", "gloo",
        "--train_dir", str(tmp_path / "train"), "--validation_dir", str(tmp_path / "val"),
        "--variant", "atto", "--config_overrides", TINY_CONFIG, "--image_size", "32",
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "2", "--num_train_epochs", "1",
        "--dataloader_num_workers", "0", "--output_dir", str(output_dir), "--cache_dir", str(tmp_path / "cache"),
        "--report_to", "none",
    ]  # fmt: skip
    env = {**_environment(), "CUDA_VISIBLE_DEVICES": "", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-5000:]
    assert not (tmp_path / "hf" / "accelerate").exists(), "no accelerate config file was written or needed"

    state = json.loads((output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == NUM_TRAIN // (2 * 4), "each process trains on half of the images per epoch"
    card = (output_dir / "README.md").read_text()
    assert "| total batch size | 8 (2 process(es)) |" in card
    report = json.loads((output_dir / "metrics.json").read_text())
    counts = np.array(report["confusion_matrix"])
    assert counts.sum(axis=1).tolist() == [10, 9], "the evaluation gathers all 19 images, once"
    model = ConvNextForImageClassification.from_pretrained(output_dir)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).logits.shape == (1, 2)


@pytest.mark.slow
def test_two_processes_skip_an_unreadable_validation_image_from_a_folder(tmp_path):
    """Five validation images in batches of two, one broken: its process keeps the slot, so both send full parts."""
    write_grey_images(tmp_path / "train", range(8))
    write_grey_images(tmp_path / "val", range(5), side=14)
    (tmp_path / "val" / "even" / "02.png").write_bytes(b"not a PNG")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "convnext_hf.train", "--ddp_backend", "gloo", "--on_bad_image", "skip",
        "--train_dir", str(tmp_path / "train"), "--validation_dir", str(tmp_path / "val"),
        "--variant", "atto", "--config_overrides", TINY_CONFIG, "--image_size", "32",
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "2", "--num_train_epochs", "1",
        "--output_dir", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "cache"), "--report_to", "none",
        "--plots", "false", "--dataloader_num_workers", "0",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=_environment(), timeout=300)
    assert result.returncode == 0, result.stderr[-5000:]
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert np.array(report["confusion_matrix"]).sum(axis=1).tolist() == [2, 2], "the four readable images, once each"
    assert report["unreadable_images"]["count"] == 1, "counted once across the processes"
    assert report["unreadable_images"]["first"][0].startswith(f"{tmp_path / 'val' / 'even' / '02.png'} (")


POISONING_DRIVER = """
import math, os, sys, torch
from convnext_hf.cli import run_command
from convnext_hf.train import main
from convnext_hf.train.trainer import ConvNextTrainer

train_step = ConvNextTrainer.training_step

def poisoned_step(self, model, inputs, *args, **kwargs):
    # Rank 1 alone makes a weight NaN before the forward of step 2: only its loss is NaN, as with a bad batch.
    if os.environ["RANK"] == "1" and self.state.global_step == 1:
        with torch.no_grad():
            getattr(model, "module", model).classifier.weight[0, 0] = math.nan
    return train_step(self, model, inputs, *args, **kwargs)

ConvNextTrainer.training_step = poisoned_step
sys.exit(run_command("convnext-hf train", main, sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_nan_loss_on_one_process_stops_both_before_the_step(tmp_path):
    """The loss guard's decision is taken by all processes together: a NaN loss on rank 1 alone stops rank 0 too
    (rather than leaving it waiting in the next all-reduce), each in one line, exit 2, nothing saved."""
    write_grey_images(tmp_path / "train", range(NUM_TRAIN))
    (tmp_path / "driver.py").write_text(POISONING_DRIVER)
    output_dir = tmp_path / "out"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(tmp_path / "driver.py"), "--train_dir", str(tmp_path / "train"), "--train_val_split", "0",
        "--variant", "atto", "--config_overrides", TINY_CONFIG, "--image_size", "32",
        "--per_device_train_batch_size", "4", "--max_steps", "4", "--ddp_backend", "gloo",
        "--output_dir", str(output_dir), "--cache_dir", str(tmp_path / "cache"), "--report_to", "none",
        "--plots", "false", "--dataloader_num_workers", "0", "--save_strategy", "no",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=_environment(), timeout=300)
    assert result.returncode != 0
    # Both processes say it (their lines may interleave in the one stderr pipe); torchrun then stops the one still
    # exiting and reports the failure with a traceback of its own, the only one.
    assert result.stderr.count("convnext-hf train: error: Training stopped at step 2: the training loss is NaN") == 2
    assert result.stderr.count("Traceback (most recent call last)") == 1, result.stderr[-5000:]
    assert "ChildFailedError" in result.stderr
    assert not output_dir.exists()
