"""Preference data: read any source, detect its format, validate, split, tokenize, summarize."""

from .bias import RULES, RuleScore, bias_baseline_lines, bias_baselines, format_checks, rule_votes
from .formats import FORMATS, PreferencePair, RowProblem, detect_format, normalize_row
from .sources import DataSourceError, read_rows
from .stats import DataInspection, LengthStats, inspect_data, length_stats, skill_counts
from .tokenize import RenderedPair, TokenizedPair, render_ids, render_pairs, tokenize_pair, tokenize_pairs, truncate
from .validate import (
    DAMAGE,
    DEFAULT_MAX_BAD_FRACTION,
    DEFAULT_POLICY,
    PROBLEMS,
    DataReport,
    drop_eval_overlap,
    load_pairs,
    split_train_eval,
)


def load_preference_pairs(source, **kwargs) -> list[PreferencePair]:
    """Just the pairs of `load_pairs` (problems raised or dropped by the policy)."""
    return load_pairs(source, **kwargs)[0]


def pairs_from_rows(rows: list[dict], **kwargs) -> list[PreferencePair]:
    """Pairs from Python dicts (any supported format)."""
    return load_pairs(rows, **kwargs)[0]


__all__ = [
    "DAMAGE",
    "DEFAULT_MAX_BAD_FRACTION",
    "DEFAULT_POLICY",
    "FORMATS",
    "PROBLEMS",
    "RULES",
    "DataInspection",
    "DataReport",
    "DataSourceError",
    "LengthStats",
    "PreferencePair",
    "RenderedPair",
    "RowProblem",
    "RuleScore",
    "TokenizedPair",
    "bias_baseline_lines",
    "bias_baselines",
    "detect_format",
    "drop_eval_overlap",
    "format_checks",
    "inspect_data",
    "length_stats",
    "load_pairs",
    "load_preference_pairs",
    "normalize_row",
    "pairs_from_rows",
    "read_rows",
    "render_ids",
    "render_pairs",
    "rule_votes",
    "skill_counts",
    "split_train_eval",
    "tokenize_pair",
    "tokenize_pairs",
    "truncate",
]
