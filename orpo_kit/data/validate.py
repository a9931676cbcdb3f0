"""Validate preference rows with one report: for each kind of problem a policy, raise or drop-and-count."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .formats import FORMATS, PreferencePair, RowProblem, detect_format, normalize_row, resolve_column_map
from .sources import DataSourceError, RawRow, read_rows

PROBLEMS: dict[str, str] = {
    "bad_json": "line is not valid JSON",
    "encoding": "line is not valid UTF-8",
    "bad_text": "text that is not valid Unicode: a lone surrogate",
    "extra_fields": "CSV row with more fields than its header",
    "wrong_type": "row or field has the wrong type",
    "missing_field": "required field missing",
    "empty_prompt": "empty prompt or prompt turn",
    "empty_completion": "empty completion",
    "identical": "chosen identical to rejected",
    "tie": "raters found no preference (a tie)",
    "prompt_mismatch": "chosen and rejected answer different prompts",
    "bad_role": "message with an unknown role",
    "bad_order": "turns out of order (e.g. two of one role in a row)",
    "duplicate": "duplicate pair",
    "low_margin": "score margin below the minimum",
    "too_long": "cannot fit the length limits",
    "same_after_truncation": "chosen and rejected are the same tokens after truncation",
    "eval_overlap": "eval prompt also in the training split",
}
# Damage: a row that is malformed. A few are normal in published data; many mean the wrong file or format.
DAMAGE = (
    "bad_json",
    "encoding",
    "bad_text",
    "extra_fields",
    "wrong_type",
    "missing_field",
    "empty_prompt",
    "empty_completion",
    "prompt_mismatch",
    "bad_role",
    "bad_order",
)
# Every row-level problem drops its row by default; the file as a whole is refused when it looks wrong
# (see `check_damage`). "raise" stops at the first problem; "keep" keeps rows that still form a valid pair.
DEFAULT_POLICY: dict[str, str] = dict.fromkeys(PROBLEMS, "drop")
KEEPABLE = ("tie", "duplicate")
ACTIONS = ("raise", "drop", "keep")
DEFAULT_MAX_BAD_FRACTION = 0.05  # the share of damaged rows above which a file is refused
FIRST_ROWS = 10  # a file whose first rows are all damaged is refused: the wrong file or format
EXAMPLES_PER_KIND = 3
AFTER_LOAD = ("too_long", "same_after_truncation", "eval_overlap")  # found after reading: at splitting and tokenizing


def resolve_policy(policy: str | dict[str, str] | None) -> dict[str, str]:
    """'default', 'raise', 'drop', or {kind: raise|drop|keep} over the defaults."""
    if policy in (None, "default"):
        return dict(DEFAULT_POLICY)
    if policy in ("raise", "drop"):
        return {k: str(policy) for k in PROBLEMS}
    if isinstance(policy, dict):
        unknown = set(policy) - set(PROBLEMS)
        bad = {f"{k}: {v}" for k, v in policy.items() if v not in ACTIONS or (v == "keep" and k not in KEEPABLE)}
        if unknown or bad:
            raise ValueError(
                f"data_policy: unknown kinds {sorted(unknown)} or actions {sorted(bad)}; "
                f"kinds are {', '.join(PROBLEMS)}; actions raise or drop (keep for "
                f"{' and '.join(KEEPABLE)})"
            )
        return {**DEFAULT_POLICY, **policy}
    raise ValueError(f"data_policy must be 'default', 'raise', 'drop' or a dict, got {policy!r}")


def guards_whole_file(policy: str | dict[str, str] | None) -> bool:
    """Whether the whole-file checks apply: under every policy except an explicit 'drop' (keep what is good)."""
    return policy != "drop"


@dataclass
class DataReport:
    """What reading and validating a source found: counts per problem kind and the first messages."""

    source: str
    format: str = "?"
    rows_read: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    kept_anyway: Counter = field(default_factory=Counter)
    first_problem: str | None = None  # the first malformed row's message
    policy: str = "default"
    special_text: int = 0  # pairs whose text spells a special token such as <|im_end|> (tokenized as plain text)
    special_text_example: str | None = None
    eval_side: DataReport | None = None  # the eval file's own report, when eval pairs come from another file

    def record(self, problem: RowProblem, policy: dict[str, str]) -> bool:
        """Raise or count one problem, by policy; True when the row is kept all the same ("keep")."""
        action = policy.get(problem.kind, "raise")
        if action == "raise":
            raise problem
        if action == "keep":
            self.kept_anyway[problem.kind] += 1
            return True
        self.dropped[problem.kind] += 1
        if problem.kind in DAMAGE:
            self.first_problem = self.first_problem or str(problem)
        if problem.kind in AFTER_LOAD and self.kept > 0:
            self.kept -= 1  # these pairs were counted as kept when the source was read
        self.examples.setdefault(problem.kind, [])
        if len(self.examples[problem.kind]) < EXAMPLES_PER_KIND:
            self.examples[problem.kind].append(str(problem))
        return False

    def count_special_text(self, example: str) -> None:
        """Count a pair whose text spells a special token: kept, and tokenized as plain text, not control tokens."""
        self.special_text += 1
        self.special_text_example = self.special_text_example or example

    @property
    def damaged(self) -> int:
        """Rows dropped as malformed (not filtered: ties, duplicates, margins, lengths)."""
        return sum(n for kind, n in self.dropped.items() if kind in DAMAGE)

    def lines(self) -> list[str]:
        """Human-readable lines for the CLI and notebooks."""
        out = [
            f"source: {self.source}",
            f"format: {self.format}",
            f"rows read: {self.rows_read}, pairs kept: {self.kept}, dropped: {sum(self.dropped.values())}",
        ]
        for kind, n in sorted(self.dropped.items()):
            out.append(f"  dropped {n} x {kind} ({PROBLEMS[kind]}), e.g. {self.examples[kind][0]}")
        for kind, n in sorted(self.kept_anyway.items()):
            out.append(f"  kept {n} x {kind} ({PROBLEMS[kind]}): data_policy keeps them")
        if self.special_text:
            out.append(
                f"  special-token text in {self.special_text} pairs, e.g. {self.special_text_example}: tokenized as "
                "plain text, so it cannot end or start a turn"
            )
        out.append(f"policy: {self.policy}")
        if self.eval_side is not None:
            out += [f"eval {line}" for line in self.eval_side.lines() if not line.startswith("policy: ")]
        return out


def _filter_problems(
    pair: PreferencePair,
    values: dict[str, Any],
    min_margin: float | None,
    seen: set[tuple[str, str, str]],
) -> Iterator[RowProblem]:
    """Problems of a well-formed pair that may still make it useless: a tie, a small margin, a repeat."""
    if values.get("status") == "tie" or (pair.score_chosen is not None and pair.score_chosen == pair.score_rejected):
        what = "status 'tie'" if values.get("status") == "tie" else f"both scored {pair.score_chosen:g}"
        yield RowProblem("tie", f"{pair.origin}: the raters found no preference ({what}), so the pair teaches nothing")
    if (
        min_margin is not None
        and pair.score_chosen is not None
        and pair.score_rejected is not None
        and pair.score_chosen - pair.score_rejected < min_margin
    ):
        yield RowProblem(
            "low_margin", f"{pair.origin}: score margin {pair.score_chosen - pair.score_rejected:g} < {min_margin:g}"
        )
    key = (pair.prompt, pair.chosen, pair.rejected)
    if key in seen:
        yield RowProblem("duplicate", f"{pair.origin}: the same prompt, chosen and rejected occur earlier")
    seen.add(key)


def describe_policy(policy: str | dict[str, str] | None, max_bad_fraction: float) -> str:
    """One line for the report: what happens to bad rows, and when the whole file is refused."""
    if policy == "raise":
        return "raise (the first problem stops the run)"
    if policy == "drop":
        return "drop (every problem drops its row; the file is refused only when no pair is left)"
    changed = "" if policy in (None, "default") else f" with {policy}"
    return (
        f"default{changed} (a problem drops its row and is counted; the file is refused when its first "
        f"{FIRST_ROWS} rows are all malformed or more than {max_bad_fraction:.0%} of its rows are)"
    )


def check_damage(report: DataReport, first_rows_damaged: bool, max_bad_fraction: float) -> None:
    """Refuse a source that looks wrong as a whole, naming the first problem and the counts by kind."""
    share = report.damaged / max(1, report.rows_read)
    if first_rows_damaged:
        why = f"its first {min(FIRST_ROWS, report.rows_read)} rows are all malformed"
    elif share > max_bad_fraction:
        why = (
            f"{report.damaged} of {report.rows_read} rows ({share:.1%}) are malformed, more than "
            f"max_bad_row_fraction={max_bad_fraction:g}"
        )
    else:
        return
    kinds = ", ".join(f"{kind} {n}" for kind, n in report.dropped.most_common() if kind in DAMAGE)
    raise DataSourceError(
        f"{report.source}: refused: {why}, so this looks like the wrong file or format "
        f"({report.format}) rather than a few quirky rows. First problem: {report.first_problem}. "
        f"By kind: {kinds}. To train on the good rows anyway use data_policy=drop "
        "(or raise max_bad_row_fraction)."
    )


def load_pairs(
    source: Any,
    *,
    format: str = "auto",
    column_map: dict[str, str] | None = None,
    policy: str | dict[str, str] | None = "default",
    split: str | None = None,
    min_score_margin: float | None = None,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
) -> tuple[list[PreferencePair], DataReport]:
    """Read, detect the format, normalize and validate: the pairs kept and the report.

    Row problems are raised, dropped or kept by `policy`; unless the policy is "drop", a source whose first
    rows are all malformed, or with more than `max_bad_fraction` malformed rows, is refused as a whole.
    """
    pol = resolve_policy(policy)
    label, rows = read_rows(source, split=split)
    report = DataReport(source=label, rows_read=len(rows), policy=describe_policy(policy, max_bad_fraction))
    good = [r for r in rows if r.values is not None]
    if not good:
        if not rows:
            raise DataSourceError(f"{label}: no rows")
        raise DataSourceError(
            f"{label}: none of its {len(rows)} rows is a record of named fields; "
            f"the first: {rows[0].problem[1] if rows[0].problem else '?'}"
        )
    report.format, cmap = _resolve_format(label, good, format, column_map)
    pairs: list[PreferencePair] = []
    seen: set[tuple[str, str, str]] = set()
    first_rows_damaged = True
    for index, row in enumerate(rows):
        damaged_before = report.damaged
        try:
            if row.problem is not None:
                raise RowProblem(*row.problem)
            pair = normalize_row(row.values or {}, report.format, row.where, cmap)
            if all(
                report.record(problem, pol)
                for problem in _filter_problems(pair, row.values or {}, min_score_margin, seen)
            ):
                pairs.append(pair)
        except RowProblem as problem:
            report.record(problem, pol)
        if index < FIRST_ROWS and report.damaged == damaged_before:
            first_rows_damaged = False
    report.kept = len(pairs)
    if guards_whole_file(policy):
        check_damage(report, first_rows_damaged, max_bad_fraction)
    if not pairs:
        raise DataSourceError(f"{label}: no usable pairs after validation: " + "; ".join(report.lines()[2:-1]))
    return pairs, report


def _resolve_format(
    label: str,
    good: list[RawRow],
    format: str,
    column_map: dict[str, str] | None,
) -> tuple[str, dict[str, str] | None]:
    """The format (detected from the first rows unless given) and, for mapped data, the column map."""
    columns = {k for r in good[:50] for k in (r.values or {})}
    try:
        if format == "auto":
            format = "mapped" if column_map else detect_format(columns, good[0].values or {})
        elif format not in FORMATS:
            raise ValueError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)} or auto")
        return format, (resolve_column_map(columns, column_map) if format == "mapped" else None)
    except ValueError as exc:
        raise DataSourceError(f"{label}: {exc}") from None


def split_train_eval(
    pairs: list[PreferencePair],
    eval_fraction: float,
    seed: int,
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Use the rows' own train/eval split when present, else hold out a seeded fraction of the prompts.

    Splitting by prompt means no eval prompt also occurs in training.
    """
    labels = {p.split for p in pairs}
    if labels != {None}:  # the rows carry their own split: every row must say train or eval
        unlabelled = [p for p in pairs if p.split not in ("train", "eval")]
        if unlabelled:
            first = unlabelled[0]
            raise ValueError(
                f"{len(unlabelled)} of {len(pairs)} pairs have no usable split label (train, or eval / test / "
                f"validation / dev), e.g. {first.origin}: split {first.split!r}; label every row, or none "
                "(then a seeded held-out fraction is the eval split)"
            )
        if labels == {"train", "eval"}:
            return [p for p in pairs if p.split == "train"], [p for p in pairs if p.split == "eval"]
    prompts = sorted({p.prompt for p in pairs})
    random.Random(seed).shuffle(prompts)
    held_out = {same_prompt_key(p) for p in prompts[: max(1, round(len(prompts) * eval_fraction))]}
    return (
        [p for p in pairs if same_prompt_key(p.prompt) not in held_out],
        [p for p in pairs if same_prompt_key(p.prompt) in held_out],
    )


def same_prompt_key(prompt: str) -> str:
    """A prompt as the leak check compares it: case and runs of whitespace do not make a prompt new."""
    return " ".join(prompt.casefold().split())


def drop_eval_overlap(
    train: list[PreferencePair],
    evals: list[PreferencePair],
    report: DataReport,
    policy: str | dict | None = "default",
) -> list[PreferencePair]:
    """Eval pairs whose prompt also occurs in training: raise or drop, by policy."""
    train_prompts, kept = {same_prompt_key(p.prompt) for p in train}, []
    pol = resolve_policy(policy)
    for pair in evals:
        if same_prompt_key(pair.prompt) in train_prompts:
            report.record(
                RowProblem(
                    "eval_overlap",
                    f"{pair.origin}: this eval prompt also occurs in the training "
                    "split, so it would measure memorization",
                ),
                pol,
            )
        else:
            kept.append(pair)
    return kept
