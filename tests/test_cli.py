"""One vocabulary across the commands: aliases, did-you-mean, the help (light, grouped), the run's results box,
bounded checkpoints, heads sized to their backbone, and no spurious output."""

import json
import logging
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

import convnext_hf
from convnext_hf import ConvNextConfig
from convnext_hf.cli import main as cli_main
from convnext_hf.configuration_convnext import VARIANTS
from convnext_hf.export.command import parse_args as parse_export_args
from convnext_hf.export.graph import TORCH_ONNX_REGISTRATION_LOGGER, quiet_torch_export
from convnext_hf.tasks.segmentation.model import OFFICIAL_HEAD, head_for
from convnext_hf.train import parse_args, run
from convnext_hf.train.arguments import ALIASES, SAVE_TOTAL_LIMIT, VARIANT_NAMES, build_parser, trainer_defaults
from convnext_hf.train.command import COMMON_TRAINER_FLAGS, short_help_parser
from convnext_hf.train.summary import RunSummary, summary_lines
from helpers import FIXTURES, run_convert

TINY_CONFIG = json.dumps({"hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1]})
COMMANDS = ("train", "evaluate", "demo", "export", "convert")


def _parsed(argv):
    """The parsed values of a train command line, as comparable dictionaries."""
    args = parse_args(argv)
    training = args.training.to_dict()
    training.pop("logging_dir", None)
    return vars(args.model), vars(args.data), vars(args.recipe), vars(args.output), training


def test_timm_and_older_spellings_parse_to_the_same_values(tmp_path):
    timm = [
        "--train_dir", "images", "--model", "convnext_tiny", "--epochs", "3", "--lr", "0.01", "-b", "16",
        "--weight-decay", "0.05", "--smoothing", "0.1", "--drop-path", "0.2", "--mixup", "0.8", "--cutmix", "1.0",
        "--model-ema", "--aa", "rand-m9-mstd0.5-inc1", "--reprob", "0.25", "--clip-grad", "5", "-j", "2",
        "--output", str(tmp_path / "out"), "--overwrite_output_dir",
    ]  # fmt: skip
    canonical = [
        "--train_dir", "images", "--variant", "tiny", "--num_train_epochs", "3", "--learning_rate", "0.01",
        "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "16", "--weight_decay", "0.05",
        "--label_smoothing_factor", "0.1", "--drop_path_rate", "0.2", "--mixup_alpha", "0.8", "--cutmix_alpha", "1.0",
        "--model_ema", "--rand_augment", "rand-m9-mstd0.5-inc1", "--random_erasing", "0.25", "--max_grad_norm", "5",
        "--dataloader_num_workers", "2", "--output_dir", str(tmp_path / "out"), "--overwrite",
    ]  # fmt: skip
    assert _parsed(timm) == _parsed(canonical)
    args = parse_args(timm)
    assert (args.model.variant, args.training.num_train_epochs, args.output.overwrite) == ("tiny", 3.0, True)


@pytest.mark.parametrize(
    "name, variant",
    [("convnext_atto", "atto"), ("convnextv2_nano", "v2-nano"), ("tiny", "tiny"),
     ("isotropic_small", "isotropic-small")],
)  # fmt: skip
def test_model_names_a_preset_variant(name, variant):
    args = parse_args(["--train_dir", "x", "--model", name])
    assert (args.model.variant, args.model.model_name_or_path) == (variant, None)


def test_model_names_a_folder_or_hub_id_even_when_a_preset_has_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").mkdir()
    for value in ("tiny", "facebook/convnext-tiny-224", "--model=my-folder"):
        argv = ["--train_dir", "x", *(["--model", value] if not value.startswith("--") else [value])]
        args = parse_args(argv)
        assert args.model.variant is None
        assert args.model.model_name_or_path == ("my-folder" if value.startswith("--") else value)
    legacy = parse_args(["--train_dir", "x", "--model_name_or_path", "some/id"])
    assert legacy.model.model_name_or_path == "some/id"


def test_batch_size_alias_leaves_an_explicit_eval_batch_alone():
    args = parse_args(["--train_dir", "x", "--batch_size", "12", "--per_device_eval_batch_size", "50"])
    assert (args.training.per_device_train_batch_size, args.training.per_device_eval_batch_size) == (12, 50)


@pytest.mark.parametrize(
    "argv, suggestion",
    [
        (["train", "--train_dir", "x", "--lerning_rate", "0.1"], "--lerning_rate; did you mean --learning_rate?"),
        (["train", "--train_dir", "x", "--learning", "0.1"], "--learning; did you mean --learning_rate?"),
        (["evaluate", "--modle", "m", "--output_dir", "o"], "--modle; did you mean --model?"),
        (["export", "onnx", "--modle", "m", "--output_dir", "o"], "--modle; did you mean --model?"),
        (["convert", "--checkpoint", "c", "--ouput_dir", "o"], "--ouput_dir; did you mean --output_dir?"),
        (["demo", "--epoch", "3"], "--epoch; did you mean --epochs?"),
    ],
)
def test_a_misspelt_flag_gets_one_line_with_the_nearest_flag(argv, suggestion, capsys):
    assert cli_main(argv) == 2
    error = capsys.readouterr().err
    assert error == f"convnext-hf {argv[0]}: error: unrecognized argument {suggestion} (--help lists the options)\n"


def test_train_help_is_grouped_with_the_right_usage_line(capsys):
    assert cli_main(["train", "--help"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("usage: convnext-hf train --train_dir DIR")
    for group in ("\nmodel:\n", "\ndata:\n", "\nrecipe (", "\noutput:\n", "\ncommon training (", "\naliases ("):
        assert group in printed, group
    assert "--activation_checkpointing" not in printed, "the full Trainer list is behind --help_all"
    assert "--help_all" in printed
    assert cli_main(["train", "--help_all"]) == 0
    full = capsys.readouterr().out
    assert full.startswith("usage: convnext-hf train --train_dir DIR")
    assert "--activation_checkpointing" in full and "--mixup_alpha" in full


def test_the_short_help_matches_the_full_parser():
    full = build_parser([])
    full_options = {option for action in full._actions for option in action.option_strings}
    short = short_help_parser()
    for action in short._actions:
        for option in action.option_strings:
            if option not in ("-h", "--help", "--help_all", "--model"):
                assert option in full_options, option
    for name, default, _ in COMMON_TRAINER_FLAGS:
        assert f"--{name}" in full_options, name
        parsed = full.get_default(name)  # TrainingArguments' default, or trainer_defaults()'
        assert getattr(parsed, "value", parsed) == default, name
    assert full.get_default("save_total_limit") == trainer_defaults()["save_total_limit"] == SAVE_TOTAL_LIMIT
    assert all(flag in full_options for flag in ALIASES.values())
    assert VARIANT_NAMES == tuple(VARIANTS)


LIGHT_PATH = textwrap.dedent(
    """
    import sys
    import convnext_hf
    from convnext_hf.cli import main
    assert main(["--help"]) == 0
    for command in sys.argv[1:]:
        try:
            status = main([command, "--help"])
        except SystemExit as exit:
            status = exit.code
        assert status == 0, command
    heavy = sorted(name for name in ("torch", "transformers", "datasets", "numpy") if name in sys.modules)
    assert not heavy, heavy
    print("light")
    """
)
DEFERRED_REGISTRATION = textwrap.dedent(
    """
    import convnext_hf
    from convnext_hf.modeling_convnext import ConvNextModel  # transformers loads inside this import
    from transformers import AutoConfig, AutoModel
    config = AutoConfig.for_model("convnext_hf", hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1])
    assert type(AutoModel.from_config(config)) is ConvNextModel
    print("registered")
    """
)


@pytest.mark.slow
def test_help_and_import_load_neither_torch_nor_transformers_and_registration_still_happens():
    light = subprocess.run([sys.executable, "-c", LIGHT_PATH, *COMMANDS], capture_output=True, text=True)
    assert light.returncode == 0 and light.stdout.endswith("light\n"), light.stderr
    registered = subprocess.run([sys.executable, "-c", DEFERRED_REGISTRATION], capture_output=True, text=True)
    assert registered.stdout == "registered\n", registered.stderr


def test_results_box_names_folder_metrics_weights_and_next_commands():
    summary = RunSummary(
        output_dir="/runs/cats",
        task="image-classification",
        pipeline_tag="image-classification",
        num_labels=2,
        metrics={"eval_loss": 0.25, "eval_accuracy": 0.875, "eval_runtime": 1.0, "train_loss": 0.5},
        saved_weights="the live weights after the last step",
        validation="val",
        validation_images=8,
        checkpoints=["checkpoint-4", "checkpoint-12"],
        best_checkpoint="checkpoint-4",
        best_metric=("accuracy", 1.0),
        evaluate_source=["--validation_dir", "val"],
    )
    assert summary_lines(summary) == [
        "ConvNeXt training — results",
        "model folder     : /runs/cats",
        "task             : image-classification, 2 labels",
        "validation       : val (8 images)",
        "final weights    : loss 0.25, accuracy 87.50%",
        "weights saved    : the live weights after the last step",
        "best checkpoint  : checkpoint-4 (accuracy 100.00%)",
        "checkpoints kept : checkpoint-4, checkpoint-12 (for --resume_from_checkpoint)",
        "next:",
        "  convnext-hf evaluate --model /runs/cats --validation_dir val --output_dir /runs/cats-evaluation",
        "  convnext-hf export onnx --model /runs/cats --output_dir /runs/cats-onnx",
        "  python -c \"from transformers import pipeline; print(pipeline('image-classification', "
        "model='/runs/cats', trust_remote_code=True)('image.png'))\"",
    ]


def test_a_box_without_validation_or_evaluate_source_and_a_folder_that_needs_the_package():
    summary = RunSummary("/runs/seg", "semantic-segmentation", "image-segmentation", 3, {}, "the live weights",
                         remote_code=False, needs_package=True)  # fmt: skip
    lines = summary_lines(summary)
    assert "validation       : none (pass --validation_dir, or keep --train_val_split > 0)" in lines
    assert not any("convnext-hf evaluate" in line for line in lines)
    assert lines[-1] == (
        "  python -c \"import convnext_hf; from transformers import pipeline; "
        "print(pipeline('image-segmentation', model='/runs/seg')('image.png'))\""
    )


@pytest.fixture(scope="module")
def two_class_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("val", 4)):
        for label, scale in (("dark", 0.4), ("light", 1.0)):
            (root / split / label).mkdir(parents=True)
            for index in range(count):
                pixels = (rng.random((32, 32, 3)) * 255 * scale).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / label / f"{index}.png")
    return root


def test_a_run_keeps_two_checkpoints_with_the_best_and_ends_with_the_box(two_class_folders, tmp_path, capsys):
    output = tmp_path / "out"
    argv = [
        "--train_dir", str(two_class_folders / "train"), "--validation_dir", str(two_class_folders / "val"),
        "--model", "convnext_atto", "--config_overrides", TINY_CONFIG, "--image_size", "32", "-b", "4",
        "--epochs", "3", "--lr", "1e-3", "--output_dir", str(output), "--report_to", "none", "--plots", "false",
        "--cache_dir", str(tmp_path / "cache"),
    ]  # fmt: skip
    args = parse_args(argv)
    assert args.training.save_total_limit == SAVE_TOTAL_LIMIT == 2
    assert args.training.disable_tqdm, "no redrawn bars when stderr is not a terminal"
    run(args)
    assert args.training.metric_for_best_model == "accuracy"
    checkpoints = sorted(path.name for path in output.glob("checkpoint-*"))
    assert len(checkpoints) == 2, checkpoints  # of 3 epochs' checkpoints: the newest and the best
    printed = capsys.readouterr().out
    assert "ConvNeXt training — results" in printed
    assert f"model folder     : {output}" in printed
    assert "weights saved    : the live weights after the last step" in printed
    assert f"convnext-hf export onnx --model {output} --output_dir {output}-onnx" in printed


@pytest.mark.parametrize(
    "hidden_sizes, channels, auxiliary",
    [([96, 192, 384, 768], 512, 256), ([40, 80, 160, 320], 216, 112), ([24, 48, 96, 192], 128, 64),
     ([256, 512, 1024, 2048], 512, 256)],
)  # fmt: skip
def test_upernet_heads_are_sized_to_their_backbone(hidden_sizes, channels, auxiliary):
    head = head_for(ConvNextConfig(hidden_sizes=hidden_sizes, depths=[1, 1, 1, 1]))
    assert (head.channels, head.auxiliary_channels) == (channels, auxiliary)
    assert head.pool_scales == OFFICIAL_HEAD.pool_scales


def test_export_takes_output_dir_or_the_older_positional(tmp_path):
    options = [parse_export_args(["onnx", "--model", "m", *where]) for where in (["out"], ["--output_dir", "out"])]
    assert options[0] == options[1] and str(options[0].output_dir) == "out"
    with pytest.raises(convnext_hf.errors.UserInputError, match="Two output folders"):
        parse_export_args(["onnx", "--model", "m", "a", "--output_dir", "b"])


def test_convert_model_takes_a_checkpoint_path(tmp_path):
    assert run_convert("--model", FIXTURES / "mini.fb.pth", "--output_dir", tmp_path / "out") == 0
    assert (tmp_path / "out" / "config.json").is_file()


def test_torch_onnx_torchvision_warnings_are_dropped_during_export(caplog):
    logger = logging.getLogger(TORCH_ONNX_REGISTRATION_LOGGER)
    with caplog.at_level(logging.WARNING, logger=TORCH_ONNX_REGISTRATION_LOGGER):
        with quiet_torch_export():
            logger.warning("torchvision is not installed. Skipping torchvision::nms")
            logger.warning("another warning")
        logger.warning("torchvision is not installed. Skipping torchvision::roi_align")
    assert [record.getMessage() for record in caplog.records] == [
        "another warning",
        "torchvision is not installed. Skipping torchvision::roi_align",
    ]


@pytest.mark.parametrize("terminal", [False, True])
def test_progress_bars_are_off_when_the_output_is_not_a_terminal(monkeypatch, capsys, terminal):
    from convnext_hf.cli import PROGRESS_BAR_SWITCHES

    for variable in PROGRESS_BAR_SWITCHES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal, raising=False)
    assert cli_main(["demo", "--epoch", "3"]) == 2  # refused before any work: the switches are set before parsing
    assert [os.environ.get(variable) for variable in PROGRESS_BAR_SWITCHES] == [None if terminal else "1"] * 3


def test_the_quantizers_pre_processing_advice_is_dropped_other_warnings_kept(monkeypatch, caplog, tmp_path):
    import onnxruntime.quantization

    from convnext_hf.export import quantize

    def advising(*args, **kwargs):
        logging.warning("Please consider to run pre-processing before quantization. Refer to example: ...")
        logging.warning("a calibration range is empty")
        logging.warning("Please consider pre-processing before quantization. See ...")

    monkeypatch.setattr(onnxruntime.quantization, "quantize_static", advising)
    monkeypatch.setattr(quantize, "output_layers", lambda path: ["/classifier/Gemm"])
    with caplog.at_level(logging.WARNING):
        assert quantize.quantize_int8(tmp_path / "m.onnx", tmp_path / "q.onnx", iter([])) == ["/classifier/Gemm"]
        logging.warning("Please consider this outside the quantizer")
    assert [record.getMessage() for record in caplog.records] == [
        "a calibration range is empty",
        "Please consider this outside the quantizer",
    ]


@pytest.mark.parametrize(
    ("flags", "repository", "refusal"),
    [
        (["--push_to_hub", "me/tiny"], "me/tiny", None),
        (["--push_to_hub", "--hub_model_id", "me/tiny"], "me/tiny", None),
        (["--hub_model_id", "me/tiny", "--push_to_hub", "me/tiny"], "me/tiny", None),
        (["--push_to_hub"], None, "--push_to_hub needs the repository: --push_to_hub REPO_ID, or --hub_model_id"),
        (["--hub_model_id", "me/tiny"], None, "--hub_model_id names the repository of --push_to_hub; add"),
        (["--push_to_hub", "me/a", "--hub_model_id", "me/b"], None, "--push_to_hub me/a and --hub_model_id me/b name"),
    ],
)
def test_convert_takes_trains_spelling_of_the_hub_repository(tmp_path, flags, repository, refusal):
    from convnext_hf.conversion.command import parse_args as parse_convert_args

    argv = ["--checkpoint", str(tmp_path / "c.pth"), "--output_dir", str(tmp_path / "out"), *flags]
    if refusal is None:
        assert parse_convert_args(argv).push_to_hub == repository
    else:
        with pytest.raises(convnext_hf.errors.UserInputError, match=re.escape(refusal)):
            parse_convert_args(argv)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lr", "1e-3", "--learning_rate", "4e-3"], "--lr 1e-3 and --learning_rate 4e-3 set the same"),
        (["-b", "4", "--per_device_train_batch_size", "8"], "-b 4 and --per_device_train_batch_size 8 set the same"),
        (["--epochs", "2", "--num-train-epochs=3"], "--epochs 2 and --num-train-epochs 3 set the same"),
        (["--learning-rate", "0.5", "--learning_rate", "0.001"], "--learning-rate 0.5 and --learning_rate 0.001 set"),
        (["--weight-decay", "0.5", "--weight_decay", "0"], "--weight-decay 0.5 and --weight_decay 0 set"),
        (["--model", "convnext_femto"], "--variant atto and --model femto set the same --variant"),
        (["--model", "some/repo", "--model_name_or_path", "other/repo"], "--model some/repo and --model_name_or_path"),
    ],
)  # fmt: skip
def test_one_setting_under_two_spellings_with_different_values_is_refused(argv, message):
    with pytest.raises(convnext_hf.errors.UserInputError, match=re.escape(message)):
        parse_args(["--train_dir", "x", "--variant", "atto", *argv])
    same_model = parse_args(["--train_dir", "x", "--variant", "femto", "--model", "convnext_femto"])
    assert same_model.model.variant == "femto"
    agree = parse_args(["--train_dir", "x", "--variant", "atto", "--lr", "1e-3", "--learning_rate", "1e-3"])
    assert agree.training.learning_rate == 1e-3
    # One spelling repeated: the last one wins, as in argparse, so that an appended flag overrides.
    appended = parse_args(["--train_dir", "x", "--variant", "atto", "--lr", "1e-3", "--lr", "4e-3"])
    assert appended.training.learning_rate == 4e-3


@pytest.mark.parametrize("command", ["evaluate", "export", "convert"])
def test_other_commands_refuse_two_spellings_of_one_flag(command, capsys):
    from convnext_hf.cli import main as cli_main

    argv = {"export": ["onnx"], "convert": ["--checkpoint", "c.pth"]}.get(command, [])
    assert cli_main([command, *argv, "--output-dir", "a", "--output_dir", "b", "--model", "m"]) == 2
    error = capsys.readouterr().err.strip()
    refusal = "--output-dir a and --output_dir b set the same --output_dir; give one of them."
    assert error == f"convnext-hf {command}: error: {refusal}"
