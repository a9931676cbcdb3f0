"""Run a causal LM over a PairBatch and hand the loss what it needs (PairLogps)."""

from __future__ import annotations

import torch

from .batching import PairBatch
from .loss import NllTokens, PairLogps, pair_logps_from_logits


def compute_pair_logps(model: torch.nn.Module, batch: PairBatch, nll_tokens: NllTokens = "response") -> PairLogps:
    """One forward over chosen and rejected rows together; log-probs from the logits of needed positions."""
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    return pair_logps_from_logits(out.logits, batch.input_ids, batch.attention_mask, batch.completion_mask,
                                  nll_tokens=nll_tokens)
