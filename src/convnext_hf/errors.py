"""The exceptions for bad input: a message that names the problem and the fix, shown without a traceback."""

from __future__ import annotations

import os

USER_ERROR_EXIT_STATUS = 2


class UserInputError(ValueError):
    """Input a user can fix (a path, a flag, a file, a checkpoint): the `convnext-hf` commands print the message alone
    and exit with status 2. Anything else that escapes a command is a bug and keeps its traceback."""


def one_line(error: BaseException) -> str:
    """An exception's message on one line (its type's name when it has none), for a refusal that quotes it."""
    return " ".join(str(error).split()) or type(error).__name__


class OutputExistsError(UserInputError, FileExistsError):
    """An output folder that already holds files, refused so that nothing a user would miss is overwritten."""

    def __init__(self, path: str | os.PathLike, remedy: str = "pass --overwrite to replace it") -> None:
        super().__init__(f"{path} already exists and is not empty; {remedy}, or choose another output folder.")
