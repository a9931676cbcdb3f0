"""Fixtures in the published schemas of real preference datasets, each with the quirks its card, its
discussions or the code that consumes it describe; written in the file type the dataset ships.

Each `Fixture` builds the rows, writes the file, and says what loading it must give: the expected pairs
(prompt messages, chosen, rejected) and the rows dropped by kind. Clean rows are generated in bulk so the few
malformed ones stay under the default refusal share (5%), as in the real files.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd


def msg(role: str, content: str) -> dict[str, str]:
    """A message as datasets/parquet return it: struct fields in the card's order (content, then role)."""
    return {"content": content, "role": role}


def user(text: str) -> list[dict[str, str]]:
    """A one-turn prompt as orpo_kit normalizes it."""
    return [{"role": "user", "content": text}]


Expected = tuple[list[dict[str, str]], str, str]


@dataclass
class Fixture:
    """A dataset's schema with quirks: rows, file name, expected pairs and drops."""

    name: str
    filename: str
    rows: list[dict[str, Any]]
    expected: list[Expected]
    dropped: Counter = field(default_factory=Counter)
    first_problem_line: str = ""  # what policy raise must name (a line of a text file, a row of a table)
    write: Callable[[Path, list[dict[str, Any]]], None] = lambda path, rows: None

    def materialize(self, folder: Path) -> Path:
        """Write the file as the dataset publishes it and return its path."""
        path = folder / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        self.write(path, self.rows)
        return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    """Parquet through pyarrow, as the hub's converted datasets are stored."""
    pd.DataFrame(rows).to_parquet(path, index=False)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """One JSON object per line (gzip-compressed for .gz names)."""
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)


def _qa(i: int) -> tuple[str, str, str]:
    """A distinct question with a good and a worse answer."""
    return (f"What is {i} times 3?", f"{i} times 3 is {3 * i}.", f"{i} times 3 is {3 * i + 1}, I think.")


# --------------------------------------------------------------------------------------------------------------
# HuggingFaceH4/ultrafeedback_binarized, split train_prefs (parquet): prompt, prompt_id, chosen, rejected,
# messages, score_chosen, score_rejected. chosen[0] repeats the prompt as a user turn; messages == chosen.
# Ties (score_chosen == score_rejected) and identical chosen/rejected texts occur by construction.


def ultrafeedback() -> Fixture:
    rows, expected = [], []
    for i in range(40):
        q, good, bad = _qa(i)
        rows.append(_uf_row(q, good, bad, 8.5, 4.0))
        expected.append((user(q), good, bad))
    q, good, bad = _qa(100)
    rows.insert(5, _uf_row(q, good, bad, 7.0, 7.0))  # a tie
    rows.insert(9, _uf_row(*_qa(101)[:2], _qa(101)[1], 9.0, 6.0))  # identical texts
    return Fixture(
        "ultrafeedback_binarized",
        "data/train_prefs-00000-of-00001.parquet",
        rows,
        expected,
        Counter({"tie": 1, "identical": 1}),
        "row 5 (counting from 0)",
        write_parquet,
    )


def _uf_row(prompt: str, good: str, bad: str, score_chosen: float, score_rejected: float) -> dict[str, Any]:
    chosen = [msg("user", prompt), msg("assistant", good)]
    return {
        "prompt": prompt,
        "prompt_id": hashlib.sha256(prompt.encode()).hexdigest(),
        "chosen": chosen,
        "rejected": [msg("user", prompt), msg("assistant", bad)],
        "messages": chosen,
        "score_chosen": float(score_chosen),
        "score_rejected": float(score_rejected),
    }


# --------------------------------------------------------------------------------------------------------------
# mlabonne/orpo-dpo-mix-40k v1.2 (parquet): source, chosen, rejected, prompt, question. Whole dialogues in the
# lists (the Capybara subset is multi-turn); `prompt` / `question` are text beside them; a toxic-dpo subset the
# card suggests filtering by `source`; identical pairs filtered by consumers.


def orpo_dpo_mix() -> Fixture:
    rows, expected = [], []
    for i in range(40):
        q, good, bad = _qa(i)
        source = "toxic-dpo-v0.2" if i == 3 else "argilla/ultrafeedback-binarized-preferences-cleaned"
        rows.append(
            {
                "source": source,
                "chosen": [msg("user", q), msg("assistant", good)],
                "rejected": [msg("user", q), msg("assistant", bad)],
                "prompt": q,
                "question": q,
            }
        )
        expected.append((user(q), good, bad))
    dialogue = [msg("user", "Name a prime number."), msg("assistant", "7 is prime."), msg("user", "Another one?")]
    rows.append(
        {
            "source": "argilla/Capybara-Preferences",
            "chosen": dialogue + [msg("assistant", "11 is prime.")],
            "rejected": dialogue + [msg("assistant", "9 is prime.")],
            "prompt": "Name a prime number.",
            "question": "Name a prime number.",
        }
    )
    expected.append(([{"role": m["role"], "content": m["content"]} for m in dialogue], "11 is prime.", "9 is prime."))
    system = [msg("system", "You are a careful tutor."), msg("user", "Is 1 prime?")]
    rows.append(
        {
            "source": "argilla/distilabel-intel-orca-dpo-pairs",
            "chosen": system + [msg("assistant", "No.")],
            "rejected": system + [msg("assistant", "Yes.")],
            "prompt": "Is 1 prime?",
            "question": "Is 1 prime?",
        }
    )
    expected.append(([{"role": "system", "content": "You are a careful tutor."}, *user("Is 1 prime?")], "No.", "Yes."))
    q, good, _ = _qa(200)
    rows.insert(
        7,
        {
            "source": "truthy-dpo-v0.1",
            "chosen": [msg("user", q), msg("assistant", good)],
            "rejected": [msg("user", q), msg("assistant", good)],
            "prompt": q,
            "question": q,
        },
    )
    return Fixture(
        "orpo_dpo_mix_40k",
        "data/train-00000-of-00001.parquet",
        rows,
        expected,
        Counter({"identical": 1}),
        "row 7 (counting from 0)",
        write_parquet,
    )


# --------------------------------------------------------------------------------------------------------------
# Intel/orca_dpo_pairs (orca_rlhf.jsonl): system (often ""), question, chosen, rejected; Llama answers often
# start with a space.


def intel_orca() -> Fixture:
    rows, expected = [], []
    for i in range(40):
        q, good, bad = _qa(i)
        system = "You are an AI assistant. Think step by step." if i % 3 == 0 else ""
        rows.append({"system": system, "question": q, "chosen": good, "rejected": " Sure! " + bad})
        prompt = ([{"role": "system", "content": system}] if system else []) + user(q)
        expected.append((prompt, good, " Sure! " + bad))
    rows.insert(11, {"system": "", "question": _qa(300)[0], "chosen": _qa(300)[1], "rejected": ""})
    return Fixture(
        "intel_orca_dpo_pairs",
        "orca_rlhf.jsonl",
        rows,
        expected,
        Counter({"empty_completion": 1}),
        "line 12",
        write_jsonl,
    )


# --------------------------------------------------------------------------------------------------------------
# argilla/distilabel-intel-orca-dpo-pairs (parquet): 16 columns; status "tie" (~4K rows), null ratings (42),
# chosen == rejected (2). The card filters status != "tie", chosen_score >= 8 and not in_gsm8k_train.


def argilla_orca() -> Fixture:
    rows, expected = [], []
    for i in range(40):
        q, good, bad = _qa(i)
        rows.append(_argilla_row(q, good, bad, "swapped" if i % 4 == 0 else "unchanged", [9.0, 3.0]))
        expected.append((user(q), good, bad))
    rows.insert(2, _argilla_row(*_qa(400), "tie", [7.0, 7.0]))
    rows.insert(20, _argilla_row(*_qa(401), "unchanged", None))  # a null rating: still a pair
    expected.insert(19, (user(_qa(401)[0]), _qa(401)[1], _qa(401)[2]))
    q, good, _ = _qa(402)
    rows.insert(30, _argilla_row(q, good, good, "unchanged", [8.0, 8.0]))
    return Fixture(
        "distilabel_intel_orca_dpo_pairs",
        "data/train-00000-of-00001.parquet",
        rows,
        expected,
        Counter({"tie": 1, "identical": 1}),
        "row 2 (counting from 0)",
        write_parquet,
    )


def _argilla_row(q: str, good: str, bad: str, status: str, rating: list[float] | None) -> dict[str, Any]:
    return {
        "system": "",
        "input": q,
        "chosen": good,
        "rejected": bad,
        "generations": [bad, good],
        "order": ["rejected", "chosen"],
        "labelling_model": "gpt-4-1106-preview",
        "labelling_prompt": [msg("system", "You are a helpful and precise assistant."), msg("user", q)],
        "raw_labelling_response": "3 9\n\nAssistant 2 is correct.",
        "rating": rating,
        "rationale": "The second answer is correct.",
        "status": status,
        "original_chosen": bad,
        "original_rejected": good,
        "chosen_score": None if rating is None else max(rating),
        "in_gsm8k_train": False,
    }


# --------------------------------------------------------------------------------------------------------------
# argilla/distilabel-capybara-dpo-7k-binarized (parquet): 13 columns; chosen / rejected are whole multi-turn
# dialogues differing in the last assistant turn; rating_chosen / rating_rejected (int64, 1-5).


def capybara() -> Fixture:
    rows, expected = [], []
    for i in range(40):
        q, good, bad = _qa(i)
        turns = [msg("user", "Let's do some arithmetic."), msg("assistant", "Happy to help."), msg("user", q)]
        rows.append(
            {
                "source": "Airoboros",
                "conversation": [
                    {"input": turns[0]["content"], "output": "Happy to help."},
                    {"input": q, "output": good},
                ],
                "original_response": good,
                "generation_prompt": ["<|system|>\n</s>\n<|user|>\n" + q],
                "raw_generation_responses": [bad],
                "new_generations": [bad, good],
                "prompt": turns[0]["content"],
                "chosen": turns + [msg("assistant", good)],
                "rejected": turns + [msg("assistant", bad)],
                "rating_chosen": 5,
                "rating_rejected": 2 + i % 2,
                "chosen_model": "gpt-4",
                "rejected_model": "teknium/OpenHermes-2.5-Mistral-7B",
            }
        )
        expected.append(([{"role": m["role"], "content": m["content"]} for m in turns], good, bad))
    tie = dict(
        rows[0],
        rating_rejected=5,
        chosen=rows[0]["chosen"][:2] + [msg("user", "One more?"), msg("assistant", "Yes.")],
        rejected=rows[0]["chosen"][:2] + [msg("user", "One more?"), msg("assistant", "No.")],
    )
    rows.insert(4, tie)
    broken = dict(
        rows[1],
        rejected=[msg("user", "Let's do some arithmetic."), msg("user", _qa(1)[0]), msg("assistant", _qa(1)[2])],
    )
    rows.insert(25, broken)  # two user turns in a row
    return Fixture(
        "distilabel_capybara_dpo_7k",
        "data/train-00000-of-00001.parquet",
        rows,
        expected,
        Counter({"tie": 1, "bad_order": 1}),
        "row 4 (counting from 0)",
        write_parquet,
    )


# --------------------------------------------------------------------------------------------------------------
# stanfordnlp/SHP (askculinary/train.json, JSON lines despite the extension): labels 1 = A preferred, 0 = B
# (randomized ~50/50); score_A / score_B; many pairs per post.


def shp() -> Fixture:
    rows, expected = [], []
    for i in range(40):
        post = f"What's the best way to store {['basil', 'bread', 'rice', 'cheese'][i % 4]}? (post {i // 2})"
        good, bad = f"Keep it cool and dry ({i}).", f"Just leave it anywhere ({i})."
        label = i % 2
        a, b = (good, bad) if label else (bad, good)
        rows.append(
            {
                "post_id": f"qt{i // 2:04d}",
                "domain": "askculinary_train",
                "upvote_ratio": 0.98,
                "history": post,
                "c_root_id_A": f"a{i}",
                "c_root_id_B": f"b{i}",
                "created_at_utc_A": 1636822112 + i,
                "created_at_utc_B": 1636822110 + i,
                "score_A": 340 if label else 52,
                "score_B": 52 if label else 340,
                "human_ref_A": a,
                "human_ref_B": b,
                "labels": label,
                "seconds_difference": 2.0,
                "score_ratio": 340 / 52,
            }
        )
        expected.append((user(post), good, bad))
    rows.insert(13, dict(rows[0], labels=2, c_root_id_A="x"))
    return Fixture("shp", "askculinary/train.json", rows, expected, Counter({"wrong_type": 1}), "line 14", write_jsonl)


# --------------------------------------------------------------------------------------------------------------
# Anthropic/hh-rlhf (harmless-base/test.jsonl.gz): chosen / rejected transcripts, generated with every quirk.


def hh_rlhf() -> Fixture:
    from orpo_kit.data.hh_style import DROPPED_AS, hh_style_rows
    from orpo_kit.data.transcripts import split_transcript

    rows, quirks = hh_style_rows(400, quirk_share=0.01, seed=3)
    expected = []
    for row, quirk in zip(rows, quirks, strict=True):
        if quirk in DROPPED_AS:
            continue
        chosen = split_transcript(row["chosen"], "", "chosen")
        rejected = split_transcript(row["rejected"], "", "rejected")
        expected.append((chosen[:-1], chosen[-1]["content"], rejected[-1]["content"]))
    first = next(i for i, q in enumerate(quirks) if q in DROPPED_AS) + 1
    return Fixture(
        "hh_rlhf",
        "harmless-base/test.jsonl.gz",
        rows,
        expected,
        Counter(DROPPED_AS[q] for q in quirks if q in DROPPED_AS),
        f"line {first}",
        write_jsonl,
    )


FIXTURES = {
    f.name: f for f in (ultrafeedback(), orpo_dpo_mix(), intel_orca(), argilla_orca(), capybara(), shp(), hh_rlhf())
}
