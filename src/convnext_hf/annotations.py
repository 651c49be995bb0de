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
import sys
from collections.abc import Sequence
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


# JSON integers beyond this are not ids or sizes (pycocotools and the datasets columns hold ids in 64 bits).
INTEGER_LIMIT = 2**63


def is_number(value: Any) -> bool:
    """A finite JSON number (bool is not one; an integer too large for a float is not finite either)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return abs(value) <= sys.float_info.max if isinstance(value, int) else math.isfinite(value)


def is_integer(value: Any) -> bool:
    """A JSON integer of 64 bits (bool is not one; 3.0 is not one either: ids and sizes are written as integers)."""
    return isinstance(value, int) and not isinstance(value, bool) and -INTEGER_LIMIT <= value < INTEGER_LIMIT


def integer_problem(value: Any) -> str:
    """Why `value` is not a 64-bit integer ("" when it is)."""
    if is_integer(value):
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{shown_value(value)} does not fit in 64 bits"
    return f"{shown_value(value)} is not an integer"


def number_problem(value: Any) -> str:
    """Why `value` is not a finite number ("" when it is)."""
    if is_number(value):
        return ""
    if isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool)):
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


LABEL_FILE_FIX = (
    "Fix the file: a header row of column names, then one row per image with its path (relative to the file's "
    "folder) and its label(s); or JSON lines, one object per image."
)


# UTF-8, with or without the byte-order mark spreadsheet programs write first (pandas drops it too).
CSV_ENCODING = "utf-8-sig"


def _csv_rows(path: str, problems: Problems) -> tuple[list[str], list[list[str]]]:
    """The header and rows of a UTF-8 CSV file (a byte-order mark, as spreadsheets write one, is not part of the first
    column's name); undecodable text and unbalanced quotes recorded as problems."""
    import csv

    try:
        with open(path, newline="", encoding=CSV_ENCODING) as file:
            rows = list(csv.reader(file, strict=True))
    except UnicodeDecodeError as error:
        problems.add(f"byte {error.start}", "the file is not UTF-8 text")
        return [], []
    except csv.Error as error:
        problems.add("", f"not a CSV file ({error})")
        return [], []
    if not rows or not any(cell.strip() for cell in rows[0]):
        problems.add("row 1", "no header (the file is empty)")
        return [], []
    return rows[0], rows[1:]


def _json_rows(path: str, problems: Problems) -> tuple[list[str], list[dict]]:
    """The objects of a JSON file (a list of objects) or JSON-lines file (one object a line), with their keys."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except UnicodeDecodeError as error:
        problems.add(f"byte {error.start}", "the file is not UTF-8 text")
        return [], []
    try:
        whole = json.loads(text)
        whole = whole if isinstance(whole, list) else [whole]
        entries = [(f"[{index}]", entry) for index, entry in enumerate(whole)]
    except json.JSONDecodeError:
        entries = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    entries.append((f"line {number}", json.loads(line)))
                except json.JSONDecodeError as error:
                    problems.add(f"line {number}", f"not JSON ({error.msg})")
    except RecursionError:
        problems.add("", "values nested too deeply")
        return [], []
    rows = []
    for where, entry in entries:
        if isinstance(entry, dict):
            rows.append(entry)
        else:
            problems.add(where, f"{shown_value(entry)} is not an object of an image's columns")
    keys = list(dict.fromkeys(key for row in rows for key in row))
    if not rows and not problems:
        problems.add("", "no rows (the file is empty)")
    return keys, rows


def check_label_file(path: str, flag: str, path_columns: Sequence[tuple[str, ...]]) -> None:
    """A CSV or JSON(-lines) file of image paths and labels checked where it enters: readable, one cell per column in
    every row (CSV), column names given once, and the paths in it (for each tuple of `path_columns`, the first of its
    names the file has) confined to the file's folder."""
    problems = Problems(f"{flag} {path}")
    csv_file = path.lower().endswith(".csv")
    columns, rows = (_csv_rows if csv_file else _json_rows)(path, problems)
    problems.refuse(LABEL_FILE_FIX)
    if csv_file:
        repeated = sorted({name for name in columns if columns.count(name) > 1})
        if repeated or not all(name.strip() for name in columns):
            problems.add("row 1", f"the header {shown_value(columns)} names a column twice or leaves one unnamed")
        for number, row in enumerate(rows, start=2):
            if len(row) != len(columns) and any(cell.strip() for cell in row):
                problems.add(f"row {number}", f"{len(row)} cells under a header of {len(columns)} columns")
        rows = [dict(zip(columns, row, strict=False)) for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        problems.add("", "no rows of images (only a header)")
    base = os.path.dirname(os.path.abspath(path))
    for candidates in path_columns:
        column = next((name for name in candidates if name in columns), None)
        for number, row in enumerate(rows if column else []):
            _, refused = confined_path(base, row.get(column))
            if refused:
                problems.add(f"row {number + 2 if csv_file else number + 1}, column {column!r}", refused)
    problems.refuse(LABEL_FILE_FIX)
