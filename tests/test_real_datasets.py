"""Real preference datasets in their published schemas, with their known quirks (see tests/real_schemas.py):
each loads by default to the expected pairs with the quirky rows counted by kind; policy raise names the first
problem row; files that are really wrong are still refused with the reason."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from real_schemas import FIXTURES

from orpo_kit.cli import main
from orpo_kit.data import DataSourceError, RowProblem, load_pairs
from orpo_kit.data.hh_style import DROPPED_AS, QUIRKS, write_hh_style_file

FORMAT = {
    "ultrafeedback_binarized": "conversational",
    "orpo_dpo_mix_40k": "conversational",
    "intel_orca_dpo_pairs": "mapped",
    "distilabel_intel_orca_dpo_pairs": "mapped",
    "distilabel_capybara_dpo_7k": "conversational",
    "shp": "labeled_ab",
    "hh_rlhf": "implicit",
}


def _content(pairs) -> list[tuple]:
    return [(p.prompt_messages, p.chosen, p.rejected) for p in pairs]


def test_every_fixture_has_a_format() -> None:
    assert set(FORMAT) == set(FIXTURES)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_published_schema_loads_by_default_to_the_expected_pairs(name: str, tmp_path: Path) -> None:
    fixture = FIXTURES[name]
    path = fixture.materialize(tmp_path)
    pairs, report = load_pairs(path)
    assert report.format == FORMAT[name]
    assert _content(pairs) == fixture.expected
    assert report.dropped == fixture.dropped
    assert report.rows_read == len(fixture.rows) == report.kept + sum(report.dropped.values())


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_policy_raise_names_the_first_problem_row(name: str, tmp_path: Path) -> None:
    fixture = FIXTURES[name]
    path = fixture.materialize(tmp_path)
    with pytest.raises(RowProblem) as raised:
        load_pairs(path, policy="raise")
    assert str(raised.value).startswith(f"{path}, {fixture.first_problem_line}"), raised.value
    _, report = load_pairs(path)
    first_kind = raised.value.kind
    assert str(raised.value) == report.examples[first_kind][0]


def test_hh_quirks_handled_on_purpose(tmp_path: Path) -> None:
    """Kept quirks keep their text; dropped ones are counted under their kind with file, line and field."""
    path = tmp_path / "test.jsonl.gz"
    quirks = write_hh_style_file(path, 600, quirk_share=0.01, seed=5)
    pairs, report = load_pairs(path)
    assert report.dropped == Counter(DROPPED_AS[q] for q in quirks if q in DROPPED_AS)
    by_line = {int(p.origin.rsplit("line ", 1)[1]): p for p in pairs}
    for line, quirk in enumerate(quirks, start=1):
        if quirk == "role_word_inside":
            assert "'Human: thanks' or 'Assistant: welcome'" in by_line[line].chosen
        elif quirk == "whitespace":
            assert all(m["content"] == m["content"].strip() for m in by_line[line].prompt_messages)
        elif quirk in DROPPED_AS:
            assert line not in by_line
    assert re.search(
        r"test\.jsonl\.gz, line \d+, field 'chosen', turn \d+: two 'assistant' turns in a row",
        report.examples["bad_order"][0],
    )
    assert set(QUIRKS) == {q for q in quirks if q}


def test_ten_thousand_hh_rows_load_by_default_and_inspect_data_reports_the_kinds(tmp_path: Path, capsys) -> None:
    path = tmp_path / "train.jsonl.gz"
    quirks = write_hh_style_file(path, 10_000, quirk_share=0.01, seed=0)
    assert main(["inspect-data", str(path), "--tokenizer", "none"]) == 0
    out = capsys.readouterr().out
    assert "rows read: 10000, pairs kept: 9700, dropped: 300" in out
    for kind in DROPPED_AS.values():
        assert f"dropped 100 x {kind}" in out
    assert sum(q is not None for q in quirks) == 500


def test_the_real_hh_share_of_quirks_loads_but_raise_stops(tmp_path: Path) -> None:
    """0.56% quirky rows (13 of 2,312 in the real harmless-base test file) load; policy raise refuses."""
    path = tmp_path / "test.jsonl"
    write_hh_style_file(path, 2312, quirk_share=0.0011, seed=1)
    pairs, report = load_pairs(path)
    assert sum(report.dropped.values()) == 9 and len(pairs) == 2303
    with pytest.raises(RowProblem):
        load_pairs(path, policy="raise")


# --------------------------------------------------------------------------------------------------------------
# files that are really wrong are still refused, with the reason


def test_csv_of_unrelated_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sales.csv"
    path.write_text("date,region,units\n2024-01-01,north,5\n2024-01-02,south,7\n")
    with pytest.raises(
        DataSourceError,
        match=rf"^{re.escape(str(path))}: cannot tell the data format from columns "
        r"\['date', 'region', 'units'\]",
    ):
        load_pairs(path)


def test_json_lines_of_numbers_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "numbers.jsonl"
    path.write_text("1\n2\n3.5\n")
    with pytest.raises(
        DataSourceError,
        match=rf"^{re.escape(str(path))}: none of its 3 rows is a record of named "
        rf"fields; the first: {re.escape(str(path))}, line 1: expected a JSON "
        "object, got int",
    ):
        load_pairs(path)


def test_a_file_thirty_percent_malformed_is_refused_naming_the_first_problem(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    lines = []
    for i in range(100):
        row = {"prompt": f"Question {i}?", "chosen": f"Good {i}.", "rejected": f"Bad {i}."}
        lines.append(json.dumps(row)[:-9] if i % 10 in (4, 5, 8) else json.dumps(row))  # 30 cut-off lines
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataSourceError) as refused:
        load_pairs(path)
    message = str(refused.value)
    assert message.startswith(
        f"{path}: refused: 30 of 100 rows (30.0%) are malformed, more than max_bad_row_fraction=0.05"
    ), message
    assert f"First problem: {path}, line 5: not valid JSON" in message and "By kind: bad_json 30" in message
    assert "data_policy=drop" in message
    assert len(load_pairs(path, policy="drop")[0]) == 70  # asked for: the good rows
    assert len(load_pairs(path, max_bad_fraction=0.5)[0]) == 70


def test_a_file_whose_first_rows_are_all_malformed_is_refused(tmp_path: Path) -> None:
    """The wrong format altogether: transcripts of another shape in the first rows."""
    path = tmp_path / "chat.jsonl"
    rows = [{"chosen": "\n\nUser: hi\n\nBot: hello", "rejected": "\n\nUser: hi\n\nBot: go away"}] * 12
    rows += [
        {"chosen": f"\n\nHuman: q{i}\n\nAssistant: a", "rejected": f"\n\nHuman: q{i}\n\nAssistant: b"}
        for i in range(400)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataSourceError, match=r"refused: its first 10 rows are all malformed"):
        load_pairs(path)


def test_cli_refusal_is_one_line_and_exit_code_2(tmp_path: Path, capsys) -> None:
    path = tmp_path / "numbers.jsonl"
    path.write_text("1\n2\n")
    assert main(["inspect-data", str(path), "--tokenizer", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("orpo-kit inspect-data: error: ") and str(path) in err


def test_ties_can_be_kept_on_request(tmp_path: Path) -> None:
    fixture = FIXTURES["ultrafeedback_binarized"]
    path = fixture.materialize(tmp_path)
    pairs, report = load_pairs(path, policy={"tie": "keep"})
    assert len(pairs) == len(fixture.expected) + 1 and report.kept_anyway == Counter({"tie": 1})
    assert "kept 1 x tie" in "\n".join(report.lines())
    with pytest.raises(ValueError, match="keep for tie and duplicate"):
        load_pairs(path, policy={"bad_order": "keep"})


def test_train_on_ten_thousand_hh_rows_with_quirks(tmp_path: Path, capsys) -> None:
    """`orpo-kit train --preset tiny --data FILE` trains on the quirky file and prints the inspect-data report."""
    path = tmp_path / "train.jsonl.gz"
    write_hh_style_file(path, 10_000, quirk_share=0.01, seed=0)
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--preset",
                "tiny",
                "--data",
                str(path),
                "--output-dir",
                str(run),
                "--max-steps",
                "2",
                "eval_steps=2",
                "max_eval_pairs=16",
                "device=cpu",
                "learning_rate=1e-3",
                "warmup_ratio=0.1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "rows read: 10000, pairs kept: 9700, dropped: 300" in out and "split: 8730 train / 16 eval" in out
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 2
