"""The model-zoo table (`convnext-hf convert --list_models`, and docs/conversion.md) rendered from the registry."""

from __future__ import annotations

from .zoo import ZooEntry

DATA = {
    "imagenet-1k": "1k",
    "imagenet-22k": "22k",
    "ade20k": "ADE20K",
    "coco": "COCO",
    "imagenet-1k-fcmae": "1k FCMAE",
    "imagenet-22k-fcmae": "1k FCMAE → 22k",
    "lvd-1689m": "LVD-1689M (DINOv3)",
}


def _data(entry: ZooEntry) -> str:
    stages = [DATA[name] for name in (entry.pretrain_dataset, entry.finetune_dataset) if name]
    return " → ".join(dict.fromkeys(stages))


def _reported(entry: ZooEntry) -> str:
    if entry.reported_top1 is not None:
        return f"{entry.reported_top1} top-1"
    if entry.reported_miou is not None:
        return f"{entry.reported_miou} / {entry.reported_miou_ms_flip} mIoU"
    if entry.reported_box_ap is not None:
        return f"{entry.reported_box_ap} box / {entry.reported_mask_ap} mask AP"
    return "—"


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def render_zoo_table(zoo: dict[str, ZooEntry]) -> str:
    """Markdown table: one row per checkpoint, as `--model NAME` converts it."""
    lines = [
        "| `--model` | release format | variant | resolution | data | reported | params (M) | GFLOPs |",
        "|---|---|---|---:|---|---|---:|---:|",
    ]
    for entry in zoo.values():
        lines.append(
            f"| `{entry.name}` | {entry.format} | {entry.variant} | {entry.resolution} | {_data(entry)} "
            f"| {_reported(entry)} | {_number(entry.params_m)} | {_number(entry.gflops)} |"
        )
    return "\n".join(lines) + "\n"
