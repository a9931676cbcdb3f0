"""Reading pairs, splitting, tokenizing with masks by position, collating."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orpo_kit.config import resolve_config
from orpo_kit.data import load_preference_pairs, pairs_from_rows, split_train_eval, tokenize_pair
from orpo_kit.layouts import PLAIN
from orpo_kit.models import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(resolve_config("tiny"))


def test_builtin_split_keeps_eval_prompts_out_of_training() -> None:
    train, evals = split_train_eval(load_preference_pairs("builtin"), eval_fraction=0.1, seed=0)
    assert len(evals) >= 32 and len(train) > 200
    assert not {p.prompt for p in train} & {p.prompt for p in evals}


def test_fraction_split_is_by_prompt_and_seeded() -> None:
    rows = [{"prompt": f"q{i % 10}", "chosen": "a", "rejected": "b"} for i in range(40)]
    pairs = pairs_from_rows(rows)
    train, evals = split_train_eval(pairs, eval_fraction=0.2, seed=3)
    assert not {p.prompt for p in train} & {p.prompt for p in evals}
    assert len({p.prompt for p in evals}) == 2
    assert split_train_eval(pairs, 0.2, 3) == (train, evals)


def test_bad_rows_name_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text(
        json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"})
        + "\n"
        + json.dumps({"prompt": "p", "chosen": 3, "rejected": "r"})
        + "\n"
    )
    with pytest.raises(ValueError, match=r"pairs\.jsonl, line 2, field 'chosen': expected a string, got int"):
        load_preference_pairs(path)
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"pairs\.jsonl, line 1: not valid JSON"):
        load_preference_pairs(path)
    with pytest.raises(ValueError, match=r"rows, row 0 \(counting from 0\), field 'rejected': empty text"):
        pairs_from_rows([{"prompt": "p", "chosen": "c", "rejected": "  "}], policy="raise")


def test_completion_ids_are_the_assistant_turn_including_eos(tokenizer) -> None:
    pair = pairs_from_rows([{"prompt": "What is 2 + 3?", "chosen": "2 + 3 = 5.", "rejected": "2 + 3 = 6."}])[0]
    tok = tokenize_pair(tokenizer, pair, max_length=128, max_prompt_length=64)
    assert tokenizer.decode(tok.prompt_ids).endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(tok.chosen_ids) == "2 + 3 = 5.<|im_end|>\n"
    assert tokenizer.eos_token_id in tok.chosen_ids and tokenizer.pad_token_id == tokenizer.eos_token_id


def test_truncation_keeps_the_end_of_long_prompts(tokenizer) -> None:
    pair = pairs_from_rows([{"prompt": "word " * 200 + "FINAL QUESTION?", "chosen": "yes " * 50, "rejected": "no"}])[0]
    tok = tokenize_pair(tokenizer, pair, max_length=64, max_prompt_length=32)
    assert tok.prompt_truncated and tok.completion_truncated and len(tok.prompt_ids) == 32
    assert tokenizer.decode(tok.prompt_ids).endswith("FINAL QUESTION?<|im_end|>\n<|im_start|>assistant\n")
    assert len(tok.prompt_ids) + len(tok.chosen_ids) == 64


def test_long_prompts_leave_each_completion_its_minimum(tokenizer) -> None:
    pair = pairs_from_rows([{"prompt": "word " * 200, "chosen": "yes " * 50, "rejected": "no"}])[0]
    tok = tokenize_pair(tokenizer, pair, max_length=40, max_prompt_length=1000, min_completion_tokens=10)
    assert len(tok.prompt_ids) == 30 and len(tok.chosen_ids) == 10 and tok.rejected_ids
    with pytest.raises(ValueError, match="cannot hold any prompt plus 10 completion tokens"):
        tokenize_pair(tokenizer, pair, max_length=10, max_prompt_length=1000, min_completion_tokens=10)


def test_collate_masks_come_from_positions(tokenizer) -> None:
    rows = [
        {"prompt": "Hi", "chosen": "Hello there.", "rejected": "Go away."},
        {"prompt": "A much longer prompt here", "chosen": "Ok.", "rejected": "No, and here is a long answer."},
    ]
    toks = [tokenize_pair(tokenizer, p, 128, 64) for p in pairs_from_rows(rows)]
    batch = PLAIN.collate(toks, tokenizer.pad_token_id, pad_to_multiple_of=8)
    assert batch.input_ids.shape[0] == 4 and batch.input_ids.shape[1] % 8 == 0
    for row, (tok, completion) in enumerate([(t, t.chosen_ids) for t in toks] + [(t, t.rejected_ids) for t in toks]):
        n_prompt, n = len(tok.prompt_ids), len(tok.prompt_ids) + len(completion)
        assert batch.attention_mask[row].sum() == n
        assert batch.completion_mask[row, n_prompt:n].all() and batch.completion_mask[row].sum() == len(completion)
        # padding uses the eos id, yet padding is not part of the completion
        assert not batch.completion_mask[row, n:].any()
