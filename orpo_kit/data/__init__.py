"""Preference data: reading, splitting and tokenizing pairs."""

from .sources import PreferencePair, load_preference_pairs, pairs_from_rows, split_train_eval
from .tokenize import TokenizedPair, tokenize_pair, tokenize_pairs

__all__ = [
    "PreferencePair", "TokenizedPair", "load_preference_pairs", "pairs_from_rows", "split_train_eval",
    "tokenize_pair", "tokenize_pairs",
]
