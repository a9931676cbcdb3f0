"""A corpus of malformed rows and files: each kind gets its own message naming the file and the line / row,
and a drop policy keeps exactly the good rows of a mixed file while counting every dropped kind.

Text files (.jsonl, .csv) count lines from 1 ("line N"); tables (.json lists, Parquet, Python lists) count
rows from 0 ("row N (counting from 0)").
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from orpo_kit.data import DAMAGE, DEFAULT_POLICY, PROBLEMS, DataSourceError, RowProblem, load_pairs

GOOD = {"prompt": "What is 2 + 2?", "chosen": "2 + 2 = 4.", "rejected": "2 + 2 = 5."}
GOOD2 = {"prompt": "Name a primary colour.", "chosen": "Red.", "rejected": "Green is a primary pigment colour."}


def _msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


CONV_GOOD = {
    "prompt": [_msg("user", "Say hi.")],
    "chosen": [_msg("assistant", "Hi!")],
    "rejected": [_msg("assistant", "No.")],
}
HH_GOOD = {
    "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Say bye.\n\nAssistant: Goodbye!",
    "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Say bye.\n\nAssistant: No.",
}


def jsonl(*rows: Any) -> bytes:
    """Lines of a JSONL file: dicts / lists are dumped, str and bytes are written as they are."""
    out = b""
    for row in rows:
        if isinstance(row, bytes):
            out += row + b"\n"
        elif isinstance(row, str):
            out += row.encode() + b"\n"
        else:
            out += json.dumps(row).encode() + b"\n"
    return out


def parquet_bytes(rows: list[dict], tmp: Path) -> bytes:
    path = tmp / "_tmp.parquet"
    pd.DataFrame(rows).to_parquet(path)
    data = path.read_bytes()
    path.unlink()
    return data


@dataclass
class Case:
    """One malformed input: what to write, how to load it, what must come out."""

    name: str
    filename: str
    content: Any  # bytes, "DIR", None (nothing written), or a callable(tmp_path) -> bytes
    kind: str | None  # the RowProblem kind, or None for a whole-source error
    fragments: list[str]  # must appear in the message (besides the file path)
    kwargs: dict = field(default_factory=dict)


def _hh(turns: list[tuple[str, str]]) -> str:
    return "".join(f"\n\n{who}: {text}" for who, text in turns)


CASES = [
    # --- row problems in JSONL files (line N, counting from 1)
    Case(
        "truncated_json_line",
        "pairs.jsonl",
        jsonl(GOOD, '{"prompt": "p", "chosen": "c", "rej'),
        "bad_json",
        ["line 2", "not valid JSON"],
    ),
    Case(
        "non_utf8_line",
        "pairs.jsonl",
        jsonl(GOOD, GOOD2, b'{"prompt": "caf\xe9", "chosen": "c", "rejected": "r"}'),
        "encoding",
        ["line 3", "not valid UTF-8"],
    ),
    Case(
        "wrong_type_field",
        "pairs.jsonl",
        jsonl(GOOD, {"prompt": "p", "chosen": 3, "rejected": "r"}),
        "wrong_type",
        ["line 2", "field 'chosen'", "expected a string, got int"],
    ),
    Case(
        "line_is_not_an_object",
        "pairs.jsonl",
        jsonl(GOOD, ["p", "c", "r"]),
        "wrong_type",
        ["line 2", "expected a JSON object, got list"],
    ),
    Case(
        "missing_field_in_one_row",
        "pairs.jsonl",
        jsonl(GOOD, {"prompt": "p", "chosen": "c"}),
        "missing_field",
        ["line 2", "field 'rejected'", "missing"],
    ),
    Case(
        "null_field",
        "pairs.jsonl",
        jsonl(GOOD, GOOD2, {"prompt": None, "chosen": "c", "rejected": "r"}),
        "missing_field",
        ["line 3", "field 'prompt'", "missing"],
    ),
    Case(
        "empty_prompt",
        "pairs.jsonl",
        jsonl(GOOD, {"prompt": "   ", "chosen": "c", "rejected": "r"}),
        "empty_prompt",
        ["line 2", "field 'prompt'", "empty"],
    ),
    Case(
        "empty_completion",
        "pairs.jsonl",
        jsonl(GOOD, {"prompt": "p", "chosen": "", "rejected": "r"}),
        "empty_completion",
        ["line 2", "field 'chosen'", "empty"],
    ),
    Case(
        "identical_pair",
        "pairs.jsonl",
        jsonl(GOOD, {"prompt": "p", "chosen": "same", "rejected": "same"}),
        "identical",
        ["line 2", "identical"],
    ),
    Case("duplicate_pair", "pairs.jsonl", jsonl(GOOD, GOOD2, GOOD), "duplicate", ["line 3", "occur earlier"]),
    Case(
        "low_score_margin",
        "pairs.jsonl",
        jsonl(GOOD, {**GOOD2, "score_chosen": 5.0, "score_rejected": 4.5}),
        "low_margin",
        ["line 2", "score margin 0.5 < 1"],
        {"min_score_margin": 1.0},
    ),
    # --- HH-RLHF transcripts
    Case(
        "hh_transcripts_differ_before_final_turn",
        "hh.jsonl",
        jsonl(
            HH_GOOD,
            {
                "chosen": _hh(
                    [("Human", "Hi"), ("Assistant", "Hello!"), ("Human", "Say bye."), ("Assistant", "Goodbye!")]
                ),
                "rejected": _hh(
                    [("Human", "Hi"), ("Assistant", "Hey there."), ("Human", "Say bye."), ("Assistant", "No.")]
                ),
            },
        ),
        "prompt_mismatch",
        ["line 2", "differ at turn 1, before the final assistant turn"],
    ),
    Case(
        "hh_not_a_transcript",
        "hh.jsonl",
        jsonl(HH_GOOD, {"chosen": "Goodbye!", "rejected": HH_GOOD["rejected"]}),
        "bad_order",
        ["line 2", "field 'chosen'", "not a transcript"],
    ),
    # --- conversational message lists
    Case(
        "unknown_message_role",
        "conv.jsonl",
        jsonl(CONV_GOOD, {**CONV_GOOD, "prompt": [_msg("bot", "Say hi.")]}),
        "bad_role",
        ["line 2", "field 'prompt', message 0", "unknown role 'bot'"],
    ),
    Case(
        "wrong_message_order",
        "conv.jsonl",
        jsonl(CONV_GOOD, {**CONV_GOOD, "prompt": [_msg("assistant", "Hello."), _msg("user", "Say hi.")]}),
        "bad_order",
        ["line 2", "out of order"],
    ),
    Case(
        "final_message_not_assistant",
        "conv.jsonl",
        jsonl(CONV_GOOD, {**CONV_GOOD, "chosen": [_msg("user", "Hi!")]}),
        "bad_order",
        ["line 2", "field 'chosen'", "final message has role 'user'"],
    ),
    Case(
        "chosen_and_rejected_continue_different_dialogues",
        "conv.jsonl",
        jsonl(
            CONV_GOOD,
            {
                "chosen": [_msg("user", "Say hi."), _msg("assistant", "Hi!")],
                "rejected": [_msg("user", "Say bye."), _msg("assistant", "Bye!")],
            },
        ),
        "prompt_mismatch",
        ["line 2", "continue different dialogues"],
    ),
    Case(
        "two_answers_after_the_prompt",
        "conv.jsonl",
        jsonl(CONV_GOOD, {**CONV_GOOD, "chosen": [_msg("assistant", "Hi!"), _msg("assistant", "Again!")]}),
        "prompt_mismatch",
        ["line 2", "field 'chosen'", "found 2 messages"],
    ),
    Case(
        "empty_message_list",
        "conv.jsonl",
        jsonl(CONV_GOOD, {**CONV_GOOD, "rejected": []}),
        "wrong_type",
        ["line 2", "field 'rejected'", "got an empty list"],
    ),
    Case(
        "message_without_content",
        "conv.jsonl",
        jsonl(CONV_GOOD, {**CONV_GOOD, "chosen": [{"role": "assistant"}]}),
        "wrong_type",
        ["line 2", "field 'chosen', message 0", "{role, content}"],
    ),
    # --- tables: JSON lists, Parquet (row N, counting from 0)
    Case(
        "json_row_is_not_an_object",
        "pairs.json",
        json.dumps([GOOD, 7]).encode(),
        "wrong_type",
        ["row 1 (counting from 0)", "expected an object, got int"],
    ),
    Case(
        "json_row_wrong_type",
        "pairs.json",
        json.dumps([GOOD, GOOD2, {**GOOD, "rejected": 1.5}]).encode(),
        "wrong_type",
        ["row 2 (counting from 0)", "field 'rejected'", "got float"],
    ),
    Case(
        "parquet_row_missing_value",
        "pairs.parquet",
        lambda tmp: parquet_bytes([GOOD, {**GOOD2, "chosen": None}], tmp),
        "missing_field",
        ["row 1 (counting from 0)", "field 'chosen'"],
    ),
    # --- CSV (line N, the header is line 1)
    Case(
        "csv_short_row",
        "pairs.csv",
        b"prompt,chosen,rejected\np,c,r\nq,d\n",
        "missing_field",
        ["line 3", "field 'rejected'"],
    ),
    Case(
        "csv_row_with_multiline_prompt",
        "pairs.csv",
        b'prompt,chosen,rejected\np,c,r\n"first line\nsecond line",,r\n',  # the bad row starts on line 3
        "empty_completion",
        ["line 3", "field 'chosen'"],
    ),
    # --- whole-source problems
    Case("empty_file", "empty.jsonl", b"", None, ["is empty"]),
    Case("directory_instead_of_file", "pairs_dir", "DIR", None, ["is a directory"]),
    Case("missing_file", "missing.jsonl", None, None, ["not found"]),
    Case("unsupported_extension", "pairs.txt", jsonl(GOOD), None, ["unsupported file type '.txt'"]),
    Case(
        "json_file_not_a_list",
        "object.json",
        json.dumps(GOOD).encode(),
        None,
        ["expected a JSON list of objects, got dict"],
    ),
    Case("json_file_empty_list", "nothing.json", b"[]", None, ["the JSON list has no rows"]),
    Case(
        "truncated_json_file",
        "cut.json",
        b'[\n  {"prompt": "p",\n   "chosen": "c",\n',
        None,
        ["line 4", "not valid JSON"],
    ),
    Case(
        "non_utf8_csv",
        "latin1.csv",
        b"prompt,chosen,rejected\np,c,r\ncaf\xe9,c,r\n",
        None,
        ["line 3", "not valid UTF-8"],
    ),
    Case(
        "damaged_parquet", "broken.parquet", b"PAR1 this is not really parquet", None, ["not a readable Parquet file"]
    ),
    Case(
        "missing_column_in_every_row",
        "nocol.jsonl",
        jsonl({"prompt": "p", "chosen": "c"}, {"prompt": "q", "chosen": "d"}),
        None,
        ["'rejected'"],
    ),
    Case(
        "unrecognized_columns",
        "other.jsonl",
        jsonl({"text": "hello", "label": 1}),
        None,
        ["cannot tell the data format"],
    ),
]
ROW_CASES = [c for c in CASES if c.kind is not None]
SOURCE_CASES = [c for c in CASES if c.kind is None]


def materialize(case: Case, tmp_path: Path) -> Path:
    """Write the case's file (or directory) under tmp_path and return its path."""
    path = tmp_path / case.filename
    if case.content == "DIR":
        path.mkdir()
        (path / "pairs.jsonl").write_bytes(jsonl(GOOD))
    elif callable(case.content):
        path.write_bytes(case.content(tmp_path))
    elif case.content is not None:
        path.write_bytes(case.content)
    return path


def load_error(case: Case, tmp_path: Path, policy: Any = "raise") -> tuple[Path, Exception]:
    """The error loading the case's file raises (policy raise by default: the first problem itself)."""
    path = materialize(case, tmp_path)
    with pytest.raises(ValueError) as info:
        load_pairs(path, policy=policy, **case.kwargs)
    return path, info.value


def test_corpus_covers_at_least_twelve_kinds_of_damage() -> None:
    assert len(CASES) >= 12
    assert len({c.kind for c in ROW_CASES}) >= 12
    assert {c.kind for c in ROW_CASES} <= set(PROBLEMS)


@pytest.mark.parametrize("case", ROW_CASES, ids=lambda c: c.name)
def test_row_problem_message_names_file_row_and_field(case: Case, tmp_path: Path) -> None:
    path, error = load_error(case, tmp_path)
    assert isinstance(error, RowProblem), f"{type(error).__name__}: {error}"
    assert error.kind == case.kind
    message = str(error)
    assert message.startswith(str(path)), message
    for fragment in case.fragments:
        assert fragment in message, (fragment, message)
    assert "\n" not in message


@pytest.mark.parametrize("case", SOURCE_CASES, ids=lambda c: c.name)
def test_source_problem_message_names_the_file(case: Case, tmp_path: Path) -> None:
    path, error = load_error(case, tmp_path)
    message = str(error)
    assert str(path) in message, message
    for fragment in case.fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize("case", SOURCE_CASES, ids=lambda c: c.name)
def test_source_problems_are_not_hidden_by_a_drop_policy(case: Case, tmp_path: Path) -> None:
    """Damage to the whole file raises even when bad rows are dropped."""
    _, error = load_error(case, tmp_path, policy="drop")
    assert not isinstance(error, RowProblem), error


@pytest.mark.parametrize("case", ROW_CASES, ids=lambda c: c.name)
def test_default_policy_drops_each_kind_and_refuses_a_file_that_is_mostly_damaged(case: Case, tmp_path: Path) -> None:
    """One bad row among a few: dropped and counted when the share allows it, else the whole file is refused
    with the same first message that policy raise gives."""
    path = materialize(case, tmp_path)
    with pytest.raises(RowProblem) as raised:
        load_pairs(path, policy="raise", **case.kwargs)
    assert DEFAULT_POLICY[case.kind] == "drop"
    pairs, report = load_pairs(path, max_bad_fraction=1.0, **case.kwargs)
    assert report.dropped == Counter({case.kind: 1})
    assert report.examples[case.kind] == [str(raised.value)]
    assert report.kept == len(pairs) == report.rows_read - 1
    if case.kind in DAMAGE:  # one malformed row in a file of a few is far over 5%
        with pytest.raises(DataSourceError, match=re.escape(f"First problem: {raised.value}.")):
            load_pairs(path, **case.kwargs)
    else:  # filters (duplicates, margins) never refuse a file
        assert load_pairs(path, **case.kwargs)[1].dropped == report.dropped


def test_every_case_has_its_own_message(tmp_path: Path) -> None:
    """Different damage must read differently (compared with the path taken out)."""
    messages = {}
    for i, case in enumerate(CASES):
        folder = tmp_path / str(i)
        folder.mkdir()
        path, error = load_error(case, folder)
        messages[case.name] = str(error).replace(str(path), "<file>")
    clashes = Counter(messages.values())
    assert all(n == 1 for n in clashes.values()), {m: n for m, n in clashes.items() if n > 1}
    by_kind: dict[str | None, set[str]] = {}
    for case in CASES:
        by_kind.setdefault(case.kind, set()).add(messages[case.name])
    kinds = [k for k in by_kind if k is not None]
    for a in kinds:
        for b in kinds:
            assert a == b or not by_kind[a] & by_kind[b]


def test_utf8_bom_at_the_start_of_a_jsonl_file_is_accepted(tmp_path: Path) -> None:
    """Files saved by Windows editors often start with a UTF-8 byte order mark."""
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + jsonl(GOOD, GOOD2))
    pairs, report = load_pairs(path)
    assert [p.chosen for p in pairs] == [GOOD["chosen"], GOOD2["chosen"]]


def test_a_file_of_blank_lines_reads_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "blank.jsonl"
    path.write_bytes(b"\n  \n\r\n\n")
    with pytest.raises(DataSourceError, match=rf"^{re.escape(str(path))} is empty"):
        load_pairs(path, policy="drop")


def test_list_source_rows_count_from_zero() -> None:
    with pytest.raises(
        RowProblem, match=r"^rows, row 1 \(counting from 0\), field 'chosen': expected a string, got list$"
    ):
        load_pairs([GOOD, {**GOOD, "chosen": ["a"]}], policy="raise")
    with pytest.raises(RowProblem, match=r"^rows, row 2 \(counting from 0\): expected an object, got str$"):
        load_pairs([GOOD, GOOD2, "not a row"], policy="raise")


# ---------------------------------------------------------------------------------------------------------------
# drop policy on files that mix good and bad rows


def _content(pairs) -> list[tuple]:
    return [
        (p.prompt_messages, p.chosen, p.rejected, p.split, p.skill, p.score_chosen, p.score_rejected) for p in pairs
    ]


STANDARD_GOOD = [
    GOOD,
    {**GOOD2, "split": "train", "skill": "facts"},
    {
        "prompt": [_msg("system", "Be brief."), _msg("user", "Capital of Japan?")],
        "chosen": "Tokyo.",
        "rejected": "Kyoto.",
    },
    {"prompt": "Rate this.", "chosen": "Nine.", "rejected": "One.", "score_chosen": 9, "score_rejected": 1},
]
STANDARD_MIXED = [  # (line content, dropped kind or None for a good row)
    (STANDARD_GOOD[0], None),
    ('{"prompt": "p", "chosen": "c", "rejected": "r"', "bad_json"),
    (STANDARD_GOOD[1], None),
    (b'{"prompt": "\xff\xfe", "chosen": "c", "rejected": "r"}', "encoding"),
    ({"prompt": "p", "chosen": 3, "rejected": "r"}, "wrong_type"),
    (["p", "c", "r"], "wrong_type"),
    ({"prompt": "p", "chosen": "c"}, "missing_field"),
    ({"prompt": "", "chosen": "c", "rejected": "r"}, "empty_prompt"),
    (STANDARD_GOOD[2], None),
    ({"prompt": "p", "chosen": "c", "rejected": "  "}, "empty_completion"),
    ({"prompt": "p", "chosen": "same", "rejected": "same"}, "identical"),
    (STANDARD_GOOD[0], "duplicate"),
    ({"prompt": [_msg("robot", "hi")], "chosen": "c", "rejected": "r"}, "bad_role"),
    ({"prompt": [_msg("assistant", "hi")], "chosen": "c", "rejected": "r"}, "bad_order"),
    ({"prompt": "q", "chosen": "c", "rejected": "r", "score_chosen": 2.0, "score_rejected": 1.75}, "low_margin"),
    ("", None),  # a blank line: skipped, not a row
    (STANDARD_GOOD[3], None),
]


def test_drop_policy_keeps_exactly_the_good_rows_of_a_mixed_jsonl(tmp_path: Path) -> None:
    mixed, clean = tmp_path / "mixed.jsonl", tmp_path / "clean.jsonl"
    mixed.write_bytes(jsonl(*[row for row, _ in STANDARD_MIXED]))
    clean.write_bytes(jsonl(*STANDARD_GOOD))
    pairs, report = load_pairs(mixed, policy="drop", min_score_margin=1.0)
    alone, _ = load_pairs(clean, policy="drop", min_score_margin=1.0)
    assert _content(pairs) == _content(alone) and len(pairs) == 4
    expected = Counter(kind for _, kind in STANDARD_MIXED if kind)
    assert report.dropped == expected
    assert len(expected) == 11
    good_lines = [i for i, (row, kind) in enumerate(STANDARD_MIXED, start=1) if kind is None and row != ""]
    assert [p.origin for p in pairs] == [f"{mixed}, line {n}" for n in good_lines]
    assert report.rows_read == 16 and report.kept == 4
    assert report.rows_read == report.kept + sum(report.dropped.values())
    # the examples name the right lines
    for kind in expected:
        lines = [i for i, (_, k) in enumerate(STANDARD_MIXED, start=1) if k == kind]
        assert [re.match(r"(.*?, line \d+)[:,]", e).group(1) for e in report.examples[kind]] == [
            f"{mixed}, line {n}" for n in lines
        ]
    text = "\n".join(report.lines())
    assert "rows read: 16, pairs kept: 4, dropped: 12" in text
    assert "dropped 2 x wrong_type" in text and "dropped 1 x bad_json" in text


def test_default_policy_refuses_the_mixed_file_and_raise_stops_at_its_first_damaged_line(tmp_path: Path) -> None:
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(jsonl(*[row for row, _ in STANDARD_MIXED]))
    first = rf"{re.escape(str(mixed))}, line 2: not valid JSON"
    with pytest.raises(RowProblem, match="^" + first):
        load_pairs(mixed, policy="raise")
    with pytest.raises(
        DataSourceError,
        match=rf"^{re.escape(str(mixed))}: refused: 9 of 16 rows \(56.2%\) are "
        rf"malformed.*First problem: {first}",
    ):
        load_pairs(mixed)
    # with the share allowed, the default policy keeps what "drop" keeps
    pairs, report = load_pairs(mixed, min_score_margin=1.0, max_bad_fraction=1.0)
    assert _content(pairs) == _content(load_pairs(mixed, policy="drop", min_score_margin=1.0)[0])


CONV_GOOD_ROWS = [
    CONV_GOOD,
    {
        "chosen": [_msg("user", "Two plus two?"), _msg("assistant", "Four.")],
        "rejected": [_msg("user", "Two plus two?"), _msg("assistant", "Five.")],
    },
]
CONV_MIXED = [
    (CONV_GOOD_ROWS[0], None),
    ({**CONV_GOOD, "prompt": [_msg("narrator", "Say hi.")]}, "bad_role"),
    ({**CONV_GOOD, "prompt": [_msg("user", "a"), _msg("user", "b")]}, "bad_order"),
    ({**CONV_GOOD, "chosen": [_msg("user", "Hi!")]}, "bad_order"),
    (
        {
            "chosen": [_msg("user", "A"), _msg("assistant", "x")],
            "rejected": [_msg("user", "B"), _msg("assistant", "y")],
        },
        "prompt_mismatch",
    ),
    ({**CONV_GOOD, "rejected": []}, "wrong_type"),
    ({**CONV_GOOD, "rejected": [_msg("assistant", "Hi!")]}, "identical"),
    ({**CONV_GOOD, "chosen": [_msg("assistant", " ")]}, "empty_completion"),
    (CONV_GOOD_ROWS[1], None),
    (CONV_GOOD_ROWS[0], "duplicate"),
]


def test_drop_policy_on_mixed_conversational_rows() -> None:
    pairs, report = load_pairs([row for row, _ in CONV_MIXED], policy="drop")
    assert _content(pairs) == _content(load_pairs(CONV_GOOD_ROWS)[0])
    assert report.dropped == Counter(kind for _, kind in CONV_MIXED if kind)
    assert [p.origin for p in pairs] == ["rows, row 0 (counting from 0)", "rows, row 8 (counting from 0)"]


def test_drop_policy_on_mixed_hh_transcripts(tmp_path: Path) -> None:
    bad_prefix = {"chosen": HH_GOOD["chosen"], "rejected": HH_GOOD["rejected"].replace("Hello!", "Hey.")}
    rows = [
        (HH_GOOD, None),
        (bad_prefix, "prompt_mismatch"),
        ({"chosen": "no markers", "rejected": "x"}, "bad_order"),
        ({"chosen": "", "rejected": HH_GOOD["rejected"]}, "empty_completion"),
        ({"chosen": HH_GOOD["chosen"], "rejected": HH_GOOD["chosen"]}, "identical"),
        ({"chosen": HH_GOOD["chosen"], "rejected": 5}, "wrong_type"),
    ]
    path = tmp_path / "hh.jsonl"
    path.write_bytes(jsonl(*[r for r, _ in rows]))
    pairs, report = load_pairs(path, policy="drop")
    assert _content(pairs) == _content(load_pairs([HH_GOOD])[0])
    assert report.dropped == Counter(k for _, k in rows if k)
    assert pairs[0].prompt_messages == [_msg("user", "Hi"), _msg("assistant", "Hello!"), _msg("user", "Say bye.")]


def test_every_row_bad_under_drop_names_the_source(tmp_path: Path) -> None:
    path = tmp_path / "allbad.jsonl"
    path.write_bytes(
        jsonl({"prompt": "p", "chosen": "x", "rejected": "x"}, {"prompt": "", "chosen": "a", "rejected": "b"})
    )
    with pytest.raises(DataSourceError, match=rf"{re.escape(str(path))}: no usable pairs"):
        load_pairs(path, policy="drop")


def test_unknown_policy_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown kinds \\['typo'\\]"):
        load_pairs([GOOD], policy={"typo": "drop"})
