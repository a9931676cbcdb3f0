"""Turn preference pairs into token ids through the tokenizer's chat template, split by position."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from .sources import PreferencePair

MIN_COMPLETION_TOKENS = 1


@dataclass(frozen=True)
class TokenizedPair:
    """Token ids of a pair: the prompt (chat template up to the assistant turn) and each completion."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    origin: str = ""
    truncated: bool = False


def _ids(encoded: Any) -> list[int]:
    """Token ids from apply_chat_template output (a list, or a BatchEncoding in transformers 5)."""
    if isinstance(encoded, dict) or hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    return list(encoded)


def _completion_ids(tokenizer: Any, messages: list[dict], prompt_ids: list[int], answer: str, where: str) -> list[int]:
    """Ids of the assistant turn: the full rendering minus the prompt rendering, checked to be a prefix."""
    full = _ids(tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=True))
    if full[:len(prompt_ids)] != prompt_ids:
        raise ValueError(f"{where}: the chat template renders the prompt differently once an answer follows, "
                         "so prompt and completion cannot be split by position")
    return full[len(prompt_ids):]


def tokenize_pair(
    tokenizer: Any, pair: PreferencePair, max_length: int, max_prompt_length: int,
) -> TokenizedPair:
    """Render the pair with the chat template; long prompts keep their end, long completions their start."""
    messages = [{"role": "user", "content": pair.prompt}]
    prompt_ids = _ids(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
    chosen = _completion_ids(tokenizer, messages, prompt_ids, pair.chosen, pair.origin)
    rejected = _completion_ids(tokenizer, messages, prompt_ids, pair.rejected, pair.origin)
    truncated = False
    if len(prompt_ids) > max_prompt_length:
        prompt_ids, truncated = prompt_ids[-max_prompt_length:], True
    room = max_length - len(prompt_ids)
    if room < MIN_COMPLETION_TOKENS:
        raise ValueError(f"{pair.origin}: max_length={max_length} leaves no room for the completion after a "
                         f"{len(prompt_ids)}-token prompt; raise max_length or lower max_prompt_length")
    if len(chosen) > room or len(rejected) > room:
        chosen, rejected, truncated = chosen[:room], rejected[:room], True
    return TokenizedPair(prompt_ids, chosen, rejected, origin=pair.origin, truncated=truncated)


def tokenize_pairs(
    tokenizer: Any, pairs: list[PreferencePair], max_length: int, max_prompt_length: int, desc: str = "tokenizing",
) -> list[TokenizedPair]:
    """Tokenize many pairs with a progress bar."""
    return [tokenize_pair(tokenizer, p, max_length, max_prompt_length)
            for p in tqdm(pairs, desc=desc, leave=False, disable=len(pairs) < 500)]
