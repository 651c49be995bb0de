"""The tasks, one record each: what train, evaluate, export, the demo, the converter and both model cards need to know.

A record names its task as transformers' pipelines do (the one vocabulary of every command), the pipeline tag its
folders ship under, its Auto class, the architectures and problem type by which a saved folder is recognized, its
export outputs, and the module that holds the task's code. That module is imported on first use (`Task.hooks`), so
importing this registry loads neither torch nor transformers.

Adding a task is one record here and one module (or package) of its own under `tasks/`, defining the hooks its
record uses. The hooks, as module-level names of `Task.module`:

training (`trainable` tasks; `convnext-hf train`):
    load_data(args: RunArguments) -> ImageData
    build_model(args: RunArguments, data: ImageData) -> PreTrainedModel
    build_processor(args: RunArguments, model: PreTrainedModel) -> BaseImageProcessor
    check_arguments(args: RunArguments) -> None                  refuse flags that do not apply, by name
    configuration_overrides(args: ModelArguments) -> Any         optional: --config_overrides checked against the
                                                                 task's configs (default: the ConvNeXt config's)
    attach_transforms(args: RunArguments, data: ImageData, processor) -> ImageData   train/eval transforms
    augmentation_hyperparameters(args: RunArguments, image_size: int) -> dict[str, Any]   rows of the card
    collate(examples: list[dict]) -> dict[str, Tensor]
    compute_loss(model, inputs: dict[str, Tensor], mixup: Mixup) -> tuple[Tensor, ModelOutput]
    compute_metrics(num_labels: int) -> Callable[[EvalPrediction], dict[str, float]]
    evaluation_loss(logits: ndarray, labels: ndarray) -> float   optional: the validation loss over exactly the
                                                                 gathered images (else the Trainer's batch mean)
    MAIN_METRIC: str                                             the metric that picks the best checkpoint
    preprocess_logits: Callable[[Tensor, Tensor], Tensor] | None  the Trainer's preprocess_logits_for_metrics
    final_evaluation(prediction: PredictionOutput, label_names: list[str]) -> FinalEvaluation
    report_fields(final: FinalEvaluation, label_names: list[str]) -> dict[str, Any]   extra metrics.json entries
    write_plots(trainer, raw_data: ImageData, final: FinalEvaluation, output_dir: str) -> None
    CARD: TaskCard                                               what the trained model's card says
    STREAMS: bool                                                optional: `load_data` streams --dataset_name under
                                                                 --streaming (default: the flag is refused)
evaluation (`convnext-hf evaluate`, tasks with a scorer):
    evaluate(args: argparse.Namespace, config: PreTrainedConfig) -> dict[str, Any]   writes the output folder
demo (`convnext-hf demo --task NAME`, tasks whose record has `demo`):
    run_demo(settings: DemoSettings) -> dict[str, float]    (its defaults: the record's `demo_defaults`)
export check (`convnext-hf export`, in the module an ExportForm's `check` names; forms checked by their predictions):
    check_data(options: ExportOptions, exportable: Exportable) -> Any   the check's inputs, read and refused early
    check_export(exportable, engine_model, inputs) -> dict      the report's `parity`: the measured numbers, a
                                                                `summary` line and `failures` (empty: it passed)
"""

from __future__ import annotations

import difflib
import importlib
import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ..errors import UserInputError

logger = logging.getLogger(__name__)

IMAGE_CLASSIFICATION = "image-classification"
MULTI_LABEL_CLASSIFICATION = "multi-label-classification"
SEMANTIC_SEGMENTATION = "semantic-segmentation"
IMAGE_FEATURE_EXTRACTION = "image-feature-extraction"
OBJECT_DETECTION = "object-detection"

INT8_DETECTOR_REFUSAL = (
    "int8 detectors are not offered: an exported detector must reproduce PyTorch's detections (boxes IoU >= 0.99, "
    "scores within 1e-3), and static int8 does not (measured on a small trained RT-DETR: 44 of its 60 detections "
    "have no int8 counterpart at IoU >= 0.99, matched scores differ by up to 3.0e-3)"
)


@dataclass(frozen=True)
class ExportForm:
    """One kind of saved folder export handles: its architecture suffix, Auto class, name and graph outputs, and
    whether int8 export can compare its top-1 accuracy with float32's (`--validation_dir`).

    A tuple output (a backbone's feature maps) becomes one graph output per `config.out_features` stage.
    """

    architecture_suffix: str
    auto_class: str
    kind: str
    fields: tuple[str, ...]
    scores_top1: bool = False
    # A form checked by what it predicts rather than tensor by tensor: the module whose `check_data` and
    # `check_export` hooks run that check (raw-tensor parity is then reported, not required).
    check: str | None = None
    # The graph's height and width are the processor's (traced static; the batch stays dynamic).
    fixed_size: bool = False
    # Captured by TorchDynamo (strict torch.export): the non-strict tracer specializes the batch on `len(tensor)`.
    strict_capture: bool = False
    # Why `--quantize int8` is refused for this form, when it is.
    int8_refusal: str | None = None


@dataclass(frozen=True)
class Task:
    """One task: its names, how its folders are recognized and loaded, and the module holding its code."""

    name: str
    summary: str
    pipeline_tag: str
    auto_class: str
    module: str | None
    trainable: bool = False
    architectures: tuple[str, ...] = ()
    problem_type: str | None = None
    exports: tuple[ExportForm, ...] = ()
    demo: str | None = None
    # The demo's defaults of `convnext-hf demo`'s flags (docs/training.md measures them); the flags given win. Here
    # rather than in the task's module so that `convnext-hf demo --help` can show them without importing torch.
    demo_defaults: tuple[tuple[str, Any], ...] = ()
    aliases: tuple[str, ...] = ()

    @property
    def hooks(self) -> ModuleType:
        """The task's module, imported on first use."""
        if self.module is None:
            raise UserInputError(f"{self.name} has no code of its own: it is a conversion and export target only.")
        return importlib.import_module(self.module)

    def hook(self, name: str, purpose: str) -> Any:
        """The hook `name` of the task, refused by name (with `purpose`) when the task has none."""
        value = getattr(self.hooks, name, None) if self.module is not None else None
        if value is None:
            raise UserInputError(f"{purpose} is not available for {self.name}.")
        return value


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task(
            name=IMAGE_CLASSIFICATION,
            summary="one class per image (a label column holding lists switches to multi-label-classification)",
            pipeline_tag="image-classification",
            auto_class="AutoModelForImageClassification",
            module="convnext_hf.tasks.classification.hooks",
            trainable=True,
            architectures=("ForImageClassification",),
            exports=(
                ExportForm("ForImageClassification", "AutoModelForImageClassification", IMAGE_CLASSIFICATION,
                           ("logits",), scores_top1=True),
            ),  # fmt: skip
            demo="MNIST digits",
            demo_defaults=(("epochs", 25), ("learning_rate", 4e-3), ("batch_size", 32), ("train_per_class", None)),
            aliases=("classification",),
        ),
        Task(
            name=MULTI_LABEL_CLASSIFICATION,
            summary="several labels per image, a list or a comma- or space-separated string, trained with a binary "
            "cross-entropy per label",
            pipeline_tag="image-classification",
            auto_class="AutoModelForImageClassification",
            module="convnext_hf.tasks.multi_label",
            trainable=True,
            architectures=("ForImageClassification",),
            problem_type="multi_label_classification",
            aliases=("multi-label", "multilabel", "multilabel-classification", "multi-label-image-classification"),
        ),
        Task(
            name=SEMANTIC_SEGMENTATION,
            summary="an UperNet on image/mask pairs",
            pipeline_tag="image-segmentation",
            auto_class="AutoModelForSemanticSegmentation",
            module="convnext_hf.tasks.segmentation.hooks",
            trainable=True,
            architectures=("ForSemanticSegmentation",),
            exports=(
                ExportForm("ForSemanticSegmentation", "AutoModelForSemanticSegmentation", SEMANTIC_SEGMENTATION,
                           ("logits",)),
            ),  # fmt: skip
            demo="UperNet on synthetic scenes of coloured shapes",
            # Random shape colours need more scenes and a lower rate: lr 2e-3 on 150 scenes gives mIoU 0.36.
            demo_defaults=(("epochs", 30), ("learning_rate", 1e-3), ("batch_size", 16), ("train_images", 500)),
            aliases=("segmentation", "image-segmentation"),
        ),
        Task(
            name=OBJECT_DETECTION,
            summary="a DETR-family detector (--detector, RT-DETR by default) on COCO-format boxes",
            pipeline_tag="object-detection",
            auto_class="AutoModelForObjectDetection",
            module="convnext_hf.tasks.detection.hooks",
            trainable=True,
            architectures=("ForObjectDetection",),
            # The anchors (RT-DETR) and position embeddings are built from the feature-map sizes, and the queries
            # are picked by a top-k over encoder scores, so a float-level difference can swap near-tied detections:
            # the graph is checked by its detections (tasks/detection/export.py), at the processor's image size.
            exports=(
                ExportForm("ForObjectDetection", "AutoModelForObjectDetection", OBJECT_DETECTION,
                           ("logits", "pred_boxes"), check="convnext_hf.tasks.detection.export", fixed_size=True,
                           strict_capture=True, int8_refusal=INT8_DETECTOR_REFUSAL),
            ),  # fmt: skip
            demo="RT-DETR on synthetic scenes of shapes with boxes",
            # 1200 steps (800 scenes, 24 passes, batch 16) fit the 5-minute budget on an idle 2-core CPU.
            demo_defaults=(("epochs", 24), ("learning_rate", 1e-3), ("batch_size", 16), ("train_images", 800)),
            aliases=("detection",),
        ),
        Task(
            name=IMAGE_FEATURE_EXTRACTION,
            summary="features of a trunk without a head (FCMAE, DINOv3) or a backbone's feature maps",
            pipeline_tag="image-feature-extraction",
            auto_class="AutoModel",
            module=None,
            architectures=("Model", "Backbone"),
            exports=(
                ExportForm("Backbone", "AutoBackbone", "backbone", ("feature_maps",)),
                ExportForm("Model", "AutoModel", IMAGE_FEATURE_EXTRACTION, ("last_hidden_state", "pooler_output")),
            ),
            aliases=("feature-extraction", "features"),
        ),
    )
}


def _normalized(name: str) -> str:
    return name.strip().lower().replace("_", "-")


_ALIASES: dict[str, str] = {
    _normalized(spelling): task.name for task in TASKS.values() for spelling in (task.name, *task.aliases)
}


def get_task(name: str) -> Task:
    """The task of a name or an older spelling of it (with a one-line notice); an unknown name is refused."""
    canonical = _ALIASES.get(_normalized(str(name)))
    if canonical is None:
        close = difflib.get_close_matches(_normalized(str(name)), list(_ALIASES), n=1)
        hint = f" Did you mean {_ALIASES[close[0]]}?" if close else ""
        raise UserInputError(f"Unknown task {name!r}; the tasks are {', '.join(TASKS)}.{hint}")
    if name != canonical:
        logger.warning("Task %r is now spelled %r; the old spelling still works.", name, canonical)
    return TASKS[canonical]


def task_of_config(config: Any) -> Task | None:
    """The task of a saved folder's config, from its architecture and problem type (None when no task has it)."""
    architecture = (getattr(config, "architectures", None) or [""])[0]
    matches = [task for task in TASKS.values() if any(architecture.endswith(s) for s in task.architectures)]
    problem_type = getattr(config, "problem_type", None)
    exact = [task for task in matches if task.problem_type is not None and task.problem_type == problem_type]
    plain = [task for task in matches if task.problem_type is None]
    return (exact or plain or [None])[0]


def export_form(architecture: str) -> ExportForm | None:
    """The export form of a folder's architecture (`config.architectures[0]`), None when no task exports it."""
    forms = [form for task in TASKS.values() for form in task.exports]
    return next((form for form in forms if architecture.endswith(form.architecture_suffix)), None)


def export_suffixes() -> list[str]:
    """The architecture suffixes export handles, for its refusal message."""
    return [form.architecture_suffix for task in TASKS.values() for form in task.exports]


__all__ = [
    "IMAGE_CLASSIFICATION",
    "IMAGE_FEATURE_EXTRACTION",
    "MULTI_LABEL_CLASSIFICATION",
    "OBJECT_DETECTION",
    "SEMANTIC_SEGMENTATION",
    "TASKS",
    "ExportForm",
    "Task",
    "export_form",
    "export_suffixes",
    "get_task",
    "task_of_config",
]
