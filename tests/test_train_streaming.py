"""`convnext-hf train --streaming` on tiny parquet and webdataset shard folders: every training sample once per epoch
(in one process, across loader workers, and across two processes), validation scored once, resuming mid-run with the
samples an uninterrupted run sees, and the refusals."""

import io
import json
import os
import subprocess
import sys
import tarfile

import datasets
import numpy as np
import pytest
from PIL import Image
from transformers import TrainerCallback

import convnext_hf
from convnext_hf.train import parse_args, run
from convnext_hf.train.streaming import EpochStream
from convnext_hf.train.trainer import ConvNextTrainer
from helpers import DRIVER, GREY_STEP

NUM_TRAIN, NUM_VALIDATION, SHARDS, BATCH = 32, 7, 4, 4
TINY_CONFIG = json.dumps({"hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1]})


def _png(number, side=12):
    """A flat grey image that gives its number back after crop, resize and normalization (GREY_STEP × number)."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((side, side, 3), GREY_STEP * number, dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _splits():
    """(split, shard count, numbers); validation images are larger, so that none equals a training one."""
    return (("train", SHARDS, range(NUM_TRAIN)), ("validation", 2, range(NUM_VALIDATION)))


def write_parquet_shards(folder):
    folder.mkdir()
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["even", "odd"])})
    for split, shards, numbers in _splits():
        for shard in range(shards):
            part = [number for number in numbers if number % shards == shard]
            side = 12 if split == "train" else 14
            rows = {"image": [{"bytes": _png(number, side), "path": None} for number in part],
                    "label": [number % 2 for number in part]}  # fmt: skip
            datasets.Dataset.from_dict(rows, features=features).to_parquet(
                str(folder / f"{split}-{shard:05d}-of-{shards:05d}.parquet")
            )
    return folder


def write_webdataset_shards(folder, broken_validation=()):
    """webdataset's layout: one tar per shard, each sample a `KEY.png` and a `KEY.cls` (its class as text); the
    validation images numbered in `broken_validation` are not PNGs."""
    folder.mkdir()
    for split, shards, numbers in _splits():
        for shard in range(shards):
            with tarfile.open(folder / f"{split}-{shard:05d}.tar", "w") as tar:
                for number in (number for number in numbers if number % shards == shard):
                    broken = split == "validation" and number in broken_validation
                    image = b"not a PNG" if broken else _png(number, 12 if split == "train" else 14)
                    members = {"png": image, "cls": str(number % 2).encode()}
                    for extension, payload in members.items():
                        info = tarfile.TarInfo(f"{split}{number:04d}.{extension}")
                        info.size = len(payload)
                        tar.addfile(info, io.BytesIO(payload))
    return folder


def streaming_args(folder, output_dir, *extra):
    return [
        "--dataset_name", str(folder), "--streaming", "--variant", "atto", "--config_overrides", TINY_CONFIG,
        "--image_size", "32", "--rrc_scale_min", "1", "--rrc_ratio", "1", "1", "--hflip", "0",
        "--per_device_train_batch_size", str(BATCH), "--per_device_eval_batch_size", "2",
        "--output_dir", str(output_dir), "--report_to", "none", "--plots", "false", "--seed", "0", *extra,
    ]  # fmt: skip


@pytest.fixture
def seen(monkeypatch):
    """The numbers of the training images, in the order the training steps met them."""
    numbers = []
    train_step = ConvNextTrainer.training_step

    def recording_step(self, model, inputs, *args, **kwargs):
        mean, std = self.processing_class.image_mean[0], self.processing_class.image_std[0]
        grey = (inputs["pixel_values"][:, 0, 0, 0] * std + mean) * 255
        numbers.extend(round(value / GREY_STEP) for value in grey.tolist())
        return train_step(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(ConvNextTrainer, "training_step", recording_step)
    return numbers


@pytest.mark.parametrize("write_shards", [write_parquet_shards, write_webdataset_shards], ids=["parquet", "webdataset"])
def test_one_epoch_of_steps_uses_every_training_sample_once(write_shards, tmp_path, seen):
    folder = write_shards(tmp_path / "shards")
    steps = NUM_TRAIN // BATCH  # one epoch: two workers, two shards of eight each, whole batches
    run(parse_args(streaming_args(folder, tmp_path / "out", "--max_steps", str(steps), "-j", "2")))
    assert sorted(seen) == list(range(NUM_TRAIN)), "every training sample once, across both loader workers"
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert report["label_names"] == (["even", "odd"] if "parquet" in write_shards.__name__ else ["0", "1"])
    assert np.array(report["confusion_matrix"]).sum(axis=1).tolist() == [4, 3], "validation scored once, streamed"
    card = (tmp_path / "out" / "README.md").read_text()
    assert "streamed training images, 7 validation images" in card


class StopAt(TrainerCallback):
    """Ends training after `step` (its checkpoint written first), as an interruption would."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_save, control.should_training_stop = True, True
        return control


def test_an_interrupted_run_resumes_mid_epoch_with_the_same_samples(tmp_path, seen):
    folder = write_parquet_shards(tmp_path / "shards")
    # Twelve steps: one epoch and a half, with workers taking turns; stopped after step 5 of the first epoch.
    flags = ("--max_steps", "12", "-j", "2", "--save_steps", "5", "--eval_strategy", "no")
    run(parse_args(streaming_args(folder, tmp_path / "whole", *flags)))
    whole = list(seen)
    seen.clear()
    run(parse_args(streaming_args(folder, tmp_path / "parts", *flags)), callbacks=[StopAt(5)])
    first = list(seen)
    seen.clear()
    run(parse_args(streaming_args(folder, tmp_path / "parts", *flags, "--resume_from_checkpoint", "last")))
    assert len(first) == 5 * BATCH and len(whole) == 12 * BATCH
    assert first + seen == whole, "the resumed run continues where the interrupted one stopped, in the same order"
    assert sorted(whole[: NUM_TRAIN]) == list(range(NUM_TRAIN)), "the first epoch covers every sample once"


def test_resuming_does_not_decode_the_samples_already_trained_on():
    stream = datasets.Dataset.from_dict({"image": list(range(10)), "label": [0] * 10}).to_iterable_dataset()
    decoded = []

    def transform(batch):
        decoded.extend(batch["image"])
        return {"pixel_values": batch["image"], "labels": batch["label"]}

    epoch = EpochStream(stream, batch_size=3, training=True, seed=0, buffer_size=4).with_transform(transform)
    order = [example["pixel_values"] for _, example in zip(range(10), epoch, strict=False)]
    decoded.clear()
    assert epoch.resume_after(2, workers=0) == 0
    resumed = [example["pixel_values"] for _, example in zip(range(4), epoch, strict=False)]
    assert resumed == order[6:10] and decoded == order[6:10], "the six skipped examples were never transformed"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ((), "--streaming reads data of unknown length, so epochs cannot set the run's length: give --max_steps N"),
        (("--max_steps", "2", "--train_dir", "."), "--streaming reads --dataset_name: a Hub id, or a folder of"),
        (("--max_steps", "2", "--task", "multi-label-classification"),
         "--streaming: multi-label-classification loads its data whole (streaming trains single-label image-class"),
    ],
    ids=["no --max_steps", "--train_dir", "multi-label"],
)
def test_streaming_refusals_are_one_line(extra, message, tmp_path):
    folder = write_parquet_shards(tmp_path / "shards")
    with pytest.raises(ValueError) as error:
        run(parse_args(streaming_args(folder, tmp_path / "out", *extra)))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


def test_an_unreadable_validation_image_is_left_out_of_the_scores_and_counted_once(tmp_path):
    folder = write_webdataset_shards(tmp_path / "shards", broken_validation=(2,))
    run(parse_args(streaming_args(folder, tmp_path / "out", "--max_steps", "2", "--on_bad_image", "skip")))
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert np.array(report["confusion_matrix"]).sum(axis=1).tolist() == [3, 3], "six validation images scored"
    assert report["unreadable_images"]["count"] == 1
    assert report["unreadable_images"]["first"][0].startswith("validation0002.png (")


@pytest.mark.slow
def test_two_processes_stream_disjoint_shares_and_score_validation_once(tmp_path):
    folder = write_webdataset_shards(tmp_path / "shards")
    (tmp_path / "driver.py").write_text(DRIVER)
    steps = NUM_TRAIN // (2 * BATCH)  # one epoch: each process reads two shards of eight
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(tmp_path / "driver.py"), str(tmp_path),
        *streaming_args(folder, tmp_path / "out", "--max_steps", str(steps), "--ddp_backend", "gloo", "-j", "1"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(convnext_hf.__file__)), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1"}  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-5000:]
    seen = [json.loads((tmp_path / f"seen-rank{rank}.json").read_text())["seen"] for rank in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == NUM_TRAIN // 2, "each process trains on its half"
    assert not set(seen[0]) & set(seen[1]), "the processes' shares are disjoint"
    assert sorted(seen[0] + seen[1]) == list(range(NUM_TRAIN)), "together they use every sample once"
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert np.array(report["confusion_matrix"]).sum(axis=1).tolist() == [4, 3], "validation scored once"


@pytest.mark.slow
def test_two_processes_skip_an_unreadable_validation_image_and_count_it_once(tmp_path):
    # Validation batches of two, split between the processes: the broken image's process must still send a full part.
    folder = write_webdataset_shards(tmp_path / "shards", broken_validation=(2,))
    (tmp_path / "driver.py").write_text(DRIVER)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(tmp_path / "driver.py"), str(tmp_path),
        *streaming_args(folder, tmp_path / "out", "--max_steps", "2", "--ddp_backend", "gloo", "-j", "1",
                        "--on_bad_image", "skip", "--eval_strategy", "steps", "--eval_steps", "1"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(convnext_hf.__file__)), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1"}  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-5000:]
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert np.array(report["confusion_matrix"]).sum(axis=1).tolist() == [3, 3], "the six readable images, once each"
    assert report["unreadable_images"]["count"] == 1, "one image, counted once across processes and evaluations"
    assert report["unreadable_images"]["first"][0].startswith("validation0002.png (")
