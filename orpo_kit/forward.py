"""Run a causal LM over a PairBatch and hand the loss what it needs (PairLogps).

Two ways to get log-probs, both exact:
- from the model's full logits (any model);
- from the last hidden states at the needed positions only, through the output layer in chunks
  (`chunked=True`): the [rows, T, V] logits are never built. The forward still goes through the top-level
  model (so DDP / FSDP wrappers see it) with `logits_to_keep=1`; a hook on the decoder keeps its output.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from .layouts import PairBatch
from .logprobs import (
    LogpTargets,
    head_token_logps,
    pair_logps_from_token_logps,
    plain_layer,
    token_logps_from_logits,
)
from .loss import PairLogps, check_nll_tokens

# Config fields that mean the logits are not simply lm_head(hidden): such models take the full-logits path.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def compute_pair_logps(
    model: torch.nn.Module,
    batch: PairBatch,
    nll_tokens: str = "response",
    chunked: bool = False,
    chunk_size: int = 256,
) -> PairLogps:
    """One forward over a batch (any layout); log-probs only at the positions the loss reads."""
    check_nll_tokens(nll_tokens)
    targets, tok_logps, tok_means = token_logps(model, batch, nll_tokens == "prompt_and_response", chunked, chunk_size)
    return pair_logps_from_token_logps(tok_logps, tok_means, targets, nll_tokens)


def token_logps(
    model: torch.nn.Module,
    batch: PairBatch,
    with_prompt: bool = False,
    chunked: bool = False,
    chunk_size: int = 256,
) -> tuple[LogpTargets, torch.Tensor, torch.Tensor]:
    """Per-token log-probs (and mean logits) at the batch's targets: each sequence's tokens in order."""
    targets = batch.targets(with_prompt=with_prompt)
    inputs = batch.model_inputs(_float_dtype(model))
    if chunked and supports_chunked_logps(model):
        hidden = _last_hidden_states(model, inputs)
        flat = hidden.reshape(-1, hidden.shape[-1])[targets.positions]
        head = _causal_lm(model).get_output_embeddings()
        return targets, *head_token_logps(head, flat, targets.token_ids, chunk_size)
    logits = model(**inputs, use_cache=False).logits
    return targets, *token_logps_from_logits(logits, targets)


def supports_chunked_logps(model: torch.nn.Module) -> bool:
    """Whether logits are plain output_layer(last hidden state), so the hidden-state path is exact."""
    lm = _causal_lm(model)
    config = getattr(lm, "config", None)
    if config is None or not hasattr(lm, "get_decoder") or lm.get_output_embeddings() is None:
        return False
    return all(getattr(config, name, None) in (None, 1, 1.0) for name in _LOGIT_TRANSFORMS)


def _last_hidden_states(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The decoder's output [rows, T, H], from a forward through the whole model that computes one logit row."""
    captured: list[torch.Tensor] = []

    def keep(module: torch.nn.Module, args: Any, output: Any) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output.last_hidden_state)

    lm = _causal_lm(model)
    handle = lm.get_decoder().register_forward_hook(keep)
    try:
        with _unmerged_head(lm.get_output_embeddings()):
            model(**inputs, use_cache=False, logits_to_keep=1)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(f"expected one decoder call in the forward, saw {len(captured)}")
    return captured[0]


@contextlib.contextmanager
def _unmerged_head(head: torch.nn.Module | None) -> Iterator[None]:
    """A peft trainable-tokens lm_head computes its discarded one-row logits with the stored layer: its own
    forward would build a full merged [V, H] copy of the weight (0.5 GB for a 7B) on every micro-batch."""
    base = plain_layer(head) if head is not None else None
    if head is None or base is None or base is head:
        yield
        return
    head.forward = base.forward  # the instance attribute shadows the class's method
    try:
        yield
    finally:
        del head.forward


def _causal_lm(model: torch.nn.Module) -> Any:
    """The transformers model inside DDP / peft wrappers (the object that owns get_decoder)."""
    inner: Any = model
    while hasattr(inner, "module") and isinstance(inner.module, torch.nn.Module):  # DDP, accelerate wrappers
        inner = inner.module
    return inner.get_base_model() if hasattr(inner, "get_base_model") else inner


def _float_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype activations run in (for the additive attention mask): the input embeddings' dtype, read from
    the stored layer (a peft trainable-tokens wrapper's `.weight` would build a merged copy every micro-batch)."""
    emb = plain_layer(_causal_lm(model).get_input_embeddings())
    weight = getattr(emb, "weight", None)
    return weight.dtype if weight is not None and weight.is_floating_point() else torch.float32
