"""Detect a preference data format and normalize each row to a `PreferencePair`.

Formats:
- standard: `prompt`, `chosen`, `rejected` strings;
- conversational: `chosen` / `rejected` are lists of {role, content} messages, with or without a separate
  `prompt`. Lists that hold the whole dialogue (UltraFeedback, orpo-dpo-mix, Capybara) give the prompt
  themselves; their `prompt` text column is then only a summary and is not used;
- implicit: `chosen` / `rejected` are whole transcripts ("\\n\\nHuman: ... \\n\\nAssistant: ...", as in
  Anthropic HH-RLHF) that share the dialogue before the final assistant turn (see `transcripts`);
- mapped: other column names (`question` / `response_j` / `response_k`, Orca's `system` + `question`,
  `instruction` + `input`, ...) or an explicit `column_map` {prompt: ..., chosen: ..., rejected: ...};
- labeled_ab: two answers and a label saying which one people preferred (Stanford SHP: `history`,
  `human_ref_A`, `human_ref_B`, `labels` = 1 when A is preferred).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .problems import RowProblem
from .transcripts import looks_like_transcript, transcript_pair

FORMATS = ("standard", "conversational", "implicit", "mapped", "labeled_ab")
ROLES = ("system", "user", "assistant")
ALIASES = {
    "prompt": ("prompt", "question", "instruction", "query", "input", "history"),
    "chosen": ("chosen", "response_j", "chosen_response", "preferred"),
    "rejected": ("rejected", "response_k", "rejected_response", "dispreferred"),
}
AB_COLUMNS = ("human_ref_A", "human_ref_B", "labels")
# Score columns under their published names: (chosen, rejected).
SCORE_COLUMNS = (
    ("score_chosen", "score_rejected"),
    ("chosen_score", "rejected_score"),
    ("rating_chosen", "rating_rejected"),
)


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
    if set(AB_COLUMNS) <= columns:
        return "labeled_ab"
    if "chosen" in columns and "rejected" in columns:
        if isinstance(sample.get("chosen"), list):
            return "conversational"
        if looks_like_transcript(sample.get("chosen")):
            return "implicit"
        if "prompt" in columns:
            return "standard"
        if any(a in columns for a in ALIASES["prompt"]):
            return "mapped"  # Orca pairs: system + question (or input), chosen, rejected
        return "implicit"
    if any(a in columns for names in ALIASES.values() for a in names):
        return "mapped"
    raise ValueError(
        f"cannot tell the data format from columns {sorted(columns)}: expected prompt/chosen/rejected, "
        "message lists, HH-style transcripts, SHP-style human_ref_A/human_ref_B/labels, "
        "or pass column_map={'prompt': ..., 'chosen': ..., 'rejected': ...}"
    )


def check_encodable(text: str, where: str) -> str:
    """The text unchanged, or a "bad_text" RowProblem when it cannot be written as UTF-8 (a lone surrogate)."""
    try:  # JSON may escape half a surrogate pair (\ud800); tokenizers cannot read it
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RowProblem(
            "bad_text",
            f"{where}: text holds {text[exc.start]!r} at character {exc.start}, half of a surrogate pair, which is "
            "not valid Unicode; fix or remove that escape",
        ) from None
    return text


def _text(values: dict[str, Any], name: str, where: str, allow_empty: bool = False) -> str:
    """A string field, or a RowProblem naming the row and field."""
    if name not in values or values[name] is None:
        raise RowProblem("missing_field", f"{where}, field {name!r}: missing")
    value = values[name]
    if not isinstance(value, str):
        raise RowProblem("wrong_type", f"{where}, field {name!r}: expected a string, got {type(value).__name__}")
    check_encodable(value, f"{where}, field {name!r}")
    if not allow_empty and not value.strip():
        kind = "empty_prompt" if name in ALIASES["prompt"] else "empty_completion"
        raise RowProblem(kind, f"{where}, field {name!r}: empty text")
    return value


def _messages(value: Any, where: str, name: str) -> list[dict[str, str]]:
    """Validate a message list: {role, content} strings with known roles; extra keys and empty system turns go."""
    if not isinstance(value, list) or not value:
        got = "an empty list" if isinstance(value, list) else type(value).__name__
        raise RowProblem("wrong_type", f"{where}, field {name!r}: expected a non-empty list of messages, got {got}")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise RowProblem("wrong_type", f"{where}, field {name!r}, message {i}: expected {{role, content}} strings")
        if m["role"] not in ROLES:
            raise RowProblem(
                "bad_role",
                f"{where}, field {name!r}, message {i}: unknown role {m['role']!r} "
                f"(expected one of {', '.join(ROLES)})",
            )
        check_encodable(m["content"], f"{where}, field {name!r}, message {i}")
        if m["role"] == "system" and not m["content"].strip():
            continue  # an empty system prompt is the same as none (Orca's many "" system fields)
        out.append({"role": m["role"], "content": m["content"]})
    return out


def check_dialogue_order(prompt: list[dict[str, str]], where: str) -> None:
    """A prompt is: optional system turn, then user / assistant alternating, ending with a user turn."""
    roles = [m["role"] for m in prompt]
    if roles and roles[0] == "system":
        roles = roles[1:]
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(roles))]
    if not roles or roles != expected or roles[-1] != "user":
        raise RowProblem(
            "bad_order",
            f"{where}: prompt turns {[m['role'] for m in prompt]} are out of order "
            "(expected [system,] user, assistant, ..., user)",
        )
    for i, m in enumerate(prompt):
        if not m["content"].strip():
            raise RowProblem("empty_prompt", f"{where}: prompt turn {i} ({m['role']!r}) is empty")


def _final_turn(conv: list[dict[str, str]], prompt: list[dict[str, str]] | None, where: str, name: str):
    """(prompt turns, answer) of one message list, given the separate prompt messages if there are any."""
    if prompt is not None and conv[: len(prompt)] == prompt and len(conv) > len(prompt):
        conv = conv[len(prompt) :]  # the list repeats the prompt
    elif prompt is None:
        prompt, conv = conv[:-1], conv[-1:]
    if len(conv) != 1:
        raise RowProblem(
            "prompt_mismatch",
            f"{where}, field {name!r}: after the prompt expected one assistant message, found {len(conv)} messages",
        )
    if conv[0]["role"] != "assistant":
        raise RowProblem(
            "bad_order",
            f"{where}, field {name!r}: the final message has role {conv[0]['role']!r}, expected 'assistant'",
        )
    return prompt, conv[0]["content"]


def _prompt_messages(values: dict[str, Any], where: str, whole_dialogue: bool) -> list[dict[str, str]] | None:
    """The separate prompt as messages, or None when the message lists carry the dialogue themselves."""
    prompt = values.get("prompt")
    if isinstance(prompt, list):
        return _messages(prompt, where, "prompt")
    if whole_dialogue or prompt is None:
        return None  # a text `prompt` beside whole dialogues only summarizes them
    return [{"role": "user", "content": _text(values, "prompt", where)}]


def _conversational(values: dict[str, Any], where: str) -> tuple[list[dict[str, str]], str, str]:
    """Prompt messages and final answers from message lists."""
    chosen = _messages(values.get("chosen"), where, "chosen")
    rejected = _messages(values.get("rejected"), where, "rejected")
    prompt = _prompt_messages(values, where, whole_dialogue=len(chosen) > 1 and len(rejected) > 1)
    if prompt is None and (len(chosen) < 2 or len(rejected) < 2):
        short = "chosen" if len(chosen) < 2 else "rejected"
        raise RowProblem("missing_field", f"{where}, field 'prompt': missing, and {short!r} holds only the answer")
    p_c, a_c = _final_turn(chosen, prompt, where, "chosen")
    p_r, a_r = _final_turn(rejected, prompt, where, "rejected")
    check_dialogue_order(p_c, f"{where}, field 'chosen'")
    check_dialogue_order(p_r, f"{where}, field 'rejected'")
    if _stripped(p_c) != _stripped(p_r):
        raise RowProblem("prompt_mismatch", f"{where}: 'chosen' and 'rejected' continue different dialogues")
    return p_c, a_c, a_r


def _stripped(messages: list[dict[str, str]]) -> list[tuple[str, str]]:
    """Messages compared without leading / trailing whitespace (a stray space is not another dialogue)."""
    return [(m["role"], m["content"].strip()) for m in messages]


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


def _system(values: dict[str, Any], where: str) -> list[dict[str, str]]:
    """A `system` column as a system turn (none when empty, as in most Orca rows)."""
    system = values.get("system")
    if system is None:
        return []
    if not isinstance(system, str):
        raise RowProblem("wrong_type", f"{where}, field 'system': expected a string, got {type(system).__name__}")
    check_encodable(system, f"{where}, field 'system'")
    return [{"role": "system", "content": system}] if system.strip() else []


def _mapped(values: dict[str, Any], where: str, cmap: dict[str, str]) -> tuple[list[dict[str, str]], str, str]:
    """Standard fields under other names; `instruction` + `input` joined; a `system` column kept."""
    prompt = _text(values, cmap["prompt"], where)
    extra = values.get("input") if cmap["prompt"] == "instruction" else None
    if isinstance(extra, str) and extra.strip():
        prompt = f"{prompt}\n\n{_text(values, 'input', where)}"
    messages = _system(values, where) + [{"role": "user", "content": prompt}]
    return messages, _text(values, cmap["chosen"], where), _text(values, cmap["rejected"], where)


def _ab_label(values: dict[str, Any], where: str) -> bool:
    """SHP's `labels`: True when A is preferred (1), False when B is (0); "1" / "0" from CSV too."""
    label = values.get("labels")
    if isinstance(label, str) and label.strip() in ("0", "1"):
        label = int(label)
    if label is None:
        raise RowProblem("missing_field", f"{where}, field 'labels': missing")
    if label not in (0, 1) or (isinstance(label, float) and not label.is_integer()):
        raise RowProblem(
            "wrong_type", f"{where}, field 'labels': expected 1 (A preferred) or 0 (B preferred), got {label!r}"
        )
    return bool(label)


def _labeled_ab(values: dict[str, Any], where: str) -> tuple[list[dict[str, str]], str, str, dict[str, Any]]:
    """Prompt, preferred and other answer of an A/B row, and its scores in chosen/rejected order."""
    a_wins = _ab_label(values, where)
    prompt = _text(values, "history", where)
    a, b = _text(values, "human_ref_A", where), _text(values, "human_ref_B", where)
    scores = {
        "score_chosen": values.get("score_A" if a_wins else "score_B"),
        "score_rejected": values.get("score_B" if a_wins else "score_A"),
    }
    return [{"role": "user", "content": prompt}], (a if a_wins else b), (b if a_wins else a), scores


def _pair_parts(values: dict[str, Any], fmt: str, where: str, cmap: dict[str, str] | None):
    """(prompt messages, chosen, rejected, score columns) of a row in a given format."""
    scores = values
    if fmt == "standard":
        prompt_value = values.get("prompt")
        prompt = (
            _messages(prompt_value, where, "prompt")
            if isinstance(prompt_value, list)
            else _system(values, where) + [{"role": "user", "content": _text(values, "prompt", where)}]
        )
        chosen, rejected = _text(values, "chosen", where), _text(values, "rejected", where)
    elif fmt == "conversational":
        prompt, chosen, rejected = _conversational(values, where)
    elif fmt == "implicit":
        prompt, chosen, rejected = transcript_pair(
            _text(values, "chosen", where), _text(values, "rejected", where), where
        )
    elif fmt == "mapped":
        prompt, chosen, rejected = _mapped(values, where, cmap or {})
    elif fmt == "labeled_ab":
        prompt, chosen, rejected, scores = _labeled_ab(values, where)
    else:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)} or auto")
    return prompt, chosen, rejected, scores


def normalize_row(values: dict[str, Any], fmt: str, where: str, cmap: dict[str, str] | None = None) -> PreferencePair:
    """One raw row to a PreferencePair, or RowProblem."""
    prompt, chosen, rejected, score_values = _pair_parts(values, fmt, where, cmap)
    check_dialogue_order(prompt, where)
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        if not text.strip():
            raise RowProblem("empty_completion", f"{where}, field {name!r}: empty completion")
    if chosen.strip() == rejected.strip():
        raise RowProblem("identical", f"{where}: 'chosen' and 'rejected' are identical, so the pair teaches nothing")
    score_chosen, score_rejected = _scores(score_values)
    return PreferencePair(
        prompt,
        chosen,
        rejected,
        origin=where,
        split=_label(values, "split"),
        skill=_label(values, "skill"),
        score_chosen=score_chosen,
        score_rejected=score_rejected,
    )


SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "eval": "eval",
    "evaluation": "eval",
    "test": "eval",
    "validation": "eval",
    "valid": "eval",
    "val": "eval",
    "dev": "eval",
}


def _label(values: dict[str, Any], name: str) -> str | None:
    """An optional text label (split, skill); other types are ignored. Splits take their common names in any case
    (test / validation / dev are eval); an unknown split name is kept as written, for the split check to name."""
    value = values.get(name)
    if not isinstance(value, str) or not value.strip():
        return None
    if name == "split":
        return SPLIT_NAMES.get(value.strip().lower(), value.strip())
    return value


def _scores(values: dict[str, Any]) -> tuple[float | None, float | None]:
    """(chosen, rejected) scores from the first pair of published score columns present."""
    for chosen_name, rejected_name in SCORE_COLUMNS:
        if chosen_name in values or rejected_name in values:
            return _score(values, chosen_name), _score(values, rejected_name)
    return _score(values, "score_chosen"), _score(values, "score_rejected")


def _score(values: dict[str, Any], name: str) -> float | None:
    """A numeric score (numbers, or numeric strings as CSV gives them); None when absent or not a number."""
    value = values.get(name)
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN: no score
