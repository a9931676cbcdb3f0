"""Validate preference rows with one report: for each kind of problem a policy, raise or drop-and-count."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .formats import FORMATS, PreferencePair, RowProblem, detect_format, normalize_row, resolve_column_map
from .sources import DataSourceError, read_rows

PROBLEMS: dict[str, str] = {
    "bad_json": "line is not valid JSON",
    "encoding": "line is not valid UTF-8",
    "wrong_type": "row or field has the wrong type",
    "missing_field": "required field missing",
    "empty_prompt": "empty prompt",
    "empty_completion": "empty completion",
    "identical": "chosen identical to rejected",
    "prompt_mismatch": "chosen and rejected answer different prompts",
    "bad_role": "message with an unknown role",
    "bad_order": "messages in the wrong order",
    "duplicate": "duplicate pair",
    "low_margin": "score margin below the minimum",
    "too_long": "cannot fit the length limits",
    "eval_overlap": "eval prompt also in the training split",
}
# Damage that suggests the wrong file or format stops the run; problems of single pairs drop them.
DEFAULT_POLICY: dict[str, str] = {
    **{k: "raise" for k in ("bad_json", "encoding", "wrong_type", "missing_field", "bad_role", "bad_order",
                            "prompt_mismatch")},
    **{k: "drop" for k in ("empty_prompt", "empty_completion", "identical", "duplicate", "low_margin", "too_long",
                           "eval_overlap")},
}
EXAMPLES_PER_KIND = 3
AFTER_LOAD = ("too_long", "eval_overlap")  # found after reading: at splitting and tokenizing


def resolve_policy(policy: str | dict[str, str] | None) -> dict[str, str]:
    """'default', 'raise', 'drop', or {kind: raise|drop} over the defaults."""
    if policy in (None, "default"):
        return dict(DEFAULT_POLICY)
    if policy in ("raise", "drop"):
        return {k: policy for k in PROBLEMS}
    if isinstance(policy, dict):
        unknown = set(policy) - set(PROBLEMS)
        bad = {v for v in policy.values() if v not in ("raise", "drop")}
        if unknown or bad:
            raise ValueError(f"data_policy: unknown kinds {sorted(unknown)} or actions {sorted(bad)}; "
                             f"kinds are {', '.join(PROBLEMS)}; actions raise or drop")
        return {**DEFAULT_POLICY, **policy}
    raise ValueError(f"data_policy must be 'default', 'raise', 'drop' or a dict, got {policy!r}")


@dataclass
class DataReport:
    """What reading and validating a source found: counts per problem kind and the first messages."""

    source: str
    format: str = "?"
    rows_read: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def record(self, problem: RowProblem, policy: dict[str, str]) -> None:
        """Raise or count one problem, by policy."""
        if policy.get(problem.kind, "raise") == "raise":
            raise problem
        self.dropped[problem.kind] += 1
        if problem.kind in AFTER_LOAD and self.kept > 0:
            self.kept -= 1  # these pairs were counted as kept when the source was read
        self.examples.setdefault(problem.kind, [])
        if len(self.examples[problem.kind]) < EXAMPLES_PER_KIND:
            self.examples[problem.kind].append(str(problem))

    def lines(self) -> list[str]:
        """Human-readable lines for the CLI and notebooks."""
        out = [f"source: {self.source}", f"format: {self.format}",
               f"rows read: {self.rows_read}, pairs kept: {self.kept}, dropped: {sum(self.dropped.values())}"]
        for kind, n in sorted(self.dropped.items()):
            out.append(f"  dropped {n} x {kind} ({PROBLEMS[kind]}), e.g. {self.examples[kind][0]}")
        return out


def _check_margin(pair: PreferencePair, min_margin: float | None) -> None:
    """Optional filter: keep pairs whose score_chosen - score_rejected reaches the minimum."""
    if min_margin is None or pair.score_chosen is None or pair.score_rejected is None:
        return
    if pair.score_chosen - pair.score_rejected < min_margin:
        raise RowProblem("low_margin", f"{pair.origin}: score margin {pair.score_chosen - pair.score_rejected:g} "
                                       f"< {min_margin:g}")


def load_pairs(
    source: Any, *, format: str = "auto", column_map: dict[str, str] | None = None,
    policy: str | dict[str, str] | None = "default", split: str | None = None, min_score_margin: float | None = None,
) -> tuple[list[PreferencePair], DataReport]:
    """Read, detect the format, normalize and validate: the pairs kept and the report."""
    pol = resolve_policy(policy)
    label, rows = read_rows(source, split=split)
    report = DataReport(source=label, rows_read=len(rows))
    good = [r for r in rows if r.values is not None]
    if not good:
        raise RowProblem(*rows[0].problem) if rows else DataSourceError(f"{label}: no rows")
    columns = {k for r in good[:50] for k in r.values}
    try:
        if format == "auto":
            format = "mapped" if column_map else detect_format(columns, good[0].values)
        elif format not in FORMATS:
            raise ValueError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)} or auto")
        cmap = resolve_column_map(columns, column_map) if format == "mapped" else None
    except ValueError as exc:
        raise DataSourceError(f"{label}: {exc}") from None
    report.format = format
    pairs, seen = [], set()
    for row in rows:
        try:
            if row.problem is not None:
                raise RowProblem(*row.problem)
            pair = normalize_row(row.values, format, row.where, cmap)
            _check_margin(pair, min_score_margin)
            key = (pair.prompt, pair.chosen, pair.rejected)
            if key in seen:
                raise RowProblem("duplicate", f"{row.where}: the same prompt, chosen and rejected occur earlier")
            seen.add(key)
            pairs.append(pair)
        except RowProblem as problem:
            report.record(problem, pol)
    report.kept = len(pairs)
    if not pairs:
        raise DataSourceError(f"{label}: no usable pairs after validation: " + "; ".join(report.lines()[2:]))
    return pairs, report


def split_train_eval(
    pairs: list[PreferencePair], eval_fraction: float, seed: int,
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Use the rows' own train/eval split when present, else hold out a seeded fraction of the prompts.

    Splitting by prompt means no eval prompt also occurs in training.
    """
    if {p.split for p in pairs} == {"train", "eval"}:
        return [p for p in pairs if p.split == "train"], [p for p in pairs if p.split == "eval"]
    prompts = sorted({p.prompt for p in pairs})
    random.Random(seed).shuffle(prompts)
    held_out = set(prompts[: max(1, round(len(prompts) * eval_fraction))])
    return [p for p in pairs if p.prompt not in held_out], [p for p in pairs if p.prompt in held_out]


def drop_eval_overlap(
    train: list[PreferencePair], evals: list[PreferencePair], report: DataReport, policy: str | dict | None = "default",
) -> list[PreferencePair]:
    """Eval pairs whose prompt also occurs in training: raise or drop, by policy."""
    train_prompts, kept = {p.prompt for p in train}, []
    pol = resolve_policy(policy)
    for pair in evals:
        if pair.prompt in train_prompts:
            report.record(RowProblem("eval_overlap", f"{pair.origin}: this eval prompt also occurs in the training "
                                                     "split, so it would measure memorization"), pol)
        else:
            kept.append(pair)
    return kept
