"""Statistics of tokenized preference data, and `inspect_data`: the report behind `orpo-kit inspect-data`."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from .formats import PreferencePair, RowProblem
from .tokenize import check_limits, iter_rendered, truncate
from .validate import (
    DEFAULT_MAX_BAD_FRACTION,
    DataReport,
    drop_eval_overlap,
    load_pairs,
    resolve_policy,
    split_train_eval,
)


@dataclass
class LengthStats:
    """Token lengths (before truncation) and what the length limits do to them."""

    prompt: list[int] = field(default_factory=list)
    chosen: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    prompt_truncated: int = 0
    completion_truncated: int = 0
    unique_prompts: int = 0

    @property
    def n_pairs(self) -> int:
        """Number of pairs measured."""
        return len(self.prompt)

    @property
    def truncation_rate(self) -> float:
        """Share of pairs the limits cut (prompt or completion)."""
        return (self.prompt_truncated + self.completion_truncated) / max(1, self.n_pairs)

    @property
    def length_bias(self) -> float:
        """Share of pairs whose chosen answer is longer than the rejected one (0.5 = no bias)."""
        return sum(c > r for c, r in zip(self.chosen, self.rejected, strict=True)) / max(1, self.n_pairs)

    def summary(self, name: str) -> dict[str, float]:
        """n, min, median, p95 and max of the prompt, chosen or rejected token lengths."""
        xs = sorted(getattr(self, name))
        if not xs:
            return {"n": 0}
        p95 = xs[min(len(xs) - 1, int(0.95 * len(xs)))]
        return {"n": len(xs), "min": xs[0], "median": statistics.median(xs), "p95": p95, "max": xs[-1]}

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        out = [f"pairs: {self.n_pairs}, unique prompts: {self.unique_prompts}"]
        for name in ("prompt", "chosen", "rejected"):
            s = self.summary(name)
            if s["n"]:
                out.append(
                    f"  {name:9s} tokens: min {s['min']}, median {s['median']:g}, p95 {s['p95']}, max {s['max']}"
                )
        out.append(
            f"truncated by the limits: {self.truncation_rate:.1%} "
            f"(prompts {self.prompt_truncated}, completions {self.completion_truncated})"
        )
        out.append(f"length bias: chosen longer than rejected in {self.length_bias:.1%} of pairs")
        return out


def length_stats(
    tokenizer: Any,
    pairs: list[PreferencePair],
    max_length: int,
    max_prompt_length: int,
    min_completion_tokens: int = 8,
    report: DataReport | None = None,
    policy: str | dict | None = "default",
) -> LengthStats:
    """Measure every pair through the chat template (once per pair, encoded in batches) and count what the
    limits would cut; pairs that training would refuse (too long, or the same answers once cut) are raised or
    dropped into the report, as training would."""
    check_limits(max_length, max_prompt_length, min_completion_tokens)
    stats, pol = LengthStats(unique_prompts=len({p.prompt for p in pairs})), resolve_policy(policy)
    report = report if report is not None else DataReport(source="pairs")
    for pair, rendered in iter_rendered(tokenizer, pairs, report, desc="measuring"):
        stats.prompt.append(len(rendered.prompt_ids))
        stats.chosen.append(len(rendered.chosen_ids))
        stats.rejected.append(len(rendered.rejected_ids))
        try:
            tok = truncate(rendered, pair.origin, max_length, max_prompt_length, min_completion_tokens)
        except RowProblem as problem:
            report.record(problem, pol)
            continue
        stats.prompt_truncated += tok.prompt_truncated
        stats.completion_truncated += tok.completion_truncated and not tok.prompt_truncated
    return stats


@dataclass
class DataInspection:
    """Everything `orpo-kit inspect-data` prints, as data (for notebooks)."""

    report: DataReport
    n_train: int
    n_eval: int
    stats: LengthStats | None
    skills: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The printed report."""
        out = self.report.lines() + [f"split: {self.n_train} train / {self.n_eval} eval (no eval prompt in train)"]
        if self.skills:
            out.append("skills: " + ", ".join(f"{k} {v}" for k, v in sorted(self.skills.items())))
        return out + (self.stats.lines() if self.stats else [])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["report"]["dropped"] = dict(self.report.dropped)
        if self.stats is not None:  # summaries, not one number per pair
            d["stats"] = {
                **{k: self.stats.summary(k) for k in ("prompt", "chosen", "rejected")},
                "truncation_rate": self.stats.truncation_rate,
                "length_bias": self.stats.length_bias,
                "unique_prompts": self.stats.unique_prompts,
            }
        return d


def skill_counts(pairs: list[PreferencePair]) -> dict[str, int]:
    """Pairs per skill label (pairs without one are not counted)."""
    skills: dict[str, int] = {}
    for p in pairs:
        if p.skill:
            skills[p.skill] = skills.get(p.skill, 0) + 1
    return skills


def inspect_data(
    source: Any,
    *,
    tokenizer: Any = None,
    format: str = "auto",
    split: str | None = None,
    policy: str | dict | None = "default",
    max_length: int = 512,
    max_prompt_length: int = 256,
    min_completion_tokens: int = 8,
    eval_fraction: float = 0.1,
    seed: int = 42,
    column_map: dict | None = None,
    min_score_margin: float | None = None,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
) -> DataInspection:
    """Read, validate, split and measure a source; the same report the CLI prints and training prints."""
    pairs, report = load_pairs(
        source,
        format=format,
        split=split,
        policy=policy,
        column_map=column_map,
        min_score_margin=min_score_margin,
        max_bad_fraction=max_bad_fraction,
    )
    train, evals = split_train_eval(pairs, eval_fraction, seed)
    evals = drop_eval_overlap(train, evals, report, policy)
    skills = skill_counts(pairs)
    stats = None
    if tokenizer is not None:
        stats = length_stats(
            tokenizer, train + evals, max_length, max_prompt_length, min_completion_tokens, report=report, policy=policy
        )
    return DataInspection(report, len(train), len(evals), stats, skills)
