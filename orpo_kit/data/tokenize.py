"""Turn preference pairs into token ids through the tokenizer's chat template, split by position.

Every pair goes through the chat template once (prompt, prompt + chosen, prompt + rejected), and the rendered
texts of many pairs are encoded in one batched call. Special-token strings that users typed (a literal
`<|im_end|>` in an answer, a fake `<|im_start|>assistant` turn in a prompt) stay plain text: only the tokens
the template writes become control tokens.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from tqdm.auto import tqdm

from .formats import PreferencePair, RowProblem
from .validate import DataReport, resolve_policy

# Unicode noncharacters (never in interchange text) that wrap the special-token strings of user text while the
# chat template renders it, so they can be told apart from the control tokens the template writes itself.
MARK_START, MARK_END = "\ufdd0", "\ufdd1"
CHUNK_PAIRS = 512  # pairs rendered and encoded per batched call (memory stays flat; the progress bar moves)


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


@dataclass(frozen=True)
class RenderedPair:
    """Untruncated ids of a pair; `special_text` is the first special-token string its text spells ("" if none)."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    special_text: str = ""


@lru_cache(maxsize=16)
def _pattern(tokens: tuple[str, ...]) -> re.Pattern[str] | None:
    """A regex for these strings, longest first (a token wins over the tokens it contains); None for none."""
    return re.compile("|".join(map(re.escape, sorted(tokens, key=len, reverse=True)))) if tokens else None


def special_token_pattern(tokenizer: Any) -> re.Pattern[str] | None:
    """A regex for the strings the tokenizer reads as special (control) tokens, such as `<|im_end|>`."""
    added = getattr(tokenizer, "added_tokens_decoder", {}).values()
    return _pattern(tuple(sorted({t.content for t in added if t.special})))


def _user_texts(pair: PreferencePair) -> Iterator[str]:
    """Every text of the pair that came from the data: prompt messages, chosen and rejected."""
    yield from (m["content"] for m in pair.prompt_messages)
    yield pair.chosen
    yield pair.rejected


def spelled_special_token(pair: PreferencePair, pattern: re.Pattern[str] | None) -> str:
    """The first special-token string that the pair's text spells out, or "" when it spells none."""
    if pattern is not None:
        for text in _user_texts(pair):
            found = pattern.search(text)
            if found:
                return found[0]
    return ""


def _mark(text: str, pattern: re.Pattern[str]) -> str:
    """The text with each special-token string wrapped in MARK_START and MARK_END."""
    return pattern.sub(lambda m: MARK_START + m[0] + MARK_END, text)


def _chats(pair: PreferencePair, pattern: re.Pattern[str] | None = None) -> list[list[dict[str, str]]]:
    """The pair's prompt, prompt + chosen and prompt + rejected as messages (with a pattern: marked text)."""
    mark = (lambda text: _mark(text, pattern)) if pattern is not None else (lambda text: text)
    prompt = [{**m, "content": mark(m["content"])} for m in pair.prompt_messages]
    answers = (pair.chosen, pair.rejected)
    return [prompt] + [prompt + [{"role": "assistant", "content": mark(answer)}] for answer in answers]


def _render(tokenizer: Any, chats: list[list[dict[str, str]]]) -> list[str]:
    """Chat-template texts of a prompt (with the generation prompt) and of its prompt + answer chats."""
    prompt = tokenizer.apply_chat_template(chats[0], add_generation_prompt=True, tokenize=False)
    return [prompt] + tokenizer.apply_chat_template(chats[1:], tokenize=False)


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Ids of rendered chats in one batched call: what apply_chat_template(tokenize=True) gives for each."""
    if not texts:
        return []
    encoded = tokenizer(texts, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False)
    return [list(ids) for ids in encoded["input_ids"]]


def _plain_ids(tokenizer: Any, text: str) -> list[int]:
    """Ids of text in which special-token strings are ordinary characters."""
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]) if text else []


@lru_cache(maxsize=16)
def _marked_or_bare(pattern: str) -> re.Pattern[str]:
    """A regex for a special-token string either wrapped in markers (typed by a user) or bare (the template's)."""
    return re.compile(f"{MARK_START}(?P<typed>{pattern}){MARK_END}|{pattern}")


def _encode_marked(tokenizer: Any, text: str, pattern: re.Pattern[str]) -> list[int]:
    """Ids of a chat rendered from marked text: the template's special tokens as control tokens, the text between
    them encoded as the tokenizer encodes any text, so the typed special-token strings stay plain characters."""
    ids: list[int] = []
    plain: list[str] = []
    start = 0
    for found in _marked_or_bare(pattern.pattern).finditer(text):
        plain.append(text[start : found.start()])
        start = found.end()
        if found["typed"] is not None:  # typed by a user: its characters, without the markers
            plain.append(found["typed"])
        else:
            ids += _plain_ids(tokenizer, "".join(plain)) + [tokenizer.convert_tokens_to_ids(found[0])]
            plain = []
    return ids + _plain_ids(tokenizer, "".join(plain) + text[start:])


def split_boundaries(tokenizer: Any) -> frozenset[str]:
    """Special tokens where the tokenizer's encoding splits: the ids of a text from such a token on do not depend
    on the text before it. Fast (Rust) tokenizers cut text at added tokens before normalizing or pre-tokenizing
    the pieces; a token qualifies when it cannot be the inner part of an added token and does not look at its
    neighbours (single_word, lstrip, normalized)."""
    if not getattr(tokenizer, "is_fast", False) or getattr(tokenizer, "split_special_tokens", False):
        return frozenset()
    added = list(getattr(tokenizer, "added_tokens_decoder", {}).values())
    inner = {ch for token in added for ch in token.content[1:]}
    return frozenset(
        t.content
        for t in added
        if t.special and t.content and t.content[0] not in inner and not (t.single_word or t.lstrip or t.normalized)
    )


def _cut(prompt: str, fulls: list[str], pattern: re.Pattern[str] | None, boundaries: frozenset[str]) -> int:
    """Where the prompt's last special token starts when the answers' renderings share the prompt up to it and the
    encoding splits there (the part before is then encoded once, with the prompt); 0 when not."""
    matches = list(pattern.finditer(prompt)) if pattern is not None else []
    last = matches[-1] if matches else None
    if last is None or last[0] not in boundaries or not all(f.startswith(prompt[: last.end()]) for f in fulls):
        return 0
    return last.start()


def _after(head: list[int], ids: list[int], where: str) -> list[int]:
    """The ids that follow `head`, which must be their prefix (the prompt rendering inside a full rendering)."""
    if ids[: len(head)] != head:
        raise ValueError(
            f"{where}: the chat template renders the prompt differently once an answer follows, "
            "so prompt and completion cannot be split by position"
        )
    return ids[len(head) :]


def _render_ordinary(
    tokenizer: Any, pairs: list[PreferencePair], pattern: re.Pattern[str] | None
) -> list[tuple[list[int], list[int], list[int]]]:
    """(prompt, chosen, rejected) ids of pairs whose text spells no special token, with one batched encoding:
    each full rendering is encoded from the prompt's last special token on (`split_boundaries`), which gives the
    ids apply_chat_template(tokenize=True) gives without encoding the prompt three times."""
    if not pairs:
        return []
    chats = [_chats(pair) for pair in pairs]
    prompts = tokenizer.apply_chat_template([c[0] for c in chats], add_generation_prompt=True, tokenize=False)
    fulls = tokenizer.apply_chat_template([full for c in chats for full in c[1:]], tokenize=False)
    boundaries, texts, cuts = split_boundaries(tokenizer), [], []
    for i, prompt in enumerate(prompts):
        cut = _cut(prompt, fulls[2 * i : 2 * i + 2], pattern, boundaries)
        texts += [prompt, fulls[2 * i][cut:], fulls[2 * i + 1][cut:], prompt[cut:] if cut else ""]
        cuts.append(cut)
    ids = _encode(tokenizer, texts)
    out = []
    for i, (pair, cut) in enumerate(zip(pairs, cuts, strict=True)):
        prompt, chosen, rejected, head = ids[4 * i : 4 * i + 4]
        head = head if cut else prompt
        if prompt[len(prompt) - len(head) :] != head:  # the encoding did not split there after all: whole texts
            (chosen, rejected), head = _encode(tokenizer, fulls[2 * i : 2 * i + 2]), prompt
        out.append((prompt, _after(head, chosen, pair.origin), _after(head, rejected, pair.origin)))
    return out


def render_pairs(tokenizer: Any, pairs: list[PreferencePair]) -> list[RenderedPair]:
    """Untruncated ids of each pair through the chat template: exactly apply_chat_template's ids for pairs whose
    text spells no special token, and for the others the same with the typed special-token strings as plain text."""
    pattern = special_token_pattern(tokenizer)
    spelled = [spelled_special_token(pair, pattern) for pair in pairs]
    ordinary = iter(
        _render_ordinary(tokenizer, [p for p, typed in zip(pairs, spelled, strict=True) if not typed], pattern)
    )
    out = []
    for pair, typed in zip(pairs, spelled, strict=True):
        if typed and pattern is not None:
            prompt, *fulls = [_encode_marked(tokenizer, t, pattern) for t in _render(tokenizer, _chats(pair, pattern))]
            ids = (prompt, _after(prompt, fulls[0], pair.origin), _after(prompt, fulls[1], pair.origin))
        else:
            ids = next(ordinary)
        out.append(RenderedPair(*ids, special_text=typed))
    return out


def render_ids(tokenizer: Any, pair: PreferencePair) -> tuple[list[int], list[int], list[int]]:
    """Untruncated (prompt, chosen, rejected) ids through the chat template."""
    rendered = render_pairs(tokenizer, [pair])[0]
    return rendered.prompt_ids, rendered.chosen_ids, rendered.rejected_ids


def check_limits(max_length: int, max_prompt_length: int, min_completion_tokens: int) -> None:
    """Refuse length limits below 1 (an empty prompt or completion cannot train)."""
    if min(max_length, max_prompt_length, min_completion_tokens) < 1:
        raise ValueError("max_length, max_prompt_length and min_completion_tokens must be at least 1")


def truncate(
    rendered: RenderedPair,
    origin: str,
    max_length: int,
    max_prompt_length: int,
    min_completion_tokens: int = 8,
) -> TokenizedPair:
    """Cut long prompts from the left so each completion keeps at least `min_completion_tokens` (or all of
    itself), then cut completions from the right to `max_length`; a pair whose chosen and rejected ids are then
    the same is refused (it would train with margin 0 and log-odds ratio -ln 2)."""
    prompt, chosen, rejected = rendered.prompt_ids, rendered.chosen_ids, rendered.rejected_ids
    cut_prompt = cut_completion = False
    if len(prompt) > max_prompt_length:
        prompt, cut_prompt = prompt[-max_prompt_length:], True
    longest = max(len(chosen), len(rejected))
    if len(prompt) + longest > max_length:
        prompt_room = max_length - min(longest, min_completion_tokens)
        if prompt_room < 1:
            raise RowProblem(
                "too_long",
                f"{origin}: max_length={max_length} cannot hold any prompt plus "
                f"{min(longest, min_completion_tokens)} completion tokens",
            )
        if len(prompt) > prompt_room:
            prompt, cut_prompt = prompt[-prompt_room:], True
        room = max_length - len(prompt)
        chosen, rejected, cut_completion = chosen[:room], rejected[:room], True
    if chosen == rejected:
        how = (
            f"once cut to max_length={max_length} after a {len(prompt)}-token prompt (raise max_length or lower "
            "max_prompt_length to keep where they differ)"
            if cut_completion
            else "as the tokenizer reads them"
        )
        raise RowProblem(
            "same_after_truncation",
            f"{origin}: chosen and rejected are the same {len(chosen)} tokens {how}, so the pair cannot teach a "
            "preference (margin 0)",
        )
    return TokenizedPair(prompt, chosen, rejected, origin, cut_prompt, cut_completion)


def tokenize_pair(
    tokenizer: Any,
    pair: PreferencePair,
    max_length: int,
    max_prompt_length: int,
    min_completion_tokens: int = 8,
) -> TokenizedPair:
    """Render the pair and cut it to the length limits (`truncate`)."""
    check_limits(max_length, max_prompt_length, min_completion_tokens)
    rendered = render_pairs(tokenizer, [pair])[0]
    return truncate(rendered, pair.origin, max_length, max_prompt_length, min_completion_tokens)


def iter_rendered(
    tokenizer: Any, pairs: list[PreferencePair], report: DataReport, desc: str = "tokenizing"
) -> Iterator[tuple[PreferencePair, RenderedPair]]:
    """Each pair with its rendering, encoded in batches (progress bar for large sets); pairs whose text spells
    a special token are counted in the report."""
    with tqdm(total=len(pairs), desc=desc, leave=False, disable=len(pairs) < 2000) as bar:
        for start in range(0, len(pairs), CHUNK_PAIRS):
            chunk = pairs[start : start + CHUNK_PAIRS]
            for pair, rendered in zip(chunk, render_pairs(tokenizer, chunk), strict=True):
                if rendered.special_text:
                    report.count_special_text(f"{pair.origin} spells {rendered.special_text!r}")
                yield pair, rendered
            bar.update(len(chunk))


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
    """Tokenize many pairs; pairs that cannot fit, or whose answers become the same tokens once cut, are raised
    or dropped and counted."""
    check_limits(max_length, max_prompt_length, min_completion_tokens)
    pol, out = resolve_policy(policy), []
    report = report if report is not None else DataReport(source="pairs")
    for pair, rendered in iter_rendered(tokenizer, pairs, report, desc):
        try:
            out.append(truncate(rendered, pair.origin, max_length, max_prompt_length, min_completion_tokens))
        except RowProblem as problem:
            report.record(problem, pol)
    return out
