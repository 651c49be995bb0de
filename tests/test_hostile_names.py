"""Names users choose (class names, paths) shown escaped by one rule: one line, no terminal codes, no broken tables."""

from convnext_hf.card_table import code_span, facts_table, markdown_cell
from convnext_hf.cli import print_box, printable


def test_printable_escapes_control_characters_only():
    assert printable("plain name") == "plain name"
    assert printable("a\nb\tc\x1b[31mred") == "a\\nb\\tc\\x1b[31mred"
    assert printable("back\\slash 'quote' é") == "back\\slash 'quote' é"


def test_table_cells_keep_their_row():
    table = facts_table({"a|b": "x\ny", "\x1b[2J": 1})
    assert table.splitlines() == ["| | |", "|---|---|", "| a\\|b | x\\ny |", "| \\x1b[2J | 1 |"]
    assert markdown_cell("|") == "\\|"


def test_code_span_holds_backticks():
    assert code_span("cat") == "`cat`"
    assert code_span("a`b") == "``a`b``"
    assert code_span("`x") == "`` `x ``"


def test_box_lines_stay_in_the_box(capsys):
    print_box(["Results", "output: /tmp/out\nput", "class \x1b[31mred\x1b[0m"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6
    assert lines[3] == "│ output: /tmp/out\\nput    │"
    assert "\x1b" not in "".join(lines)
    assert len({len(line) for line in lines}) == 1
