"""The saved-folder gate (`model_folder`) and finiteness (`finite`): every command and API that reads a saved folder
refuses a damaged one in one line naming the folder, the file or key and the fix; no model with NaN weights is loaded,
resumed from, or saved; a NaN training loss stops the run with exit 2."""

import json
import math

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

from convnext_hf import ConvNextConfig, ConvNextForImageClassification, load_backbone_weights
from convnext_hf.cli import main as cli_main
from convnext_hf.errors import UserInputError
from convnext_hf.finite import check_before_saving, non_finite_tensors
from convnext_hf.image_processing_convnext import ConvNextHFImageProcessor
from convnext_hf.model_folder import load_image_processor, load_model_folder
from convnext_hf.tasks.detection.model import DETECTORS, new_detector
from convnext_hf.tasks.segmentation.model import _new_upernet, build_segmentation_model
from convnext_hf.train import parse_args, run
from convnext_hf.train.arguments import ModelArguments
from convnext_hf.train.ema import ModelEma
from convnext_hf.train.loss_guard import NonFiniteLossStop
from convnext_hf.train.model import config_label_maps
from convnext_hf.transformers_format import save_as_transformers

TINY = {"hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1]}


def classifier_folder(path, num_labels=2):
    """A tiny classifier folder as save_pretrained writes it, with its processor."""
    torch.manual_seed(0)
    ConvNextForImageClassification(ConvNextConfig(**TINY, num_labels=num_labels)).save_pretrained(path)
    ConvNextHFImageProcessor(size={"shortest_edge": 32}).save_pretrained(path)
    return path


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def _shard(folder, shards=2):
    """Split model.safetensors into `shards` files with an index, as a sharded save_pretrained writes them."""
    tensors = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    names = sorted(tensors)
    weight_map = {}
    for index in range(shards):
        shard = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        part = {name: tensors[name] for name in names[index::shards]}
        save_file(part, folder / shard)
        weight_map.update(dict.fromkeys(part, shard))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def _poison(folder, name="classifier.weight", value=math.nan, dtype=None):
    tensors = load_file(folder / "model.safetensors")
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = value
    if dtype is not None:
        tensors[name] = tensors[name].to(dtype)
    save_file(tensors, folder / "model.safetensors")


def _truncate(folder):
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def _pickle(folder):
    tensors = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(tensors, folder / "pytorch_model.bin")


def _no_weight_map(folder):
    _shard(folder)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}}))


def _stale_shard(folder):
    _shard(folder)
    first = load_file(folder / "model-00001-of-00002.safetensors")
    zeros = {name: torch.zeros_like(value) for name, value in first.items()}
    save_file(zeros, folder / "model-00003-of-00003.safetensors")


# damage -> (what it does to the folder, the fragment the refusal must hold)
DAMAGES = {
    "no weights": (lambda f: (f / "model.safetensors").unlink(), "it has no model.safetensors"),
    "truncated weights": (_truncate, "model.safetensors is not a readable safetensors file, truncated or damaged"),
    "no processor": (lambda f: (f / "preprocessor_config.json").unlink(), "it has no preprocessor_config.json"),
    "id2label vs head": (lambda f: _edit_config(f, id2label={"0": "a", "1": "b", "2": "c"}, label2id=None),
                         "config.json's id2label names 3 classes, but classifier.bias holds 2"),
    "widths": (lambda f: _edit_config(f, hidden_sizes=[8, 16, 32, 48]), "of another shape"),
    "pickle": (_pickle, "its weights are in pytorch_model.bin, a pickle, which is not loaded"),
    "index without weight_map": (_no_weight_map, "has no `weight_map`"),
    "stale shard": (_stale_shard, "model-00003-of-00003.safetensors is not among the shards"),
    "NaN weight": (_poison, "1 tensor(s) hold NaN or infinite values (classifier.weight)"),
    "infinite weight": (lambda f: _poison(f, "convnext.embeddings.patch_embeddings.weight", math.inf),
                        "hold NaN or infinite values (convnext.embeddings.patch_embeddings.weight)"),
    "integer weight": (lambda f: _poison(f, value=3.0, dtype=torch.int64),
                       "weights stored as integers or booleans where the model has floats: classifier.weight (I64)"),
    # transformers would ask (on the terminal) whether to run the folder's code for a type it cannot build.
    "another model type": (lambda f: _edit_config(f, model_type="bert"),
                           "(config.json): it describes a 'bert' model, which AutoModelForImageClassification cannot"),
    "id2label keys": (lambda f: _edit_config(f, id2label={"a": "x", "b": "y"}, label2id=None),
                      'id2label.a: "a" is not a class index (0, 1, ...)'),
}  # fmt: skip


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_folder_is_refused_by_the_loader_in_one_line(tmp_path, damage, monkeypatch):
    folder = classifier_folder(tmp_path / "model")
    edit, fragment = DAMAGES[damage]
    edit(folder)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("a pickle was opened")

    monkeypatch.setattr(torch, "load", no_unpickling)
    monkeypatch.setattr("builtins.input", no_unpickling)
    with pytest.raises(UserInputError) as caught:
        load_model_folder(transformers.AutoModelForImageClassification, folder, needs_processor=True)
    message = str(caught.value)
    assert message.startswith(f"--model {folder}"), message
    assert fragment in message and "\n" not in message, message


# preprocessor_config.json edit -> the fragment of the refusal
PROCESSOR_EDITS = {
    "rescale 1e308": ({"rescale_factor": 1e308}, "rescale_factor 1e+308 is out of range: it takes a factor in (0, 1]"),
    "do_resize a string": ({"do_resize": "no"}, 'do_resize "no" is out of range: it takes true or false'),
    "unknown class": ({"image_processor_type": "BogusProcessor"},
                      'image_processor_type "BogusProcessor" is no image processor transformers or convnext-hf has'),
}  # fmt: skip


@pytest.mark.parametrize("edit", PROCESSOR_EDITS)
def test_a_hostile_processor_file_is_refused_by_the_loader_in_one_line(tmp_path, edit, monkeypatch):
    folder = classifier_folder(tmp_path / "model")
    changes, fragment = PROCESSOR_EDITS[edit]
    settings = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(json.dumps({**settings, **changes}))
    monkeypatch.setattr("builtins.input", lambda *args: pytest.fail("asked to run the folder's code"))
    with pytest.raises(UserInputError) as caught:
        load_image_processor(folder)
    assert fragment in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


def test_a_sharded_folder_loads_the_shards_it_names(tmp_path):
    folder = classifier_folder(tmp_path / "model")
    expected = load_file(folder / "model.safetensors")
    _shard(folder)
    model = load_model_folder(transformers.AutoModelForImageClassification, folder, needs_processor=True)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0)


@pytest.mark.parametrize("damage", ["pickle", "NaN weight", "stale shard", "truncated weights"])
def test_evaluate_and_export_refuse_a_damaged_folder_with_exit_2(tmp_path, capsys, damage):
    folder = classifier_folder(tmp_path / "model")
    DAMAGES[damage][0](folder)
    images = tmp_path / "images"
    for name in ("a", "b"):
        (images / name).mkdir(parents=True)
        Image.new("RGB", (8, 8), (9, 9, 9)).save(images / name / "0.png")
    evaluate = ["evaluate", "--model", str(folder), "--validation_dir", str(images), "--output_dir",
                str(tmp_path / "scores"), "--cache_dir", str(tmp_path / "cache")]  # fmt: skip
    export = ["export", "onnx", "--model", str(folder), "--output_dir", str(tmp_path / "onnx")]
    capsys.readouterr()
    for argv in (evaluate, export):
        assert cli_main(argv) == 2
        error = capsys.readouterr().err.strip()
        assert DAMAGES[damage][1] in error and "Traceback" not in error, error
        assert len(error.splitlines()) == 1, error
    assert not (tmp_path / "scores").exists() and not (tmp_path / "onnx").exists()


def test_load_backbone_weights_refuses_nan_and_stale_shards(tmp_path):
    upernet = _new_upernet(ConvNextConfig(**TINY, out_indices=[1, 2, 3, 4]), ["a", "b"], {})
    for damage in ("NaN weight", "stale shard", "pickle"):
        folder = classifier_folder(tmp_path / damage)
        DAMAGES[damage][0](folder)
        with pytest.raises(UserInputError, match=f"load_backbone_weights: {folder}: .*") as caught:
            load_backbone_weights(upernet, folder)
        assert DAMAGES[damage][1] in str(caught.value)


def _upernet_folder(path, labels=("a", "b")):
    torch.manual_seed(0)
    _new_upernet(ConvNextConfig(**TINY, out_indices=[1, 2, 3, 4]), list(labels), {}).save_pretrained(path)
    return path


def test_an_upernet_whose_config_no_longer_fits_is_refused_not_reinitialised(tmp_path):
    folder = _upernet_folder(tmp_path / "upernet")
    args = ModelArguments(model_name_or_path=str(folder))
    # New classes: the 1×1 classifiers alone are made anew.
    model = build_segmentation_model(args, ["a", "b", "c"])
    assert model.decode_head.classifier.out_channels == 3
    saved = load_file(folder / "model.safetensors")
    kept = "decode_head.fpn_bottleneck.conv.weight"
    torch.testing.assert_close(model.state_dict()[kept], saved[kept])
    config = json.loads((folder / "config.json").read_text())
    _edit_config(folder, backbone_config={**config["backbone_config"], "hidden_sizes": [8, 16, 32, 48]})
    with pytest.raises(UserInputError, match=f"--model {folder}: its weights do not fit its config.json .*shape"):
        build_segmentation_model(args, ["a", "b"])


def test_fine_tuning_a_classifier_folder_with_new_classes_makes_only_the_head_anew(tmp_path):
    from convnext_hf.tasks.classification.model import build_model

    folder = classifier_folder(tmp_path / "model")
    model = build_model(ModelArguments(model_name_or_path=str(folder)), ["a", "b", "c"])
    assert model.classifier.out_features == 3
    _edit_config(folder, hidden_sizes=[8, 16, 32, 48])
    with pytest.raises(UserInputError, match="of another shape"):
        build_model(ModelArguments(model_name_or_path=str(folder)), ["a", "b", "c"])


# --- finiteness before saving, and of the training loss ---------------------------------------------------------


def test_every_save_path_refuses_non_finite_weights(tmp_path):
    model = ConvNextForImageClassification(ConvNextConfig(**TINY, num_labels=2))
    assert non_finite_tensors(model) == []
    with torch.no_grad():
        model.classifier.bias[0] = math.nan
    assert non_finite_tensors(model) == ["classifier.bias"]
    refusal = r"Not saving .*out: 1 tensor\(s\) hold NaN or infinite values \(classifier.bias\)"
    with pytest.raises(UserInputError, match=refusal):
        check_before_saving(model, tmp_path / "out")
    with pytest.raises(UserInputError, match="classifier.bias"):
        save_as_transformers(model, tmp_path / "builtin")
    ema = ModelEma(model, decay=0.5)
    with pytest.raises(UserInputError, match="ema.safetensors: 1 tensor"):
        ema.save(str(tmp_path))
    assert not (tmp_path / "builtin").exists() and not (tmp_path / "ema.safetensors").exists()


def test_non_finite_tensors_tells_overflowing_sums_from_nan_and_infinity():
    tensors = {
        "finite": torch.randn(100), "huge but finite": torch.full((3,), 3e38),
        "huge bfloat16": torch.full((3,), 3e38, dtype=torch.bfloat16), "nan": torch.tensor([1.0, math.nan]),
        "both infinities": torch.tensor([math.inf, -math.inf]),
        "half inf": torch.tensor([math.inf], dtype=torch.float16), "integers": torch.tensor([1, 2]),
    }  # fmt: skip
    assert non_finite_tensors(tensors) == ["nan", "both infinities", "half inf"]


def test_the_loss_guard_stops_before_the_step_on_a_nan_loss():
    guard = NonFiniteLossStop()
    state = transformers.TrainerState(global_step=4)
    guard.observe(torch.tensor(1.5))
    guard.on_pre_optimizer_step(None, state, None)
    guard.observe(torch.tensor(0.5))
    guard.observe(torch.tensor(math.inf))  # one micro-batch of a gradient-accumulation step
    with pytest.raises(UserInputError, match="Training stopped at step 5: the training loss is NaN or infinite"):
        guard.on_pre_optimizer_step(None, state, None)
    guard.on_pre_optimizer_step(None, state, None)  # the next step starts afresh


def _images(root):
    rng = np.random.default_rng(0)
    for index, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for number in range(4):
            pixels = rng.integers(0, 60, size=(16, 16, 3)) + 120 * index
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{number}.png")
    return root


def _train_argv(tmp_path, *extra):
    return ["--train_dir", str(tmp_path / "images"), "--variant", "atto", "--config_overrides", json.dumps(TINY),
            "--image_size", "32", "--per_device_train_batch_size", "4", "--output_dir", str(tmp_path / "out"),
            "--cache_dir", str(tmp_path / "cache"), "--report_to", "none", "--plots", "false", "--train_val_split", "0",
            "--seed", "0", *extra]  # fmt: skip


class PoisonAt(TrainerCallback):
    """Turns a weight into NaN after `step` optimizer steps, as a diverging run would."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                model.classifier.weight[0, 0] = math.nan


def test_a_nan_training_loss_stops_the_run_and_saves_nothing(tmp_path):
    _images(tmp_path / "images")
    # The weight turned NaN after step 1 is caught at that step's end, before the NaN loss of step 2.
    expected = r"Training stopped at step 1: the optimizer step left 1 weight tensor\(s\) NaN or infinite \(classifier"
    with pytest.raises(UserInputError, match=expected):
        run(parse_args(_train_argv(tmp_path, "--max_steps", "4", "--save_strategy", "no")), callbacks=[PoisonAt(1)])
    assert not (tmp_path / "out").exists()


def test_a_resume_checkpoint_is_checked_like_any_folder(tmp_path, capsys):
    _images(tmp_path / "images")
    argv = _train_argv(tmp_path, "--max_steps", "2", "--save_strategy", "steps", "--save_steps", "1")
    run(parse_args(argv))
    checkpoint = tmp_path / "out" / "checkpoint-1"
    original = load_file(checkpoint / "model.safetensors")
    state = json.loads((checkpoint / "trainer_state.json").read_text())

    def refusal(*extra):
        capsys.readouterr()
        assert cli_main(["train", *argv, "--overwrite", *extra, "--resume_from_checkpoint", str(checkpoint)]) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and "Traceback" not in error, error
        return error

    missing = {name: value for name, value in original.items() if name != "classifier.bias"}
    save_file(missing, checkpoint / "model.safetensors")
    assert "1 missing; first: classifier.bias is not in the checkpoint" in refusal()
    poisoned = dict(original, **{"classifier.bias": torch.full_like(original["classifier.bias"], math.nan)})
    save_file(poisoned, checkpoint / "model.safetensors")
    assert "model.safetensors: 1 tensor(s) hold NaN or infinite values (classifier.bias)" in refusal()
    save_file(original, checkpoint / "model.safetensors")
    (checkpoint / "trainer_state.json").write_text(json.dumps({**state, "global_step": 10**9}))
    assert "says global_step 1000000000, beyond this run's last step (2 at most" in refusal()


@pytest.mark.parametrize("name", DETECTORS)
def test_a_detector_folder_fine_tunes_on_new_classes_with_only_its_class_heads_new(tmp_path, name):
    torch.manual_seed(0)
    backbone = ConvNextConfig(**TINY)
    head = {"num_queries": 10, **({"num_denoising": 5} if name in ("rt_detr", "rt_detr_v2", "d_fine") else {})}
    new_detector(name, backbone, ["a", "b", "c"], head).save_pretrained(tmp_path)
    model_class = getattr(transformers, DETECTORS[name].model_class)
    saved = load_model_folder(model_class, tmp_path).state_dict()
    config = transformers.AutoConfig.from_pretrained(tmp_path)
    config.update(config_label_maps(["a", "b", "c", "d"]))
    state = load_model_folder(model_class, tmp_path, config=config, class_counts=(3, 4)).state_dict()
    new = sorted(key for key in state if state[key].shape != saved[key].shape)
    assert new and all("class" in key or "score" in key for key in new), new
    for key in set(state) - set(new):
        torch.testing.assert_close(state[key], saved[key], rtol=0, atol=0)
    config.update(config_label_maps(["a", "b", "c", "d"]) | {"d_model": config.d_model * 2})
    with pytest.raises(UserInputError, match="its weights do not fit its config.json"):
        load_model_folder(model_class, tmp_path, config=config, class_counts=(3, 4))


def test_an_optimizer_step_that_leaves_a_weight_non_finite_stops_the_run():
    from types import SimpleNamespace

    model = ConvNextForImageClassification(ConvNextConfig(**TINY, num_labels=2))
    state = SimpleNamespace(global_step=3)
    assert NonFiniteLossStop().on_step_end(None, state, None, model=model) is None
    with torch.no_grad():
        model.classifier.weight[0, 0] = math.inf
        model.convnext.embeddings.patch_embeddings.weight[0, 0, 0, 0] = math.nan
    with pytest.raises(UserInputError) as refusal:
        NonFiniteLossStop().on_step_end(None, state, None, model=model)
    assert str(refusal.value).startswith(
        "Training stopped at step 3: the optimizer step left 2 weight tensor(s) NaN or infinite "
        "(convnext.embeddings.patch_embeddings.weight, classifier.weight). Lower --learning_rate"
    ), str(refusal.value)
