"""orpo_kit: ORPO (Odds Ratio Preference Optimization) that is exact, lean and easy to learn from."""

__version__ = "0.1.0"

from .config import ORPOConfig, resolve_config  # noqa: E402
from .loss import PairLogps, log1mexp, odds_ratio_terms, orpo_loss  # noqa: E402

__all__ = ["ORPOConfig", "PairLogps", "__version__", "log1mexp", "odds_ratio_terms", "orpo_loss", "resolve_config"]
