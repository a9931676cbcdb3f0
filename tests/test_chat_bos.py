"""BOS in the ChatML template given to base models: written where the tokenizer starts plain text with BOS
(Llama / Mistral), never where it does not (GPT-2 style, SmolLM2, the tiny tokenizer), and never twice."""

from __future__ import annotations

import string

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, LlamaTokenizer, PreTrainedTokenizerFast

from orpo_kit.data import PreferencePair, render_pairs, tokenize_pairs
from orpo_kit.models.chat_template import CHATML, ensure_chat_template
from orpo_kit.models.load import tiny_tokenizer_dir

PAIRS = [
    PreferencePair([{"role": "user", "content": "What is two plus two?"}], "Four.", "Five.", origin="pair 0"),
    PreferencePair(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour"}],
        "Blue",
        "I like cats",
        origin="pair 1",
    ),
    # typed special-token strings (rendered through the marked path): they stay plain text, BOS stays single
    PreferencePair([{"role": "user", "content": "say <s> please"}], "<s> ok </s>", "no <|im_end|>", origin="pair 2"),
]


def _mistral_like() -> LlamaTokenizer:
    """A Llama-style tokenizer (Metaspace, byte fallback, `<s>` = 1) that starts plain text with BOS, as
    Mistral's does; it has no chat template, like a base model's."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    for piece in "▁" + string.ascii_letters + string.digits + ".,!?'":
        vocab.setdefault(piece, len(vocab))
    return LlamaTokenizer(vocab=vocab, merges=[], add_bos_token=True)


def _gpt2_style() -> PreTrainedTokenizerFast:
    """A tokenizer with a BOS token that its encoding never adds (GPT-2 style), and no chat template."""
    words = ["<unk>", "<|endoftext|>", *string.ascii_letters, *"<>/|_.,!?'"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


def _tiny_without_template() -> PreTrainedTokenizerFast:
    """The shipped tiny tokenizer with its chat template removed (as the stand-in for a base model's)."""
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir()))
    tokenizer.chat_template = None
    return tokenizer


def _encodes_bos(tokenizer) -> bool:
    """Whether the tokenizer's own encoding of plain text starts with its BOS token."""
    return tokenizer.bos_token_id is not None and tokenizer("hi").input_ids[0] == tokenizer.bos_token_id


def _first_ids(tokenizer, pairs=PAIRS) -> list[list[int]]:
    """For each pair: the prompt ids and the full chosen and rejected rows (prompt + completion)."""
    out = []
    for r in render_pairs(tokenizer, pairs):
        out += [r.prompt_ids, r.prompt_ids + r.chosen_ids, r.prompt_ids + r.rejected_ids]
    return out


def test_mistral_like_rows_start_with_exactly_one_bos() -> None:
    tokenizer = _mistral_like()
    bos = tokenizer.bos_token_id
    assert _encodes_bos(tokenizer)  # the fixture is what it claims
    ensure_chat_template(tokenizer)
    rows = _first_ids(tokenizer)
    assert len(rows) == 3 * len(PAIRS)
    for ids in rows:
        assert ids[0] == bos and ids.count(bos) == 1, ids[:8]
    # the rendering is still exactly apply_chat_template's, and the prompt a token prefix of each full row
    chat = PAIRS[0].prompt_messages + [{"role": "assistant", "content": PAIRS[0].chosen}]
    assert rows[1] == list(tokenizer.apply_chat_template(chat, return_dict=True)["input_ids"])
    assert all(rows[i + k][: len(rows[i])] == rows[i] for i in range(0, len(rows), 3) for k in (1, 2))


def test_training_rows_and_generation_prompts_of_a_mistral_like_tokenizer_have_one_bos() -> None:
    tokenizer = _mistral_like()
    bos = tokenizer.bos_token_id
    ensure_chat_template(tokenizer)
    for pair in tokenize_pairs(tokenizer, PAIRS, max_length=256, max_prompt_length=128):
        assert pair.prompt_ids[0] == bos and (pair.prompt_ids + pair.chosen_ids).count(bos) == 1
        assert (pair.prompt_ids + pair.rejected_ids).count(bos) == 1
    # what `generate` and the chat view feed the model: apply_chat_template with the generation prompt
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"][0].tolist()
    assert ids[0] == bos and ids.count(bos) == 1


@pytest.mark.parametrize("build", [_gpt2_style, _tiny_without_template], ids=["gpt2_style", "tiny"])
def test_tokenizers_that_add_no_bos_get_plain_chatml(build) -> None:
    tokenizer = build()
    assert not _encodes_bos(tokenizer)
    ensure_chat_template(tokenizer)
    assert tokenizer.chat_template == CHATML
    start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    bos = tokenizer.bos_token_id
    for ids in _first_ids(tokenizer):
        assert ids[0] == start and (bos is None or bos not in ids), ids[:8]


def test_the_shipped_tiny_tokenizer_adds_no_bos_and_keeps_its_template() -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir()))
    template = tokenizer.chat_template
    assert tokenizer.bos_token_id is None and not _encodes_bos(tokenizer)
    assert ensure_chat_template(tokenizer) == [] and tokenizer.chat_template == template


def test_a_template_that_already_writes_bos_is_left_alone() -> None:
    tokenizer = _mistral_like()
    own = "{{ bos_token }}{% for m in messages %}{{ m['content'] + eos_token }}{% endfor %}"
    tokenizer.chat_template = own
    assert ensure_chat_template(tokenizer) == [] and tokenizer.chat_template == own
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], return_dict=True)["input_ids"]
    assert list(ids).count(tokenizer.bos_token_id) == 1
