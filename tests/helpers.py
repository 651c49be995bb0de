"""Helpers the test modules import: the golden fixtures, the converter's command line, tensor comparison."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from convnext_hf.cli import main as cli_main

FIXTURES = Path(__file__).parent / "fixtures"


def golden_expected(case: str) -> dict[str, torch.Tensor]:
    """Inputs and reference outputs of a golden case (`mini`, `iso-mini`, `upernet-mini`)."""
    return load_file(FIXTURES / f"{case}.expected.safetensors")


def run_convert(*argv: object) -> int:
    """`convnext-hf convert ARGV` in this process; returns its exit status."""
    return cli_main(["convert", *(str(arg) for arg in argv)])


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute elementwise difference of two tensors."""
    return (a - b).abs().max().item()
