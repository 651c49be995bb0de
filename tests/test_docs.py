import importlib
import re
import runpy
from pathlib import Path

from convnext_hf.cli import COMMANDS, OneLineErrors

DOCS = Path(__file__).parents[1] / "docs"


def test_variants_table_is_current():
    variants_table = runpy.run_path(str(DOCS / "make_variants_table.py"))["variants_table"]
    rendered = variants_table()
    assert rendered in (DOCS / "variants.md").read_text()
    assert "| `tiny` | (96, 192, 384, 768) | (3, 3, 9, 3) | 28.59 | 4.46 | 13.1 | 82.1 | 82.9 |" in rendered


def test_readme_layout_table_names_every_module_and_folder():
    root = DOCS.parent
    readme = (root / "README.md").read_text()
    table = [line for line in readme.splitlines() if line.startswith("| `")]
    named = " ".join(table)
    package = root / "src" / "convnext_hf"
    modules = [path.name for path in package.iterdir() if path.suffix == ".py"]
    folders = [f"{path.name}/" for path in package.iterdir() if path.is_dir() and path.name != "__pycache__"]
    expected = [f"src/convnext_hf/{name}" for name in modules + folders]
    expected += ["conversion/convert.py", "tests/", "benchmarks/", "docs/", ".ci/run"]
    assert [path for path in expected if f"`{path}`" not in named] == []
    for line in table:
        for path in line.split("|")[1].replace("`", "").replace(",", " ").split():
            assert (root / path).exists(), f"README.md names {path}, which is not in the tree"


class _Parser(Exception):
    """Carries the parser a command built, stopped before it parses anything."""


def _accepted_flags(command: str, monkeypatch) -> set[str]:
    """Every spelling `convnext-hf <command>` accepts: its parser's options (train: with the aliases it translates)."""
    if command == "train":
        from convnext_hf.train.arguments import ALIASES, BATCH_SIZE_SPELLINGS, MODEL_FLAG, build_parser

        options = {option for action in build_parser([])._actions for option in action.option_strings}
        return options | set(ALIASES) | set(BATCH_SIZE_SPELLINGS) | {MODEL_FLAG}

    def stop(parser, *args, **kwargs):
        raise _Parser(parser)

    monkeypatch.setattr(OneLineErrors, "parse_args", stop)
    monkeypatch.setattr(OneLineErrors, "parse_intermixed_args", stop)
    try:
        importlib.import_module(COMMANDS[command][0]).main([])
    except _Parser as stopped:
        return {option for action in stopped.args[0]._actions for option in action.option_strings}
    raise AssertionError(f"convnext-hf {command} ran without parsing its command line")


def test_the_flag_table_has_one_name_per_row_and_matches_every_parser(monkeypatch):
    text = (DOCS / "usage.md").read_text()
    section = text.split("## Command-line flags", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    header, rows = rows[0], rows[2:]
    commands = header[2:-1]
    assert sorted(commands) == sorted(COMMANDS), "the table has a column per command"
    accepted = {command: _accepted_flags(command, monkeypatch) for command in commands}
    assert len(rows) >= 7
    for flag_cell, _, *marks, also in rows:
        flag = re.fullmatch(r"`(--\w+)`", flag_cell).group(1)  # one name per row: no second spelling in the column
        ticked = [command for command, mark in zip(commands, marks, strict=True) if mark == "✓"]
        for command in commands:
            assert (flag in accepted[command]) == (command in ticked), (flag, command)
            assert (flag.replace("_", "-") in accepted[command]) == (command in ticked), (flag, command)
        for item in also.split(";"):
            owner = re.match(r"\s*(\w+)(?:'s|:)", item)
            for alias in re.findall(r"`(-[-\w]+)`", item):
                for command in [owner.group(1)] if owner and owner.group(1) in commands else ticked:
                    assert alias in accepted[command], (flag, alias, command)


def test_constraints_pin_every_dependency_the_package_names():
    """The README installs with `-c constraints.txt`: every dependency of the package and its extras is pinned there
    (`==`), so a new user's install is the set the suite last passed with (`.ci/newest --lock` writes it)."""
    import tomllib

    root = DOCS.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"].values()
    requirements = project["dependencies"] + [requirement for extra in extras for requirement in extra]

    def canonical(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    names = {canonical(re.match(r"[A-Za-z0-9_.-]+", req).group()) for req in requirements} - {"convnext-hf"}
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==\S+", (root / "constraints.txt").read_text(), re.M)
    pinned = {canonical(name) for name in pins}
    assert sorted(names - pinned) == []
    assert len(pins) == len(pinned), "a package is pinned twice"
