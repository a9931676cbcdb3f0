"""Evaluate models on preference pairs: per-pair log-probs, reward accuracy overall and per skill."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from .batching import collate_pairs
from .data import PreferencePair, TokenizedPair
from .forward import compute_pair_logps


@dataclass
class PairScore:
    """Mean completion log-probs of one pair under one model."""

    origin: str
    skill: str | None
    chosen_logp: float
    rejected_logp: float

    @property
    def correct(self) -> bool:
        """The model prefers the chosen answer (reward accuracy on log-probs)."""
        return self.chosen_logp > self.rejected_logp


@torch.no_grad()
def score_pairs(
    model: torch.nn.Module, tokenized: list[TokenizedPair], pad_token_id: int, batch_size: int = 8,
    pairs: list[PreferencePair] | None = None, device: torch.device | str | None = None,
) -> list[PairScore]:
    """Per-pair chosen / rejected mean log-probs (no gradients), in order; skills taken from `pairs`."""
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    out: list[PairScore] = []
    for start in tqdm(range(0, len(tokenized), batch_size), desc="scoring", leave=False,
                      disable=len(tokenized) < 20 * batch_size):
        chunk = tokenized[start:start + batch_size]
        logps = compute_pair_logps(model, collate_pairs(chunk, pad_token_id).to(device))
        for i, tok in enumerate(chunk):
            skill = pairs[start + i].skill if pairs is not None else None
            out.append(PairScore(tok.origin, skill, logps.chosen_logps[i].item(), logps.rejected_logps[i].item()))
    model.train(was_training)
    return out


def reward_accuracy(scores: list[PairScore]) -> dict[str, Any]:
    """Share of pairs whose chosen answer is more likely, overall and per skill, with counts."""
    by_skill: dict[str, list[bool]] = defaultdict(list)
    for s in scores:
        by_skill[s.skill or "all"].append(s.correct)
    result: dict[str, Any] = {"all": sum(s.correct for s in scores) / max(1, len(scores)), "n": len(scores)}
    if set(by_skill) != {"all"}:
        result["per_skill"] = {k: sum(v) / len(v) for k, v in sorted(by_skill.items())}
    return result
