"""Training paths that only a GPU takes, on CPU stand-ins: the fp16 loss scaler, resuming on other devices,
and row widths padded for the CUDA allocator."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from orpo_kit import checkpoint as ckpt
from orpo_kit.callbacks import TrainerCallback
from orpo_kit.config import resolve_config
from orpo_kit.layouts import PairBatch
from orpo_kit.scoring import scoring_batches
from orpo_kit.train import Trainer, read_metrics


def tiny(tmp_path: Path, **overrides) -> Trainer:
    """A Trainer on the tiny preset writing into tmp_path (no mixed precision: the scaler is added by hand)."""
    settings = {"output_dir": str(tmp_path / "run"), "mixed_precision": "no", **overrides}
    return Trainer(resolve_config("tiny", overrides=settings))


def with_loss_scaler(trainer: Trainer, monkeypatch: pytest.MonkeyPatch, **scaler_args: float) -> torch.amp.GradScaler:
    """Give the trainer the GradScaler accelerate builds for fp16 on a GPU (it builds none on CPU).

    Autocast stays off: the scaler's handling of overflow is what is under test, not fp16 arithmetic.
    """
    scaler = torch.amp.GradScaler("cpu", **scaler_args)
    acc = trainer.accelerator
    monkeypatch.setattr(acc, "scaler", scaler)
    monkeypatch.setattr(acc, "native_amp", True)
    monkeypatch.setattr(Accelerator, "mixed_precision", property(lambda self: "fp16"))
    monkeypatch.setattr(acc, "autocast", lambda *args, **kwargs: contextlib.nullcontext())
    trainer.optimizer.__init__(trainer.optimizer.optimizer, device_placement=False, scaler=scaler)  # as prepare()
    return scaler


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    """A copy of the trainable weights."""
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """True when every tensor is equal."""
    return all(torch.equal(a[k], b[k]) for k in a)


# a first scale that overflows float32 (loss × 2^127 > 3.4e38); one back-off brings it to 2^27
OVERFLOWING = {"init_scale": 2.0**127, "backoff_factor": 2.0**-100, "growth_interval": 1000}


def test_an_fp16_overflow_lowers_the_loss_scale_and_training_goes_on(tmp_path: Path, monkeypatch) -> None:
    trainer = tiny(tmp_path, max_skipped_steps=0)
    scaler = with_loss_scaler(trainer, monkeypatch, **OVERFLOWING)
    start = weights(trainer)
    first = trainer.train_step()  # overflow: the scaler drops the update; not a skipped step
    assert scaler.get_scale() == 2.0**27
    assert trainer.step == 1 and trainer.skipped_steps == 0 and trainer.overflow_steps == 1
    assert first["overflow_steps"] == 1 and math.isfinite(first["loss"]) and "grad_norm" not in first
    assert same(start, weights(trainer))
    second = trainer.train_step()  # used to fail: "unscale_() has already been called on this optimizer"
    assert math.isfinite(second["grad_norm"]) and second["loss_scale"] == 2.0**27
    assert trainer.overflow_steps == 1 and trainer.skipped_steps == 0
    assert not same(start, weights(trainer))


class NanLossOnce(TrainerCallback):
    """A non-finite loss on the first step's first micro-batch: a bad row, not an overflow."""

    def on_loss(self, trainer: Trainer, loss: torch.Tensor, micro_batch: int) -> torch.Tensor:
        return loss * float("nan") if trainer.step == 0 and micro_batch == 0 else loss


def test_under_fp16_a_nonfinite_loss_is_still_a_skipped_step_and_the_scaler_recovers(
    tmp_path: Path, monkeypatch
) -> None:
    trainer = tiny(tmp_path, max_skipped_steps=1)
    trainer.callbacks = [NanLossOnce()]
    with_loss_scaler(trainer, monkeypatch, init_scale=2.0**10)
    start = weights(trainer)
    first = trainer.train_step()
    assert first["skipped_step"] == 1 and trainer.skipped_steps == 1 and same(start, weights(trainer))
    second = trainer.train_step()  # the scaler was updated after the skip: this step trains
    assert math.isfinite(second["grad_norm"]) and not same(start, weights(trainer))


def test_the_loss_scale_is_saved_and_resumed_with_the_run(tmp_path: Path, monkeypatch) -> None:
    trainer = tiny(tmp_path, max_steps=2, save_steps=2, eval_steps=2)
    scaler = with_loss_scaler(trainer, monkeypatch, **OVERFLOWING)
    trainer.train()
    state = json.loads((ckpt.latest_checkpoint(tmp_path / "run") / ckpt.STATE_FILE).read_text())
    assert state["overflow_steps"] == 1 and state["grad_scaler"]["scale"] == scaler.get_scale() == 2.0**27
    logged = [r for r in read_metrics(tmp_path / "run") if "loss_scale" in r]
    assert [r["loss_scale"] for r in logged][-1] == 2.0**27
    again = tiny(tmp_path, max_steps=3, save_steps=3, eval_steps=3)
    resumed = with_loss_scaler(again, monkeypatch, init_scale=2.0**16)
    again.train(resume=True)
    assert again.overflow_steps == 1 and resumed.get_scale() == 2.0**27


def test_a_checkpoint_saved_from_a_gpu_resumes_where_that_gpu_is_missing(tmp_path: Path, monkeypatch) -> None:
    trainer = tiny(tmp_path, max_steps=2, save_steps=2, eval_steps=2)
    with monkeypatch.context() as gpu:  # every tensor torch.save writes is tagged as living on cuda:0
        gpu.setattr(torch.serialization, "_package_registry", list(torch.serialization._package_registry))
        torch.serialization.register_package(1, lambda obj: "cuda:0" if obj.device.type == "cpu" else None, _keep)
        trainer.train()
    saved = ckpt.latest_checkpoint(tmp_path / "run")
    with pytest.raises(RuntimeError, match="CUDA"):  # what a plain torch.load does with these files here
        torch.load(saved / "optimizer.pt", weights_only=True)
    again = tiny(tmp_path, max_steps=3, save_steps=3, eval_steps=3)
    assert again.train(resume=True).steps == 3


def _keep(obj: object, location: str) -> None:
    """Deserializer of the fake GPU tag: none (loading falls through to the real ones)."""
    return None


class FakeGpus:
    """torch.cuda's generator functions on a machine with `count` GPUs, this process on `current`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, count: int, current: int) -> None:
        self.count, self.current = count, current
        self.states = {i: torch.full((16,), i, dtype=torch.uint8) for i in range(count)}
        for module in (torch.cuda, torch.cuda.random):
            for name, fake in [
                ("is_available", lambda: True),
                ("device_count", lambda: self.count),
                ("current_device", lambda: self.current),
                ("get_rng_state", self.get),
                ("set_rng_state", self.set),
            ]:
                monkeypatch.setattr(module, name, fake, raising=False)

    def _index(self, device: int | str | torch.device) -> int:
        index = device if isinstance(device, int) else torch.device(device).index
        index = self.current if index is None else index
        if index >= self.count:
            raise RuntimeError("CUDA error: invalid device ordinal")
        return index

    def get(self, device: int | str | torch.device = "cuda") -> torch.Tensor:
        return self.states[self._index(device)].clone()

    def set(self, state: torch.Tensor, device: int | str | torch.device = "cuda") -> None:
        self.states[self._index(device)] = state.clone()


def test_each_process_resumes_its_own_gpu_generator_on_a_machine_with_fewer_gpus(tmp_path: Path, monkeypatch) -> None:
    trainer = tiny(tmp_path)
    trainer.train_step()
    with monkeypatch.context() as m:
        FakeGpus(m, count=4, current=2)  # saved by the process on cuda:2 of four
        path = trainer.save()
    with monkeypatch.context() as m:
        one = FakeGpus(m, count=1, current=0)
        ckpt.load_trainer_state(path, trainer.optimizer, trainer.scheduler)
        assert one.states[0].tolist() == [2] * 16  # cuda:2's generator, now on this process's only GPU


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_rows_are_padded_to_a_multiple_of_64_tokens_on_a_gpu_only(tmp_path: Path, monkeypatch, device: str) -> None:
    trainer = tiny(tmp_path)
    monkeypatch.setattr(Accelerator, "device", property(lambda self: torch.device(device)))
    monkeypatch.setattr(PairBatch, "to", lambda self, device: self)  # the tensors stay here
    batches = [trainer._collate(trainer.train_data[start : start + 8]) for start in range(0, 40, 8)]
    batches += [batch for _, batch in scoring_batches(trainer.model, trainer.eval_data[:16], 8, trainer._collate)]
    widths = {batch.input_ids.shape[1] for batch in batches}
    if device == "cuda":
        assert all(w % 64 == 0 for w in widths), widths
    else:
        assert any(w % 64 for w in widths), widths  # on a CPU, padding only costs: rows stay as long as needed
