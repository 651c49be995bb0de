"""A data folder the user names (`--train_dir`, `--validation_dir`, mask folders): refused in one line, saying what the
path is, when it is not a folder."""

from __future__ import annotations

import os

from .errors import UserInputError


def check_data_folder(path: str | os.PathLike, flag: str, layout: str) -> None:
    """Refuse a path that is a file or does not exist; `layout` says what the folder should hold."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return
    kind = "is a file" if os.path.exists(path) else "does not exist"
    raise UserInputError(f"{flag} {path} {kind}; pass {layout}.")
