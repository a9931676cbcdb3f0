"""Helpers every notebook opens with: the smoke switch, seeds, and a versions table."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import random

SMOKE_ENV = "ORPO_KIT_SMOKE"  # one switch for the whole project: "1" shrinks sizes, never skips cells
PACKAGES = (
    "orpo_kit",
    "torch",
    "transformers",
    "accelerate",
    "peft",
    "datasets",
    "bitsandbytes",
    "matplotlib",
    "ipywidgets",
)


def smoke() -> bool:
    """Whether notebooks run in smoke mode (set by the test configuration: notebooks/conftest.py)."""
    return os.environ.get(SMOKE_ENV, "0") not in ("", "0", "false", "False")


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) for reproducible cells."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def versions() -> dict[str, str]:
    """Installed versions of the packages the notebooks rely on (and Python's)."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def print_versions() -> None:
    """One line per package: what a reader needs to reproduce the notebook."""
    for name, version in versions().items():
        print(f"{name:13s} {version}")
    print(f"{'smoke mode':13s} {smoke()}")
