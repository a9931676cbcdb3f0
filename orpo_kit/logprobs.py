"""Per-token and per-sequence log-probs from a model's output: what the ORPO loss reads.

From full logits (`token_logps_from_logits`) or from hidden states through the output layer in chunks
(`head_token_logps`, which never builds the [N, V] logits), at the positions a layout's `LogpTargets` name;
then `pair_logps_from_token_logps` reduces them to each sequence's mean log-prob and the NLL term.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint

from .loss import PairLogps

_ROWS_PER_CHUNK = 4096  # selected token positions per log-softmax chunk: bounds the temporary [N, V] copies


def selected_token_logps(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each target under its logits row ([N, V], [N]) and each row's mean logit, in chunks."""
    logps, means = [], []
    for start in range(0, logits.shape[0], _ROWS_PER_CHUNK):
        rows = logits[start : start + _ROWS_PER_CHUNK].float()
        idx = targets[start : start + _ROWS_PER_CHUNK].unsqueeze(-1)
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


def head_token_logps(
    head: torch.nn.Module,
    hidden: torch.Tensor,
    token_ids: torch.Tensor,
    chunk_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of `token_ids` (and each row's mean logit) from hidden states [N, H] through the output layer.

    Never holds more than one chunk's [n, V] logits. A frozen plain `nn.Linear` head (LoRA / QLoRA), also one
    whose new-token rows train (peft trainable tokens: base weight + those rows, never a merged [V, H] copy),
    takes `FrozenHeadLogps`: the gradients are formed chunk by chunk in the forward, so nothing is recomputed.
    Any other head (trainable, wrapped) is checkpointed per chunk: recomputed in backward.
    """
    if hidden.shape[0] == 0:
        empty = hidden.new_zeros(0, dtype=torch.float32)
        return empty, empty
    if _is_frozen_linear(head):
        return FrozenHeadLogps.apply(hidden, head.weight, head.bias, token_ids, chunk_size)
    rows = trainable_token_rows(head)
    if rows is not None:  # a frozen Linear whose new-token rows train: base weight + those rows, no merged copy
        base, index, values = rows
        values = None if values is None else values.to(base.weight.dtype)
        return FrozenHeadLogps.apply(hidden, base.weight, None, token_ids, chunk_size, index, values)
    logps, means = [], []
    for start in range(0, hidden.shape[0], chunk_size):
        h, ids = hidden[start : start + chunk_size], token_ids[start : start + chunk_size]
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


def plain_layer(module: torch.nn.Module) -> torch.nn.Module:
    """The layer inside a peft trainable-tokens wrapper (or the module itself): its `.weight` is the stored
    tensor, where the wrapper's `.weight` builds a full merged [V, H] copy on every read."""
    adapter = getattr(module, "token_adapter", None)
    return adapter.get_base_layer() if adapter is not None else module


def trainable_token_rows(
    head: torch.nn.Module,
) -> tuple[torch.nn.Linear, torch.Tensor | None, torch.Tensor | None] | None:
    """(frozen base Linear, row ids, their trained values) of a peft trainable-tokens output layer: the logits
    are the base layer's with those rows replaced. Rows None when the adapter is off; None for anything else."""
    adapter = getattr(head, "token_adapter", None)
    if adapter is None or adapter.merged:
        return None
    base = adapter.get_base_layer()
    if not _is_frozen_linear(base) or base.bias is not None:  # peft's own forward drops a bias: leave it to peft
        return None
    active = [] if adapter.disable_adapters else list(adapter.active_adapters)
    if not active:
        return base, None, None
    if len(active) > 1:
        return None
    index = torch.as_tensor(adapter.token_indices[active[0]], dtype=torch.long, device=base.weight.device)
    return base, index, adapter.trainable_tokens_delta[active[0]]


def _head_chunk(head: torch.nn.Module, h: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk: logits, then the same log-softmax as `selected_token_logps`."""
    return selected_token_logps(head(h), ids)


class FrozenHeadLogps(torch.autograd.Function):
    """Token log-probs through a frozen linear head, the gradient to the hidden states formed in the forward.

    logp_i = (W h_i + b)[y_i] - logsumexp(W h_i + b), so d logp_i / d h_i = W[y_i] - softmax_i @ W: an [H] vector
    per token, kept instead of the [V] logits. Backward only scales it by d loss / d logp_i (Liger-Kernel's fused
    linear cross-entropy idea, generalised to any loss of the per-token log-probs, such as ORPO's odds ratio).

    `row_index` / `rows`: rows of W replaced by trainable values (peft trainable tokens: new tokens' rows).
    d logp_i / d rows_k = (onehot_i - softmax_i)[k] h_i, so only those K columns of each softmax are kept ([N, K]).
    """

    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        token_ids: torch.Tensor,
        chunk_size: int,
        row_index: torch.Tensor | None = None,
        rows: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-chunk logits -> log-probs, mean logits and (when needed) d logp / d hidden and d logp / d rows."""
        if row_index is None or rows is None:  # no replaced rows: an empty set
            row_index, rows = torch.zeros(0, dtype=torch.long, device=weight.device), weight[:0]
        replaced = rows.shape[0] > 0
        want_grad, want_rows = ctx.needs_input_grad[0], replaced and ctx.needs_input_grad[6]
        logps, means, grads, row_probs = [], [], [], []
        for start in range(0, hidden.shape[0], chunk_size):
            ids, h = token_ids[start : start + chunk_size, None], hidden[start : start + chunk_size]
            logits = F.linear(h, weight, bias).float()
            if replaced:
                logits[:, row_index] = F.linear(h, rows, None if bias is None else bias[row_index]).float()
            lse = torch.logsumexp(logits, dim=-1, keepdim=True)
            logps.append((logits.gather(-1, ids) - lse).squeeze(-1))
            means.append(logits.mean(-1))
            if want_grad or want_rows:
                probs = logits.sub_(lse).exp_()  # softmax, in place: the logits are not needed any more
                probs.scatter_add_(-1, ids, torch.full_like(ids, -1, dtype=probs.dtype))  # softmax - onehot
                at_rows = probs[:, row_index] if replaced else None  # a copy: [n, K]
                if at_rows is not None:
                    probs[:, row_index] = 0  # those columns meet `rows`, not W
                    row_probs.append(at_rows)
                if want_grad:
                    grad = probs.to(weight.dtype) @ weight  # softmax @ W - W[y]
                    if at_rows is not None:
                        grad = grad + at_rows.to(rows.dtype) @ rows
                    grads.append(-grad.float())
        ctx.hidden_dtype, ctx.rows_dtype = hidden.dtype, rows.dtype
        ctx.save_for_backward(
            torch.cat(grads) if want_grad else None,
            torch.cat(row_probs) if want_rows else None,
            hidden if want_rows else None,
        )
        out_means = torch.cat(means)
        ctx.mark_non_differentiable(out_means)
        return torch.cat(logps), out_means

    @staticmethod
    def backward(ctx: Any, grad_logps: torch.Tensor, grad_means: torch.Tensor) -> tuple[Any, ...]:
        """d loss / d hidden_i = d loss / d logp_i * (d logp_i / d hidden_i); the same for the replaced rows."""
        dlogp_dhidden, row_probs, hidden = ctx.saved_tensors
        grad_hidden = None if dlogp_dhidden is None else (grad_logps[:, None] * dlogp_dhidden).to(ctx.hidden_dtype)
        grad_rows = None
        if row_probs is not None:  # sum_i g_i (onehot - softmax)_i[k] h_i
            grad_rows = -((row_probs * grad_logps[:, None]).T @ hidden.float()).to(ctx.rows_dtype)
        return grad_hidden, None, None, None, None, None, grad_rows


def pair_logps_from_token_logps(
    tok_logps: torch.Tensor,
    tok_means: torch.Tensor,
    targets: LogpTargets,
    nll_tokens: str = "response",
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


def token_logps_from_logits(logits: torch.Tensor, targets: LogpTargets) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs (and mean logits) at the targets from a forward's full logits [rows, T, V]."""
    flat = logits.reshape(-1, logits.shape[-1])[targets.positions]
    return selected_token_logps(flat, targets.token_ids)
