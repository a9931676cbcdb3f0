"""The ORPO objective as pure functions on tensors: the single source of the loss math.

Paper (Hong, Lee & Thorne 2024, arXiv 2403.07691):
    logp(y|x)     = mean log-probability of the completion tokens
    log odds(y|x) = logp - log(1 - exp(logp))
    L_OR          = -log sigmoid(log odds(y_w|x) - log odds(y_l|x))
    L             = L_SFT + lambda * L_OR

Callers go through two steps: something that turns a model's output into `PairLogps` (today from full
logits, `pair_logps_from_logits`; a hidden-state / prefix-shared variant returns the same dataclass), then
`orpo_loss(pair_logps, orpo_lambda)`. Nothing here knows about models, trainers or data files.
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
    "loss", "nll_loss", "log_odds_ratio", "log_odds_chosen",
    "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
    "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected",
)
_LN_HALF = -math.log(2.0)
_ROWS_PER_CHUNK = 4096  # selected token positions per log-softmax chunk: bounds the temporary [N, V] copies


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


def selected_token_logps(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each target under its logits row ([N, V], [N]) and each row's mean logit, in chunks."""
    logps, means = [], []
    for start in range(0, logits.shape[0], _ROWS_PER_CHUNK):
        rows = logits[start:start + _ROWS_PER_CHUNK].float()
        idx = targets[start:start + _ROWS_PER_CHUNK].unsqueeze(-1)
        logps.append(rows.gather(-1, idx).squeeze(-1) - torch.logsumexp(rows, dim=-1))
        means.append(rows.detach().mean(-1))
    if not logps:
        empty = logits.new_zeros(0, dtype=torch.float32)
        return empty, empty
    return torch.cat(logps), torch.cat(means)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over `mask` along the last dim; raises instead of dividing by zero tokens."""
    counts = mask.sum(-1)
    if bool((counts == 0).any()):
        raise ValueError("a sequence has no completion tokens: its mean log-prob is undefined (0 / 0)")
    return (values * mask).sum(-1) / counts


def pair_logps_from_logits(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    nll_tokens: NllTokens = "response",
) -> PairLogps:
    """PairLogps from full logits of the concatenated layout: rows [chosen_0..B-1, rejected_0..B-1].

    `completion_mask` marks completion tokens by position (never by pad id). Only the positions the loss
    needs go through the log-softmax: completion tokens, plus the chosen prompts under TRL's NLL.
    """
    if nll_tokens not in NLL_TOKEN_CHOICES:
        raise ValueError(f"nll_tokens must be one of {NLL_TOKEN_CHOICES}, got {nll_tokens!r}")
    n_pairs = input_ids.shape[0] // 2
    targets = input_ids[:, 1:]
    comp = completion_mask[:, 1:].bool()  # position t predicts token t + 1
    nll_mask = torch.zeros_like(comp)
    if nll_tokens == "prompt_and_response":
        nll_mask[:n_pairs] = attention_mask[:n_pairs, 1:].bool()
    need = comp | nll_mask
    tok_logps, tok_means = selected_token_logps(logits[:, :-1][need], targets[need])
    full_logps = logits.new_zeros(need.shape, dtype=tok_logps.dtype).masked_scatter(need, tok_logps)
    full_means = logits.new_zeros(need.shape, dtype=tok_means.dtype).masked_scatter(need, tok_means)
    return _reduce(full_logps, full_means, comp, nll_mask, n_pairs, nll_tokens)


def _reduce(
    tok_logps: torch.Tensor, tok_means: torch.Tensor, comp: torch.Tensor, nll_mask: torch.Tensor,
    n_pairs: int, nll_tokens: NllTokens,
) -> PairLogps:
    """Reduce per-token log-probs [2B, T] to per-sequence means and the chosen NLL term."""
    seq_logps = masked_mean(tok_logps, comp)
    chosen, rejected = seq_logps[:n_pairs], seq_logps[n_pairs:]
    if nll_tokens == "response":
        nll = -chosen.mean()  # the paper: mean over pairs of each chosen response's mean NLL
    else:
        m = nll_mask[:n_pairs]  # TRL: one mean over every prompt + response token of the chosen half
        nll = -(tok_logps[:n_pairs] * m).sum() / m.sum().clamp(min=1)
    comp_c, comp_r = comp[:n_pairs], comp[n_pairs:]
    return PairLogps(
        chosen_logps=chosen,
        rejected_logps=rejected,
        nll_loss=nll,
        chosen_logits_mean=(tok_means[:n_pairs] * comp_c).sum() / comp_c.sum(),
        rejected_logits_mean=(tok_means[n_pairs:] * comp_r).sum() / comp_r.sum(),
    )
