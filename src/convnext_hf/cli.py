"""The `convnext-hf` command: one subcommand per task, each a `main(argv)` in its own module.

Bad input raises `UserInputError` wherever it enters; here it becomes one line on stderr and exit status 2, without a
traceback. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .errors import USER_ERROR_EXIT_STATUS, UserInputError

# name -> (module of its `main(argv)`, one-line help). Flags are spelled with underscores (`--output_dir`), as the
# transformers Trainer flags that `train` accepts are; every command also accepts the dashed spelling.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("convnext_hf.train", "train or fine-tune a ConvNeXt on your images (every Trainer flag works)"),
    "evaluate": (
        "convnext_hf.evaluation",
        "score a saved or converted classifier on your labelled images (top-1/top-5, per class, speed)",
    ),
    "demo": (
        "convnext_hf.demo",
        "train a small ConvNeXt from scratch, offline, and score it: MNIST digits, or --task semantic-segmentation",
    ),
    "convert": (
        "convnext_hf.conversion.command",
        "convert a checkpoint (official, timm, mmcls/mmseg, PASSL, transformers) to a Hub-ready folder",
    ),
    "export": ("convnext_hf.export.command", "export a saved model to ONNX or OpenVINO, checked against PyTorch; int8"),
}


class CommandParser(argparse.ArgumentParser):
    """The argument parser of every `convnext-hf` command: flags are declared with underscores (`--output_dir`) and
    also accepted with dashes (`--output-dir`), so one spelling works across all commands."""

    def add_argument(self, *names: str, **kwargs: object) -> argparse.Action:
        """Add an argument; each `--flag_with_underscores` also answers to `--flag-with-underscores`."""
        dashed = [name.replace("_", "-") for name in names if name.startswith("--") and "_" in name]
        return super().add_argument(*names, *dashed, **kwargs)


def usage() -> str:
    """The top-level help: every command with its one-line description."""
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "usage: convnext-hf <command> [options]\n\ncommands:\n" + "\n".join(lines) + (
        "\n\n`convnext-hf <command> --help` lists a command's options.\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a subcommand; return the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else USER_ERROR_EXIT_STATUS
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"convnext-hf: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return USER_ERROR_EXIT_STATUS
    command_main = importlib.import_module(COMMANDS[command][0]).main
    try:
        status = command_main(rest)
    except UserInputError as error:
        print(f"convnext-hf {command}: error: {error}", file=sys.stderr)
        return USER_ERROR_EXIT_STATUS
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
