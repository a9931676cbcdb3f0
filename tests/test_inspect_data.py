"""`orpo-kit inspect-data`, train/eval separation, long multi-turn prompts and completion masks.

CLI runs go through the installed console script in a subprocess (offline; the hub is never called).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from orpo_kit.cli import main
from orpo_kit.config import ORPOConfig, resolve_config
from orpo_kit.data import (
    DataReport,
    PreferencePair,
    RowProblem,
    drop_eval_overlap,
    inspect_data,
    load_pairs,
    render_ids,
    split_train_eval,
    tokenize_pair,
    tokenize_pairs,
)
from orpo_kit.layouts import PLAIN
from orpo_kit.models import build_tiny_model, load_tokenizer
from orpo_kit.train import orpo_step

CHATML_END_OF_TURN = "<|im_end|>\n"


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(ORPOConfig())


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "orpo-kit"
    if script.exists():
        return [str(script)]
    found = shutil.which("orpo-kit")
    return [found] if found else [sys.executable, "-m", "orpo_kit"]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "TRANSFORMERS_VERBOSITY": "error",
        "PYTHONWARNINGS": "ignore",
    }
    return subprocess.run([*_cli(), "inspect-data", *args], capture_output=True, text=True, timeout=timeout, env=env)


# ---------------------------------------------------------------------------------------------------------------
# 3. the inspect-data command


def test_inspect_data_on_the_builtin_set_prints_the_report() -> None:
    pairs, _ = load_pairs("builtin")
    n = len(pairs)
    result = run_cli("builtin")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "source: builtin (pairs.jsonl)" in out
    assert "format: standard" in out
    assert f"rows read: {n}, pairs kept: {n}, dropped: 0" in out
    split = re.search(r"^split: (\d+) train / (\d+) eval \(no eval prompt in train\)$", out, re.M)
    assert split and int(split[1]) + int(split[2]) == n and int(split[2]) > 0
    assert re.search(r"^skills: .*arithmetic \d+", out, re.M)
    assert f"pairs: {n}, unique prompts:" in out
    for name in ("prompt", "chosen", "rejected"):
        assert re.search(rf"^  {name}\s+tokens: min \d+, median [\d.]+, p95 \d+, max \d+$", out, re.M), name
    assert "truncated by the limits:" in out and "length bias:" in out


def _write_big_jsonl(path: Path, n: int, seed: int = 0) -> None:
    """n pairs with varied prompts and answers (lengths, vocabulary, punctuation, a little non-ASCII)."""
    rng = random.Random(seed)
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "river",
        "mountain",
        "cloud",
        "quick",
        "slow",
        "bright",
        "dark",
        "seven",
        "eleven",
        "apple",
        "orange",
        "tiger",
        "café",
        "naïve",
        "Zürich",
        "東京",
        "garden",
        "engine",
        "ledger",
        "prism",
        "walnut",
        "harbor",
        "quartz",
        "violet",
    ]
    openers = ["Explain", "Summarize", "What is", "Describe", "List three facts about", "Compare", "Translate"]

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(lo, hi)))

    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            row = {
                "prompt": f"{rng.choice(openers)} {text(2, 40)} (#{i})?",
                "chosen": text(1, 80) + ".",
                "rejected": text(1, 80) + "!",
                "skill": rng.choice(["facts", "style", "math"]),
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def test_inspect_data_on_ten_thousand_pairs_finishes(tmp_path: Path, capsys) -> None:
    path = tmp_path / "big.jsonl"
    _write_big_jsonl(path, 10_000)
    start = time.perf_counter()
    result = run_cli(str(path), timeout=120)
    wall = time.perf_counter() - start
    with capsys.disabled():
        print(f"\n[inspect-data] 10,000 pairs: {wall:.1f} s wall (target 30 s, not asserted)")
    assert result.returncode == 0, result.stderr
    assert "rows read: 10000, pairs kept: 10000, dropped: 0" in result.stdout
    assert "pairs: 10000, unique prompts: 10000" in result.stdout
    assert re.search(r"^split: 9000 train / 1000 eval", result.stdout, re.M)


def test_inspect_data_json_output_parses(capsys) -> None:
    assert main(["inspect-data", "builtin", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    n = len(load_pairs("builtin")[0])
    assert found["report"]["rows_read"] == found["report"]["kept"] == n
    assert found["report"]["format"] == "standard" and found["report"]["dropped"] == {}
    assert found["n_train"] + found["n_eval"] == n
    assert found["stats"]["prompt"]["n"] == n and sum(found["skills"].values()) == n
    assert 0 <= found["stats"]["length_bias"] <= 1


def test_inspect_data_missing_file_exits_2_with_one_line_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "missing.jsonl"
    result = run_cli(str(path), "--tokenizer", "none", timeout=120)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == f"orpo-kit inspect-data: error: preference data not found: {path}"


def test_inspect_data_directory_exits_2_with_one_line_naming_the_path(tmp_path: Path, capsys) -> None:
    """In-process (main's return value is the console script's exit status) to keep the suite fast."""
    assert main(["inspect-data", str(tmp_path), "--tokenizer", "none"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1
    assert lines[0].startswith(f"orpo-kit inspect-data: error: {tmp_path} is a directory")


@pytest.mark.parametrize(
    "content, needle",
    [
        (b"", "is empty"),
        (b'{"prompt": "p", "chosen": "c", "rejected": "r"}\n{"prompt": "p", "chos\n', "line 2: not valid JSON"),
        (
            b'{"prompt": "p", "chosen": "c", "rejected": "r"}\n{"prompt": "q", "chosen": 1, "rejected": "r"}\n',
            "line 2, field 'chosen'",
        ),
    ],
)
def test_inspect_data_bad_files_exit_2_in_process(content: bytes, needle: str, tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    assert main(["inspect-data", str(path), "--tokenizer", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and needle in err[0]


def test_inspect_data_drop_policy_reports_dropped_rows(tmp_path: Path, capsys) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        '{"prompt": "p", "chosen": "c", "rejected": "r"}\n{"oops\n'
        '{"prompt": "q", "chosen": "d", "rejected": "d"}\n'
        '{"prompt": "s", "chosen": "e", "rejected": "f"}\n'
    )
    assert main(["inspect-data", str(path), "--policy", "drop", "--tokenizer", "none"]) == 0
    out = capsys.readouterr().out
    assert "rows read: 4, pairs kept: 2, dropped: 2" in out
    assert f"dropped 1 x bad_json (line is not valid JSON), e.g. {path}, line 2" in out
    assert "dropped 1 x identical" in out


# ---------------------------------------------------------------------------------------------------------------
# 4. eval prompts never occur in training


def _pairs(rows: list[dict]) -> list[PreferencePair]:
    return load_pairs(rows)[0]


def test_fraction_split_with_repeated_prompts_keeps_each_prompt_on_one_side() -> None:
    rows = [
        {"prompt": f"Question {i % 7}?", "chosen": f"good answer {i}", "rejected": f"bad answer {i}"} for i in range(42)
    ]
    pairs = _pairs(rows)
    for seed in range(5):
        train, evals = split_train_eval(pairs, eval_fraction=0.3, seed=seed)
        assert len(train) + len(evals) == len(pairs)
        assert not {p.prompt for p in train} & {p.prompt for p in evals}
        assert len({p.prompt for p in evals}) == 2  # round(7 * 0.3)
        assert all(sum(p.prompt == q.prompt for q in evals) == 6 for p in evals)  # every repeat went along
        report = DataReport(source="rows")
        assert drop_eval_overlap(train, evals, report) == evals and not report.dropped
    assert split_train_eval(pairs, 0.3, 1) == split_train_eval(pairs, 0.3, 1)


def _own_split_rows() -> list[dict]:
    return [
        {"prompt": "Capital of Peru?", "chosen": "Lima.", "rejected": "Cusco.", "split": "train"},
        {"prompt": "Capital of Chile?", "chosen": "Santiago.", "rejected": "Valparaiso.", "split": "train"},
        {"prompt": "Capital of Peru?", "chosen": "It is Lima.", "rejected": "Arequipa.", "split": "eval"},
        {"prompt": "Capital of Bolivia?", "chosen": "Sucre.", "rejected": "Santa Cruz.", "split": "eval"},
    ]


def test_own_split_column_overlap_is_dropped_from_eval_and_counted() -> None:
    pairs, report = load_pairs(_own_split_rows())
    train, evals = split_train_eval(pairs, eval_fraction=0.5, seed=0)
    assert [p.split for p in train] == ["train", "train"] and len(evals) == 2
    kept = drop_eval_overlap(train, evals, report)
    assert [p.prompt for p in kept] == ["Capital of Bolivia?"]
    assert report.dropped["eval_overlap"] == 1
    assert report.examples["eval_overlap"][0].startswith("rows, row 2 (counting from 0): this eval prompt")
    assert not {p.prompt for p in train} & {p.prompt for p in kept}


def test_own_split_column_overlap_raises_under_policy_raise() -> None:
    pairs, report = load_pairs(_own_split_rows())
    train, evals = split_train_eval(pairs, eval_fraction=0.5, seed=0)
    with pytest.raises(RowProblem, match=r"rows, row 2 \(counting from 0\): this eval prompt also occurs") as info:
        drop_eval_overlap(train, evals, report, policy="raise")
    assert info.value.kind == "eval_overlap"


def test_overlap_compares_the_whole_dialogue_not_just_the_last_turn() -> None:
    """Same last question after a different history is a different prompt, so it is kept."""
    base = {"chosen": [{"role": "assistant", "content": "Yes."}], "rejected": [{"role": "assistant", "content": "No."}]}
    rows = [
        {**base, "split": "train", "prompt": [{"role": "user", "content": "Is it red?"}]},
        {
            **base,
            "split": "eval",
            "prompt": [
                {"role": "user", "content": "I have an apple."},
                {"role": "assistant", "content": "Nice."},
                {"role": "user", "content": "Is it red?"},
            ],
        },
    ]
    pairs, report = load_pairs(rows)
    train, evals = split_train_eval(pairs, 0.5, 0)
    assert drop_eval_overlap(train, evals, report) == evals and not report.dropped


def test_inspect_data_counts_eval_overlap_in_its_report(tmp_path: Path) -> None:
    path = tmp_path / "split.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _own_split_rows()))
    found = inspect_data(path)
    assert (found.n_train, found.n_eval) == (2, 1)
    assert found.report.dropped == {"eval_overlap": 1}
    assert f"{path}, line 3: this eval prompt" in "\n".join(found.lines())
    with pytest.raises(RowProblem, match="line 3: this eval prompt"):
        inspect_data(path, policy="raise")


# ---------------------------------------------------------------------------------------------------------------
# 5. long multi-turn prompts, longer than max_length on their own


def _long_dialogue(tag: int = 0, answer_words: int = 30) -> PreferencePair:
    rng = random.Random(tag)
    words = ["context", "detail", "history", "earlier", "remark", "aside", "tangent", "background", "note", "story"]
    prompt = [{"role": "system", "content": "You are a careful assistant. " * 5}]
    for turn in range(3):
        prompt.append({"role": "user", "content": " ".join(rng.choice(words) for _ in range(40)) + f" (turn {turn})"})
        prompt.append({"role": "assistant", "content": " ".join(rng.choice(words) for _ in range(40))})
    prompt.append({"role": "user", "content": f"FINAL QUESTION {tag}: which word came last?"})
    return PreferencePair(prompt, " ".join(["yes"] * answer_words) + f" {tag}", f"no {tag}", origin=f"dialogue {tag}")


def _check_fit(tokenizer, pair: PreferencePair, tok, max_length: int, mct: int) -> None:
    full_prompt, full_chosen, full_rejected = render_ids(tokenizer, pair)
    assert len(tok.prompt_ids) >= 1 and tok.prompt_ids == full_prompt[-len(tok.prompt_ids) :]  # cut from the left
    for got, full in ((tok.chosen_ids, full_chosen), (tok.rejected_ids, full_rejected)):
        assert got, "empty completion"
        assert got == full[: len(got)]  # completions are cut from the right only
        assert len(got) >= min(len(full), mct)
        assert len(tok.prompt_ids) + len(got) <= max_length


def test_long_dialogue_prompt_is_cut_from_the_left_keeping_its_end(tokenizer) -> None:
    pair = _long_dialogue()
    full_prompt, full_chosen, full_rejected = render_ids(tokenizer, pair)
    max_length, mct = 64, 8
    assert len(full_prompt) > 3 * max_length  # the prompt alone is far longer than max_length
    tok = tokenize_pair(tokenizer, pair, max_length=max_length, max_prompt_length=1024, min_completion_tokens=mct)
    _check_fit(tokenizer, pair, tok, max_length, mct)
    assert tok.prompt_truncated and tok.completion_truncated
    assert len(tok.chosen_ids) == mct and tok.rejected_ids == full_rejected
    assert len(tok.prompt_ids) == max_length - mct
    assert tokenizer.decode(tok.prompt_ids).endswith(
        "FINAL QUESTION 0: which word came last?<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.mark.parametrize("mct", [1, 4, 8, 16])
def test_any_max_length_either_fits_with_nonempty_completions_or_is_too_long(tokenizer, mct: int) -> None:
    pair = _long_dialogue(answer_words=12)
    _, full_chosen, full_rejected = render_ids(tokenizer, pair)
    longest = max(len(full_chosen), len(full_rejected))
    for max_length in range(1, 90):
        for max_prompt_length in (16, 1024):
            try:
                tok = tokenize_pair(tokenizer, pair, max_length, max_prompt_length, min_completion_tokens=mct)
            except RowProblem as problem:
                assert problem.kind == "too_long"
                # raised only when not even one prompt token fits beside the guaranteed completion tokens
                assert max_length < 1 + min(longest, mct), (max_length, mct)
                assert f"max_length={max_length}" in str(problem) and "dialogue 0" in str(problem)
                continue
            _check_fit(tokenizer, pair, tok, max_length, mct)


def test_tokenize_pairs_drops_and_counts_pairs_that_cannot_fit(tokenizer) -> None:
    rows = [
        {"prompt": "Hi there, how are you today?", "chosen": "Fine.", "rejected": "Bad."},
        {
            "prompt": "Tell me a story.",
            "chosen": "Once upon a time there was a very long story " * 3,
            "rejected": "No.",
        },
        {"prompt": _long_dialogue(1).prompt_messages, "chosen": "Ok.", "rejected": "No."},
    ]
    pairs, report = load_pairs(rows)
    max_length = mct = 8  # room for short answers only: the long story cannot keep 8 tokens plus any prompt
    out = tokenize_pairs(tokenizer, pairs, max_length, 64, min_completion_tokens=mct, report=report)
    assert [t.origin for t in out] == [pairs[0].origin, pairs[2].origin]
    assert report.dropped == {"too_long": 1}
    assert report.examples["too_long"][0].startswith("rows, row 1 (counting from 0): max_length=8")
    for pair, tok in zip([pairs[0], pairs[2]], out, strict=True):
        _check_fit(tokenizer, pair, tok, max_length, mct)
    with pytest.raises(RowProblem, match=r"rows, row 1 \(counting from 0\): max_length=8") as info:
        tokenize_pairs(tokenizer, pairs, max_length, 64, min_completion_tokens=mct, policy="raise")
    assert info.value.kind == "too_long"


def test_min_completion_tokens_zero_never_yields_empty_completions(tokenizer) -> None:
    """Was a bug: ORPOConfig accepted min_completion_tokens=0, and then a long prompt takes the whole max_length."""
    pair = _long_dialogue()
    try:
        tok = tokenize_pair(tokenizer, pair, max_length=64, max_prompt_length=1024, min_completion_tokens=0)
    except (RowProblem, ValueError):
        return  # refusing the setting is fine too
    assert tok.chosen_ids and tok.rejected_ids, (len(tok.prompt_ids), len(tok.chosen_ids), len(tok.rejected_ids))


def test_inspect_data_counts_pairs_that_cannot_fit_as_too_long(tokenizer) -> None:
    """Was a bug: inspect-data counted pairs that training would drop (too_long) as merely 'completion truncated',
    so its report says every pair is kept, and policy raise does not raise."""
    rows = [
        {"prompt": "Tell me a story.", "chosen": "Once upon a time there was a long story " * 3, "rejected": "No."},
        {"prompt": "Say hi.", "chosen": "Hi.", "rejected": "No."},
    ]
    found = inspect_data(rows, tokenizer=tokenizer, max_length=8, max_prompt_length=64, min_completion_tokens=8)
    assert found.report.dropped.get("too_long") == 1, found.lines()
    with pytest.raises(RowProblem, match="max_length=8"):
        inspect_data(
            rows, tokenizer=tokenizer, max_length=8, max_prompt_length=64, min_completion_tokens=8, policy="raise"
        )


@pytest.mark.parametrize("max_length, mct", [(48, 8), (24, 1)])
def test_orpo_loss_and_gradients_stay_finite_on_truncated_long_dialogues(tokenizer, max_length: int, mct: int) -> None:
    cfg = resolve_config("tiny")
    pairs = [_long_dialogue(i, answer_words=5 + 10 * i) for i in range(4)]
    tokenized = tokenize_pairs(tokenizer, pairs, max_length, max_prompt_length=40, min_completion_tokens=mct)
    assert len(tokenized) == 4 and all(t.prompt_truncated for t in tokenized)
    batch = PLAIN.collate(tokenized, tokenizer.pad_token_id)
    assert (batch.completion_mask.sum(dim=1) > 0).all()
    model = build_tiny_model()
    loss, metrics = orpo_step(model, batch, cfg)
    assert torch.isfinite(loss)
    for name, value in metrics.items():
        assert torch.isfinite(torch.as_tensor(value)).all(), name
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None for g in grads)
    assert all(torch.isfinite(g).all() for g in grads if g is not None)


# ---------------------------------------------------------------------------------------------------------------
# 6. completion masks on every built-in pair


def test_completion_mask_decodes_to_exactly_the_completion_for_every_builtin_pair(tokenizer) -> None:
    cfg = resolve_config("tiny")
    assert CHATML_END_OF_TURN.strip() in tokenizer.chat_template  # the tiny tokenizer speaks ChatML
    pairs, _ = load_pairs("builtin")
    tokenized = tokenize_pairs(tokenizer, pairs, cfg.max_length, cfg.max_prompt_length, cfg.min_completion_tokens)
    assert len(tokenized) == len(pairs) and not any(t.truncated for t in tokenized)
    batch = PLAIN.collate(tokenized, tokenizer.pad_token_id)
    n = len(pairs)
    for row in range(2 * n):
        pair, tok = pairs[row % n], tokenized[row % n]
        completion = pair.chosen if row < n else pair.rejected
        ids, mask = batch.input_ids[row], batch.completion_mask[row].bool()
        n_prompt = len(tok.prompt_ids)
        positions = mask.nonzero().flatten().tolist()
        assert positions == list(range(n_prompt, n_prompt + len(positions))), pair.origin  # one contiguous span
        assert not mask[:n_prompt].any(), pair.origin  # no prompt token is ever a completion token
        assert tokenizer.decode(ids[mask].tolist()) == completion + CHATML_END_OF_TURN, pair.origin
        prompt_text = tokenizer.apply_chat_template(pair.prompt_messages, add_generation_prompt=True, tokenize=False)
        assert tokenizer.decode(ids[:n_prompt].tolist()) == prompt_text, pair.origin
        assert batch.attention_mask[row].sum() == n_prompt + len(positions)
