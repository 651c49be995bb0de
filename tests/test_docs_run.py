"""Every Python block and every cheap shell line in README.md and docs/ runs as written, so the docs cannot drift.

A page is read as a reader follows it: its blocks run in order, in one folder and (for Python) one namespace, so a
block may use what an earlier one wrote or defined. What a page assumes the reader already has — a saved model folder,
an image, a converted checkpoint — is stated in a comment just above the block, which also says when a block is not
run here and why:

    <!-- docs-run: setup classifier=my-convnext image=cat.jpg -->   make these before the block runs
    <!-- docs-run: shell -->                                          run this bash block, line by line
    <!-- docs-run: skip REASON -->                                    not run here, for the reason given

Python blocks run unless skipped; a bash block must say `shell` or `skip`, so none escapes unnoticed. Blocks of other
languages (json, yaml, text trees) are data, not commands.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import FIXTURES, run_convert

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DIRECTIVE = re.compile(r"<!--\s*docs-run:\s*(?P<verb>setup|shell|skip)\b(?P<rest>.*?)-->")
FENCE = re.compile(r"^```(?P<language>\S*)\s*$")


@dataclass
class Block:
    """One fenced code block of a page, with the directive written above it."""

    page: Path
    line: int
    language: str
    code: str
    verb: str | None = None
    arguments: str = ""
    setup: list[tuple[str, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        """`page.md:line`, how a failure names the block."""
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def parse_blocks(page: Path) -> list[Block]:
    """The fenced blocks of a page with their directives (a setup line may precede a shell/skip one)."""
    blocks: list[Block] = []
    pending: list[re.Match] = []
    lines = page.read_text().splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        fence = FENCE.match(line)
        if fence is None:
            directive = DIRECTIVE.search(line)
            if directive:
                pending.append(directive)
            elif line.strip():
                pending = []
            index += 1
            continue
        start, body = index + 1, []
        index += 1
        while index < len(lines) and not lines[index].startswith("```"):
            body.append(lines[index])
            index += 1
        block = Block(page, start, fence["language"], "\n".join(body) + "\n")
        for directive in pending:
            if directive["verb"] == "setup":
                block.setup += [tuple(item.split("=", 1)) for item in directive["rest"].split()]
            else:
                block.verb, block.arguments = directive["verb"], directive["rest"].strip()
        blocks.append(block)
        pending = []
        index += 1
    return blocks


def shell_commands(code: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, comments and blank lines dropped."""
    commands, current = [], ""
    for line in code.splitlines():
        stripped = line.split(" #", 1)[0].rstrip() if not line.lstrip().startswith("#") else ""
        if stripped.endswith("\\"):
            current += stripped[:-1].strip() + " "
            continue
        current += stripped.strip()
        if current.strip():
            commands.append(current.strip())
        current = ""
    return commands


# What a page may assume the reader has. Each maker gets the folder the page runs in and the name the page uses.
def _image(folder: Path, name: str, mode: str = "RGB") -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(48, 64, len(mode)), dtype=np.uint8)
    Image.fromarray(pixels.squeeze(), mode).save(folder / name)


def _images(folder: Path, name: str) -> None:
    for label in ("cat", "dog"):
        (folder / name / label).mkdir(parents=True)
        for index in range(2):
            _image(folder / name / label, f"{index}.png")


def _classifier(folder: Path, name: str) -> None:
    from convnext_hf import ConvNextConfig, ConvNextForImageClassification, ConvNextHFImageProcessor

    config = ConvNextConfig(
        hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], id2label={0: "cat", 1: "dog"}, label2id={"cat": 0, "dog": 1}
    )
    ConvNextForImageClassification(config).eval().save_pretrained(folder / name)
    ConvNextHFImageProcessor(size={"shortest_edge": 64}).save_pretrained(folder / name)


def _variant(folder: Path, name: str) -> None:
    """A ConvNeXt-atto classifier folder, as `convnext-hf convert` writes one (random weights)."""
    from convnext_hf import ConvNextConfig, ConvNextForImageClassification

    ConvNextForImageClassification(ConvNextConfig.from_variant("atto")).save_pretrained(folder / name)


def _converted(source: str) -> Callable[[Path, str], None]:
    def make(folder: Path, name: str) -> None:
        assert run_convert("--checkpoint", FIXTURES / source, "--output_dir", folder / name) == 0

    return make


SETUPS: dict[str, Callable[[Path, str], None]] = {
    "image": _image,
    "rgba": lambda folder, name: _image(folder, name, "RGBA"),
    "images": _images,
    "classifier": _classifier,
    "variant": _variant,
    "checkpoint": lambda folder, name: shutil.copy(FIXTURES / "mini.fb.pth", folder / name),
    "dinov3": _converted("family/dinov3-mini.dinov3.pth"),
    "upernet": _converted("upernet-mini.fb-ade20k.pth"),
}

BLOCKS = [block for page in PAGES for block in parse_blocks(page)]
RUNNABLE = {"python", "bash"}


def test_every_command_block_is_run_or_says_why_not():
    undecided = [block.name for block in BLOCKS if block.language == "bash" and block.verb is None]
    assert undecided == [], "bash blocks need <!-- docs-run: shell --> or <!-- docs-run: skip REASON -->"
    unexplained = [block.name for block in BLOCKS if block.verb == "skip" and not block.arguments]
    assert unexplained == [], "a skipped block must say why"
    unknown = [block.name for block in BLOCKS for kind, _ in block.setup if kind not in SETUPS]
    assert unknown == [], f"unknown setup kinds; known: {sorted(SETUPS)}"


def test_parser_reads_directives_and_continuations(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "text\n<!-- docs-run: setup image=a.png -->\n<!-- docs-run: shell -->\n```bash\n"
        "convnext-hf demo \\\n    --output_dir d   # comment\n# only a comment\n\necho 1\n```\n"
        "\n```python\nx = 1\n```\n"
    )
    first, second = parse_blocks(page)
    assert (first.verb, first.setup, first.line) == ("shell", [("image", "a.png")], 4)
    assert shell_commands(first.code) == ["convnext-hf demo --output_dir d", "echo 1"]
    assert (second.verb, second.setup, second.language, second.code) == (None, [], "python", "x = 1\n")


def _page_blocks(page: Path) -> list[Block]:
    return [block for block in parse_blocks(page) if block.language in RUNNABLE and block.verb != "skip"]


def _run_shell(command: str, folder: Path) -> None:
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        ["bash", "-c", command], cwd=folder, env=environment, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("page", [page for page in PAGES if _page_blocks(page)], ids=lambda page: page.name)
def test_page_runs_as_written(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for checkout_folder in ("conversion", "src", "benchmarks"):
        (tmp_path / checkout_folder).symlink_to(ROOT / checkout_folder)
    namespace: dict = {"__name__": "__docs__"}
    for block in _page_blocks(page):
        for kind, name in block.setup:
            if not (tmp_path / name).exists():
                SETUPS[kind](tmp_path, name)
        if block.language == "python":
            exec(compile(block.code, block.name, "exec"), namespace)
        else:
            for command in shell_commands(block.code):
                _run_shell(command, tmp_path)
