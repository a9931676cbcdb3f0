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


def test_a_gated_model_says_how_to_get_access(tmp_path, monkeypatch, capsys) -> None:
    """The hub's refusal of a gated model (as transformers words it) is named as such, with the steps, never as
    'this machine may be offline'."""
    import transformers

    from orpo_kit.cli import main

    def gated(name, *args, **kwargs):
        raise OSError(
            "You are trying to access a gated repo.\nMake sure to have access to it at "
            f"https://huggingface.co/{name}.\n401 Client Error. Access to model {name} is restricted."
        )

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", gated)
    run = str(tmp_path / "run")  # mixed_precision=no: this process may hold an Accelerator from other tests
    args = ["train", "--preset", "mistral-7b-qlora", "data=builtin", "mixed_precision=no", "--output-dir", run]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("orpo-kit train: error: could not load 'mistralai/Mistral-7B-v0.1': the model is gated")
    assert "accept its conditions" in err and "hf auth login" in err and "offline" not in err and "\n" not in err
