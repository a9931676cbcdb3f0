"""Collate tokenized pairs into padded tensors, in one of two layouts, and say which positions the loss reads.

plain:  2B rows, [chosen rows; rejected rows], each `[prompt][completion]` (what TRL does: every prompt twice).
shared: B rows, each `[prompt][chosen][rejected]`; a 4D attention mask keeps the rejected part from seeing the
        chosen part and position ids restart at the end of the prompt, so every log-prob equals the plain
        layout's while each prompt is computed once (prefix sharing).
packed: 1 row, the plain layout's 2B sequences one after another with no padding; position ids restart at each
        sequence and no attention mask is passed, so transformers keeps attention inside each sequence
        (flash-attention's varlen kernels; a block-causal mask on sdpa / eager). For flash-attention, which
        takes no 4D mask and so cannot share prefixes.

Both layouts hand the loss the same `LogpTargets`: which hidden position predicts which token, and which of the
2B sequences (chosen_0..B-1, rejected_0..B-1) that prediction belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from .data.tokenize import TokenizedPair
from .loss import LogpTargets, plain_targets

PADDING_SIDES = ("right", "left")


@dataclass
class PairBatch:
    """B pairs as padded rows; masks come from positions, never from pad ids (pad may equal eos)."""

    input_ids: torch.Tensor  # plain [2B, T]; shared [B, T]
    attention_mask: torch.Tensor  # [rows, T] 1 on real tokens
    completion_mask: torch.Tensor  # [rows, T] 1 on completion tokens (chosen and rejected alike)
    origins: list[str] = field(default_factory=list)  # file and row of each pair, for error messages
    layout: str = "plain"  # plain | shared | packed
    segments: torch.Tensor | None = None  # shared: [B, 4] = left offset, prompt, chosen, rejected lengths;
    # packed: [2B, 2] = prompt length, sequence length of chosen_0..B-1, rejected_0..B-1
    position_ids: torch.Tensor | None = None  # [rows, T]

    @property
    def num_pairs(self) -> int:
        """Number of preference pairs."""
        if self.layout == "packed":
            return self.segments.shape[0] // 2
        return self.input_ids.shape[0] if self.layout == "shared" else self.input_ids.shape[0] // 2

    @property
    def num_tokens(self) -> int:
        """Logical tokens: prompt + chosen and prompt + rejected, as a plain layout without padding holds them."""
        if self.layout == "shared":
            p, c, r = self.segments[:, 1], self.segments[:, 2], self.segments[:, 3]
            return int((2 * p + c + r).sum())
        return int(self.attention_mask.sum())

    def to(self, device: torch.device | str) -> PairBatch:
        """The same batch on another device."""
        move = {k: getattr(self, k).to(device) for k in ("input_ids", "attention_mask", "completion_mask",
                                                          "segments", "position_ids") if getattr(self, k) is not None}
        return replace(self, **move)

    def model_inputs(self, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """Keyword arguments for the model's forward: ids, mask (4D additive in the shared layout), positions."""
        if self.layout == "packed":  # no mask: transformers reads the sequences from the restarting positions
            return {"input_ids": self.input_ids, "position_ids": self.position_ids}
        mask = self.attention_mask if self.layout == "plain" else shared_attention_mask(self.segments,
                                                                                        self.input_ids.shape[1], dtype)
        out = {"input_ids": self.input_ids, "attention_mask": mask}
        if self.position_ids is not None:
            out["position_ids"] = self.position_ids
        return out

    def targets(self, with_prompt: bool = False) -> LogpTargets:
        """Where the loss reads log-probs; `with_prompt` adds the chosen prompt tokens (TRL's NLL)."""
        if self.layout == "shared":
            return _shared_targets(self.input_ids, self.segments, with_prompt)
        if self.layout == "packed":
            return _packed_targets(self.input_ids, self.segments, with_prompt)
        return plain_targets(self.input_ids, self.attention_mask, self.completion_mask, with_prompt)


def collate_pairs(
    pairs: list[TokenizedPair], pad_token_id: int, pad_to_multiple_of: int = 1, padding_side: str = "right",
) -> PairBatch:
    """Plain layout: pad prompt + chosen and prompt + rejected to one length T (rounded up to a multiple)."""
    rows = [(p.prompt_ids, p.chosen_ids) for p in pairs] + [(p.prompt_ids, p.rejected_ids) for p in pairs]
    width = _width(max(len(a) + len(b) for a, b in rows), pad_to_multiple_of)
    input_ids, attention_mask, completion_mask = _empty(len(rows), width, pad_token_id)
    for i, (prompt, completion) in enumerate(rows):
        n = len(prompt) + len(completion)
        start = _start(width, n, padding_side)
        input_ids[i, start:start + n] = torch.tensor(prompt + completion, dtype=torch.long)
        attention_mask[i, start:start + n] = 1
        completion_mask[i, start + len(prompt):start + n] = 1
    return PairBatch(input_ids, attention_mask, completion_mask, [p.origin for p in pairs],
                     position_ids=_positions(attention_mask))


def collate_shared(
    pairs: list[TokenizedPair], pad_token_id: int, pad_to_multiple_of: int = 1, padding_side: str = "right",
) -> PairBatch:
    """Shared layout: one row per pair, `[prompt][chosen][rejected]`, positions restarting after the prompt."""
    width = _width(max(len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs),
                   pad_to_multiple_of)
    input_ids, attention_mask, completion_mask = _empty(len(pairs), width, pad_token_id)
    position_ids = torch.zeros((len(pairs), width), dtype=torch.long)
    segments = torch.zeros((len(pairs), 4), dtype=torch.long)
    for i, p in enumerate(pairs):
        n_p, n_c, n_r = len(p.prompt_ids), len(p.chosen_ids), len(p.rejected_ids)
        n = n_p + n_c + n_r
        s = _start(width, n, padding_side)
        input_ids[i, s:s + n] = torch.tensor(p.prompt_ids + p.chosen_ids + p.rejected_ids, dtype=torch.long)
        attention_mask[i, s:s + n] = 1
        completion_mask[i, s + n_p:s + n] = 1
        position_ids[i, s:s + n_p + n_c] = torch.arange(n_p + n_c)
        position_ids[i, s + n_p + n_c:s + n] = torch.arange(n_p, n_p + n_r)
        segments[i] = torch.tensor([s, n_p, n_c, n_r])
    return PairBatch(input_ids, attention_mask, completion_mask, [p.origin for p in pairs], layout="shared",
                     segments=segments, position_ids=position_ids)


def collate_packed(pairs: list[TokenizedPair], pad_token_id: int, pad_to_multiple_of: int = 1,
                   padding_side: str = "right") -> PairBatch:
    """Packed layout: chosen_0..B-1 then rejected_0..B-1, each `[prompt][completion]`, in one row without padding.

    `pad_token_id`, `pad_to_multiple_of` and `padding_side` are accepted for a uniform signature; nothing is padded.
    """
    _start(0, 0, padding_side)  # the same check as the other layouts
    rows = [(p.prompt_ids, p.chosen_ids) for p in pairs] + [(p.prompt_ids, p.rejected_ids) for p in pairs]
    ids = [t for prompt, completion in rows for t in prompt + completion]
    completion = [int(k >= len(prompt)) for prompt, comp in rows for k in range(len(prompt) + len(comp))]
    positions = [k for prompt, comp in rows for k in range(len(prompt) + len(comp))]
    segments = torch.tensor([[len(prompt), len(prompt) + len(comp)] for prompt, comp in rows], dtype=torch.long)
    input_ids = torch.tensor([ids], dtype=torch.long)
    return PairBatch(input_ids, torch.ones_like(input_ids), torch.tensor([completion], dtype=torch.long),
                     [p.origin for p in pairs], layout="packed", segments=segments,
                     position_ids=torch.tensor([positions], dtype=torch.long))


def collate(pairs: list[TokenizedPair], pad_token_id: int, prefix_sharing: bool = False, packing: bool = False,
            **kwargs) -> PairBatch:
    """The shared layout when prefix sharing is on, else the packed one when packing is on, else the plain one."""
    fn = collate_shared if prefix_sharing else collate_packed if packing else collate_pairs
    return fn(pairs, pad_token_id, **kwargs)


def shared_attention_mask(segments: torch.Tensor, width: int, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, T, T] additive mask: causal inside each row's tokens, rejected blind to chosen, pads see themselves.

    Additive (0 / dtype min) rather than boolean: eager attention reads a boolean 4D mask wrongly (FACTS §10).
    """
    pos = torch.arange(width, device=segments.device)
    start, n_p, n_c, n_r = (segments[:, k, None] for k in range(4))  # [B, 1]
    real = (pos >= start) & (pos < start + n_p + n_c + n_r)  # [B, T]
    is_rejected = (pos >= start + n_p + n_c) & real
    is_chosen = (pos >= start + n_p) & ~is_rejected & real
    allowed = (pos[None, :, None] >= pos[None, None, :]) & real[:, :, None] & real[:, None, :]  # [B, Tq, Tk]
    allowed &= ~(is_rejected[:, :, None] & is_chosen[:, None, :])
    allowed |= torch.eye(width, dtype=torch.bool, device=segments.device)  # a pad row attends to itself: no NaN
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segments.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


def _shared_targets(input_ids: torch.Tensor, segments: torch.Tensor, with_prompt: bool) -> LogpTargets:
    """Shared layout: the first rejected token is predicted by the last prompt token, not the last chosen one."""
    n_pairs, width = input_ids.shape
    pred, tok, seq = [], [], []
    for b, (s, n_p, n_c, n_r) in enumerate(segments.tolist()):
        base = b * width + s
        if with_prompt:
            pred.append(base + torch.arange(0, n_p - 1))
            tok.append(base + torch.arange(1, n_p))
            seq.append(torch.full((n_p - 1,), -1))
        completions = torch.arange(n_p, n_p + n_c + n_r)  # chosen tokens, then rejected tokens
        predictors = completions - 1
        predictors[n_c] = n_p - 1  # the first rejected token follows the prompt, not the chosen answer
        pred.append(base + predictors)
        tok.append(base + completions)
        seq += [torch.full((n_c,), b), torch.full((n_r,), n_pairs + b)]
    device = input_ids.device
    token_ids = input_ids.reshape(-1)[torch.cat(tok).to(device)]
    return LogpTargets(torch.cat(pred).to(device), token_ids, torch.cat(seq).to(device), n_pairs)


def _packed_targets(input_ids: torch.Tensor, segments: torch.Tensor, with_prompt: bool) -> LogpTargets:
    """Packed layout: inside each sequence position t predicts token t + 1, as in the plain layout's rows."""
    n_pairs = segments.shape[0] // 2
    pred, seq = [], []
    offset = 0
    for r, (n_p, n) in enumerate(segments.tolist()):
        first = max(n_p, 1)  # a sequence's first token has no predictor (as in the plain layout)
        if with_prompt and r < n_pairs:  # TRL's NLL: the chosen prompt's tokens too
            pred.append(offset + torch.arange(0, first - 1))
            seq.append(torch.full((first - 1,), -1))
        pred.append(offset + torch.arange(first - 1, n - 1))
        seq.append(torch.full((n - first,), r))
        offset += n
    positions = torch.cat(pred).to(input_ids.device)
    return LogpTargets(positions, input_ids[0, positions + 1], torch.cat(seq).to(input_ids.device), n_pairs)


def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids counted over real tokens only, so left padding does not shift them."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def _width(longest: int, multiple: int) -> int:
    """Row length: the longest row rounded up to a multiple."""
    return -(-longest // multiple) * multiple


def _start(width: int, n: int, padding_side: str) -> int:
    """Where a row of n tokens starts."""
    if padding_side not in PADDING_SIDES:
        raise ValueError(f"padding_side must be one of {PADDING_SIDES}, got {padding_side!r}")
    return 0 if padding_side == "right" else width - n


def _empty(rows: int, width: int, pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad-filled ids and zero masks."""
    zeros = torch.zeros((rows, width), dtype=torch.long)
    return torch.full((rows, width), pad_token_id, dtype=torch.long), zeros, zeros.clone()
