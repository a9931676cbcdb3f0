"""Hub names on an offline machine: a clear message, not a stack of network errors."""

from __future__ import annotations

import os
import subprocess
import sys

OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orpo_kit", *args], capture_output=True, text=True, env=OFFLINE, timeout=120
    )


def test_uncached_hub_dataset_offline_says_what_to_do() -> None:
    out = _run("inspect-data", "nobody-here/no-such-preference-data", "--tokenizer", "none")
    assert out.returncode == 2
    assert "could not load dataset 'nobody-here/no-such-preference-data'" in out.stderr
    assert "offline" in out.stderr and "local file" in out.stderr


def test_uncached_hub_model_offline_says_what_to_do() -> None:
    out = _run("train", "--preset", "tiny", "model_name_or_path=nobody-here/no-such-model", "--max-steps", "1")
    assert out.returncode == 2
    assert "could not load 'nobody-here/no-such-model'" in out.stderr and "offline" in out.stderr
