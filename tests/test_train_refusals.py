"""Runs that would mislead are refused by name before any work: zero training steps, configuration overrides the
model does not have, processes that would not train together, evaluation of a folder that is not a classifier."""

import importlib.metadata
import json

import numpy as np
import pytest
from PIL import Image

from convnext_hf import ConvNextConfig, ConvNextModel
from convnext_hf.cli import main as cli_main
from convnext_hf.errors import UserInputError
from convnext_hf.image_processing_convnext import ConvNextHFImageProcessor
from convnext_hf.modeling_convnext import ConvNextBackbone, ConvNextForImageClassification
from convnext_hf.train import parse_args, run
from convnext_hf.train.arguments import launched_on_cpu_only

TINY = {"hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1]}
TINY_JSON = json.dumps(TINY)


def _argv(tmp_path, *extra, overrides=TINY_JSON):
    """A run whose training folder does not exist: a refusal that names something else came before reading it."""
    return [
        "--train_dir", str(tmp_path / "never-read"), "--variant", "atto", "--config_overrides", overrides,
        "--output_dir", str(tmp_path / "out"), "--report_to", "none", *extra,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--num_train_epochs", "-1"], "--num_train_epochs -1 and no --max_steps train zero steps"),
        (["--num_train_epochs", "0"], "--num_train_epochs 0 and no --max_steps train zero steps"),
        (["--num_train_epochs", "0", "--max_steps", "0"], "--num_train_epochs 0 and --max_steps 0 train zero steps"),
    ],
)
def test_a_run_of_zero_steps_is_refused_before_reading_data(tmp_path, flags, message):
    with pytest.raises(UserInputError) as error:
        run(parse_args(_argv(tmp_path, *flags)))
    assert message in str(error.value)
    assert "give a positive --num_train_epochs or --max_steps" in str(error.value)
    assert not (tmp_path / "out").exists()


def test_a_positive_max_steps_wins_over_negative_epochs(tmp_path):
    # The Trainer trains --max_steps whatever the epochs say: not refused for length (the missing folder stops it).
    with pytest.raises(UserInputError, match="never-read does not exist"):
        run(parse_args(_argv(tmp_path, "--num_train_epochs", "-1", "--max_steps", "3")))


def test_zero_steps_through_the_cli_is_one_line_and_exit_2(tmp_path, capsys):
    assert cli_main(["train", *_argv(tmp_path, "--num_train_epochs", "-1")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("convnext-hf train: error: --num_train_epochs -1")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hiden_sizes": [8, 16, 32, 64]}, "configuration has no 'hiden_sizes'; did you mean 'hidden_sizes'?"),
        ({"drop_path": 0.1}, "has no 'drop_path'; did you mean 'drop_path_rate'?"),
        ({"hidden_sizes": 64}, "'hidden_sizes' is 64; it takes a list of integers."),
        ({"depths": ["1", "1", "1", "1"]}, "'depths' is [\"1\", \"1\", \"1\", \"1\"]; it takes a list of integers."),
        ({"drop_path_rate": "0.1"}, "'drop_path_rate' is \"0.1\"; it takes a number."),
        ({"use_grn": 1}, "'use_grn' is 1; it takes true or false."),
        ({"head_hidden_size": "wide"}, "'head_hidden_size' is \"wide\"; it takes an integer or null."),
        ({"num_labels": 10}, "sets 'num_labels', which the run sets itself from the data's classes"),
        ({"hidden_sizes": [8, 16], "depths": [1, 1, 1]}, "--variant atto with --config_overrides: hidden_sizes [8,"),
    ],
)
def test_config_overrides_the_model_cannot_take_are_refused_by_name(tmp_path, overrides, message):
    # The last case is only found when the configuration is built, after the data: here a folder of two classes.
    _write_images(tmp_path / "never-read")
    with pytest.raises(UserInputError) as error:
        run(parse_args(_argv(tmp_path, "--cache_dir", str(tmp_path / "cache"), overrides=json.dumps(overrides))))
    assert message in str(error.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[8, 16, 32, 64]", "--config_overrides must be a JSON object of settings"),
        ('"hidden_sizes"', "--config_overrides must be a JSON object of settings"),
        ("{hidden_sizes: [8]}", "--config_overrides must be a JSON object, e.g."),
    ],
)
def test_config_overrides_that_are_not_a_json_object_are_refused(tmp_path, text, message):
    with pytest.raises(UserInputError, match="--config_overrides must be a JSON object") as error:
        run(parse_args(_argv(tmp_path, overrides=text)))
    assert message in str(error.value)


def test_segmentation_head_settings_are_checked_against_upernet(tmp_path):
    argv = _argv(tmp_path, "--task", "semantic-segmentation", overrides=json.dumps({"pool_scale": [1, 2]}))
    with pytest.raises(UserInputError, match="no 'pool_scale'; did you mean 'pool_scales'"):
        run(parse_args(argv))
    argv = _argv(tmp_path, "--task", "semantic-segmentation", overrides=json.dumps({"auxiliary_channels": 1.5}))
    with pytest.raises(UserInputError, match="'auxiliary_channels' is 1.5; it takes an integer"):
        run(parse_args(argv))


def test_several_processes_without_an_accelerator_default_to_cpu_training(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr("torch.accelerator.is_available", lambda: False)
    assert launched_on_cpu_only()
    monkeypatch.setattr("torch.accelerator.is_available", lambda: True)
    assert not launched_on_cpu_only()
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setattr("torch.accelerator.is_available", lambda: False)
    assert not launched_on_cpu_only()


def _write_images(root, per_class=2, first_value=0):
    """Two classes of flat grey images, each of its own grey level."""
    for index, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for number in range(per_class):
            grey = np.full((8, 8, 3), 60 * index + number + first_value, dtype=np.uint8)
            Image.fromarray(grey).save(root / name / f"{number}.png")


def test_dropping_the_only_batch_is_refused(tmp_path):
    _write_images(tmp_path / "never-read")
    argv = _argv(tmp_path, "--per_device_train_batch_size", "8", "--dataloader_drop_last", "--train_val_split", "0",
                 "--cache_dir", str(tmp_path / "cache"))  # fmt: skip
    with pytest.raises(UserInputError) as error:
        run(parse_args(argv))
    assert "--dataloader_drop_last drops every batch: 4 training image(s) do not fill one batch of 8" in str(
        error.value
    )


@pytest.mark.parametrize(
    ("flags", "named"),
    [(["--batch_eval_metrics"], "--batch_eval_metrics"), (["--eval_do_concat_batches", "false"],
                                                           "--eval_do_concat_batches false")],
)
def test_evaluation_modes_that_would_score_part_of_the_images_are_refused(tmp_path, flags, named):
    with pytest.raises(UserInputError, match=f"^{named}: the metrics .* are computed over all the validation"):
        run(parse_args(_argv(tmp_path, *flags)))


def test_dropping_the_last_training_batch_still_scores_every_validation_image(tmp_path):
    """--dataloader_drop_last is the Trainer's flag for every dataloader; evaluation keeps its short last batch."""
    _write_images(tmp_path / "never-read", per_class=4)
    _write_images(tmp_path / "val", per_class=3, first_value=7)
    argv = _argv(tmp_path, "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4",
                 "--dataloader_drop_last", "--max_steps", "1", "--validation_dir", str(tmp_path / "val"),
                 "--image_size", "32", "--plots", "false", "--cache_dir", str(tmp_path / "cache"))  # fmt: skip
    run(parse_args(argv))
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert np.array(report["confusion_matrix"]).sum(axis=1).tolist() == [3, 3]


@pytest.fixture(scope="module")
def headless_folders(tmp_path_factory):
    """Folders that hold no classifier: feature extraction and backbone, and a feature-extraction folder whose
    config.json does not name its architecture."""
    root = tmp_path_factory.mktemp("headless")
    config = ConvNextConfig(**TINY)
    for model_class, name in ((ConvNextModel, "features"), (ConvNextBackbone, "backbone")):
        model_class(config).save_pretrained(root / name)
        ConvNextHFImageProcessor(size={"shortest_edge": 32}).save_pretrained(root / name)
    ConvNextModel(config).save_pretrained(root / "unnamed")
    ConvNextHFImageProcessor(size={"shortest_edge": 32}).save_pretrained(root / "unnamed")
    saved = json.loads((root / "unnamed" / "config.json").read_text())
    del saved["architectures"]
    (root / "unnamed" / "config.json").write_text(json.dumps(saved))
    _write_images(root / "val")
    return root


@pytest.mark.parametrize(
    ("folder", "evidence"),
    [
        ("features", "its config.json names ConvNextModel (image-feature-extraction)"),
        ("backbone", "its config.json names ConvNextBackbone (image-feature-extraction)"),
        ("unnamed", "its weights have no classification head (classifier.bias, classifier.weight)"),
    ],
)
def test_evaluate_refuses_a_folder_without_a_classifier(headless_folders, tmp_path, capsys, folder, evidence):
    model = headless_folders / folder
    argv = ["evaluate", "--model", str(model), "--validation_dir", str(headless_folders / "val"),
            "--output_dir", str(tmp_path / "scores")]  # fmt: skip
    assert cli_main(argv) == 2
    error = capsys.readouterr().err
    assert f"{model} is not an image classifier: {evidence}, so it has no classes to score" in error
    assert "labels" not in error and "train images" not in error
    assert not (tmp_path / "scores").exists()


def test_push_to_hub_offline_or_without_a_token_is_refused_before_reading_data(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserInputError, match="--push_to_hub needs the network, but HF_HUB_OFFLINE is set"):
        run(parse_args(_argv(tmp_path, "--push_to_hub")))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(UserInputError, match="--push_to_hub needs a Hugging Face token with write access"):
        run(parse_args(_argv(tmp_path, "--push_to_hub")))
    assert not (tmp_path / "out").exists()


def test_a_hub_that_cannot_be_reached_stops_push_to_hub_before_training(tmp_path, monkeypatch):
    import huggingface_hub

    class Unreachable:
        def create_repo(self, *args, **kwargs):
            raise ConnectionError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_not_a_real_token")
    monkeypatch.setattr("transformers.trainer.hf_api", Unreachable)
    _write_images(tmp_path / "never-read")
    argv = _argv(tmp_path, "--push_to_hub", "--max_steps", "1", "--cache_dir", str(tmp_path / "cache"))
    with pytest.raises(UserInputError) as error:
        run(parse_args(argv))
    assert str(error.value).startswith(
        "--push_to_hub: creating the Hub repository failed before training: the Hub could not be reached"
    )
    assert not (tmp_path / "out" / "model.safetensors").exists()


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("convnext_atoo", "--model convnext_atoo is no folder, no preset (convnext_tiny, tiny...) and no Hub id "
         "(owner/name); did you mean convnext_atto?"),
        ("convnextv2_nanoo", "; did you mean convnextv2_nano?"),
        ("./no-such-folder", "--model ./no-such-folder does not exist"),
        ("someone/convnext-nowhere", "--model someone/convnext-nowhere cannot be loaded as a model"),
    ],
)  # fmt: skip
def test_a_model_that_names_nothing_is_refused_before_reading_data(tmp_path, monkeypatch, model, message):
    monkeypatch.chdir(tmp_path)
    argv = _argv(tmp_path, "--cache_dir", str(tmp_path / "cache"))
    argv[argv.index("--variant") : argv.index("--variant") + 2] = ["--model", model]
    with pytest.raises(UserInputError) as error:
        run(parse_args(argv))
    assert message in str(error.value)


def test_segmentation_images_without_masks_are_refused_by_that_before_the_class_names(tmp_path):
    argv = _argv(tmp_path, "--task", "semantic-segmentation")
    with pytest.raises(UserInputError, match="Segmentation needs the train masks: pass --train_mask_dir"):
        run(parse_args(argv))


def test_a_report_to_integration_that_is_not_installed_is_refused_before_reading_data(tmp_path, monkeypatch):
    monkeypatch.setattr("transformers.integrations.integration_utils.is_wandb_available", lambda: False)
    with pytest.raises(UserInputError, match="--report_to: WandbCallback requires wandb to be installed"):
        run(parse_args([*_argv(tmp_path), "--report_to", "wandb"]))


def test_a_trainer_flag_whose_package_is_missing_is_one_line(tmp_path, monkeypatch):
    from transformers import dependency_versions_check

    installed = dependency_versions_check.require_version

    def deepspeed_missing(requirement, hint=None):
        if requirement.startswith("deepspeed"):
            raise importlib.metadata.PackageNotFoundError(f"The '{requirement}' distribution was not found")
        return installed(requirement, hint)

    monkeypatch.setattr(dependency_versions_check, "require_version", deepspeed_missing)
    (tmp_path / "ds.json").write_text('{"zero_optimization": {"stage": 2}}')
    with pytest.raises(UserInputError) as error:
        parse_args([*_argv(tmp_path), "--deepspeed", str(tmp_path / "ds.json")])
    assert "The 'deepspeed" in str(error.value) and str(error.value).endswith("drop the flag that needs it.")


def test_fsdp_in_one_process_is_refused_before_reading_data(tmp_path):
    with pytest.raises(UserInputError, match="--fsdp shards the model across processes, but this run is one process"):
        run(parse_args(_argv(tmp_path, "--fsdp", "full_shard auto_wrap")))


def test_the_trainers_own_checks_of_its_flags_are_one_line(tmp_path):
    with pytest.raises(UserInputError) as error:
        parse_args(_argv(tmp_path, "--eval_strategy", "no", "--load_best_model_at_end"))
    assert "--load_best_model_at_end requires the save and eval strategy to match" in str(error.value)
    assert "\n" not in str(error.value)


# flags -> the one line's start. Every case is refused as the arguments are parsed or the task checks them, before
# the (missing) training folder is read and before anything is written.
FLAG_VALUES = {
    "learning_rate nan": (["--learning_rate", "nan"],
                          "--learning_rate nan is out of range: it takes a finite number > 0"),
    "learning_rate -1": (["--learning_rate", "-1"], "--learning_rate -1 is out of range"),
    "learning_rate inf": (["--learning_rate", "inf"], "--learning_rate inf is out of range"),
    "base_learning_rate 0": (["--base_learning_rate", "0"], "--base_learning_rate 0 is out of range"),
    "batch size 0": (["--per_device_train_batch_size", "0"],
                     "--per_device_train_batch_size 0 is out of range: it takes an integer from 1 to 65536"),
    "-b 0": (["-b", "0"], "--per_device_train_batch_size 0 is out of range"),
    "-b 10^11": (["-b", "100000000000"], "--per_device_train_batch_size 100000000000 is out of range"),
    "max_steps 10^12": (["--max_steps", "1000000000000"], "--max_steps 1000000000000 is out of range"),
    "workers 10^6": (["--dataloader_num_workers", "1000000"], "--dataloader_num_workers 1000000 is out of range"),
    "image_size 0": (["--image_size", "0"],
                     "--image_size 0 is out of range: it takes an integer from 1 to 4096 pixels"),
    "image_size 1e6": (["--image_size", "1000000"], "--image_size 1000000 is out of range"),
    "crop_pct 0": (["--crop_pct", "0"], "--crop_pct 0 is out of range: it takes a fraction in (0, 1]"),
    "crop_pct 2": (["--crop_pct", "2"], "--crop_pct 2 is out of range"),
    "drop_path_rate 2": (["--drop_path_rate", "2"], "--drop_path_rate 2 is out of range: it takes a rate in [0, 1)"),
    "drop_path_rate -0.1": (["--drop_path_rate", "-0.1"], "--drop_path_rate -0.1 is out of range"),
    "gradient_accumulation_steps 0": (["--gradient_accumulation_steps", "0"],
                                      "--gradient_accumulation_steps 0 is out of range"),
    "max_train_samples 0": (["--max_train_samples", "0"], "--max_train_samples 0 is out of range"),
    "seed -1": (["--seed", "-1"], "--seed -1 is out of range: it takes an integer from 0 to 4294967295"),
    "dataloader_num_workers -1": (["--dataloader_num_workers", "-1"], "--dataloader_num_workers -1 is out of range"),
    "head_init_scale nan": (["--head_init_scale", "nan"], "--head_init_scale nan is out of range"),
    "num_train_epochs nan": (["--num_train_epochs", "nan"], "--num_train_epochs nan is out of range"),
    "weight_decay nan": (["--weight_decay", "nan"], "--weight_decay nan is out of range"),
    "model_ema_decay 2": (["--model_ema", "--model_ema_decay", "2"],
                          "--model_ema_decay 2 is out of range: it takes a decay in (0, 1)"),
    "max_grad_norm nan": (["--max_grad_norm", "nan"], "--max_grad_norm nan is out of range"),
    "save_total_limit -1": (["--save_total_limit", "-1"],
                            "--save_total_limit -1 is out of range: it takes a number of checkpoints >= 0 (0 keeps"),
    "layer_decay 0": (["--layer_decay", "0"], "--layer_decay 0 is out of range: it takes a factor in (0, 1]"),
    "label_smoothing_factor 1": (["--label_smoothing_factor", "1"], "--label_smoothing_factor 1 is out of range"),
    "mixup_prob 2": (["--mixup_prob", "2"], "--mixup_prob 2 is out of range: it takes a probability from 0 to 1"),
    "rrc_ratio reversed": (["--rrc_ratio", "2", "1"], "--rrc_ratio 2 1 is out of range: it takes two aspect ratios"),
    "rand_augment m99": (["--rand_augment", "rand-m99"],
                         "--rand_augment rand-m99: magnitude 99 is out of range; it takes a magnitude from 0 to 10"),
    "rand_augment n0": (["--rand_augment", "rand-m9-n0"], "--rand_augment rand-m9-n0: num_ops 0 is out of range"),
    "rand_augment p2": (["--rand_augment", "rand-m9-p2"], "--rand_augment rand-m9-p2: probability 2 is out of range"),
    "rand_augment m twice": (["--rand_augment", "rand-m9-m5"], "--rand_augment rand-m9-m5: gives m twice"),
    "id2label for classification": (["--id2label", '["a", "b"]'],
                                    "--id2label: semantic-segmentation data (class names of mask ids, masks), which "
                                    "image-classification would ignore"),
    "id2label not JSON for classification": (["--id2label", "a,b"], "--id2label: semantic-segmentation data"),
    "mask folder for classification": (["--train_mask_dir", "masks"], "--train_mask_dir: semantic-segmentation data"),
}  # fmt: skip
SEGMENTATION = ["--task", "semantic-segmentation"]
ID2LABEL = {
    "not JSON": ("background,road", "--id2label must be a JSON object or file"),
    "not a map": ('"road"', "--id2label must map mask ids to class names (a JSON object or list), got '\"road\"'"),
    "keys not ids": ('{"a": "sky", "b": "road"}', "--id2label keys must be mask ids (0, 1, ...), got ['a', 'b']"),
    "a gap in the ids": ('{"0": "sky", "2": "road"}',
                         "--id2label must name every class id 0..n-1 once, got ids [0, 2]"),
    "a repeated name": ('{"0": "road", "1": "road"}', "--id2label names ['road'] more than once"),
    "an empty name": ('["sky", ""]', "--id2label gives id(s) [1] no name"),
    "a null name": ('{"0": "sky", "1": null}', "--id2label gives id(s) [1] no name"),
    "one class": ('["sky"]', "--id2label names 1 class; segmentation needs at least two"),
}  # fmt: skip
FLAG_VALUES.update({f"segmentation --id2label: {name}": ([*SEGMENTATION, "--id2label", value], message)
                    for name, (value, message) in ID2LABEL.items()})  # fmt: skip


@pytest.mark.parametrize("case", FLAG_VALUES)
def test_values_no_run_can_use_are_refused_before_any_work(tmp_path, capsys, case):
    flags, message = FLAG_VALUES[case]
    assert cli_main(["train", *_argv(tmp_path, *flags)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(f"convnext-hf train: error: {message}"), error
    assert sorted(path.name for path in tmp_path.iterdir()) == [], "nothing written"


def test_save_total_limit_0_keeps_every_checkpoint_as_transformers_reads_it(tmp_path):
    args = parse_args(_argv(tmp_path, "--save_total_limit", "0"))
    assert args.training.save_total_limit == 0


def test_a_refusal_after_the_trainer_started_leaves_no_output_folder(tmp_path, capsys):
    """The Trainer creates --output_dir (and its missing parents) as it starts; the layer grouping of a three-stage
    model is refused later, as the optimizer is built. Nothing of the run may stay."""
    _write_images(tmp_path / "never-read")
    three_stages = json.dumps({"hidden_sizes": [8, 16, 32], "depths": [1, 1, 1]})
    argv = _argv(tmp_path, "--layer_decay", "0.8", "--max_steps", "1", "--image_size", "32", "--train_val_split", "0",
                 "--cache_dir", str(tmp_path / "cache"), overrides=three_stages)  # fmt: skip
    argv[argv.index("--output_dir") + 1] = str(tmp_path / "runs" / "out")
    assert cli_main(["train", *argv]) == 2
    assert "layer_decay_type 'group' is the official 12-layer split" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cache", "never-read"]


def test_resuming_from_a_checkpoint_of_another_architecture_is_refused_by_name(tmp_path, capsys):
    _write_images(tmp_path / "never-read")
    checkpoint = tmp_path / "other" / "checkpoint-2"
    other = ConvNextConfig(hidden_sizes=[8, 16, 32, 48], depths=[1, 1, 1, 1], num_labels=2)
    ConvNextForImageClassification(other).save_pretrained(checkpoint)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 2, "log_history": []}))
    argv = _argv(tmp_path, "--resume_from_checkpoint", str(checkpoint), "--image_size", "32",
                 "--cache_dir", str(tmp_path / "cache"))  # fmt: skip
    assert cli_main(["train", *argv]) == 2
    error = capsys.readouterr().err.rpartition("convnext-hf train: error: ")[2]
    assert error.startswith(f"--resume_from_checkpoint: {checkpoint / 'model.safetensors'} holds the weights of "
                            "another model than the flags describe (14 tensor(s) of other shapes, 0 the model lacks, "
                            "0 missing; first: classifier.weight [2, 48] (the model's [2, 64])"), error  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_config_values_a_pretrained_model_cannot_take_are_one_line(tmp_path, capsys):
    """Overrides applied to a saved configuration are checked as a new configuration is."""
    _write_images(tmp_path / "never-read")
    model = tmp_path / "model"
    ConvNextForImageClassification(ConvNextConfig(**TINY, num_labels=2)).save_pretrained(model)
    ConvNextHFImageProcessor(size={"shortest_edge": 32}).save_pretrained(model)
    argv = _argv(tmp_path, "--cache_dir", str(tmp_path / "cache"), overrides=json.dumps({"layer_norm_eps": -1}))
    argv[argv.index("--variant"):argv.index("--variant") + 2] = ["--model_name_or_path", str(model)]
    assert cli_main(["train", *argv]) == 2
    error = capsys.readouterr().err.rpartition("convnext-hf train: error: ")[2]
    assert error == f"{model} with --config_overrides and the model flags: layer_norm_eps must be positive, got -1.\n"
    assert not (tmp_path / "out").exists()
