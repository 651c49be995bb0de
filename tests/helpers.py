"""Helpers the test modules import: the golden fixtures, the converter's command line, tensor comparison."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file

from convnext_hf.cli import main as cli_main

FIXTURES = Path(__file__).parent / "fixtures"


def golden_expected(case: str, folder: Path = FIXTURES) -> dict[str, torch.Tensor]:
    """Inputs and reference outputs of a golden case (`mini`, `iso-mini`, `upernet-mini`; `family/` ones in FAMILY)."""
    return load_file(folder / f"{case}.expected.safetensors")


def run_convert(*argv: object) -> int:
    """`convnext-hf convert ARGV` in this process; returns its exit status."""
    return cli_main(["convert", *(str(arg) for arg in argv)])


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute elementwise difference of two tensors."""
    return (a - b).abs().max().item()


def conversion_cache(tmp_path_factory, source: Path) -> Callable[..., Path]:
    """`get(file_name, target)`: the folder `convnext-hf convert` makes of `source / file_name`, converted once."""
    folders: dict[tuple[str, str], Path] = {}

    def get(file_name: str, target: str = "convnext_hf") -> Path:
        if (file_name, target) not in folders:
            output = tmp_path_factory.mktemp("converted") / f"{file_name.replace('/', '-')}-{target}"
            assert run_convert("--checkpoint", source / file_name, "--output_dir", output, "--target", target) == 0
            folders[file_name, target] = output
        return folders[file_name, target]

    return get
