"""Numerical guards and output checks in one process: skip non-finite steps up to a limit, then stop naming the
step and the rows; never save non-finite weights; refuse an unwritable output directory or a too-full disk."""

from __future__ import annotations

import shutil
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from orpo_kit import checkpoint as ckpt
from orpo_kit.config import ORPOConfig, resolve_config
from orpo_kit.faults import NAN_AT
from orpo_kit.train import Trainer, read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

FAST = {"save_steps": 1, "eval_steps": 100, "max_eval_pairs": 8, "logging_steps": 1, "device": "cpu"}


def tiny(tmp_path: Path, **overrides) -> Trainer:
    """A Trainer on the tiny preset writing into tmp_path/run."""
    return Trainer(resolve_config("tiny", overrides={"output_dir": str(tmp_path / "run"), **FAST, **overrides}))


def _saved(run: Path, step: int) -> dict[str, torch.Tensor]:
    """The weights of one checkpoint."""
    return load_file(ckpt.checkpoint_path(run, step) / "model" / "model.safetensors")


def test_nonfinite_loss_is_skipped_then_the_run_stops_naming_step_and_rows(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv(NAN_AT, "2:0,3:0")
    trainer = tiny(tmp_path, max_steps=4, max_skipped_steps=1)
    with pytest.raises(FloatingPointError) as caught:
        trainer.train()
    message = str(caught.value)
    rows = [trainer.train_data[i].origin for i in trainer.micro_batches(2)[0]]  # step 3's batch
    assert "non-finite loss at step 3" in message and "max_skipped_steps=1" in message, message
    assert all(row in message for row in rows), (rows, message)
    assert "non-finite loss at step 2" in capsys.readouterr().err  # the skipped step's warning

    run = tmp_path / "run"
    records = {r["step"]: r for r in read_metrics(run)}
    assert set(records[2]) == {"step", "skipped_step", "skipped_steps", "learning_rate", "step_time"}, records[2]
    assert records[2]["skipped_step"] == records[2]["skipped_steps"] == 1
    assert 3 not in records and [p.name for p in ckpt.list_checkpoints(run)] == ["step-000001", "step-000002"]
    step1, step2 = _saved(run, 1), _saved(run, 2)
    for name, tensor in step2.items():
        assert bool(torch.isfinite(tensor).all()), name
        assert torch.equal(tensor, step1[name]), f"{name} changed in a skipped step"


def test_nonfinite_gradient_with_finite_loss_is_skipped(tmp_path: Path, capsys) -> None:
    trainer = tiny(tmp_path, max_steps=2, save_steps=100)
    weight = trainer.accelerator.unwrap_model(trainer.model).model.embed_tokens.weight
    weight.register_hook(lambda grad: grad * float("inf") if trainer.step == 0 else grad)
    result = trainer.train()
    assert "non-finite gradient at step 1 (loss finite)" in capsys.readouterr().err
    assert trainer.skipped_steps == 1 and result.steps == 2
    assert [r.get("skipped_step") for r in read_metrics(tmp_path / "run") if r["step"] > 0] == [1, None]
    assert all(bool(torch.isfinite(t).all()) for t in _saved(tmp_path / "run", 2).values())


def test_nonfinite_weights_are_never_saved(tmp_path: Path) -> None:
    trainer = tiny(tmp_path, max_steps=1)
    with torch.no_grad():
        trainer.accelerator.unwrap_model(trainer.model).lm_head.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="lm_head.weight"):
        trainer.save()
    assert ckpt.list_checkpoints(tmp_path / "run") == []


def test_too_little_free_disk_is_refused_before_training(tmp_path: Path, monkeypatch) -> None:
    usage = namedtuple("usage", "total used free")
    estimates: list[int] = []
    real_estimate = ckpt.estimate_checkpoint_bytes
    monkeypatch.setattr(
        ckpt, "estimate_checkpoint_bytes", lambda model: estimates.append(real_estimate(model)) or estimates[-1]
    )
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2 * estimates[-1], 0, estimates[-1] - 1))
    with pytest.raises(OSError, match="one checkpoint needs"):
        tiny(tmp_path, max_steps=1)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2 * estimates[-1], 0, estimates[-1]))
    tiny(tmp_path, max_steps=1)  # exactly enough: accepted
    assert len(estimates) == 2 and estimates[0] > 0


def test_checkpoint_size_estimate_counts_weights_and_adam_state(tmp_path: Path) -> None:
    trainer = tiny(tmp_path, max_steps=1)
    model = trainer.accelerator.unwrap_model(trainer.model)
    trainer.train()  # one step, so the checkpoint holds AdamW's moments
    on_disk = sum(
        p.stat().st_size
        for p in ckpt.checkpoint_path(tmp_path / "run", 1).rglob("*")
        if p.suffix in (".safetensors", ".pt")
    )
    estimate = ckpt.estimate_checkpoint_bytes(model)
    assert estimate == 3 * sum(p.numel() * p.element_size() for p in model.parameters())
    assert 0.9 * on_disk <= estimate <= 1.1 * on_disk, (estimate, on_disk)


def test_unwritable_output_dir_is_refused_at_once(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(PermissionError, match="a-file/run is not writable"):
        Trainer(ORPOConfig(output_dir=str(blocker / "run")))


def test_max_skipped_steps_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="max_skipped_steps"):
        ORPOConfig(max_skipped_steps=-1)


def test_the_replica_check_reads_trainable_weights_one_at_a_time() -> None:
    """Before a save under DDP the copies are compared by a float64 fingerprint of the trainable weights only, made
    one tensor at a time: a float64 copy of every weight (a 4-bit 7B base included) would not fit next to it."""
    import socket

    import torch.distributed as dist
    from torch.overrides import TorchFunctionMode

    from orpo_kit.guards import check_replicas_agree
    from orpo_kit.models.load import apply_lora, build_tiny_model

    class Float64Copies(TorchFunctionMode):
        """Record the size of every float64 copy made while active."""

        def __init__(self) -> None:
            super().__init__()
            self.sizes: list[int] = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is torch.Tensor.double:
                self.sizes.append(out.numel())
            return out

    model = apply_lora(build_tiny_model(), ORPOConfig(use_lora=True, lora_r=4))
    trainable = [p.numel() for p in model.parameters() if p.requires_grad]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
        copies = Float64Copies()
        with copies:
            check_replicas_agree(wrapped, namedtuple("OneProcess", "gather")(lambda t: t), step=1)
    finally:
        dist.destroy_process_group()
    assert sorted(copies.sizes) == sorted(trainable), "only trainable weights, each copied on its own"
