"""orpo_kit: ORPO (Odds Ratio Preference Optimization) that is exact, lean and easy to learn from."""

import logging

__version__ = "0.1.0"

# bitsandbytes (imported by peft when installed) warns on every import on CPUs with AVX512-BF16 that the optional
# `kernels` package is missing; it then uses its own CPU kernel, which orpo_kit's tests check. Keep that quiet.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

from .config import ORPOConfig, resolve_config  # noqa: E402
from .loss import PairLogps, log1mexp, odds_ratio_terms, orpo_loss  # noqa: E402

__all__ = ["ORPOConfig", "PairLogps", "__version__", "log1mexp", "odds_ratio_terms", "orpo_loss", "resolve_config"]
