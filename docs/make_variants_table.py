"""Render the variants table of docs/variants.md from the configurations and the official zoo."""

from __future__ import annotations

import json
from importlib import resources

from convnext_hf import ConvNextConfig
from convnext_hf.complexity import count_macs, count_parameters
from convnext_hf.configuration_convnext import V2_VARIANTS, VARIANTS


def reported_top1(zoo: dict[str, dict], name: str) -> str:
    """The top-1 the authors report for checkpoint `name` (EMA or not), or a dash where there is none."""
    entry = zoo.get(name) or zoo.get(f"{name}_ema")
    return f"{entry['reported_top1']:.1f}" if entry and entry.get("reported_top1") else "—"


def variants_table() -> str:
    """Markdown table: every variant's widths, depths, parameters, FLOPs and the paper's ImageNet-1k top-1."""
    zoo_file = resources.files("convnext_hf.conversion") / "data" / "zoo.json"
    zoo = {entry["name"]: entry for entry in json.loads(zoo_file.read_text())["checkpoints"]}
    lines = [
        "| variant | hidden sizes | depths | params (M) | GFLOPs 224² | GFLOPs 384² | top-1 1k (224²) "
        "| top-1 22k→1k (224²) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for variant in VARIANTS:
        config = ConvNextConfig.from_variant(variant, num_labels=1000)
        if variant in V2_VARIANTS:
            stem = f"convnextv2_{V2_VARIANTS[variant]}"
            one_k, twenty_two_k = f"{stem}_1k_224", f"{stem}_22k_224"
        else:
            stem = f"convnext_{variant.replace('isotropic-', 'iso_')}"
            one_k, twenty_two_k = f"{stem}_1k_224", f"{stem}_22k_1k_224"
        lines.append(
            f"| `{variant}` | {tuple(config.hidden_sizes)} | {tuple(config.depths)} "
            f"| {count_parameters(config) / 1e6:.2f} | {count_macs(config, 224) / 1e9:.2f} "
            f"| {count_macs(config, 384) / 1e9:.1f} "
            f"| {reported_top1(zoo, one_k)} | {reported_top1(zoo, twenty_two_k)} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(variants_table(), end="")
