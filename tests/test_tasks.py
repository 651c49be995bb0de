"""The task registry: names, older spellings, refusals, every record's code, and no task branches outside tasks/."""

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from convnext_hf.errors import UserInputError
from convnext_hf.tasks import TASKS, get_task, task_of_config

PACKAGE = Path(__file__).parents[1] / "src" / "convnext_hf"
TRAINING_HOOKS = (
    "load_data", "build_model", "build_processor", "attach_transforms", "augmentation_hyperparameters", "collate",
    "compute_loss", "compute_metrics", "final_evaluation", "report_fields", "CARD",
)  # fmt: skip


def test_names_are_the_pipeline_names():
    assert list(TASKS) == [
        "image-classification", "multi-label-classification", "semantic-segmentation", "object-detection",
        "image-feature-extraction",
    ]  # fmt: skip
    assert {name: task.pipeline_tag for name, task in TASKS.items()} == {
        "image-classification": "image-classification",
        "multi-label-classification": "image-classification",
        "semantic-segmentation": "image-segmentation",
        "object-detection": "object-detection",
        "image-feature-extraction": "image-feature-extraction",
    }
    assert [name for name, task in TASKS.items() if task.trainable] == list(TASKS)[:4]


@pytest.mark.parametrize(
    ("spelling", "name"),
    [
        ("segmentation", "semantic-segmentation"),
        ("feature-extraction", "image-feature-extraction"),
        ("classification", "image-classification"),
        ("semantic_segmentation", "semantic-segmentation"),
        ("Multi-Label", "multi-label-classification"),
    ],
)
def test_old_spellings_resolve_with_a_one_line_notice(spelling, name, caplog):
    with caplog.at_level(logging.WARNING, logger="convnext_hf.tasks"):
        assert get_task(spelling).name == name
    assert [record.getMessage() for record in caplog.records] == [
        f"Task {spelling!r} is now spelled {name!r}; the old spelling still works."
    ]


def test_current_names_resolve_silently(caplog):
    with caplog.at_level(logging.WARNING, logger="convnext_hf.tasks"):
        assert [get_task(name).name for name in TASKS] == list(TASKS)
    assert caplog.records == []


def test_unknown_name_lists_the_tasks_and_suggests_one():
    with pytest.raises(UserInputError) as error:
        get_task("semantic-segmentaton")
    assert str(error.value) == (
        "Unknown task 'semantic-segmentaton'; the tasks are image-classification, multi-label-classification, "
        "semantic-segmentation, object-detection, image-feature-extraction. Did you mean semantic-segmentation?"
    )
    with pytest.raises(UserInputError, match=r"^Unknown task 'depth'; the tasks are [a-z, -]+\.$"):
        get_task("depth")


@pytest.mark.parametrize("name", [name for name, task in TASKS.items() if task.trainable])
def test_every_trainable_record_has_its_hooks(name):
    hooks = get_task(name).hooks
    assert [hook for hook in TRAINING_HOOKS if getattr(hooks, hook, None) is None] == []
    assert hooks.CARD.results and hooks.CARD.usage("me/model").startswith("```python")


def test_a_record_without_code_is_refused_by_name():
    with pytest.raises(UserInputError, match="image-feature-extraction has no code of its own"):
        _ = get_task("image-feature-extraction").hooks


class Config:
    def __init__(self, architecture, problem_type=None):
        self.architectures, self.problem_type = [architecture], problem_type


def test_a_folder_is_recognized_by_its_architecture_and_problem_type():
    assert task_of_config(Config("ConvNextForImageClassification")).name == "image-classification"
    assert task_of_config(Config("ConvNextForImageClassification", "single_label_classification")).name == (
        "image-classification"
    )
    multi = Config("ConvNextForImageClassification", "multi_label_classification")
    assert task_of_config(multi).name == "multi-label-classification"
    assert task_of_config(Config("UperNetForSemanticSegmentation")).name == "semantic-segmentation"
    assert task_of_config(Config("ConvNextBackbone")).name == "image-feature-extraction"
    assert task_of_config(Config("ConvNextForDepthEstimation")) is None


@pytest.mark.slow
def test_importing_the_registry_loads_no_task_code():
    code = (
        "import sys, convnext_hf.tasks; "
        "print(sorted(m for m in sys.modules if m.startswith(('convnext_hf.tasks.', 'convnext_hf.train'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"



def test_train_refuses_a_task_it_does_not_train(tmp_path, capsys):
    from convnext_hf.cli import main as cli_main

    argv = ["train", "--task", "image-feature-extraction", "--variant", "atto", "--train_dir", str(tmp_path / "images"),
            "--output_dir", str(tmp_path / "out"), "--report_to", "none"]  # fmt: skip
    assert cli_main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "convnext-hf train: error: --task image-feature-extraction is not trained here; train takes "
        "image-classification, multi-label-classification, semantic-segmentation, object-detection."
    )
