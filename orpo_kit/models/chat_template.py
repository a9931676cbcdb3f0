"""Chat templates: use the model's own; give a base model without one ChatML (opening with BOS where its tokenizer
starts text with one) and its special tokens."""

from __future__ import annotations

from typing import Any

import torch

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHATML_BOS = "{{ bos_token }}" + CHATML  # for tokenizers that start every text with BOS (Llama, Mistral)
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")
ADDED_IDS = "orpo_kit_added_token_ids"  # tokenizer attribute: ids ensure_chat_template added


def adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer's own encoding of plain text starts with its BOS token (Llama and Mistral
    tokenizers do; GPT-2-style and SmolLM2 tokenizers add none), so a chat template must write it itself."""
    bos_id = getattr(tokenizer, "bos_token_id", None)
    ids = list(tokenizer("hi")["input_ids"]) if bos_id is not None else []
    return bool(ids) and ids[0] == bos_id


def chatml_for(tokenizer: Any) -> str:
    """ChatML for this tokenizer: opening with `{{ bos_token }}` when its encoding of plain text starts with BOS
    (chat templates are encoded without added special tokens, so the model would otherwise never see it)."""
    return CHATML_BOS if adds_bos(tokenizer) else CHATML


def ensure_chat_template(tokenizer: Any) -> list[int]:
    """Set ChatML on a tokenizer without a chat template; returns the ChatML token ids, whose rows must train.

    They must train even when the vocabulary already held them: a model without a chat template never learned
    them as turn markers (some vocabularies reserve such tokens untrained)."""
    if tokenizer.chat_template:
        return []
    template = chatml_for(tokenizer)  # probed before ChatML's tokens are added
    tokenizer.add_special_tokens({"additional_special_tokens": list(CHATML_TOKENS)})
    tokenizer.chat_template = template
    tokenizer.eos_token = "<|im_end|>"  # generation ends at the end of the assistant turn
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return sorted(tokenizer.convert_tokens_to_ids(list(CHATML_TOKENS)))


def fit_embeddings(model: Any, tokenizer: Any, added_ids: list[int] | None = None) -> list[int]:
    """Grow the embeddings (to a multiple of 64) when the tokenizer outgrows them, new rows at the mean
    embedding; point eos at the tokenizer's. Returns the token ids whose rows must train: tokens added for
    the chat template (even when they fit spare rows) and any rows beyond the old size.

    The new rows are exactly the mean (transformers' `mean_resizing` adds random noise): a base model rebuilt
    to load an adapter then has the same rows, so an adapter checkpoint holds only the rows that train, not
    the whole embedding and lm_head (about 1 GB for a 7B)."""
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64, mean_resizing=False)
        layers = {id(m.weight): m.weight for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m}
        with torch.no_grad():
            for weight in layers.values():  # tied weights once
                weight[rows:] = weight[:rows].mean(dim=0, dtype=torch.float32).to(weight.dtype)
    new_ids = sorted(set(added_ids or []) | set(range(rows, len(tokenizer))))
    if new_ids:
        model.config.eos_token_id = tokenizer.eos_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.eos_token_id = tokenizer.eos_token_id
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    return new_ids


def trainable_token_targets(model: Any, token_ids: list[int]) -> dict[str, list[int]] | None:
    """peft `trainable_token_indices` for new tokens: their input rows, and their output rows when untied."""
    if not token_ids:
        return None
    targets = {"embed_tokens": list(token_ids)}
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    if out is not None and out.weight.data_ptr() != inp.weight.data_ptr():
        targets["lm_head"] = list(token_ids)
    return targets
