"""Detect a preference data format and normalize each row to a `PreferencePair`.

Formats:
- standard: `prompt`, `chosen`, `rejected` strings;
- conversational: `chosen` / `rejected` are lists of {role, content} messages, with or without a separate
  `prompt` (a string or a message list); message lists may repeat the prompt's turns (UltraFeedback);
- implicit: `chosen` / `rejected` are whole transcripts ("\\n\\nHuman: ... \\n\\nAssistant: ...", as in
  Anthropic HH-RLHF) that share the dialogue before the final assistant turn;
- mapped: other column names (`question` / `response_j` / `response_k`, `instruction` + `input`, ...) or
  an explicit `column_map` {prompt: ..., chosen: ..., rejected: ...}.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

FORMATS = ("standard", "conversational", "implicit", "mapped")
ROLES = ("system", "user", "assistant")
ALIASES = {
    "prompt": ("prompt", "question", "instruction", "query"),
    "chosen": ("chosen", "response_j", "chosen_response", "preferred"),
    "rejected": ("rejected", "response_k", "rejected_response", "dispreferred"),
}
_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")


class RowProblem(ValueError):
    """A row that cannot become a pair: `kind` selects the policy, the message names row and field."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class PreferencePair:
    """A dialogue prompt (messages up to the answer) with a chosen and a rejected final assistant turn."""

    prompt_messages: list[dict[str, str]]
    chosen: str
    rejected: str
    origin: str = ""  # file and row, for messages
    split: str | None = None
    skill: str | None = None
    score_chosen: float | None = None
    score_rejected: float | None = None

    @property
    def prompt(self) -> str:
        """The prompt as one string: the user text for one turn, else 'role: content' lines."""
        if len(self.prompt_messages) == 1 and self.prompt_messages[0]["role"] == "user":
            return self.prompt_messages[0]["content"]
        return "\n".join(f"{m['role']}: {m['content']}" for m in self.prompt_messages)


def detect_format(columns: set[str], sample: dict[str, Any]) -> str:
    """Guess the format from column names and one row's value types."""
    if "chosen" in columns and "rejected" in columns:
        if isinstance(sample.get("chosen"), list):
            return "conversational"
        return "standard" if "prompt" in columns else "implicit"
    if any(a in columns for names in ALIASES.values() for a in names):
        return "mapped"
    raise ValueError(f"cannot tell the data format from columns {sorted(columns)}: expected prompt/chosen/rejected, "
                     "message lists, HH-style transcripts, or pass column_map={'prompt': ..., 'chosen': ..., 'rejected': ...}")


def _text(values: dict[str, Any], name: str, where: str, allow_empty: bool = False) -> str:
    """A string field, or a RowProblem naming the row and field."""
    if name not in values or values[name] is None:
        raise RowProblem("missing_field", f"{where}, field {name!r}: missing")
    value = values[name]
    if not isinstance(value, str):
        raise RowProblem("wrong_type", f"{where}, field {name!r}: expected a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        kind = "empty_prompt" if name == "prompt" else "empty_completion"
        raise RowProblem(kind, f"{where}, field {name!r}: empty text")
    return value


def _messages(value: Any, where: str, name: str) -> list[dict[str, str]]:
    """Validate a message list: {role, content} strings with known roles; extra keys are dropped."""
    if not isinstance(value, list) or not value:
        got = "an empty list" if isinstance(value, list) else type(value).__name__
        raise RowProblem("wrong_type", f"{where}, field {name!r}: expected a non-empty list of messages, got {got}")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise RowProblem("wrong_type", f"{where}, field {name!r}, message {i}: expected {{role, content}} strings")
        if m["role"] not in ROLES:
            raise RowProblem("bad_role", f"{where}, field {name!r}, message {i}: unknown role {m['role']!r} "
                                         f"(expected one of {', '.join(ROLES)})")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def check_dialogue_order(prompt: list[dict[str, str]], where: str) -> None:
    """A prompt is: optional system turn, then user / assistant alternating, ending with a user turn."""
    roles = [m["role"] for m in prompt]
    if roles and roles[0] == "system":
        roles = roles[1:]
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(roles))]
    if not roles or roles != expected or roles[-1] != "user":
        raise RowProblem("bad_order", f"{where}: prompt turns {[m['role'] for m in prompt]} are out of order "
                                      "(expected [system,] user, assistant, ..., user)")


def _final_turn(conv: list[dict[str, str]], prompt: list[dict[str, str]] | None, where: str, name: str):
    """(prompt turns, answer) of one message list, given the separate prompt if there is one."""
    if prompt is not None and conv[: len(prompt)] == prompt and len(conv) > len(prompt):
        conv = conv[len(prompt):]  # the list repeats the prompt (UltraFeedback)
    elif prompt is None:
        prompt, conv = conv[:-1], conv[-1:]
    if len(conv) != 1:
        raise RowProblem("prompt_mismatch", f"{where}, field {name!r}: after the prompt expected one assistant "
                                            f"message, found {len(conv)} messages")
    if conv[0]["role"] != "assistant":
        raise RowProblem("bad_order", f"{where}, field {name!r}: the final message has role {conv[0]['role']!r}, "
                                      "expected 'assistant'")
    return prompt, conv[0]["content"]


def _conversational(values: dict[str, Any], where: str) -> tuple[list[dict[str, str]], str, str]:
    """Prompt messages and final answers from message lists."""
    chosen = _messages(values.get("chosen"), where, "chosen")
    rejected = _messages(values.get("rejected"), where, "rejected")
    prompt = values.get("prompt")
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    elif prompt is not None:
        prompt = _messages(prompt, where, "prompt")
    p_c, a_c = _final_turn(chosen, prompt, where, "chosen")
    p_r, a_r = _final_turn(rejected, prompt, where, "rejected")
    if p_c != p_r:
        raise RowProblem("prompt_mismatch", f"{where}: 'chosen' and 'rejected' continue different dialogues")
    return p_c, a_c, a_r


def split_transcript(text: str, where: str, name: str) -> list[dict[str, str]]:
    """HH-style "\\n\\nHuman: ... \\n\\nAssistant: ..." text to messages."""
    parts = _HH_TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise RowProblem("bad_order", f"{where}, field {name!r}: not a transcript of '\\n\\nHuman: ' / "
                                      "'\\n\\nAssistant: ' turns")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]


def _implicit(values: dict[str, Any], where: str) -> tuple[list[dict[str, str]], str, str]:
    """Shared dialogue prompt and final assistant turns of two transcripts."""
    chosen = split_transcript(_text(values, "chosen", where), where, "chosen")
    rejected = split_transcript(_text(values, "rejected", where), where, "rejected")
    if chosen[:-1] != rejected[:-1]:
        raise RowProblem("prompt_mismatch", f"{where}: 'chosen' and 'rejected' transcripts differ before the final "
                                            "assistant turn, so they do not answer the same prompt")
    _, a_c = _final_turn(chosen, None, where, "chosen")
    _, a_r = _final_turn(rejected, None, where, "rejected")
    return chosen[:-1], a_c, a_r


def resolve_column_map(columns: set[str], column_map: dict[str, str] | None) -> dict[str, str]:
    """Which column holds prompt / chosen / rejected (explicit map first, then known aliases)."""
    found = dict(column_map or {})
    for field_name, names in ALIASES.items():
        if field_name not in found:
            hit = next((n for n in names if n in columns), None)
            if hit is not None:
                found[field_name] = hit
    missing = [f for f in ALIASES if f not in found]
    if missing:
        raise ValueError(f"no column for {missing} among {sorted(columns)}; pass column_map")
    return found


def _mapped(values: dict[str, Any], where: str, cmap: dict[str, str]) -> tuple[list[dict[str, str]], str, str]:
    """Standard fields under other names; `instruction` + `input` joined into one prompt."""
    prompt = _text(values, cmap["prompt"], where)
    extra = values.get("input") if cmap["prompt"] == "instruction" else None
    if isinstance(extra, str) and extra.strip():
        prompt = f"{prompt}\n\n{extra}"
    return [{"role": "user", "content": prompt}], _text(values, cmap["chosen"], where), _text(values, cmap["rejected"], where)


def normalize_row(values: dict[str, Any], fmt: str, where: str, cmap: dict[str, str] | None = None) -> PreferencePair:
    """One raw row to a PreferencePair, or RowProblem."""
    if fmt == "standard":
        prompt_value = values.get("prompt")
        prompt = _messages(prompt_value, where, "prompt") if isinstance(prompt_value, list) else \
            [{"role": "user", "content": _text(values, "prompt", where)}]
        chosen, rejected = _text(values, "chosen", where), _text(values, "rejected", where)
    elif fmt == "conversational":
        prompt, chosen, rejected = _conversational(values, where)
    elif fmt == "implicit":
        prompt, chosen, rejected = _implicit(values, where)
    elif fmt == "mapped":
        prompt, chosen, rejected = _mapped(values, where, cmap or {})
    else:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)} or auto")
    check_dialogue_order(prompt, where)
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        if not text.strip():
            raise RowProblem("empty_completion", f"{where}, field {name!r}: empty completion")
    if chosen == rejected:
        raise RowProblem("identical", f"{where}: 'chosen' and 'rejected' are identical, so the pair teaches nothing")
    return PreferencePair(prompt, chosen, rejected, origin=where, split=values.get("split"), skill=values.get("skill"),
                          score_chosen=_score(values, "score_chosen"), score_rejected=_score(values, "score_rejected"))


def _score(values: dict[str, Any], name: str) -> float | None:
    """A numeric score (numbers, or numeric strings as CSV gives them); None when absent or not a number."""
    value = values.get(name)
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
