"""The 4-bit Mistral-7B recipe at its full shape on a CPU: random weights (`random_weights=true`), everything else
as on a GPU. Slow (30-45 minutes on 2 cores: three model loads of ~11 minutes each, the weights made and
quantized one at a time; ~8.4 GiB peak RSS): `pytest -m slow tests/test_mistral_shape.py -s` prints the report
(wall time per phase, peak RSS, the memory estimates)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from orpo_kit import checkpoint as ckpt
from orpo_kit.config import resolve_config
from orpo_kit.train import read_metrics

pytestmark = pytest.mark.slow

ORPO_KIT = str(Path(sys.executable).with_name("orpo-kit"))
RECIPE = [
    "--preset",
    "mistral-7b-qlora",
    "random_weights=true",
    "max_steps=2",
    "max_length=128",
    "per_device_train_batch_size=1",
    "gradient_accumulation_steps=1",
    "eval_steps=1",
    "max_eval_pairs=2",
    "save_steps=1",
    "data=builtin",
]
PEAK_LIMIT_GIB = 20.0
TIMEOUT = 3600


def _train(run: Path, *extra: str) -> str:
    """One `orpo-kit train` process of the recipe; its stdout."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_MININTERVAL": "30"}
    done = subprocess.run(
        [ORPO_KIT, "train", *RECIPE, "--output-dir", str(run), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    print(done.stdout)
    return done.stdout


def _peak_gib(stdout: str) -> float:
    """The peak RSS the command printed."""
    found = re.search(r"peak RSS\s+: ([\d.]+) GiB", stdout)
    assert found, stdout
    return float(found.group(1))


def _estimates(cfg) -> dict[str, float]:
    """The estimator's figures (GiB): this CPU run (49,152-token vocabulary, ChatML already in it) and the real
    recipe on a GPU (Mistral's own 32,000 tokens plus ChatML)."""
    from orpo_kit.memory.estimate import estimate_memory
    from orpo_kit.models.random_weights import model_config

    # the ChatML rows train (as in the run); the estimator then also counts 64 spare rows, a slight overestimate
    cpu = estimate_memory(cfg, model_config(cfg.model_name_or_path, 49152), device="cpu", new_tokens=2)
    real = resolve_config("mistral-7b-qlora")
    gpu = estimate_memory(real, device="cuda")
    return {"cpu": cpu.total / 2**30, "gpu_recipe": gpu.total / 2**30}


def test_mistral_7b_qlora_recipe_at_full_shape(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = _train(run)
    assert "random_weights: mistralai/Mistral-7B-v0.1 at full shape" in first
    evals = {r["step"]: r["eval_loss"] for r in read_metrics(run) if "eval_loss" in r}
    assert sorted(evals) == [0, 1, 2], evals  # before the first step and after each
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step-000001", "step-000002"]
    saved = sorted(p.name for p in (ckpt.checkpoint_path(run, 2) / "model").iterdir())
    assert "adapter_model.safetensors" in saved and "tokenizer.json" in saved, saved
    peak = _peak_gib(first)
    assert peak < PEAK_LIMIT_GIB

    resumed = _train(run, "--resume", "max_steps=3")
    assert f"resuming from {ckpt.checkpoint_path(run, 2)} (step 2)" in resumed
    records = read_metrics(run)
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]
    evals = {r["step"]: r["eval_loss"] for r in records if "eval_loss" in r}

    from orpo_kit.runs import load_run
    from orpo_kit.train import Trainer

    loaded = load_run(run, "latest")
    assert loaded.checkpoint == ckpt.checkpoint_path(run, 3)
    cfg = loaded.cfg.replace(output_dir=str(tmp_path / "reload"))
    again = Trainer(cfg, model=loaded.model, tokenizer=loaded.tokenizer).evaluate()["eval_loss"]
    assert again == pytest.approx(evals[3], rel=1e-4), (again, evals[3])

    estimates = _estimates(resolve_config("mistral-7b-qlora", overrides=dict(a.split("=") for a in RECIPE[2:])))
    report = {"peak_rss_gib": peak, **{f"estimate_{k}_gib": v for k, v in estimates.items()}, "eval_loss": evals}
    print(json.dumps(report, indent=2))
    assert abs(estimates["cpu"] - peak) / peak <= 0.25, report
