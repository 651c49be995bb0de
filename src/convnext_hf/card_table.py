"""The two-column markdown table that the model cards (converted checkpoints, trained models) state facts in, and
the escaping of the text a user chose (class names, paths) that the cards show."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .cli import printable


def markdown_cell(text: object) -> str:
    """`text` as one markdown table cell: on one line without terminal codes (`printable`), its `|` escaped so that it
    cannot split the row into more cells."""
    return printable(text).replace("|", "\\|")


def code_span(text: object) -> str:
    """`text` as an inline markdown code span on one line: fenced with more backticks than it holds."""
    text = printable(text)
    fence = "`" * (1 + max((len(part) for part in "".join(c if c == "`" else " " for c in text).split()), default=0))
    padded = f" {text} " if text.startswith("`") or text.endswith("`") else text
    return f"{fence}{padded}{fence}"


def facts_table(rows: Mapping[str, object] | Iterable[tuple[str, object]], header: tuple[str, str] = ("", "")) -> str:
    """Rows of (name, value) as a markdown table, under `header` (blank by default); every cell escaped
    (`markdown_cell`)."""
    items = rows.items() if isinstance(rows, Mapping) else rows
    lines = ["|" + "|".join(f" {markdown_cell(cell)} " if cell else " " for cell in header) + "|", "|---|---|"]
    lines += [f"| {markdown_cell(name)} | {markdown_cell(value)} |" for name, value in items]
    return "\n".join(lines)
