"""Feeding a run at scale: the folder listing, exact copies found once per listing, unreadable images in the loader,
`convnext-hf check`, and the default number of loader workers."""

import logging
import os
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import convnext_hf.train.data as train_data
from convnext_hf.cli import main as cli_main
from convnext_hf.cores import default_loader_workers
from convnext_hf.tasks.classification.data import collate, load_image_data
from convnext_hf.train.arguments import DataArguments
from convnext_hf.train.data import UNREADABLE, exact_copy_digests, file_copy_digests, read_images


def _image(path, value, side=16):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(value).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
    return path


def test_copies_are_found_by_size_and_last_bytes_then_hashed(tmp_path):
    original = tmp_path / "a.bin"
    original.write_bytes(bytes(range(256)) * 40)
    copy = tmp_path / "copy.bin"
    copy.write_bytes(original.read_bytes())
    same_size_other_end = tmp_path / "b.bin"
    same_size_other_end.write_bytes(original.read_bytes()[:-1] + b"\x01")
    same_end_other_start = tmp_path / "c.bin"
    same_end_other_start.write_bytes(b"\x07" + original.read_bytes()[1:])
    other_size = tmp_path / "d.bin"
    other_size.write_bytes(b"small")
    paths = [str(path) for path in (original, copy, same_size_other_end, same_end_other_start, other_size)]
    digests = file_copy_digests(paths)
    assert digests[paths[0]] == digests[paths[1]] and len(digests[paths[0]]) == 64, "copies share their SHA-256"
    assert len({digests[path] for path in paths}) == 4
    assert digests[paths[2]] == f"file:{paths[2]}", "a file that no other matches in size and end is not hashed"
    assert digests[paths[3]] not in (digests[paths[0]], f"file:{paths[3]}"), "same size and end: hashed, different"
    assert digests[paths[4]] == f"file:{paths[4]}"


def test_the_copy_search_is_remembered_per_listing(tmp_path, monkeypatch):
    folder = tmp_path / "images"
    first = _image(folder / "a" / "1.png", 1)
    (folder / "a" / "2.png").write_bytes(first.read_bytes())
    _image(folder / "b" / "3.png", 3)
    args = DataArguments(train_dir=str(folder), train_val_split=0.0)
    cache = str(tmp_path / "cache")
    data = load_image_data(args, seed=0, cache_dir=cache)
    assert len(data.train) == 2 and any("1 repeated training image" in note for note in data.notes)

    def no_reading(*args, **kwargs):
        raise AssertionError("a second run on the same files reads none of them for the copy search")

    monkeypatch.setattr(train_data, "_tail", no_reading)
    monkeypatch.setattr(train_data, "_digest", no_reading)
    again = load_image_data(args, seed=0, cache_dir=cache)
    assert again.notes == data.notes
    # A changed file changes the listing: searched again.
    _image(folder / "b" / "3.png", 4)
    os.utime(folder / "b" / "3.png", ns=(1, 1))
    with pytest.raises(AssertionError, match="reads none of them"):
        exact_copy_digests([again.train], cache)


def test_folder_listing_takes_top_folders_as_classes_and_skips_hidden_files(tmp_path):
    _image(tmp_path / "cat" / "1.png", 1)
    _image(tmp_path / "cat" / "deeper" / "2.jpg", 2)
    _image(tmp_path / "dog" / "3.png", 3)
    _image(tmp_path / "dog" / ".hidden.png", 5)
    _image(tmp_path / ".trash" / "4.png", 4)
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    data = load_image_data(DataArguments(train_dir=str(tmp_path), train_val_split=0.0), seed=0,
                           cache_dir=str(tmp_path / ".cache"))  # fmt: skip
    assert data.label_names == ["cat", "dog"]
    rows = sorted(zip(train_data.image_paths(data.train), data.train["label"], strict=True))
    assert [(os.path.relpath(path, tmp_path), label) for path, label in rows] == [
        ("cat/1.png", 0), (os.path.join("cat", "deeper", "2.jpg"), 0), ("dog/3.png", 1)
    ]  # fmt: skip


def test_the_loader_names_unreadable_images_and_collate_leaves_them_out(tmp_path):
    good = _image(tmp_path / "good.png", 1)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a JPEG")
    images, problems = read_images([{"path": str(good), "bytes": None}, {"path": str(broken), "bytes": None}])
    assert images[0].size == (16, 16) and images[1] is None
    assert problems[0] == "" and problems[1].startswith(f"{broken} (") and problems[1].endswith(")")
    import torch

    batch = collate([
        {"pixel_values": torch.zeros(3, 4, 4), "labels": 1, UNREADABLE: ""},
        {"pixel_values": None, "labels": 0, UNREADABLE: problems[1]},
    ])  # fmt: skip
    assert batch["pixel_values"].shape == (1, 3, 4, 4) and batch["labels"].tolist() == [1]
    assert batch[UNREADABLE] == [problems[1]]


def test_check_decodes_every_image_and_lists_the_unreadable(tmp_path, capsys):
    _image(tmp_path / "data" / "cat" / "1.png", 1)
    _image(tmp_path / "data" / "dog" / "2.png", 2)
    common = ["--cache_dir", str(tmp_path / "cache"), "--num_proc", "1"]
    assert cli_main(["check", "--train_dir", str(tmp_path / "data"), *common]) == 0
    assert "training: 2 image(s), 0 unreadable" in capsys.readouterr().out
    (tmp_path / "data" / "dog" / "3.png").write_bytes(b"\x89PNG truncated")
    assert cli_main(["check", "--train_dir", str(tmp_path / "data"), *common]) == 1
    out = capsys.readouterr().out
    assert "training: 3 image(s), 1 unreadable" in out and f"  {tmp_path / 'data' / 'dog' / '3.png'} (" in out


def test_loader_workers_default_to_the_process_share_of_the_cores_but_one(monkeypatch, caplog):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert default_loader_workers(None) == 7
    assert default_loader_workers(3) == 3, "no more workers than batches in an epoch"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert default_loader_workers(None) == 0

    from convnext_hf.train.run import _set_loader_workers

    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    training = SimpleNamespace(per_device_train_batch_size=8, dataloader_num_workers=0,
                               dataloader_persistent_workers=False, dataloader_prefetch_factor=None)  # fmt: skip
    with caplog.at_level(logging.INFO):
        _set_loader_workers(SimpleNamespace(training=training, workers_given=False), 1000)
    assert training.dataloader_num_workers == 15 and training.dataloader_persistent_workers
    assert ("Loading images in 15 worker process(es) per training process, each 2 batches ahead (16 CPU core(s) "
            "available, one left for training") in caplog.text


def test_validation_batches_keep_the_slot_of_an_unreadable_image_out_of_the_scores():
    import torch
    from transformers.trainer_utils import EvalPrediction

    from convnext_hf.train.data import KEEP_SLOTS, tensor_names
    from convnext_hf.train.trainer import _without_placeholders

    name = "images/bad é.jpg (cannot identify image file)"
    batch = collate([
        {"pixel_values": torch.ones(3, 2, 2), "labels": [1.0, 0.0], UNREADABLE: "", KEEP_SLOTS: True},
        {"pixel_values": None, "labels": [0.0, 1.0], UNREADABLE: name, KEEP_SLOTS: True},
        {"pixel_values": torch.ones(3, 2, 2), "labels": [0.0, 1.0], UNREADABLE: "", KEEP_SLOTS: True},
    ])  # fmt: skip
    assert batch["pixel_values"].shape == (3, 3, 2, 2) and batch["pixel_values"][1].abs().sum() == 0
    assert batch["labels"].tolist() == [[1.0, 0.0], [-100.0, -100.0], [0.0, 1.0]]
    assert batch[UNREADABLE].shape == (3, 512) and tensor_names(batch[UNREADABLE]) == [name]
    unread = collate([{"pixel_values": None, "labels": 0, UNREADABLE: name, KEEP_SLOTS: True}])
    assert "pixel_values" not in unread and tensor_names(unread[UNREADABLE]) == [name], "no image: the Trainer stops"
    kept = _without_placeholders(EvalPrediction(predictions=np.arange(6).reshape(3, 2),
                                                label_ids=batch["labels"].numpy()))  # fmt: skip
    assert kept.predictions.tolist() == [[0, 1], [4, 5]] and kept.label_ids.tolist() == [[1, 0], [0, 1]]
    single = _without_placeholders(EvalPrediction(predictions=np.eye(3), label_ids=np.array([2, -100, 0])))
    assert single.label_ids.tolist() == [2, 0] and single.predictions.tolist() == [[1, 0, 0], [0, 0, 1]]


@pytest.mark.parametrize(("policy", "message"), [("error", "Unreadable image a.png (truncated): remove or replace it"),
                                                  ("skip", "No image of a batch could be read (1: a.png (truncated))")])
def test_the_trainer_reads_the_names_of_a_validation_batch(policy, message):
    from convnext_hf.errors import UserInputError
    from convnext_hf.train.data import names_tensor
    from convnext_hf.train.trainer import ConvNextTrainer

    trainer = SimpleNamespace(on_bad_image=policy, unreadable={})
    with pytest.raises(UserInputError) as error:
        ConvNextTrainer._prepare_inputs(trainer, {UNREADABLE: names_tensor(["", "a.png (truncated)"])})
    assert str(error.value).startswith(message)
    assert trainer.unreadable == ({"a.png (truncated)": None} if policy == "skip" else {})
