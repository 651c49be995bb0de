"""Renaming parameters between checkpoint layouts with templates that read the same in both directions.

A rule is a pair of templates such as ("stages.{i}.{j}.gamma", "encoder.stages.{i}.layers.{j}.layer_scale_parameter").
Placeholders: `{i}`, `{j}`, `{k}` match a number, `{p}` a parameter name (`weight`, `bias`, BatchNorm buffers),
`{path}` any dotted remainder. The first rule whose source template matches a key renames it; a key no rule matches
is reported, never dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from ..errors import UserInputError

Value = TypeVar("Value")

PLACEHOLDERS = {
    "i": r"\d+",
    "j": r"\d+",
    "k": r"\d+",
    "p": r"weight|bias|running_mean|running_var|num_batches_tracked",
    "path": r"[\w.]+",
}

Rule = tuple[str, str]


def _compile(template: str) -> re.Pattern[str]:
    pattern = ""
    for literal, name in re.findall(r"([^{]*)(?:\{(\w+)\})?", template):
        pattern += re.escape(literal)
        if name:
            pattern += f"(?P<{name}>{PLACEHOLDERS[name]})"
    return re.compile(pattern)


@dataclass(frozen=True)
class RenameResult:
    """Renamed entries, and the source keys no rule matched."""

    renamed: dict
    unmatched: list[str]


def rename(entries: Mapping[str, Value], rules: Iterable[Rule]) -> RenameResult:
    """Rename every key of `entries` by the first matching rule; collect the keys no rule matches."""
    compiled = [(_compile(source), target) for source, target in rules]
    renamed: dict[str, Value] = {}
    unmatched: list[str] = []
    for key, value in entries.items():
        for pattern, target in compiled:
            match = pattern.fullmatch(key)
            if match:
                new_key = target.format(**match.groupdict())
                if new_key in renamed:
                    first = next(other for other in entries if other != key and _renames_to(other, compiled, new_key))
                    raise UserInputError(
                        f"Refusing to convert: {first!r} and {key!r} are both {new_key!r} in the model; the checkpoint "
                        "holds one parameter twice or mixes two layouts. Pass one model's weights."
                    )
                renamed[new_key] = value
                break
        else:
            unmatched.append(key)
    return RenameResult(renamed, unmatched)


def _renames_to(key: str, compiled: list[tuple[re.Pattern[str], str]], new_key: str) -> bool:
    """Whether the first rule matching `key` gives `new_key`."""
    for pattern, target in compiled:
        match = pattern.fullmatch(key)
        if match:
            return target.format(**match.groupdict()) == new_key
    return False


def invert(rules: Iterable[Rule]) -> list[Rule]:
    """The rules that undo `rules`."""
    return [(target, source) for source, target in rules]


def prefixed(rules: Iterable[Rule], source_prefix: str, target_prefix: str) -> list[Rule]:
    """`rules` applied under a prefix on each side, e.g. "backbone." for a model nested in a larger one."""
    return [(source_prefix + source, target_prefix + target) for source, target in rules]
