"""A model folder the user names (`--model`): refused in one line when it is not one, before and while loading."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from safetensors import SafetensorError

from .errors import UserInputError

WRITERS = "a folder written by save_pretrained, `convnext-hf convert` or `convnext-hf train`"


def check_model_folder(path: str | os.PathLike, flag: str = "--model", hub_ids: bool = True) -> None:
    """Refuse a path that cannot hold a saved model: a file, a folder without config.json, or (when `hub_ids`
    allows a name like `org/model`, only for paths that look local) a folder that does not exist."""
    path = os.fspath(path)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise UserInputError(f"{flag} {path} is not a model folder (it has no config.json); pass {WRITERS}.")
        return
    if os.path.exists(path):
        raise UserInputError(f"{flag} {path} is a file; pass {WRITERS}.")
    # `owner/name` is a Hub id; a second slash, or Windows' separator, only a path has.
    looks_local = os.path.isabs(path) or path.startswith((".", "~")) or path.count("/") > 1 or (
        os.sep != "/" and os.sep in path
    )
    if not hub_ids or looks_local:
        raise UserInputError(f"{flag} {path} does not exist; pass {WRITERS}.")


@contextmanager
def loading_model(path: str | os.PathLike, flag: str = "--model") -> Iterator[None]:
    """Within the block, the loaders' errors for an unreadable model (a config that is not JSON or names no model
    type, missing or damaged weights) become one `UserInputError` naming the folder."""
    try:
        yield
    except UserInputError:
        raise
    except (OSError, ValueError, SafetensorError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserInputError(f"{flag} {os.fspath(path)} cannot be loaded as a model: {reason} Pass {WRITERS}.") \
            from error
