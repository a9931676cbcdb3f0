"""Turn preference pairs into token ids through the tokenizer's chat template, split by position."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from .formats import PreferencePair, RowProblem
from .validate import DataReport, resolve_policy


@dataclass(frozen=True)
class TokenizedPair:
    """Token ids of a pair: the prompt (chat template up to the assistant turn) and each completion."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    origin: str = ""
    prompt_truncated: bool = False
    completion_truncated: bool = False

    @property
    def truncated(self) -> bool:
        """Whether any part was cut to fit the length limits."""
        return self.prompt_truncated or self.completion_truncated


def _ids(encoded: Any) -> list[int]:
    """Token ids from apply_chat_template output (a list, or a BatchEncoding in transformers 5)."""
    if isinstance(encoded, dict) or hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    return list(encoded)


def _completion_ids(tokenizer: Any, messages: list[dict], prompt_ids: list[int], answer: str, where: str) -> list[int]:
    """Ids of the assistant turn: the full rendering minus the prompt rendering, checked to be a prefix."""
    full = _ids(tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=True))
    if full[: len(prompt_ids)] != prompt_ids:
        raise ValueError(
            f"{where}: the chat template renders the prompt differently once an answer follows, "
            "so prompt and completion cannot be split by position"
        )
    return full[len(prompt_ids) :]


def render_ids(tokenizer: Any, pair: PreferencePair) -> tuple[list[int], list[int], list[int]]:
    """Untruncated (prompt, chosen, rejected) ids through the chat template."""
    messages = pair.prompt_messages
    prompt_ids = _ids(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
    return (
        prompt_ids,
        _completion_ids(tokenizer, messages, prompt_ids, pair.chosen, pair.origin),
        _completion_ids(tokenizer, messages, prompt_ids, pair.rejected, pair.origin),
    )


def tokenize_pair(
    tokenizer: Any,
    pair: PreferencePair,
    max_length: int,
    max_prompt_length: int,
    min_completion_tokens: int = 8,
) -> TokenizedPair:
    """Render the pair; cut long prompts from the left so each completion keeps at least
    `min_completion_tokens` (or all of itself), then cut completions from the right to `max_length`."""
    if min(max_length, max_prompt_length, min_completion_tokens) < 1:
        raise ValueError("max_length, max_prompt_length and min_completion_tokens must be at least 1")
    prompt, chosen, rejected = render_ids(tokenizer, pair)
    cut_prompt = cut_completion = False
    if len(prompt) > max_prompt_length:
        prompt, cut_prompt = prompt[-max_prompt_length:], True
    longest = max(len(chosen), len(rejected))
    if len(prompt) + longest > max_length:
        prompt_room = max_length - min(longest, min_completion_tokens)
        if prompt_room < 1:
            raise RowProblem(
                "too_long",
                f"{pair.origin}: max_length={max_length} cannot hold any prompt plus "
                f"{min(longest, min_completion_tokens)} completion tokens",
            )
        if len(prompt) > prompt_room:
            prompt, cut_prompt = prompt[-prompt_room:], True
        room = max_length - len(prompt)
        chosen, rejected, cut_completion = chosen[:room], rejected[:room], True
    return TokenizedPair(prompt, chosen, rejected, pair.origin, cut_prompt, cut_completion)


def tokenize_pairs(
    tokenizer: Any,
    pairs: list[PreferencePair],
    max_length: int,
    max_prompt_length: int,
    min_completion_tokens: int = 8,
    report: DataReport | None = None,
    policy: str | dict | None = "default",
    desc: str = "tokenizing",
) -> list[TokenizedPair]:
    """Tokenize many pairs (progress bar for large sets); pairs that cannot fit are raised or dropped and counted."""
    pol, out = resolve_policy(policy), []
    report = report if report is not None else DataReport(source="pairs")
    for pair in tqdm(pairs, desc=desc, leave=False, disable=len(pairs) < 2000):
        try:
            out.append(tokenize_pair(tokenizer, pair, max_length, max_prompt_length, min_completion_tokens))
        except RowProblem as problem:
            report.record(problem, pol)
    return out
