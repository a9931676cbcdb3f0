"""The plain layout's full-logits path composed from the package's pieces, for tests that start from logits."""

from __future__ import annotations

import torch

from orpo_kit.layouts import plain_targets
from orpo_kit.logprobs import pair_logps_from_token_logps, token_logps_from_logits
from orpo_kit.loss import NllTokens, PairLogps, check_nll_tokens


def pair_logps_from_logits(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    nll_tokens: NllTokens = "response",
) -> PairLogps:
    """PairLogps from full logits of plain rows [chosen_0..B-1, rejected_0..B-1] (what the trainer's forward does
    on the plain layout without chunking)."""
    check_nll_tokens(nll_tokens)
    targets = plain_targets(input_ids, attention_mask, completion_mask, nll_tokens == "prompt_and_response")
    return pair_logps_from_token_logps(*token_logps_from_logits(logits, targets), targets, nll_tokens)
