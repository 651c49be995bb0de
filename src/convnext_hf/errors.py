"""The one exception for bad input: a message that names the problem and the fix, shown without a traceback."""

from __future__ import annotations


class UserInputError(ValueError):
    """Input a user can fix (a path, a flag, a file, a checkpoint): the `convnext-hf` commands print the message alone
    and exit with status 2. Anything else that escapes a command is a bug and keeps its traceback."""


USER_ERROR_EXIT_STATUS = 2
