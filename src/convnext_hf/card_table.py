"""The two-column markdown table that the model cards (converted checkpoints, trained models) state facts in."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def facts_table(rows: Mapping[str, object] | Iterable[tuple[str, object]], header: tuple[str, str] = ("", "")) -> str:
    """Rows of (name, value) as a markdown table, under `header` (blank by default)."""
    items = rows.items() if isinstance(rows, Mapping) else rows
    lines = ["|" + "|".join(f" {cell} " if cell else " " for cell in header) + "|", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in items]
    return "\n".join(lines)
