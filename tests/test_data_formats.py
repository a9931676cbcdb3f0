"""Every supported schema and source type normalizes to the same preference pairs.

The fixtures under tests/fixtures/data/ hold the SAME logical pairs written in each real schema:
three single-turn pairs (SINGLE) everywhere, plus one multi-turn pair (MULTI) in the schemas that can
express a dialogue (TRL conversational with and without `prompt`, Anthropic HH-RLHF).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from orpo_kit.data import FORMATS, DataSourceError, PreferencePair, detect_format, load_pairs

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


SINGLE = [
    (_user("What is the capital of France?"), "The capital of France is Paris.", "The capital of France is Lyon."),
    (_user("Translate to French.\n\nGood morning"), "Bonjour", "Bonsoir"),
    (_user("Add 12 and 30."), "12 + 30 = 42.", "12 + 30 = 52."),
]
MULTI = [
    (
        [
            {"role": "user", "content": "I want to name my new cat."},
            {"role": "assistant", "content": "Congratulations! Is it a boy or a girl?"},
            {"role": "user", "content": "A girl, and she is all black."},
            {"role": "assistant", "content": "How about Luna or Shadow?"},
            {"role": "user", "content": "Something shorter, please."},
        ],
        "How about Ink?",
        "How about Princess Midnight Velvet Paws?",
    )
]

# fixture file -> (format detected, expected normalized pairs, extra load_pairs kwargs)
SCHEMAS = {
    "standard.jsonl": ("standard", SINGLE, {}),
    "conversational.jsonl": ("conversational", SINGLE + MULTI, {}),
    "conversational_no_prompt.jsonl": ("conversational", SINGLE + MULTI, {}),
    "ultrafeedback_binarized.jsonl": ("conversational", SINGLE, {}),
    "hh_rlhf.jsonl": ("implicit", SINGLE + MULTI, {}),
    "stack_exchange_paired.jsonl": ("mapped", SINGLE, {}),
    "instruction_input.jsonl": ("mapped", SINGLE, {"column_map": {"chosen": "output_1", "rejected": "output_2"}}),
}


def norm(pairs: list[PreferencePair]) -> list[tuple]:
    """The normalized content of pairs (what training sees), without origins."""
    return [(p.prompt_messages, p.chosen, p.rejected) for p in pairs]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------------------------
# 1. schemas


def test_fixtures_match_the_real_column_sets() -> None:
    """The fixtures carry exactly the columns of the public datasets they imitate."""
    columns = {name: [set(r) for r in read_jsonl(FIXTURES / name)] for name in SCHEMAS}
    assert all(c == {"prompt", "chosen", "rejected"} for c in columns["standard.jsonl"])
    assert all(
        c == {"prompt", "prompt_id", "chosen", "rejected", "messages", "score_chosen", "score_rejected"}
        for c in columns["ultrafeedback_binarized.jsonl"]
    )
    assert all(c == {"chosen", "rejected"} for c in columns["hh_rlhf.jsonl"])
    assert all(c == {"chosen", "rejected"} for c in columns["conversational_no_prompt.jsonl"])
    assert all(
        c == {"qid", "question", "date", "metadata", "response_j", "response_k"}
        for c in columns["stack_exchange_paired.jsonl"]
    )
    for row in read_jsonl(FIXTURES / "ultrafeedback_binarized.jsonl"):
        # UltraFeedback: prompt_id is the sha256 of the prompt; chosen/rejected repeat the user turn
        assert row["prompt_id"] == hashlib.sha256(row["prompt"].encode()).hexdigest()
        assert row["chosen"][0] == row["rejected"][0] == {"content": row["prompt"], "role": "user"}
        assert row["messages"] == row["chosen"]
    for row in read_jsonl(FIXTURES / "hh_rlhf.jsonl"):
        assert row["chosen"].startswith("\n\nHuman: ") and "\n\nAssistant: " in row["chosen"]


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_each_schema_loads_to_the_shared_logical_pairs(name: str) -> None:
    fmt, expected, kwargs = SCHEMAS[name]
    pairs, report = load_pairs(FIXTURES / name, **kwargs)
    assert report.format == fmt
    assert norm(pairs) == norm_expected(expected)
    assert report.rows_read == report.kept == len(expected) and not report.dropped
    for i, pair in enumerate(pairs, start=1):
        assert pair.origin == f"{FIXTURES / name}, line {i}"


def norm_expected(expected: list[tuple]) -> list[tuple]:
    return [(list(p), c, r) for p, c, r in expected]


def test_all_schemas_agree_pair_for_pair() -> None:
    """The same logical pairs are equal whatever schema they came from."""
    loaded = {name: norm(load_pairs(FIXTURES / name, **kw)[0]) for name, (_, _, kw) in SCHEMAS.items()}
    reference = loaded["standard.jsonl"]
    for name, pairs in loaded.items():
        assert pairs[:3] == reference, name
    multi = {name: pairs[3:] for name, pairs in loaded.items() if len(pairs) > 3}
    assert set(multi) == {"conversational.jsonl", "conversational_no_prompt.jsonl", "hh_rlhf.jsonl"}
    assert all(m == multi["hh_rlhf.jsonl"] for m in multi.values())


def test_hh_multi_turn_transcript_splits_into_dialogue_prompt_and_final_turns() -> None:
    pairs, _ = load_pairs(FIXTURES / "hh_rlhf.jsonl")
    cat = pairs[3]
    assert [m["role"] for m in cat.prompt_messages] == ["user", "assistant", "user", "assistant", "user"]
    assert cat.prompt_messages == MULTI[0][0]
    assert cat.chosen == "How about Ink?"
    assert cat.rejected == "How about Princess Midnight Velvet Paws?"
    # no transcript markup leaks into the texts
    for text in [cat.chosen, cat.rejected] + [m["content"] for m in cat.prompt_messages]:
        assert "Human:" not in text and "Assistant:" not in text and text == text.strip()


def test_hh_longer_dialogue_keeps_every_earlier_turn() -> None:
    turns = [("Human", f"question {i}") if i % 2 == 0 else ("Assistant", f"answer {i}") for i in range(9)]
    history = "".join(f"\n\n{who}: {text}" for who, text in turns)
    row = {"chosen": history + "\n\nAssistant: good final", "rejected": history + "\n\nAssistant: bad final"}
    (pair,), report = load_pairs([row])
    assert report.format == "implicit"
    assert pair.prompt_messages == [
        {"role": "user" if who == "Human" else "assistant", "content": text} for who, text in turns
    ]
    assert (pair.chosen, pair.rejected) == ("good final", "bad final")


def test_ultrafeedback_scores_are_kept_and_margin_filter_applies() -> None:
    pairs, _ = load_pairs(FIXTURES / "ultrafeedback_binarized.jsonl")
    assert [(p.score_chosen, p.score_rejected) for p in pairs] == [(9.0, 4.5), (8.5, 6.0), (10.0, 2.0)]
    kept, report = load_pairs(FIXTURES / "ultrafeedback_binarized.jsonl", min_score_margin=3.0)
    assert norm(kept) == norm(pairs[0:1] + pairs[2:3])
    assert report.dropped == {"low_margin": 1}
    assert "line 2" in report.examples["low_margin"][0]


def test_conversational_prompt_may_start_with_a_system_turn() -> None:
    system = {"role": "system", "content": "Answer briefly."}
    row = {
        "prompt": [system] + _user("Hi"),
        "chosen": [{"role": "assistant", "content": "Hello."}],
        "rejected": [{"role": "assistant", "content": "Go away."}],
    }
    (pair,), _ = load_pairs([row])
    assert pair.prompt_messages == [system] + _user("Hi")


# ---------------------------------------------------------------------------------------------------------------
# detection and format override


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_detect_format_picks_the_right_format(name: str) -> None:
    rows = read_jsonl(FIXTURES / name)
    assert detect_format({k for r in rows for k in r}, rows[0]) == SCHEMAS[name][0]


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_explicit_format_equal_to_the_detected_one_changes_nothing(name: str) -> None:
    fmt, expected, kwargs = SCHEMAS[name]
    pairs, report = load_pairs(FIXTURES / name, format=fmt, **kwargs)
    assert report.format == fmt and norm(pairs) == norm_expected(expected)


def test_hh_transcripts_are_detected_despite_a_prompt_column() -> None:
    """Some HH derivatives add a `prompt` column; the transcripts in chosen/rejected still decide the format,
    and `format=standard` would take each whole transcript as the answer."""
    rows = read_jsonl(FIXTURES / "hh_rlhf.jsonl")
    for row in rows:
        row["prompt"] = row["chosen"].rsplit("\n\nAssistant:", 1)[0]
    forced, report = load_pairs(rows, format="standard")
    assert report.format == "standard"
    assert forced[0].chosen.startswith("\n\nHuman:")  # whole transcript taken as the answer
    pairs, report = load_pairs(rows)
    assert report.format == "implicit"
    assert norm(pairs) == norm_expected(SINGLE + MULTI)


def test_format_override_to_mapped_with_a_column_map_of_unknown_names() -> None:
    rows = [{"q": p[0]["content"], "good": c, "bad": r} for p, c, r in SINGLE]
    cmap = {"prompt": "q", "chosen": "good", "rejected": "bad"}
    pairs, report = load_pairs(rows, format="mapped", column_map=cmap)
    assert report.format == "mapped" and norm(pairs) == norm_expected(SINGLE)


def test_column_map_alone_is_enough_for_auto_detection() -> None:
    """Was a bug: an explicit column_map was ignored by auto detection, although the error message suggests it."""
    rows = [{"q": p[0]["content"], "good": c, "bad": r} for p, c, r in SINGLE]
    pairs, report = load_pairs(rows, column_map={"prompt": "q", "chosen": "good", "rejected": "bad"})
    assert report.format == "mapped" and norm(pairs) == norm_expected(SINGLE)


def test_wrong_format_override_reports_rows_not_garbage() -> None:
    with pytest.raises(ValueError, match=r"standard\.jsonl, line 1, field 'chosen': not a transcript"):
        load_pairs(FIXTURES / "standard.jsonl", format="implicit")
    with pytest.raises(ValueError, match=r"hh_rlhf\.jsonl, line 1, field 'prompt': missing"):
        load_pairs(FIXTURES / "hh_rlhf.jsonl", format="standard")


def test_unknown_format_is_rejected_with_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown format 'yaml'.*" + ", ".join(FORMATS)):
        load_pairs(FIXTURES / "standard.jsonl", format="yaml")


# ---------------------------------------------------------------------------------------------------------------
# source types


STANDARD_ROWS = [
    {"prompt": p[0]["content"], "chosen": c, "rejected": r, "split": s, "skill": k}
    for (p, c, r), s, k in zip(SINGLE, ["train", "train", "eval"], ["facts", "translate", "arithmetic"], strict=True)
]


def _full(pairs: list[PreferencePair]) -> list[tuple]:
    return [(p.prompt_messages, p.chosen, p.rejected, p.split, p.skill) for p in pairs]


def _write_sources(tmp_path: Path) -> dict[str, object]:
    sources: dict[str, object] = {}
    sources["jsonl"] = tmp_path / "pairs.jsonl"
    sources["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in STANDARD_ROWS), encoding="utf-8")
    sources["json"] = tmp_path / "pairs.json"
    sources["json"].write_text(json.dumps(STANDARD_ROWS, indent=2), encoding="utf-8")
    sources["json_data_key"] = tmp_path / "wrapped.json"
    sources["json_data_key"].write_text(json.dumps({"data": STANDARD_ROWS}), encoding="utf-8")
    sources["parquet"] = tmp_path / "pairs.parquet"
    pd.DataFrame(STANDARD_ROWS).to_parquet(sources["parquet"])
    sources["csv"] = tmp_path / "pairs.csv"
    pd.DataFrame(STANDARD_ROWS).to_csv(sources["csv"], index=False)
    sources["str_path"] = str(sources["jsonl"])
    sources["list"] = [dict(r) for r in STANDARD_ROWS]
    sources["DataFrame"] = pd.DataFrame(STANDARD_ROWS)
    return sources


def test_every_source_type_gives_the_same_pairs(tmp_path: Path) -> None:
    import datasets

    sources = _write_sources(tmp_path)
    sources["Dataset"] = datasets.Dataset.from_list(STANDARD_ROWS)
    sources["DatasetDict"] = datasets.DatasetDict({"train": datasets.Dataset.from_list(STANDARD_ROWS)})
    expected = [(p, c, r, row["split"], row["skill"]) for (p, c, r), row in zip(SINGLE, STANDARD_ROWS, strict=True)]
    for kind, source in sources.items():
        pairs, report = load_pairs(source)
        assert report.format == "standard", kind
        assert _full(pairs) == expected, kind


def test_origins_count_lines_from_1_in_text_files_and_rows_from_0_in_tables(tmp_path: Path) -> None:
    sources = _write_sources(tmp_path)
    assert load_pairs(sources["jsonl"])[0][2].origin == f"{sources['jsonl']}, line 3"
    assert load_pairs(sources["csv"])[0][0].origin == f"{sources['csv']}, line 2"  # line 1 is the header
    assert load_pairs(sources["json"])[0][2].origin == f"{sources['json']}, row 2 (counting from 0)"
    assert load_pairs(sources["parquet"])[0][0].origin == f"{sources['parquet']}, row 0 (counting from 0)"
    assert load_pairs(sources["list"])[0][1].origin == "rows, row 1 (counting from 0)"
    assert load_pairs(sources["DataFrame"])[0][1].origin == "DataFrame, row 1 (counting from 0)"


def test_blank_lines_in_jsonl_are_skipped_but_still_counted(tmp_path: Path) -> None:
    path = tmp_path / "gaps.jsonl"
    path.write_text("\n" + json.dumps(STANDARD_ROWS[0]) + "\n\n   \n" + json.dumps(STANDARD_ROWS[1]) + "\n")
    pairs, report = load_pairs(path)
    assert report.rows_read == 2 and [p.origin.rsplit(", ", 1)[1] for p in pairs] == ["line 2", "line 5"]


def _ultrafeedback_dict():
    import datasets

    rows = read_jsonl(FIXTURES / "ultrafeedback_binarized.jsonl")
    return datasets.DatasetDict(
        {"train_prefs": datasets.Dataset.from_list(rows[:2]), "test_prefs": datasets.Dataset.from_list(rows[2:])}
    )


def test_ultrafeedback_datasetdict_picks_train_prefs_and_selects_splits() -> None:
    dd = _ultrafeedback_dict()
    default, report = load_pairs(dd)
    assert norm(default) == norm_expected(SINGLE[:2]) and report.format == "conversational"
    assert default[0].origin == "Dataset[train_prefs], row 0 (counting from 0)"
    train, _ = load_pairs(dd, split="train_prefs")
    test, _ = load_pairs(dd, split="test_prefs")
    assert norm(train) == norm(default) and norm(test) == norm_expected(SINGLE[2:])
    assert test[0].origin == "Dataset[test_prefs], row 0 (counting from 0)"
    assert (test[0].score_chosen, test[0].score_rejected) == (10.0, 2.0)
    with pytest.raises(DataSourceError, match=r"no split 'validation'; available: train_prefs, test_prefs"):
        load_pairs(dd, split="validation")


def test_ultrafeedback_single_dataset_equals_the_jsonl_file() -> None:
    import datasets

    rows = read_jsonl(FIXTURES / "ultrafeedback_binarized.jsonl")
    from_ds, _ = load_pairs(datasets.Dataset.from_list(rows))
    from_file, _ = load_pairs(FIXTURES / "ultrafeedback_binarized.jsonl")
    assert norm(from_ds) == norm(from_file) == norm_expected(SINGLE)


@pytest.mark.parametrize(
    "name", ["conversational.jsonl", "ultrafeedback_binarized.jsonl", "hh_rlhf.jsonl", "stack_exchange_paired.jsonl"]
)
def test_nested_schemas_from_list_dataframe_and_json_equal_the_jsonl(name: str, tmp_path: Path) -> None:
    rows = read_jsonl(FIXTURES / name)
    expected = norm(load_pairs(FIXTURES / name)[0])
    as_json = tmp_path / "rows.json"
    as_json.write_text(json.dumps(rows), encoding="utf-8")
    for source in (rows, pd.DataFrame(rows), as_json):
        assert norm(load_pairs(source)[0]) == expected


@pytest.mark.parametrize("name", ["conversational.jsonl", "ultrafeedback_binarized.jsonl"])
def test_message_list_schemas_round_trip_through_parquet(name: str, tmp_path: Path) -> None:
    """Was a bug: pandas reads Parquet list columns back as numpy arrays, which the loader rejects as 'ndarray'."""
    rows = read_jsonl(FIXTURES / name)
    path = tmp_path / "conv.parquet"
    pd.DataFrame(rows).to_parquet(path)
    pairs, report = load_pairs(path)
    assert report.format == "conversational"
    assert norm(pairs) == norm(load_pairs(FIXTURES / name)[0])


def test_scores_survive_every_file_type(tmp_path: Path) -> None:
    """Was a bug: CSV cells are strings, so score_chosen / score_rejected come back None and min_score_margin is
    silently ignored for CSV files."""
    scores = [(8.0, 7.5), (9.0, 2.0), (6.0, 5.5)]
    rows = [{**r, "score_chosen": c, "score_rejected": w} for r, (c, w) in zip(STANDARD_ROWS, scores, strict=True)]
    sources = {"jsonl": tmp_path / "s.jsonl", "parquet": tmp_path / "s.parquet", "csv": tmp_path / "s.csv"}
    sources["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    pd.DataFrame(rows).to_parquet(sources["parquet"])
    pd.DataFrame(rows).to_csv(sources["csv"], index=False)
    for kind, path in sources.items():
        pairs, _ = load_pairs(path)
        assert [(p.score_chosen, p.score_rejected) for p in pairs] == scores, kind
        assert load_pairs(path, min_score_margin=1.0)[1].dropped == {"low_margin": 2}, kind
