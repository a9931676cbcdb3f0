"""Evaluate models on preference pairs: per-pair log-probs, reward accuracy overall and per skill, with the
number of pairs and the sampling uncertainty of every share."""

from __future__ import annotations

import math
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


def binomial_se(share: float, n: int) -> float:
    """Standard error sqrt(p(1-p)/n) of a share measured on n pairs (nan for n = 0); 0 at p = 0 or 1."""
    return math.sqrt(share * (1.0 - share) / n) if n > 0 else math.nan


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95% by default) of a share; unlike the standard error, it stays honest at 0 and 1."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    return (0.0 if successes == 0 else min(lo, p), 1.0 if successes == n else max(hi, p))


def share_stats(by_skill: dict[str, list[bool]]) -> dict[str, dict[str, Any]]:
    """Per skill: the share of True verdicts, the number of verdicts, its standard error and Wilson interval."""
    out: dict[str, dict[str, Any]] = {
        "per_skill": {},
        "n_per_skill": {},
        "se_per_skill": {},
        "ci95_per_skill": {},
    }
    for skill, verdicts in sorted(by_skill.items()):
        n, k = len(verdicts), sum(verdicts)
        out["per_skill"][skill] = k / n
        out["n_per_skill"][skill] = n
        out["se_per_skill"][skill] = binomial_se(k / n, n)
        out["ci95_per_skill"][skill] = wilson_interval(k, n)
    return out


def with_overall(stats: dict[str, Any] | None) -> dict[str, Any] | None:
    """Per-skill stats (as `share_stats` returns them) with an 'all' entry added: every skill's pairs pooled.
    Also takes a `reward_accuracy` result without skills. None when nothing was measured."""
    if stats and not stats.get("per_skill") and stats.get("n"):  # pairs without skills: one 'all' row
        k, n = round(stats["all"] * stats["n"]), stats["n"]
        return share_stats({"all": [True] * k + [False] * (n - k)})
    if not stats or not stats.get("per_skill") or "n_per_skill" not in stats:
        return None
    out = {key: dict(stats[key]) for key in ("per_skill", "n_per_skill", "se_per_skill", "ci95_per_skill")}
    n = sum(stats["n_per_skill"].values())
    k = round(sum(p * stats["n_per_skill"][skill] for skill, p in stats["per_skill"].items()))
    out["per_skill"]["all"], out["n_per_skill"]["all"] = k / n, n
    out["se_per_skill"]["all"], out["ci95_per_skill"]["all"] = binomial_se(k / n, n), wilson_interval(k, n)
    return out


def reward_accuracy(scores: list[PairScore]) -> dict[str, Any]:
    """Share of pairs whose chosen answer is more likely, overall and per skill, with n, standard errors and
    95% Wilson intervals (`n_per_skill`, `se_per_skill`, `ci95_per_skill`): per-skill n is often small."""
    by_skill: dict[str, list[bool]] = defaultdict(list)
    for s in scores:
        by_skill[s.skill or "all"].append(s.correct)
    n, k = len(scores), sum(s.correct for s in scores)
    result: dict[str, Any] = {"all": k / max(1, n), "n": n, "se": binomial_se(k / max(1, n), n)}
    result["ci95"] = wilson_interval(k, n)
    if set(by_skill) != {"all"}:
        result.update(share_stats(by_skill))
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


def _generation_verdicts(answers: list[str], pairs: list[PreferencePair]) -> dict[str, list[bool]]:
    """Each skill's pass/fail verdicts on the generated answers (skills without a check left out)."""
    by_skill: dict[str, list[bool]] = defaultdict(list)
    for pair, answer in zip(pairs, answers, strict=True):
        verdict = generation_check(pair, answer)
        if verdict is not None:
            by_skill[pair.skill or "all"].append(verdict)
    return by_skill


def generation_scores(answers: list[str], pairs: list[PreferencePair]) -> dict[str, float]:
    """Share of generated answers passing their skill's check, per skill (skills without a check left out);
    `generation_stats` adds n, standard errors and intervals."""
    return {k: sum(v) / len(v) for k, v in sorted(_generation_verdicts(answers, pairs).items())}


def generation_stats(answers: list[str], pairs: list[PreferencePair]) -> dict[str, dict[str, Any]]:
    """Generation checks per skill with their counts: `per_skill` (the shares `generation_scores` returns),
    `n_per_skill`, `se_per_skill` and `ci95_per_skill` (95% Wilson interval)."""
    return share_stats(_generation_verdicts(answers, pairs))
