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


def test_model_card_shows_chosen_names_without_breaking_its_tables():
    from convnext_hf.train.card import CardFacts, build_model_card

    names = ["a|b", "back`tick", "plain"]
    facts = CardFacts(
        model_name="out\ndir", base_model=None, variant="atto", architecture="ConvNeXt-atto", dataset="/data/\x1b[2Jx",
        hub_dataset=None, label_names=names, num_train=3, num_validation=3, image_size=32,
        hyperparameters={"note": "x|y"}, results={"eval_accuracy": 0.5},
        task="object-detection", per_label={"a|b": 0.25, "back`tick": 0.5, "plain": 0.75},
    )  # fmt: skip
    text = build_model_card(facts, "out").text
    assert "# out\\ndir" in text and "\x1b" not in text and "/data/\\x1b[2Jx" in text
    assert "3 classes: `a|b`, ``back`tick``, `plain`." in text
    assert "| a\\|b | 25.00% |" in text and "| note | x\\|y |" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert all(line.replace("\\|", "").count("|") == 3 for line in rows)
