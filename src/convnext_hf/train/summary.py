"""The results box that ends `convnext-hf train`: where the model is, its metrics, which weights were saved, and the
commands that use it next."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..cli import shell_join, shell_quote


@dataclass
class RunSummary:
    """What a finished run tells its user."""

    output_dir: str
    task: str
    pipeline_tag: str
    num_labels: int
    metrics: dict[str, float]
    # Which weights are in the folder: the live weights of the last step, or the EMA (and why).
    saved_weights: str
    validation: str | None = None
    validation_images: int = 0
    checkpoints: list[str] = field(default_factory=list)
    best_checkpoint: str | None = None
    best_metric: tuple[str, float] | None = None
    # The arguments of `convnext-hf evaluate` that name the validation data; empty when evaluate does not score
    # the task.
    evaluate_source: list[str] = field(default_factory=list)
    # Whether the folder loads as remote code (its own copy of the model code), and whether it needs this package.
    remote_code: bool = True
    needs_package: bool = False
    # Whether `convnext-hf export` takes the task's folders (its record has export forms).
    exportable: bool = True
    # An image of the run's data for the printed pipeline command, so that it runs as printed.
    example_image: str = "image.png"
    # The value a metric takes where there was nothing to measure (the task card's), shown as "n/a".
    not_measured: float | None = None


def _metric_text(name: str, value: float, not_measured: float | None = None) -> str:
    bare = name.removeprefix("eval_")
    if not_measured is not None and value == not_measured:
        return f"{bare} n/a"
    if any(word in bare for word in ("accuracy", "iou", "mAP", "f1")):
        return f"{bare} {value:.2%}"
    return f"{bare} {value:.4g}"


def next_commands(summary: RunSummary) -> list[str]:
    """Commands that use the saved folder: score it, export it (where export takes the task), load it in a
    pipeline."""
    folder = shell_quote(summary.output_dir)
    commands = []
    if summary.evaluate_source:
        source = shell_join(summary.evaluate_source)
        commands.append(f"convnext-hf evaluate --model {folder} {source} --output_dir {folder}-evaluation")
    if summary.exportable:
        commands.append(f"convnext-hf export onnx --model {folder} --output_dir {folder}-onnx")
    imports = "import convnext_hf; " if summary.needs_package else ""
    trust = ", trust_remote_code=True" if summary.remote_code else ""
    commands.append(
        f'python -c "{imports}from transformers import pipeline; '
        f"print(pipeline('{summary.pipeline_tag}', model={summary.output_dir!r}{trust})({summary.example_image!r}))\""
    )
    return commands


def summary_lines(summary: RunSummary) -> list[str]:
    """The lines of the results box, its title first."""
    lines = [
        "ConvNeXt training — results",
        f"model folder     : {summary.output_dir}",
        f"task             : {summary.task}, {summary.num_labels} labels",
    ]
    scores = {name: value for name, value in summary.metrics.items() if name.startswith("eval_")}
    shown = [
        _metric_text(name, value, summary.not_measured)
        for name, value in scores.items()
        if not name.endswith(("_runtime", "_per_second", "epoch"))
    ]
    if summary.validation is None:
        lines.append("validation       : none (pass --validation_dir, or keep --train_val_split > 0)")
    else:
        lines.append(f"validation       : {summary.validation} ({summary.validation_images} images)")
        lines.append(f"final weights    : {', '.join(shown) if shown else '(not evaluated)'}")
    lines.append(f"weights saved    : {summary.saved_weights}")
    if summary.best_checkpoint is not None and summary.best_metric is not None:
        name, value = summary.best_metric
        best = _metric_text(name, value, summary.not_measured)
        lines.append(f"best checkpoint  : {summary.best_checkpoint} ({best})")
    if summary.checkpoints:
        lines.append(f"checkpoints kept : {', '.join(summary.checkpoints)} (for --resume_from_checkpoint)")
    lines.append("next:")
    lines += [f"  {command}" for command in next_commands(summary)]
    return lines
