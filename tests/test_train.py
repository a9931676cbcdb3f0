"""End-to-end training on the tiny preset: learning, accumulation, callbacks, checkpoints, interrupts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from orpo_kit import checkpoint as ckpt
from orpo_kit.config import resolve_config
from orpo_kit.train import Trainer, TrainerCallback, read_metrics


def tiny(tmp_path: Path, **overrides) -> Trainer:
    """A Trainer on the tiny preset writing into tmp_path."""
    return Trainer(resolve_config("tiny", overrides={"output_dir": str(tmp_path / "run"), **overrides}))


def test_training_lowers_the_loss_and_raises_eval_reward_accuracy(tmp_path: Path) -> None:
    trainer = tiny(tmp_path)
    train_prompts = {tuple(p.prompt_ids) for p in trainer.train_data}
    assert len(trainer.eval_data) >= 32
    assert not any(tuple(p.prompt_ids) in train_prompts for p in trainer.eval_data)
    before = trainer.evaluate(trainer.train_data, prefix="train_")
    result = trainer.train()
    after = trainer.evaluate(trainer.train_data, prefix="train_")
    assert after["train_loss"] < before["train_loss"] - 1.0
    gain = result.eval_after["eval_rewards/accuracies"] - result.eval_before["eval_rewards/accuracies"]
    assert gain >= 0.10, (result.eval_before, result.eval_after)
    assert not result.interrupted and result.steps == trainer.cfg.max_steps


def test_metrics_file_and_callbacks(tmp_path: Path) -> None:
    seen: list[dict] = []

    class Recorder(TrainerCallback):
        def on_log(self, trainer, record):
            seen.append(record)

    trainer = Trainer(
        resolve_config(
            "tiny",
            overrides={
                "output_dir": str(tmp_path / "run"),
                "max_steps": 6,
                "logging_steps": 2,
                "eval_steps": 3,
                "save_steps": 3,
                "max_eval_pairs": 8,
            },
        ),
        callbacks=[Recorder()],
    )
    trainer.train()
    records = read_metrics(tmp_path / "run")
    assert records == seen
    assert [r["step"] for r in records] == [0, 2, 3, 4, 6]
    assert "eval_loss" in records[0] and "loss" not in records[0]
    for name in (
        "loss",
        "nll_loss",
        "log_odds_ratio",
        "log_odds_chosen",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
        "logits/chosen",
        "logits/rejected",
        "grad_norm",
        "learning_rate",
    ):
        assert name in records[1]
    assert "eval_rewards/accuracies" in records[2] and "eval_rewards/accuracies" in records[4]
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "run")] == ["step-000003", "step-000006"]


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.accelerator.unwrap_model(trainer.model).state_dict().items()}


def test_gradient_accumulation_matches_one_big_batch(tmp_path: Path) -> None:
    common = {"max_steps": 3, "save_steps": 100, "eval_steps": 100, "max_grad_norm": 1e9, "max_eval_pairs": 8}
    big = tiny(tmp_path / "a", per_device_train_batch_size=8, gradient_accumulation_steps=1, **common)
    small = tiny(tmp_path / "b", per_device_train_batch_size=4, gradient_accumulation_steps=2, **common)
    big.train()
    small.train()
    a, b = read_metrics(tmp_path / "a" / "run"), read_metrics(tmp_path / "b" / "run")
    assert a[-1]["loss"] == pytest.approx(b[-1]["loss"], rel=1e-5)
    for key, value in _weights(big).items():
        # atol 1e-5 (0.3% of one step at lr 3e-3): Adam divides by sqrt(v), so a weight whose gradient is near
        # zero turns float summation-order noise (two micro-batches vs one) into a visible difference
        torch.testing.assert_close(_weights(small)[key], value, rtol=1e-4, atol=1e-5)


def test_runs_are_deterministic(tmp_path: Path) -> None:
    overrides = {"max_steps": 5, "save_steps": 100, "max_eval_pairs": 16}
    tiny(tmp_path / "a", **overrides).train()
    tiny(tmp_path / "b", **overrides).train()
    strip = lambda rs: [{k: v for k, v in r.items() if k != "step_time"} for r in rs]
    assert strip(read_metrics(tmp_path / "a" / "run")) == strip(read_metrics(tmp_path / "b" / "run"))


def test_keyboard_interrupt_saves_a_checkpoint_and_returns(tmp_path: Path) -> None:
    class CtrlC(TrainerCallback):
        def on_log(self, trainer, record):
            if record["step"] == 4:
                raise KeyboardInterrupt  # what a notebook's "interrupt kernel" raises

    trainer = Trainer(
        resolve_config(
            "tiny",
            overrides={"output_dir": str(tmp_path / "run"), "logging_steps": 1, "save_steps": 100, "max_eval_pairs": 8},
        ),
        callbacks=[CtrlC()],
    )
    result = trainer.train()
    assert result.interrupted and result.steps == 4
    assert (
        result.last_checkpoint == ckpt.latest_checkpoint(tmp_path / "run") == ckpt.checkpoint_path(tmp_path / "run", 4)
    )
    state = json.loads((result.last_checkpoint / ckpt.STATE_FILE).read_text())
    assert state["step"] == 4


def test_a_crash_mid_save_leaves_no_checkpoint_that_looks_complete(tmp_path: Path) -> None:
    class DiskDiesHalfway(TrainerCallback):
        def on_checkpoint_weights_written(self, trainer: Trainer, folder: Path) -> None:
            if "000002" in folder.name:
                raise OSError("disk died halfway")

    cfg = resolve_config(
        "tiny",
        overrides={
            "output_dir": str(tmp_path / "run"),
            "max_steps": 2,
            "save_steps": 1,
            "eval_steps": 100,
            "max_eval_pairs": 8,
        },
    )
    trainer = Trainer(cfg, callbacks=[DiskDiesHalfway()])
    with pytest.raises(OSError, match="halfway"):
        trainer.train()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "run")] == ["step-000001"]
    # a write error in this process removes the partial copy (a kill -9 leaves it: tests/test_crash_safety.py)
    assert not (tmp_path / "run" / "checkpoints" / f".tmp-step-000002-{__import__('os').getpid()}").exists()


def test_lora_run_saves_only_the_adapter_and_resumes(tmp_path: Path) -> None:
    overrides = {
        "use_lora": True,
        "lora_r": 4,
        "max_steps": 4,
        "save_steps": 2,
        "learning_rate": 1e-3,
        "max_eval_pairs": 8,
    }
    result = tiny(tmp_path, stop_at_step=2, **overrides).train()
    folder = result.last_checkpoint / "model"
    assert (folder / "adapter_model.safetensors").is_file() and not (folder / "model.safetensors").exists()
    resumed = tiny(tmp_path, **overrides)
    out = resumed.train(resume=True)
    straight = tiny(tmp_path / "straight", **overrides).train()
    assert out.steps == 4
    assert out.final_train["loss"] == pytest.approx(straight.final_train["loss"], rel=1e-6)


def test_too_little_data_is_refused_before_training(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fewer than one optimizer step needs"):
        tiny(tmp_path, max_train_pairs=3)


def test_ctrl_c_during_an_update_finishes_logs_and_saves_that_step(tmp_path: Path) -> None:
    import os
    import signal

    trainer = tiny(tmp_path, logging_steps=1, save_steps=100, max_eval_pairs=8)
    real_step = trainer.optimizer.step

    def step_with_ctrl_c(*args, **kwargs):
        if trainer.step == 2:  # during the update that makes step 3
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(*args, **kwargs)

    trainer.optimizer.step = step_with_ctrl_c
    result = trainer.train()
    assert result.interrupted and result.steps == 3
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [0, 1, 2, 3]
    assert ckpt.latest_checkpoint(tmp_path / "run") == ckpt.checkpoint_path(tmp_path / "run", 3)
