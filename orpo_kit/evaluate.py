"""Evaluate models on preference pairs: per-pair log-probs, reward accuracy overall and per skill."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch

from .data import PreferencePair, TokenizedPair
from .forward import compute_pair_logps
from .layouts import choose_layout
from .scoring import collate_onto, scoring_batches


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
    model: torch.nn.Module,
    tokenized: list[TokenizedPair],
    pad_token_id: int,
    batch_size: int = 8,
    pairs: list[PreferencePair] | None = None,
    device: torch.device | str | None = None,
) -> list[PairScore]:
    """Per-pair chosen / rejected mean log-probs (no gradients), in order; skills taken from `pairs`."""
    device = device or next(model.parameters()).device
    layout = choose_layout(model)
    out: list[PairScore] = []
    for chunk, batch in scoring_batches(
        model, tokenized, batch_size, lambda c: collate_onto(layout, c, pad_token_id, device)
    ):
        logps = compute_pair_logps(model, batch, chunked=True)
        for i, tok in enumerate(chunk):
            skill = pairs[len(out)].skill if pairs is not None else None
            out.append(PairScore(tok.origin, skill, logps.chosen_logps[i].item(), logps.rejected_logps[i].item()))
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


REFUSAL_MARKERS = ("can't", "cannot", "can not", "won't", "sorry", "not able to", "unable to")


def _instruction_check(prompt: str, answer: str) -> bool | None:
    """Whether an answer takes the form the prompt asked for (None when the prompt asks for no form)."""
    a = answer.strip()
    checks = {
        "capital letters only": lambda: any(c.isalpha() for c in a) and a == a.upper(),
        "lowercase letters only": lambda: any(c.isalpha() for c in a) and a == a.lower(),
        "with the word DONE": lambda: a.rstrip(".").endswith("DONE"),
        "with 'Answer:'": lambda: a.startswith("Answer:"),
        "in quotation marks": lambda: len(a) > 1 and a[0] in '"“' and a[-1] in '"”',
        "as a bullet point": lambda: a.startswith(("- ", "* ", "• ")),
    }
    return next((check() for key, check in checks.items() if key in prompt), None)


def generation_check(pair: PreferencePair, answer: str) -> bool | None:
    """A per-skill check of a generated answer against the pair (None when the skill has no check)."""
    text = answer.strip()
    if pair.skill == "arithmetic":
        expected = pair.chosen.rstrip(".").split("=")[-1].strip()
        numbers = [t.strip(".,") for t in text.replace("=", " ").split()]
        return bool(numbers) and expected in numbers and numbers[-1] == expected
    if pair.skill == "facts":
        right = pair.chosen.rstrip(".").split(" is ")[-1]
        wrong = pair.rejected.rstrip(".").split(" is ")[-1]
        return right in text and wrong not in text
    if pair.skill == "format":
        return 0 < len(text.split()) <= 2
    if pair.skill == "refusal":
        return any(m in text.lower() for m in REFUSAL_MARKERS)
    if pair.skill == "concision":
        return 0 < len(text) <= 1.5 * len(pair.chosen)
    if pair.skill == "instructions":
        return _instruction_check(pair.prompt, text)
    return None


def generation_scores(answers: list[str], pairs: list[PreferencePair]) -> dict[str, float]:
    """Share of generated answers passing their skill's check, per skill (skills without a check left out)."""
    by_skill: dict[str, list[bool]] = defaultdict(list)
    for pair, answer in zip(pairs, answers, strict=True):
        verdict = generation_check(pair, answer)
        if verdict is not None:
            by_skill[pair.skill or "all"].append(verdict)
    return {k: sum(v) / len(v) for k, v in sorted(by_skill.items())}
