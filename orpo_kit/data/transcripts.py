"""Anthropic HH-RLHF transcripts ("\\n\\nHuman: ... \\n\\nAssistant: ...") as a prompt and two answers.

HH-RLHF's published files have quirks, each handled on purpose (counts from its 2,312-row harmless-base test
file; the train splits have about 160,000 rows):
- two turns of one role in a row (0.35% of rows): the row is dropped, not merged. The doubled turn marks a
  missing turn from the other side, so a merged turn would teach the model to answer a message it never saw;
- chosen and rejected that differ before the final assistant turn (0.2%): dropped, they answer different
  dialogues;
- an empty final turn: dropped as an empty completion;
- leading / trailing whitespace that differs between the two copies of the shared dialogue: ignored;
- the words `Human:` / `Assistant:` inside a turn's text: kept as text. Only a role name at the start of the
  transcript or after a blank line ("\\n\\n") starts a new turn.
"""

from __future__ import annotations

import re
from typing import Any

from .problems import RowProblem

_TURN = re.compile(r"(?:\A\s*|\n\n)(Human|Assistant):[ ]?")
_ROLES = {"Human": "user", "Assistant": "assistant"}


def looks_like_transcript(value: Any) -> bool:
    """Whether a value is an HH-style transcript (starts with a `Human:` turn)."""
    return isinstance(value, str) and value.lstrip().startswith("Human:")


def split_transcript(text: str, where: str, name: str) -> list[dict[str, str]]:
    """Transcript text to messages, checked to alternate user / assistant from a user turn to an assistant turn."""
    parts = _TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise RowProblem(
            "bad_order", f"{where}, field {name!r}: not a transcript of '\\n\\nHuman: ' / '\\n\\nAssistant: ' turns"
        )
    messages = [{"role": _ROLES[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]
    for i, m in enumerate(messages):
        expected = "user" if i % 2 == 0 else "assistant"
        if m["role"] != expected:
            what = f"two {m['role']!r} turns in a row" if i else f"starts with an {m['role']!r} turn"
            raise RowProblem(
                "bad_order",
                f"{where}, field {name!r}, turn {i}: {what} (turns must alternate Human / Assistant from a Human turn)",
            )
    if messages[-1]["role"] != "assistant":
        raise RowProblem("bad_order", f"{where}, field {name!r}: ends with a Human turn, not an Assistant answer")
    return messages


def transcript_pair(chosen: str, rejected: str, where: str) -> tuple[list[dict[str, str]], str, str]:
    """(shared dialogue, chosen answer, rejected answer) of two transcripts of one conversation."""
    chosen_turns = split_transcript(chosen, where, "chosen")
    rejected_turns = split_transcript(rejected, where, "rejected")
    if chosen_turns[:-1] != rejected_turns[:-1]:  # contents are already stripped: whitespace differences pass
        turn = next(
            (i for i, (c, r) in enumerate(zip(chosen_turns[:-1], rejected_turns[:-1], strict=False)) if c != r),
            min(len(chosen_turns), len(rejected_turns)) - 1,
        )
        raise RowProblem(
            "prompt_mismatch",
            f"{where}: 'chosen' and 'rejected' transcripts differ at turn {turn}, "
            "before the final assistant turn, so they answer different dialogues",
        )
    return chosen_turns[:-1], chosen_turns[-1]["content"], rejected_turns[-1]["content"]
