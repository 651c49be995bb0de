"""The `convnext-hf` command: one subcommand per task, each a `main(argv)` in its own module.

Bad input raises `UserInputError` wherever it enters; here it becomes one line on stderr and exit status 2, without a
traceback. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

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
        "train a small ConvNeXt from scratch, offline, and score it: MNIST digits, or --task segmentation",
    ),
    "convert": (
        "convnext_hf.conversion.command",
        "convert a checkpoint (official, timm, mmcls/mmseg, PASSL, transformers) to a Hub-ready folder",
    ),
    "export": ("convnext_hf.export.command", "export a saved model to ONNX or OpenVINO, checked against PyTorch; int8"),
}


def unknown_flags_message(parser: argparse.ArgumentParser, unknown: Sequence[str]) -> str:
    """Name the arguments `parser` does not know, with the closest flag it does know for each misspelt one."""
    # Compared in the underscore spelling, which every flag has.
    known = {"--" + option[2:].replace("-", "_") for action in parser._actions for option in action.option_strings
             if option.startswith("--")}  # fmt: skip
    parts = []
    for argument in unknown:
        flag = argument.split("=", 1)[0]
        if not flag.startswith("-"):
            continue
        close = difflib.get_close_matches("--" + flag.lstrip("-").replace("-", "_"), sorted(known), 1)
        parts.append(f"{flag} (did you mean {close[0]}?)" if close else flag)
    if not parts:
        return f"unexpected arguments {' '.join(unknown)}"
    return f"unknown flag{'s' if len(parts) > 1 else ''} {', '.join(parts)}"


class OneLineErrors(argparse.ArgumentParser):
    """A parser whose errors are a `UserInputError`, printed as one line by `run_command` (argparse would print the
    usage first, which for `train`'s hundreds of Trainer flags buries the message)."""

    def error(self, message: str) -> NoReturn:
        """Refuse the command line with argparse's message."""
        raise UserInputError(f"{message}; see --help for the flags.")


class CommandParser(OneLineErrors):
    """The argument parser of every `convnext-hf` command: flags are declared with underscores (`--output_dir`) and
    also accepted with dashes (`--output-dir`), so one spelling works across all commands; a misspelt flag is named
    with the closest one."""

    def add_argument(self, *names: str, **kwargs: object) -> argparse.Action:
        """Add an argument; each `--flag_with_underscores` also answers to `--flag-with-underscores`."""
        dashed = [name.replace("_", "-") for name in names if name.startswith("--") and "_" in name]
        return super().add_argument(*names, *dashed, **kwargs)

    def parse_args(self, args: Sequence[str] | None = None, namespace: object = None) -> argparse.Namespace:
        """Parse, refusing unknown flags first (before a missing required one) with a suggestion for each misspelt
        flag."""
        args = list(sys.argv[1:] if args is None else args)
        unknown = [argument for argument in args if argument.startswith("--") and not self._known(argument)]
        parsed, extra = self.parse_known_args(args, namespace) if not unknown else (None, unknown)
        if extra:
            self.error(unknown_flags_message(self, extra))
        return parsed

    def _known(self, argument: str) -> bool:
        """Whether `--flag[=value]` names one of this parser's flags, or abbreviates one (as argparse allows)."""
        flag = argument.split("=", 1)[0]
        return argument == "--" or any(option.startswith(flag) for option in self._option_string_actions)


def usage() -> str:
    """The top-level help: every command with its one-line description."""
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "usage: convnext-hf <command> [options]\n\ncommands:\n" + "\n".join(lines) + (
        "\n\n`convnext-hf <command> --help` lists a command's options.\n"
    )


def run_command(name: str, command_main: Callable[[list[str]], object], argv: Sequence[str]) -> int:
    """Run `command_main(argv)` as every entry point does: a `UserInputError` becomes one line on stderr and exit
    status 2; a result that is not an int (a report, metrics, None) means success."""
    try:
        status = command_main(list(argv))
    except UserInputError as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        return USER_ERROR_EXIT_STATUS
    return status if isinstance(status, int) else 0


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
    return run_command(f"convnext-hf {command}", importlib.import_module(COMMANDS[command][0]).main, rest)


if __name__ == "__main__":
    sys.exit(main())
