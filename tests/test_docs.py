import runpy
from pathlib import Path

DOCS = Path(__file__).parents[1] / "docs"


def test_variants_table_is_current():
    variants_table = runpy.run_path(str(DOCS / "make_variants_table.py"))["variants_table"]
    rendered = variants_table()
    assert rendered in (DOCS / "variants.md").read_text()
    assert "| `tiny` | (96, 192, 384, 768) | (3, 3, 9, 3) | 28.59 | 4.46 | 13.1 | 82.1 | 82.9 |" in rendered
