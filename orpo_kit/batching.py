"""Collate tokenized pairs into padded tensors in the concatenated layout: [chosen rows; rejected rows]."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .data.tokenize import TokenizedPair


@dataclass
class PairBatch:
    """B pairs as 2B right-padded rows; masks come from positions, never from pad ids (pad may equal eos)."""

    input_ids: torch.Tensor  # [2B, T]
    attention_mask: torch.Tensor  # [2B, T] 1 on real tokens
    completion_mask: torch.Tensor  # [2B, T] 1 on completion tokens
    origins: list[str] = field(default_factory=list)  # file and row of each pair, for error messages

    @property
    def num_pairs(self) -> int:
        """Number of preference pairs (half the rows)."""
        return self.input_ids.shape[0] // 2

    def to(self, device: torch.device | str) -> PairBatch:
        """The same batch on another device."""
        return PairBatch(self.input_ids.to(device), self.attention_mask.to(device),
                         self.completion_mask.to(device), self.origins)


def collate_pairs(pairs: list[TokenizedPair], pad_token_id: int, pad_to_multiple_of: int = 1) -> PairBatch:
    """Pad prompt + chosen and prompt + rejected to one length T (rounded up to a multiple)."""
    rows = [(p.prompt_ids, p.chosen_ids) for p in pairs] + [(p.prompt_ids, p.rejected_ids) for p in pairs]
    longest = max(len(a) + len(b) for a, b in rows)
    width = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    completion_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (prompt, completion) in enumerate(rows):
        n_prompt, n = len(prompt), len(prompt) + len(completion)
        input_ids[i, :n] = torch.tensor(prompt + completion, dtype=torch.long)
        attention_mask[i, :n] = 1
        completion_mask[i, n_prompt:n] = 1
    return PairBatch(input_ids, attention_mask, completion_mask, [p.origin for p in pairs])
