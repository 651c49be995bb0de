import runpy
from pathlib import Path

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
