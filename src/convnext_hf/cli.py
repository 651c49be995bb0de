"""The `convnext-hf` command: one subcommand per task, each a `main(argv)` in its own module.

Bad input raises `UserInputError` wherever it enters; here it becomes one line on stderr and exit status 2, without a
traceback. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import shlex
import sys
from collections.abc import Callable, Collection, Sequence
from typing import NoReturn

from .errors import USER_ERROR_EXIT_STATUS, UserInputError

# name -> (module of its `main(argv)`, one-line help). Flags are spelled with underscores (`--output_dir`), as the
# transformers Trainer flags that `train` accepts are; every command also accepts the dashed spelling.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("convnext_hf.train.command", "train or fine-tune a ConvNeXt on your images (every Trainer flag works)"),
    "evaluate": (
        "convnext_hf.evaluation_command",
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
    "check": (
        "convnext_hf.check_command",
        "decode every image of a classification dataset on every core: unreadable images, repeats, copies",
    ),
}


# How bash's $'...' quoting spells the characters that need more than themselves.
SHELL_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
# os.fsdecode's stand-ins for bytes that are not UTF-8 (surrogateescape): U+DC80..U+DCFF are the bytes 0x80..0xFF.
SURROGATE_BYTES = range(0xDC80, 0xDD00)


def _shell_escape(character: str) -> str:
    code = ord(character)
    if character in SHELL_ESCAPES:
        return SHELL_ESCAPES[character]
    if character.isprintable():
        return character
    if code in SURROGATE_BYTES:
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: object) -> str:
    """`text` on one line with no terminal codes: each control character (a newline, an escape that would recolour or
    move the cursor) written as its visible escape (`\\n`, `\\x1b`). The one escaping rule of everything shown to a
    reader (terminal boxes, model cards), whatever names and paths a user chose."""
    text = str(text)
    return text if text.isprintable() else "".join(
        character if character.isprintable() else _shell_escape(character) for character in text
    )


def shell_quote(argument: str) -> str:
    """`argument` as one shell word on one line: shlex.quote, or bash's $'...' with escapes when it holds control
    characters (a newline in a path would otherwise split the command line it is shown in, e.g. a model card's)."""
    if argument.isprintable():
        return shlex.quote(argument)
    return "$'" + "".join(map(_shell_escape, argument)) + "'"


def shell_join(arguments: Sequence[str]) -> str:
    """A command line to show or paste, one shell word per argument (`shell_quote`), on one line."""
    return " ".join(shell_quote(str(argument)) for argument in arguments)


def unrecognized(arguments: Sequence[str], known: Sequence[str]) -> str:
    """The message for arguments no option takes: the first unknown flag, with the nearest known one suggested."""
    flags = [argument for argument in arguments if argument.startswith("-")]
    if not flags:
        return f"unexpected argument {arguments[0]!r}"
    flag = flags[0].split("=", 1)[0]
    # Compare in the underscore spelling, so that `--learning-rat` finds `--learning_rate` once, not twice.
    spellings: dict[str, str] = {}
    for option in known:
        key = "--" + option[2:].replace("-", "_")
        if option.startswith("--") and (key not in spellings or "_" in option):
            spellings[key] = option
    close = difflib.get_close_matches("--" + flag.lstrip("-").replace("-", "_"), list(spellings), n=1, cutoff=0.6)
    suggestion = f"; did you mean {spellings[close[0]]}?" if close else ""
    return f"unrecognized argument {flag}{suggestion}"


def spelled_values(
    arguments: Sequence[str], setting_of: Callable[[str], str | None], switches: Collection[str] = ()
) -> list[tuple[str, str, str]]:
    """(spelling, setting, value) of each flag in `arguments` that `setting_of` maps to a setting: the value is the
    text after `=`, or the next argument unless that is a flag or the spelling one of the `switches` ("")."""
    found = []
    for index, argument in enumerate(arguments):
        spelling, equals, value = argument.partition("=")
        setting = setting_of(spelling) if spelling.startswith("-") else None
        if setting is None:
            continue
        if not equals:
            following = arguments[index + 1] if index + 1 < len(arguments) else ""
            value = "" if following.startswith("--") or spelling in switches else following
        found.append((spelling, setting, value))
    return found


def refuse_two_values(given: Sequence[tuple[str, str, str]]) -> None:
    """Refuse one setting given under two spellings with different values (`--learning-rate 0.5 --learning_rate
    0.001`, `--lr 1e-3 --learning_rate 4e-3`): which one wins would depend on their order. One spelling repeated keeps
    argparse's rule, the last one wins, so that appending a flag to a command line overrides it."""
    values: dict[str, dict[str, str]] = {}
    for spelling, setting, value in given:
        values.setdefault(setting, {})[spelling] = value
    for setting, spellings in values.items():
        if len(set(spellings.values())) > 1:
            listing = " and ".join(f"{spelling} {shell_quote(value)}" for spelling, value in spellings.items())
            raise UserInputError(f"{listing} set the same {setting}; give one of them.")


def _in_range(namespace: argparse.Namespace) -> argparse.Namespace:
    """`namespace`, its numbers checked against the one bounds table of every command (`train.ranges.RANGES`)."""
    from .train.ranges import check_ranges

    check_ranges((namespace,))
    return namespace


class OneLineErrors:
    """argparse errors as one line, exit status 2: unknown flags named with the nearest known one ("did you mean").
    Abbreviated flags are refused rather than guessed, one option given two values under two spellings is refused,
    and every number is checked against the bounds table. A mixin for `argparse.ArgumentParser` subclasses."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_args(self, args: Sequence[str] | None = None, namespace: object = None) -> argparse.Namespace:
        """Parse, refusing any argument no option takes with a suggestion, and two spellings of one option given
        different values."""
        self.given = list(sys.argv[1:] if args is None else args)
        self.refuse_two_values()
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(unrecognized(extras, self.option_strings()))
        return _in_range(namespace)

    def parse_intermixed_args(self, args: Sequence[str] | None = None, namespace: object = None) -> argparse.Namespace:
        """Parse positionals wherever they stand among the options (`export onnx --model M OUT`), refusing any
        argument no option takes with a suggestion, and two spellings of one option given different values."""
        self.given = list(sys.argv[1:] if args is None else args)
        self.refuse_two_values()
        namespace, extras = self.parse_known_intermixed_args(args, namespace)
        if extras:
            self.error(unrecognized(extras, self.option_strings()))
        return _in_range(namespace)

    def refuse_two_values(self) -> None:
        """Refuse two spellings of one option (`--output-dir A --output_dir B`) given different values."""
        settings = {option: "--" + action.dest for action in self._actions for option in action.option_strings}
        switches = {option for action in self._actions if action.nargs == 0 for option in action.option_strings}
        refuse_two_values(spelled_values(self.given, settings.get, switches))

    def option_strings(self) -> list[str]:
        """Every spelling of every option, aliases included."""
        return [option for action in self._actions for option in action.option_strings]

    def error(self, message: str) -> NoReturn:
        """Refuse the command line with one `UserInputError` (every entry point prints it as one line, no usage block,
        exit status 2). A misspelt flag is the error named even when argparse stops earlier (at a required option the
        misspelling was meant to give)."""
        known = self.option_strings()
        unknown = [
            argument for argument in getattr(self, "given", [])
            if argument.startswith("--") and argument.split("=", 1)[0] not in known
        ]  # fmt: skip
        if unknown:
            message = unrecognized(unknown, known)
        raise UserInputError(f"{message} (--help lists the options)")


class CommandParser(OneLineErrors, argparse.ArgumentParser):
    """The argument parser of every `convnext-hf` command: flags are declared with underscores (`--output_dir`) and
    also accepted with dashes (`--output-dir`), so one spelling works across all commands."""

    def add_argument(self, *names: str, **kwargs: object) -> argparse.Action:
        """Add an argument; each `--flag_with_underscores` also answers to `--flag-with-underscores`."""
        dashed = [name.replace("_", "-") for name in names if name.startswith("--") and "_" in name]
        return super().add_argument(*names, *dashed, **kwargs)


def print_box(lines: Sequence[str]) -> None:
    """Print the lines in a box, the first one as its title (the summary that ends `demo` and `train`); control
    characters in them are shown escaped (`printable`), so that a path or a name cannot break the box."""
    lines = [printable(line) for line in lines]
    width = max(len(line) for line in lines)
    print("\n┌" + "─" * (width + 2) + "┐")
    for index, line in enumerate(lines):
        print(f"│ {line.ljust(width)} │")
        if index == 0:
            print("├" + "─" * (width + 2) + "┤")
    print("└" + "─" * (width + 2) + "┘")


def usage() -> str:
    """The top-level help: every command with its one-line description."""
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "usage: convnext-hf <command> [options]\n\ncommands:\n" + "\n".join(lines) + (
        "\n\n`convnext-hf <command> --help` lists a command's options.\n"
    )


# Progress bars (tqdm's, and those of transformers, huggingface_hub and datasets) are redrawn with carriage returns
# and cursor codes, which fill a log file; off a terminal they are turned off, unless the variables say otherwise.
PROGRESS_BAR_SWITCHES = ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS")


def one_line(error: BaseException) -> str:
    """A refusal's message as the one line every command prints: a listing's lines joined, and what a user chose
    (a class name, a path) shown escaped (`printable`)."""
    return printable(" ".join(line.strip() for line in str(error).splitlines() if line.strip()))


def run_command(name: str, command_main: Callable[[list[str]], object], argv: Sequence[str]) -> int:
    """Run `command_main(argv)` as every entry point does: a `UserInputError`, or the system's refusal of a write (a
    full disk, the file-size limit, a read-only folder: `atomic.write_refusal`), becomes one line on stderr and exit
    status 2; a result that is not an int (a report, metrics, None) means success."""
    if not sys.stderr.isatty():
        for variable in PROGRESS_BAR_SWITCHES:
            os.environ.setdefault(variable, "1")
    from .atomic import write_refusal

    try:
        status = command_main(list(argv))
    except UserInputError as error:
        print(f"{name}: error: {one_line(error)}", file=sys.stderr)
        return USER_ERROR_EXIT_STATUS
    except Exception as error:  # noqa: BLE001 - only the system's refusal of a write is reported; the rest re-raised
        refusal = write_refusal(error)
        if refusal is None:
            raise
        print(f"{name}: error: {one_line(refusal)}", file=sys.stderr)
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
