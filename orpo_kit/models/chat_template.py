"""Chat templates: use the model's own; give a base model without one ChatML and its special tokens."""

from __future__ import annotations

from typing import Any

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")
ADDED_IDS = "orpo_kit_added_token_ids"  # tokenizer attribute: ids ensure_chat_template added


def ensure_chat_template(tokenizer: Any) -> list[int]:
    """Set ChatML on a tokenizer without a chat template; returns the ChatML token ids, whose rows must train.

    They must train even when the vocabulary already held them: a model without a chat template never learned
    them as turn markers (some vocabularies reserve such tokens untrained)."""
    if tokenizer.chat_template:
        return []
    tokenizer.add_special_tokens({"additional_special_tokens": list(CHATML_TOKENS)})
    tokenizer.chat_template = CHATML
    tokenizer.eos_token = "<|im_end|>"  # generation ends at the end of the assistant turn
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return sorted(tokenizer.convert_tokens_to_ids(list(CHATML_TOKENS)))


def fit_embeddings(model: Any, tokenizer: Any, added_ids: list[int] | None = None) -> list[int]:
    """Grow the embeddings (to a multiple of 64) when the tokenizer outgrows them, new rows at the mean
    embedding; point eos at the tokenizer's. Returns the token ids whose rows must train: tokens added for
    the chat template (even when they fit spare rows) and any rows beyond the old size."""
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64, mean_resizing=True)
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
