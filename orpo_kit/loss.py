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
from typing import Any, Literal

import torch
import torch.nn.functional as F
import torch.utils.checkpoint

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


@dataclass
class LogpTargets:
    """Flat positions whose output predicts `token_ids`, each tagged with its sequence (-1: prompt, NLL only)."""

    positions: torch.Tensor  # [N] index into the forward's flattened [rows * T] positions
    token_ids: torch.Tensor  # [N] the token each position predicts
    sequence: torch.Tensor  # [N] 0..B-1 chosen completion, B..2B-1 rejected completion, -1 chosen prompt token
    num_pairs: int


def plain_targets(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor, with_prompt: bool = False,
) -> LogpTargets:
    """Targets of the plain layout (rows [chosen_0..B-1, rejected_0..B-1]): position t predicts token t + 1.

    `with_prompt` adds the chosen rows' prompt tokens, which TRL's NLL also counts.
    """
    rows, width = input_ids.shape
    n_pairs = rows // 2
    comp = completion_mask[:, 1:].bool()
    nll_prompt = torch.zeros_like(comp)
    if with_prompt:
        real = attention_mask.bool()
        nll_prompt[:n_pairs] = real[:n_pairs, 1:] & real[:n_pairs, :-1] & ~comp[:n_pairs]
    row, col = (comp | nll_prompt).nonzero(as_tuple=True)  # row-major: each sequence's tokens in order
    sequence = torch.where(comp[row, col], row, torch.full_like(row, -1))
    return LogpTargets(row * width + col, input_ids[row, col + 1], sequence, n_pairs)


def head_token_logps(
    head: torch.nn.Module, hidden: torch.Tensor, token_ids: torch.Tensor, chunk_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of `token_ids` (and each row's mean logit) from hidden states [N, H] through the output layer.

    Never holds more than one chunk's [n, V] logits. A frozen plain `nn.Linear` head (LoRA / QLoRA) takes
    `FrozenHeadLogps`: the gradient d logp / d hidden is formed chunk by chunk in the forward, so nothing is
    recomputed. Any other head (trainable, wrapped) is checkpointed per chunk: recomputed in backward.
    """
    if hidden.shape[0] == 0:
        empty = hidden.new_zeros(0, dtype=torch.float32)
        return empty, empty
    if _is_frozen_linear(head):
        return FrozenHeadLogps.apply(hidden, head.weight, head.bias, token_ids, chunk_size)
    logps, means = [], []
    for start in range(0, hidden.shape[0], chunk_size):
        h, ids = hidden[start:start + chunk_size], token_ids[start:start + chunk_size]
        if torch.is_grad_enabled() and h.requires_grad:
            lp, mean = torch.utils.checkpoint.checkpoint(_head_chunk, head, h, ids, use_reentrant=False)
        else:
            lp, mean = _head_chunk(head, h, ids)
        logps.append(lp)
        means.append(mean)
    return torch.cat(logps), torch.cat(means)


def _is_frozen_linear(head: torch.nn.Module) -> bool:
    """A plain linear layer (not a LoRA / quantized subclass) with no trainable parameter."""
    return type(head) is torch.nn.Linear and not any(p.requires_grad for p in head.parameters())


def _head_chunk(head: torch.nn.Module, h: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk: logits, then the same log-softmax as `selected_token_logps`."""
    return selected_token_logps(head(h), ids)


class FrozenHeadLogps(torch.autograd.Function):
    """Token log-probs through a frozen linear head, the gradient to the hidden states formed in the forward.

    logp_i = (W h_i + b)[y_i] - logsumexp(W h_i + b), so d logp_i / d h_i = W[y_i] - softmax_i @ W: an [H] vector
    per token, kept instead of the [V] logits. Backward only scales it by d loss / d logp_i (Liger-Kernel's fused
    linear cross-entropy idea, generalised to any loss of the per-token log-probs, such as ORPO's odds ratio).
    """

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                token_ids: torch.Tensor, chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-chunk logits -> log-probs, mean logits and (when needed) d logp / d hidden."""
        want_grad = ctx.needs_input_grad[0]
        logps, means, grads = [], [], []
        for start in range(0, hidden.shape[0], chunk_size):
            ids = token_ids[start:start + chunk_size, None]
            logits = F.linear(hidden[start:start + chunk_size], weight, bias).float()
            lse = torch.logsumexp(logits, dim=-1, keepdim=True)
            logps.append((logits.gather(-1, ids) - lse).squeeze(-1))
            means.append(logits.mean(-1))
            if want_grad:
                probs = logits.sub_(lse).exp_()  # softmax, in place: the logits are not needed any more
                probs.scatter_add_(-1, ids, torch.full_like(ids, -1, dtype=probs.dtype))  # softmax - onehot
                grads.append(-(probs.to(weight.dtype) @ weight).float())  # W[y] - softmax @ W
        ctx.hidden_dtype = hidden.dtype
        ctx.save_for_backward(torch.cat(grads) if want_grad else None)
        out_means = torch.cat(means)
        ctx.mark_non_differentiable(out_means)
        return torch.cat(logps), out_means

    @staticmethod
    def backward(ctx: Any, grad_logps: torch.Tensor, grad_means: torch.Tensor) -> tuple[Any, ...]:
        """d loss / d hidden_i = d loss / d logp_i * (d logp_i / d hidden_i)."""
        (dlogp_dhidden,) = ctx.saved_tensors
        grad_hidden = None if dlogp_dhidden is None else (grad_logps[:, None] * dlogp_dhidden).to(ctx.hidden_dtype)
        return grad_hidden, None, None, None, None


def pair_logps_from_token_logps(
    tok_logps: torch.Tensor, tok_means: torch.Tensor, targets: LogpTargets, nll_tokens: NllTokens = "response",
) -> PairLogps:
    """Reduce per-token log-probs to per-sequence means and the chosen NLL term (any layout)."""
    n_pairs, seq = targets.num_pairs, targets.sequence
    comp = seq >= 0
    seq_c = seq[comp]
    sums = tok_logps.new_zeros(2 * n_pairs).index_add(0, seq_c, tok_logps[comp])
    counts = torch.bincount(seq_c, minlength=2 * n_pairs)
    if bool((counts == 0).any()):
        raise ValueError("a sequence has no completion tokens: its mean log-prob is undefined (0 / 0)")
    seq_logps = sums / counts
    chosen, rejected = seq_logps[:n_pairs], seq_logps[n_pairs:]
    if nll_tokens == "response":
        nll = -chosen.mean()  # the paper: mean over pairs of each chosen response's mean NLL
    else:  # TRL: one mean over every prompt + response token of the chosen half
        in_nll = seq < n_pairs  # chosen completions and (tagged -1) chosen prompts
        nll = -tok_logps[in_nll].sum() / in_nll.sum().clamp(min=1)
    means = tok_means.detach()
    is_c, is_r = comp & (seq < n_pairs), seq >= n_pairs
    return PairLogps(
        chosen_logps=chosen,
        rejected_logps=rejected,
        nll_loss=nll,
        chosen_logits_mean=means[is_c].sum() / is_c.sum(),
        rejected_logits_mean=means[is_r].sum() / is_r.sum(),
    )


def check_nll_tokens(nll_tokens: str) -> None:
    """Refuse an unknown NLL token choice."""
    if nll_tokens not in NLL_TOKEN_CHOICES:
        raise ValueError(f"nll_tokens must be one of {NLL_TOKEN_CHOICES}, got {nll_tokens!r}")


def pair_logps_from_logits(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    nll_tokens: NllTokens = "response",
) -> PairLogps:
    """PairLogps from full logits of the plain layout: rows [chosen_0..B-1, rejected_0..B-1].

    `completion_mask` marks completion tokens by position (never by pad id). Only the positions the loss
    needs go through the log-softmax: completion tokens, plus the chosen prompts under TRL's NLL.
    """
    check_nll_tokens(nll_tokens)
    targets = plain_targets(input_ids, attention_mask, completion_mask, nll_tokens == "prompt_and_response")
    flat = logits.reshape(-1, logits.shape[-1])
    tok_logps, tok_means = selected_token_logps(flat[targets.positions], targets.token_ids)
    return pair_logps_from_token_logps(tok_logps, tok_means, targets, nll_tokens)
