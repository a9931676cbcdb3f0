"""HH-RLHF-style transcripts with the published file's quirks, generated: for tests, notebooks and workshops.

The rows follow Anthropic HH-RLHF's published schema exactly (one JSON object per line with two strings,
`chosen` and `rejected`, each a whole "\\n\\nHuman: ...\\n\\nAssistant: ..." transcript; the files ship as
`.jsonl.gz`). A share of the rows carries each quirk found in the real files:

| quirk | what the row looks like | what loading does |
|---|---|---|
| `repeated_role` | two Assistant turns in a row in the shared dialogue | dropped (bad_order) |
| `differ_before_final` | rejected's earlier Assistant turn differs from chosen's | dropped (prompt_mismatch) |
| `empty_final` | chosen ends with an empty "Assistant:" turn | dropped (empty_completion) |
| `role_word_inside` | "Human:" / "Assistant:" inside a turn's text | kept, text intact |
| `whitespace` | the shared dialogue differs by leading / trailing spaces | kept |
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

QUIRKS = ("repeated_role", "differ_before_final", "empty_final", "role_word_inside", "whitespace")
DROPPED_AS = {"repeated_role": "bad_order", "differ_before_final": "prompt_mismatch", "empty_final": "empty_completion"}

_TOPICS = [
    "bake bread",
    "learn the guitar",
    "train a puppy",
    "save for a holiday",
    "fix a bike puncture",
    "grow tomatoes",
    "write a cover letter",
    "start running",
    "clean a cast-iron pan",
    "plan a picnic",
    "learn to juggle",
    "brew green tea",
    "sleep better",
    "paint a fence",
    "study for an exam",
]
_FOLLOW_UPS = [
    "How long does that take?",
    "What do I need to buy first?",
    "Is there a cheaper way?",
    "What is the most common mistake?",
    "Can a beginner do it?",
]
_GOOD = [
    "Start small: {step}, then build from there. Most people see progress within {n} days.",
    "A simple plan: {step}. Keep notes, and ask for help if you get stuck after {n} tries.",
]
_BAD = [
    "I don't know.",
    "That is not something I can help with.",
    "Just figure it out yourself.",
    "Why would you want to do that?",
]
_STEPS = ["gather what you need", "set aside {n} minutes a day", "watch one short guide", "practise once a day"]


def _turn(role: str, text: str) -> str:
    """One transcript turn as published: a blank line, the role name, a colon and a space."""
    return f"\n\n{role}: {text}"


def _dialogue(rng: random.Random, index: int) -> list[tuple[str, str]]:
    """The shared turns: one to three Human questions with Assistant replies between them."""
    topic = _TOPICS[index % len(_TOPICS)]
    turns = [("Human", f"How do I {topic}? (question {index})")]
    for _ in range(rng.randrange(3)):
        turns.append(("Assistant", f"Sure. First, {rng.choice(_STEPS).format(n=rng.randint(5, 30))}."))
        turns.append(("Human", rng.choice(_FOLLOW_UPS)))
    return turns


def _answers(rng: random.Random) -> tuple[str, str]:
    """A helpful chosen answer and an unhelpful rejected one."""
    step = rng.choice(_STEPS).format(n=rng.randint(5, 30))
    return rng.choice(_GOOD).format(step=step, n=rng.randint(3, 30)), rng.choice(_BAD)


def _quirky(quirk: str | None, shared: list[tuple[str, str]], good: str, bad: str) -> tuple[str, str]:
    """The (chosen, rejected) transcripts of one row, with its quirk applied."""
    chosen_shared = rejected_shared = "".join(_turn(r, t) for r, t in shared)
    final_good, final_bad = _turn("Assistant", good), _turn("Assistant", bad)
    if quirk == "repeated_role":
        extra = _turn("Assistant", "Also, one more thing.")
        chosen_shared = rejected_shared = (
            "".join(_turn(r, t) for r, t in shared[:1])
            + _turn("Assistant", "Let me think.")
            + extra
            + "".join(_turn(r, t) for r, t in shared[1:])
        )
    elif quirk == "differ_before_final":
        rejected_shared = (
            "".join(_turn(r, t) for r, t in shared) + _turn("Assistant", "Hmm.") + _turn("Human", "Are you there?")
        )
    elif quirk == "empty_final":
        final_good = "\n\nAssistant:"
    elif quirk == "role_word_inside":
        final_good = _turn("Assistant", f"{good} You could reply with 'Human: thanks' or 'Assistant: welcome'.")
    elif quirk == "whitespace":
        rejected_shared = "".join(_turn(r, t + "  ") for r, t in shared)
    return chosen_shared + final_good, rejected_shared + final_bad


def hh_style_rows(n: int, quirk_share: float = 0.01, seed: int = 0) -> tuple[list[dict[str, str]], list[str | None]]:
    """`n` rows in HH-RLHF's schema and, for each, the quirk it carries (None for a clean row).

    Each quirk goes to `round(n * quirk_share)` rows (at least one when `quirk_share` > 0), at seeded positions.
    """
    rng = random.Random(seed)
    per_quirk = max(1, round(n * quirk_share)) if quirk_share > 0 else 0
    if per_quirk * len(QUIRKS) > n:
        raise ValueError(f"{n} rows cannot carry {per_quirk} rows of each of {len(QUIRKS)} quirks")
    positions = rng.sample(range(n), per_quirk * len(QUIRKS))
    quirks: list[str | None] = [None] * n
    for k, position in enumerate(positions):
        quirks[position] = QUIRKS[k // per_quirk]
    rows = []
    for index, quirk in enumerate(quirks):
        shared = _dialogue(rng, index)
        good, bad = _answers(rng)
        chosen, rejected = _quirky(quirk, shared, good, bad)
        rows.append({"chosen": chosen, "rejected": rejected})
    return rows, quirks


def write_hh_style_file(path: str | Path, n: int, quirk_share: float = 0.01, seed: int = 0) -> list[str | None]:
    """Write `hh_style_rows` as JSON lines (gzip-compressed when the name ends in .gz, as HH-RLHF ships);
    return the quirk of each row."""
    rows, quirks = hh_style_rows(n, quirk_share, seed)
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
    path = Path(path)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return quirks
