"""Annotation and label files checked where they enter: their structure and types, by the JSON path of each problem.

A file a user or a dataset gives (a COCO annotation file, a Hub dataset's `objects` rows, a CSV or JSON-lines label
file) is data, not code: it is read without running anything, every value a run uses is checked for its type and
range before it is used, and a refusal names the file, the JSON path (or row and column) of the first problems and
the value found there, e.g. `annotations[3].bbox[0]: "a" is not a number`. Paths inside such files are confined to
the data folder they are relative to: absolute paths and `..` steps out of it are refused.

The task schemas (detection's COCO and `objects`, classification's label files) are written with these checks.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from .errors import UserInputError

# Problems listed in a refusal; the count of the others follows.
SHOWN_PROBLEMS = 5


def shown_value(value: Any) -> str:
    """A JSON value as a short string for a message (long ones cut)."""
    try:
        text = json.dumps(value, ensure_ascii=True, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Problems:
    """The problems found in one file, each at its JSON path; `refuse` raises them as one UserInputError."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.found: list[str] = []

    def add(self, path: str, problem: str) -> None:
        """Record that the value at `path` has `problem` (e.g. `"a" is not a number`)."""
        self.found.append(f"{path}: {problem}" if path else problem)

    def __bool__(self) -> bool:
        return bool(self.found)

    def refuse(self, fix: str) -> None:
        """Raise the first problems (with the count of the rest) and the `fix`, if any were found."""
        if not self.found:
            return
        listed = "; ".join(self.found[:SHOWN_PROBLEMS])
        more = f" (and {len(self.found) - SHOWN_PROBLEMS} more)" if len(self.found) > SHOWN_PROBLEMS else ""
        raise UserInputError(f"{self.source}: {listed}{more}. {fix}")


def is_number(value: Any) -> bool:
    """A finite JSON number (bool is not one)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_integer(value: Any) -> bool:
    """A JSON integer (bool is not one; 3.0 is not one either: ids and sizes are written as integers)."""
    return isinstance(value, int) and not isinstance(value, bool)


def number_problem(value: Any) -> str:
    """Why `value` is not a finite number ("" when it is)."""
    if is_number(value):
        return ""
    if isinstance(value, float):
        return f"{shown_value(value)} is not a finite number"
    return f"{shown_value(value)} is not a number"


def check_label_names(names: list[tuple[str, Any]], problems: Problems) -> None:
    """Class names, each given as (its JSON path, the name): non-empty strings on one line, each once (a null would
    become the class "None", a newline would break the tables and logs that show it)."""
    seen: dict[str, str] = {}
    for path, name in names:
        if not isinstance(name, str) or not name.strip():
            problems.add(path, f"{shown_value(name)} is not a class name (a non-empty string)")
        elif not name.isprintable():
            problems.add(path, f"{shown_value(name)} holds control characters (a newline, an escape)")
        elif name in seen:
            problems.add(path, f"{shown_value(name)} is also the name at {seen[name]}")
        else:
            seen[name] = path


def confined_path(base: str, relative: Any) -> tuple[str, str]:
    """(the path `relative` names under the folder `base`, "") or ("", why it is refused): a file named by a data
    file stays inside the folder it is relative to, so that no file elsewhere is read, trained on or published."""
    if not isinstance(relative, str) or not relative.strip():
        return "", f"{shown_value(relative)} is not a file name"
    if "\x00" in relative:
        return "", f"{shown_value(relative)} holds a NUL character"
    if os.path.isabs(relative) or os.path.splitdrive(relative)[0]:
        return "", f"{shown_value(relative)} is an absolute path; name the file relative to {base}"
    normal = os.path.normpath(relative)
    if normal == os.pardir or normal.startswith(os.pardir + os.sep):
        return "", f"{shown_value(relative)} leads out of {base}; keep the files inside it"
    return os.path.join(base, normal), ""


def read_json_file(path: str, flag: str, what: str) -> Any:
    """The JSON value in the file `path` (given by `flag`), refused in one line when it is missing, not UTF-8 JSON,
    or nested too deeply to read."""
    if not os.path.isfile(path):
        kind = "is a folder" if os.path.isdir(path) else "does not exist"
        raise UserInputError(f"{flag} {path} {kind}; pass {what}.")
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserInputError(f"{flag} {path} is not JSON ({error}); pass {what}.") from None
    except RecursionError:
        raise UserInputError(f"{flag} {path} nests its values too deeply to be {what}; pass {what}.") from None
