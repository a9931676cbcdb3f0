"""Messages that name the real cause: text a tokenizer cannot read, CSV rows longer than their header, model folders
that are missing or empty, a checkpoint without weights, a damaged best.json, an eval file that is the training file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from orpo_kit import checkpoint as ckpt
from orpo_kit.cli import main
from orpo_kit.config import ORPOConfig, resolve_config
from orpo_kit.data import DataSourceError, RowProblem, load_pairs
from orpo_kit.models import load_tokenizer, tiny_tokenizer_dir
from orpo_kit.models.load import load_base_model
from orpo_kit.models.safety import looks_local
from orpo_kit.run_dir import CONFIG_FILE
from orpo_kit.runs import find_checkpoint
from orpo_kit.train_data import load_train_eval


def _rows(n: int) -> list[dict]:
    return [
        {"prompt": f"Question {i}?", "chosen": f"Good answer {i}.", "rejected": f"Bad answer {i}."} for i in range(n)
    ]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))  # ensure_ascii: a lone surrogate stays an escape
    return path


def _csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def _run_with_checkpoint(tmp_path: Path) -> Path:
    """A run folder with a config and one checkpoint that has its trainer state but no model folder."""
    run = tmp_path / "run"
    (run / ckpt.CHECKPOINTS / "step-000001").mkdir(parents=True)
    (run / ckpt.CHECKPOINTS / "step-000001" / ckpt.STATE_FILE).write_text("{}")
    (run / CONFIG_FILE).write_text(yaml.safe_dump(resolve_config("tiny").to_dict()))
    return run


# 14a: a lone surrogate (an escaped "\ud800" in JSON) is a row problem naming file, line and field
def test_14_a_lone_surrogate_is_a_row_problem_naming_file_line_and_field(tmp_path: Path) -> None:
    rows = _rows(30)
    rows[2]["chosen"] = "Good \ud800 answer."
    path = _jsonl(tmp_path / "pairs.jsonl", rows)
    assert "\\ud800" in path.read_text()
    pairs, report = load_pairs(path)
    assert len(pairs) == 29 and report.dropped == {"bad_text": 1}
    assert report.examples["bad_text"][0].startswith(f"{path}, line 3, field 'chosen': ")
    with pytest.raises(RowProblem, match=r"pairs\.jsonl, line 3, field 'chosen': .*not valid Unicode"):
        load_pairs(path, policy="raise")


def test_14_a_lone_surrogate_in_a_message_names_the_message(tmp_path: Path) -> None:
    convo = [{"role": "user", "content": "Hi \udfff"}, {"role": "assistant", "content": "Hello."}]
    row = {"chosen": convo, "rejected": [convo[0], {"role": "assistant", "content": "Go away."}]}
    with pytest.raises(RowProblem, match=r"row 0 \(counting from 0\), field 'chosen', message 0: .*surrogate"):
        load_pairs([row], policy="raise")


# 14b: a CSV row with more fields than its header is named by file and line, with the likely cause
def test_14_b_a_csv_row_longer_than_its_header_is_a_row_problem(tmp_path: Path) -> None:
    lines = ["prompt,chosen,rejected"] + [f"Question {i}?,Good {i}.,Bad {i}." for i in range(30)]
    lines[4] = "Question 3?,Good, and more.,Bad 3."
    path = _csv(tmp_path / "pairs.csv", lines)
    pairs, report = load_pairs(path)
    assert len(pairs) == 30 - 1 and report.dropped == {"extra_fields": 1}
    assert report.examples["extra_fields"][0] == (
        f"{path}, line 5: 4 fields but the header (line 1) has 3; put any field that holds a comma in double quotes"
    )


def test_14_b_a_semicolon_file_read_as_csv_names_the_separator(tmp_path: Path, capsys) -> None:
    path = _csv(tmp_path / "pairs.csv", ["prompt;chosen;rejected", "Why, really?;Because, yes.;No.", "Q;A, b;C"])
    with pytest.raises(DataSourceError, match=r"pairs\.csv, line 2: 3 fields but the header \(line 1\) has 1; .*';'"):
        load_pairs(path)
    other = _csv(tmp_path / "other.csv", ["question,answer", "Why?,Because,yes"])  # the format cannot be told
    assert main(["inspect-data", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{other}, line 2: 3 fields but the header (line 1) has 2" in err and "\n" not in err


# 15: a local-looking model path is never sent to the hub; a missing or empty folder is named as such
def test_15_a_missing_model_folder_is_named_not_looked_up_on_the_hub(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"^model folder \./mymodel does not exist$"):
        load_tokenizer(ORPOConfig(model_name_or_path="./mymodel"))
    assert main(["train", "--preset", "tiny", "--output-dir", "run", "model_name_or_path=models/v2/final"]) == 2
    assert capsys.readouterr().err.strip() == "orpo-kit train: error: model folder models/v2/final does not exist"
    assert [looks_local(n) for n in ("~/m", "a/b/c", "a\\b", ".", "HuggingFaceTB/SmolLM2-135M-Instruct")] == [
        True,
        True,
        True,
        True,
        False,
    ]


def test_15_an_empty_model_folder_says_which_files_it_needs(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty holds no model or tokenizer files \(it is empty\); .*"):
        load_tokenizer(ORPOConfig(model_name_or_path=str(tmp_path / "empty")))
    only_tokenizer = shutil.copytree(tiny_tokenizer_dir(), tmp_path / "tok")
    with pytest.raises(FileNotFoundError, match=r"tok holds no model files \(it holds .*tokenizer.*config\.json"):
        load_base_model(ORPOConfig(model_name_or_path=str(only_tokenizer)))


def test_15_a_checkpoint_without_its_model_folder_is_named(tmp_path: Path, capsys) -> None:
    run = _run_with_checkpoint(tmp_path)
    assert main(["generate", str(run), "--prompt", "Hi"]) == 2
    err = capsys.readouterr().err.strip()
    folder = run / ckpt.CHECKPOINTS / "step-000001" / "model"
    assert err.startswith(f"orpo-kit generate: error: checkpoint folder {folder} does not exist: ") and "\n" not in err


def test_15_a_damaged_best_json_is_named_and_ignored(tmp_path: Path, capsys) -> None:
    run = _run_with_checkpoint(tmp_path)
    pointer = run / ckpt.CHECKPOINTS / ckpt.BEST_FILE
    for text, reason in (("{not json", "not valid JSON"), ('{"value": 1.0}', "it names no checkpoint")):
        pointer.write_text(text)
        assert ckpt.best_checkpoint(run) is None
        assert f"ignoring {pointer}: {reason}" in capsys.readouterr().err
        assert find_checkpoint(run, "best").name == "step-000001"  # the newest stands in


def test_15_eval_data_equal_to_the_training_data_names_the_overlap(tmp_path: Path, capsys) -> None:
    data = _jsonl(tmp_path / "pairs.jsonl", _rows(20))
    cfg = resolve_config("tiny", overrides={"data": str(data), "eval_data": str(data)})
    with pytest.raises(ValueError, match=r"is the training file .*all 20 eval pairs were dropped .* 20 training pairs"):
        load_train_eval(cfg)
    copy = shutil.copy(data, tmp_path / "copy.jsonl")
    with pytest.raises(ValueError, match=r"copy\.jsonl: all 20 eval pairs were dropped as duplicates"):
        load_train_eval(cfg.replace(eval_data=str(copy)))
    run = str(tmp_path / "run")
    assert main(["train", "--preset", "tiny", "--data", str(data), "--eval-data", str(data), "--output-dir", run]) == 2
    err = capsys.readouterr().err.strip()
    assert f"error: --eval-data {data} is the training file (--data {data})" in err and "eval split is empty" not in err
