"""How a batch of preference pairs is laid out for the model: one class per layout, and the one rule that picks.

plain:  2B rows, [chosen rows; rejected rows], each `[prompt][completion]` (what TRL does: every prompt twice).
shared: B rows, each `[prompt][chosen][rejected]`; a 4D attention mask keeps the rejected part from seeing the
        chosen part and position ids restart at the end of the prompt, so every log-prob equals the plain
        layout's while each prompt is computed once (prefix sharing).
packed: 1 row, the plain layout's 2B sequences one after another with no padding; position ids restart at each
        sequence and no attention mask is passed; the sequence boundaries go to flash-attention's varlen kernels
        as `cu_seq_lens_q/k` and `max_length_q/k`, so attention stays inside each sequence without transformers
        finding the boundaries again from the position ids in every layer. For flash-attention, which takes no
        4D mask and so cannot share prefixes.

Each layout owns its collate, its model inputs and its targets. Every layout hands the loss the same
`LogpTargets`: which hidden position predicts which token, and which of the 2B sequences (chosen_0..B-1,
rejected_0..B-1) that prediction belongs to. `choose_layout` (and `layout_for`, on a backend name, which the
memory estimator asks) is the one place that decides which layout a model gets.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch

from .data.tokenize import TokenizedPair
from .logprobs import LogpTargets

PADDING_SIDES = ("right", "left")
SHARED_BACKENDS = ("eager", "sdpa")  # attention backends that take a custom 4D mask


@dataclass
class PairBatch:
    """B pairs as rows of one layout; masks come from positions, never from pad ids (pad may equal eos).

    `segments` holds each layout's own bookkeeping (see the layout's class): the lengths its targets need.
    """

    input_ids: torch.Tensor  # [rows, T]
    attention_mask: torch.Tensor  # [rows, T] 1 on real tokens
    completion_mask: torch.Tensor  # [rows, T] 1 on completion tokens (chosen and rejected alike)
    layout: Layout
    segments: torch.Tensor
    position_ids: torch.Tensor  # [rows, T]
    origins: list[str] = field(default_factory=list)  # file and row of each pair, for error messages
    longest_sequence: int = 0  # packed layout: the longest sequence, a Python int (flash-attention reads it on CPU)

    @property
    def num_pairs(self) -> int:
        """Number of preference pairs."""
        return self.layout.num_pairs(self)

    @property
    def num_tokens(self) -> int:
        """Logical tokens: prompt + chosen and prompt + rejected, as a plain layout without padding holds them."""
        return self.layout.num_tokens(self)

    def to(self, device: torch.device | str) -> PairBatch:
        """The same batch on another device."""
        names = ("input_ids", "attention_mask", "completion_mask", "segments", "position_ids")
        return replace(self, **{k: getattr(self, k).to(device) for k in names})

    def model_inputs(self, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
        """Keyword arguments for the model's forward (`dtype`: the activations', for additive masks)."""
        return self.layout.model_inputs(self, dtype)

    def targets(self, with_prompt: bool = False) -> LogpTargets:
        """Where the loss reads log-probs; `with_prompt` adds the chosen prompt tokens (TRL's NLL)."""
        return self.layout.targets(self, with_prompt)


class Layout:
    """A way to put B pairs into rows: collate, model inputs and targets."""

    name: ClassVar[str]

    def collate(
        self, pairs: list[TokenizedPair], pad_token_id: int, pad_to_multiple_of: int = 1, padding_side: str = "right"
    ) -> PairBatch:
        """Tensors of this layout for the pairs."""
        raise NotImplementedError

    def model_inputs(self, batch: PairBatch, dtype: torch.dtype) -> dict[str, Any]:
        """ids, mask and positions for the forward."""
        return {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "position_ids": batch.position_ids,
        }

    def targets(self, batch: PairBatch, with_prompt: bool) -> LogpTargets:
        """Which position predicts which token, per sequence."""
        raise NotImplementedError

    def num_pairs(self, batch: PairBatch) -> int:
        """Pairs in the batch."""
        return batch.input_ids.shape[0] // 2

    def num_tokens(self, batch: PairBatch) -> int:
        """Real tokens (prompt counted once per sequence)."""
        return int(batch.attention_mask.sum())

    def __repr__(self) -> str:
        return f"<{self.name} layout>"


class PlainLayout(Layout):
    """2B padded rows, chosen_0..B-1 then rejected_0..B-1. `segments`: [2B, 2] = prompt length, sequence length."""

    name = "plain"

    def collate(
        self, pairs: list[TokenizedPair], pad_token_id: int, pad_to_multiple_of: int = 1, padding_side: str = "right"
    ) -> PairBatch:
        """Pad prompt + chosen and prompt + rejected to one length T (rounded up to a multiple)."""
        rows = _sequences(pairs)
        width = _width(max(len(a) + len(b) for a, b in rows), pad_to_multiple_of)
        input_ids, attention_mask, completion_mask = _empty(len(rows), width, pad_token_id)
        for i, (prompt, completion) in enumerate(rows):
            n = len(prompt) + len(completion)
            start = _start(width, n, padding_side)
            input_ids[i, start : start + n] = torch.tensor(prompt + completion, dtype=torch.long)
            attention_mask[i, start : start + n] = 1
            completion_mask[i, start + len(prompt) : start + n] = 1
        return PairBatch(
            input_ids,
            attention_mask,
            completion_mask,
            self,
            _sequence_lengths(rows),
            _positions(attention_mask),
            [p.origin for p in pairs],
        )

    def targets(self, batch: PairBatch, with_prompt: bool) -> LogpTargets:
        """Position t predicts token t + 1 in every row."""
        return plain_targets(batch.input_ids, batch.attention_mask, batch.completion_mask, with_prompt)


class SharedLayout(Layout):
    """B padded rows `[prompt][chosen][rejected]`. `segments`: [B, 4] = left offset, prompt, chosen, rejected."""

    name = "shared"

    def collate(
        self, pairs: list[TokenizedPair], pad_token_id: int, pad_to_multiple_of: int = 1, padding_side: str = "right"
    ) -> PairBatch:
        """One row per pair, positions restarting after the prompt for the rejected answer."""
        longest = max(len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
        width = _width(longest, pad_to_multiple_of)
        input_ids, attention_mask, completion_mask = _empty(len(pairs), width, pad_token_id)
        position_ids = torch.zeros((len(pairs), width), dtype=torch.long)
        segments = torch.zeros((len(pairs), 4), dtype=torch.long)
        for i, p in enumerate(pairs):
            n_p, n_c, n_r = len(p.prompt_ids), len(p.chosen_ids), len(p.rejected_ids)
            n = n_p + n_c + n_r
            s = _start(width, n, padding_side)
            input_ids[i, s : s + n] = torch.tensor(p.prompt_ids + p.chosen_ids + p.rejected_ids, dtype=torch.long)
            attention_mask[i, s : s + n] = 1
            completion_mask[i, s + n_p : s + n] = 1
            position_ids[i, s : s + n_p + n_c] = torch.arange(n_p + n_c)
            position_ids[i, s + n_p + n_c : s + n] = torch.arange(n_p, n_p + n_r)
            segments[i] = torch.tensor([s, n_p, n_c, n_r])
        return PairBatch(
            input_ids, attention_mask, completion_mask, self, segments, position_ids, [p.origin for p in pairs]
        )

    def model_inputs(self, batch: PairBatch, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The 4D additive mask that keeps rejected from seeing chosen."""
        mask = shared_attention_mask(batch.segments, batch.input_ids.shape[1], dtype)
        return {"input_ids": batch.input_ids, "attention_mask": mask, "position_ids": batch.position_ids}

    def targets(self, batch: PairBatch, with_prompt: bool) -> LogpTargets:
        """The first rejected token is predicted by the last prompt token, not the last chosen one."""
        input_ids, segments = batch.input_ids, batch.segments
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

    def num_pairs(self, batch: PairBatch) -> int:
        """One row per pair."""
        return batch.input_ids.shape[0]

    def num_tokens(self, batch: PairBatch) -> int:
        """Prompt twice, as the plain layout holds it."""
        p, c, r = batch.segments[:, 1], batch.segments[:, 2], batch.segments[:, 3]
        return int((2 * p + c + r).sum())


class PackedLayout(Layout):
    """The plain layout's 2B sequences in one unpadded row. `segments`: [2B, 2] = prompt length, sequence length."""

    name = "packed"

    def collate(
        self, pairs: list[TokenizedPair], pad_token_id: int, pad_to_multiple_of: int = 1, padding_side: str = "right"
    ) -> PairBatch:
        """Chosen_0..B-1 then rejected_0..B-1, back to back; nothing is padded (the padding arguments are ignored)."""
        _start(0, 0, padding_side)  # the same check as the other layouts
        rows = _sequences(pairs)
        ids = [t for prompt, completion in rows for t in prompt + completion]
        completion = [int(k >= len(prompt)) for prompt, comp in rows for k in range(len(prompt) + len(comp))]
        positions = [k for prompt, comp in rows for k in range(len(prompt) + len(comp))]
        input_ids = torch.tensor([ids], dtype=torch.long)
        return PairBatch(
            input_ids,
            torch.ones_like(input_ids),
            torch.tensor([completion], dtype=torch.long),
            self,
            _sequence_lengths(rows),
            torch.tensor([positions], dtype=torch.long),
            [p.origin for p in pairs],
            longest_sequence=max(len(prompt) + len(comp) for prompt, comp in rows),
        )

    def model_inputs(self, batch: PairBatch, dtype: torch.dtype) -> dict[str, Any]:
        """No mask; the sequence boundaries as flash-attention kwargs, so its varlen path needs no sync per layer.

        As transformers' DataCollatorWithFlattening emits them: int32 cumulative lengths on the batch's device and
        Python-int longest lengths. Eager and sdpa ignore them and build a block-causal mask from the restarting
        position ids (which RoPE needs anyway).
        """
        lengths = batch.segments[:, 1]
        cu_seq_lens = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
        longest = batch.longest_sequence or int(lengths.max())
        return {
            "input_ids": batch.input_ids,
            "position_ids": batch.position_ids,
            "cu_seq_lens_q": cu_seq_lens,
            "cu_seq_lens_k": cu_seq_lens,
            "max_length_q": longest,
            "max_length_k": longest,
        }

    def targets(self, batch: PairBatch, with_prompt: bool) -> LogpTargets:
        """Inside each sequence position t predicts token t + 1, as in the plain layout's rows."""
        input_ids, segments = batch.input_ids, batch.segments
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

    def num_pairs(self, batch: PairBatch) -> int:
        """Two sequences per pair."""
        return batch.segments.shape[0] // 2


PLAIN, SHARED, PACKED = PlainLayout(), SharedLayout(), PackedLayout()
LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (PLAIN, SHARED, PACKED)}


def layout_for(attn_implementation: str, prefix_sharing: bool = True, packing: bool = True) -> Layout:
    """The layout for an attention backend: prefix sharing where 4D masks work (eager, sdpa), else packing where
    it is free (flash-attention's varlen kernels), else plain rows.

    sdpa and eager could run packed rows too (transformers builds a block-causal mask from the position ids), but
    that mask spans the whole packed row, so attention costs grow with its square: they keep padded rows.
    """
    if prefix_sharing and attn_implementation in SHARED_BACKENDS:
        return SHARED
    if packing and attn_implementation.startswith("flash_attention"):
        return PACKED
    return PLAIN


def choose_layout(model: torch.nn.Module, prefix_sharing: bool = True, packing: bool = True) -> Layout:
    """The layout for this model's attention backend (see `layout_for`)."""
    return layout_for(attn_implementation(model), prefix_sharing, packing)


def attn_implementation(model: torch.nn.Module) -> str:
    """The attention backend transformers runs for a model (eager when unset), through DDP / peft wrappers."""
    inner: Any = model
    while hasattr(inner, "module") and isinstance(inner.module, torch.nn.Module):
        inner = inner.module
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    return str(getattr(getattr(inner, "config", None), "_attn_implementation", None) or "eager")


def collate(pairs: list[TokenizedPair], pad_token_id: int, layout: Layout = PLAIN, **kwargs: Any) -> PairBatch:
    """`layout.collate` (the plain layout unless another is given)."""
    return layout.collate(pairs, pad_token_id, **kwargs)


def plain_targets(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor, with_prompt: bool = False
) -> LogpTargets:
    """Targets of plain rows [chosen_0..B-1, rejected_0..B-1]: position t predicts token t + 1.

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


def shared_attention_mask(segments: torch.Tensor, width: int, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, T, T] additive mask: causal inside each row's tokens, rejected blind to chosen, pads see themselves.

    Additive (0 / dtype min) rather than boolean: eager attention reads a boolean 4D mask wrongly (docs/facts.md).
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


def _sequences(pairs: list[TokenizedPair]) -> list[tuple[list[int], list[int]]]:
    """(prompt, completion) of the 2B sequences: chosen_0..B-1, then rejected_0..B-1."""
    return [(p.prompt_ids, p.chosen_ids) for p in pairs] + [(p.prompt_ids, p.rejected_ids) for p in pairs]


def _sequence_lengths(rows: list[tuple[list[int], list[int]]]) -> torch.Tensor:
    """[2B, 2]: each sequence's prompt length and total length."""
    return torch.tensor([[len(prompt), len(prompt) + len(comp)] for prompt, comp in rows], dtype=torch.long)


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
