"""The ORPO objective as pure functions on tensors: the single source of the loss math.

Paper (Hong, Lee & Thorne 2024, arXiv 2403.07691):
    logp(y|x)     = mean log-probability of the completion tokens
    log odds(y|x) = logp - log(1 - exp(logp))
    L_OR          = -log sigmoid(log odds(y_w|x) - log odds(y_l|x))
    L             = L_SFT + lambda * L_OR

Callers go through two steps: `orpo_kit.logprobs` turns a model's output into `PairLogps` (per-sequence mean
log-probs and the NLL term, from logits or hidden states, in any layout), then `orpo_loss(pair_logps,
orpo_lambda)`. Nothing here knows about models, layouts, trainers or data files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

NllTokens = Literal["response", "prompt_and_response"]
NLL_TOKEN_CHOICES: tuple[str, ...] = ("response", "prompt_and_response")
METRIC_NAMES: tuple[str, ...] = (
    "loss",
    "nll_loss",
    "log_odds_ratio",
    "log_odds_chosen",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
    "logits/chosen",
    "logits/rejected",
)
_LN_HALF = -math.log(2.0)


@dataclass
class PairLogps:
    """What the loss needs from a forward pass over B preference pairs."""

    chosen_logps: torch.Tensor  # [B] mean log-prob of the chosen completion tokens
    rejected_logps: torch.Tensor  # [B] mean log-prob of the rejected completion tokens
    nll_loss: torch.Tensor  # scalar: the SFT term over the tokens the config selected
    chosen_logits_mean: torch.Tensor  # scalar, metric only: mean logit at chosen completion positions
    rejected_logits_mean: torch.Tensor  # scalar, metric only


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, stable at both ends (Maechler 2012); gradients stay finite."""
    x = x.clamp(max=-torch.finfo(x.dtype).tiny)  # x == 0 means p == 1: infinite odds; stay just below
    near_zero = x > _LN_HALF
    # Each branch only ever sees inputs from its own side, so the unused branch cannot produce inf * 0 = NaN.
    a = torch.log(-torch.expm1(torch.where(near_zero, x, torch.full_like(x, _LN_HALF))))
    b = torch.log1p(-torch.exp(torch.where(near_zero, torch.full_like(x, _LN_HALF), x)))
    return torch.where(near_zero, a, b)


def log_odds(logps: torch.Tensor) -> torch.Tensor:
    """log(p / (1 - p)) from log p."""
    return logps - log1mexp(logps)


def odds_ratio_terms(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair L_OR = -log sigmoid(d) and the log-odds difference d, computed in at least float32."""
    dtype = torch.promote_types(chosen_logps.dtype, torch.float32)
    d = log_odds(chosen_logps.to(dtype)) - log_odds(rejected_logps.to(dtype))
    return -F.logsigmoid(d), d


def orpo_loss(pair: PairLogps, orpo_lambda: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ORPO loss (NLL + lambda * mean L_OR) and the metrics under the names TRL users know."""
    or_losses, d = odds_ratio_terms(pair.chosen_logps, pair.rejected_logps)
    loss = pair.nll_loss + orpo_lambda * or_losses.mean()
    chosen, rejected = pair.chosen_logps.detach(), pair.rejected_logps.detach()
    metrics = {
        "loss": loss.detach(),
        "nll_loss": pair.nll_loss.detach(),
        "log_odds_ratio": (-or_losses).detach().mean(),  # TRL: mean log sigmoid(d)
        "log_odds_chosen": d.detach().mean(),
        "rewards/chosen": orpo_lambda * chosen.mean(),
        "rewards/rejected": orpo_lambda * rejected.mean(),
        # On log-probs, not lambda * log-probs, so it stays meaningful at lambda = 0.
        "rewards/accuracies": (chosen > rejected).float().mean(),
        "rewards/margins": orpo_lambda * (chosen - rejected).mean(),
        "logps/chosen": chosen.mean(),
        "logps/rejected": rejected.mean(),
        "logits/chosen": pair.chosen_logits_mean.detach(),
        "logits/rejected": pair.rejected_logits_mean.detach(),
    }
    return loss, {k: v.float() for k, v in metrics.items()}


def check_nll_tokens(nll_tokens: str) -> None:
    """Refuse an unknown NLL token choice."""
    if nll_tokens not in NLL_TOKEN_CHOICES:
        raise ValueError(f"nll_tokens must be one of {NLL_TOKEN_CHOICES}, got {nll_tokens!r}")
