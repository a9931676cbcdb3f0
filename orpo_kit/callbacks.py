"""Hooks into the trainer's events, for notebooks and tools (live plots, early stopping) and for tests that need
a failure at an exact point (orpo_kit.faults). Every method is optional."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .train import Trainer, TrainResult


class TrainerCallback:
    """Override the events you need; the defaults do nothing (and `on_loss` returns the loss unchanged)."""

    def on_train_begin(self, trainer: Trainer) -> None:
        """Called once the model, data and optimizer are ready."""

    def on_loss(self, trainer: Trainer, loss: torch.Tensor, micro_batch: int) -> torch.Tensor:
        """Called with each micro-batch's loss before backward; returns the loss to use (the same by default)."""
        return loss

    def on_log(self, trainer: Trainer, record: dict[str, float]) -> None:
        """Called with each record written to metrics.jsonl (main process only)."""

    def on_step_end(self, trainer: Trainer) -> None:
        """Called once an optimizer step is trained and logged, before its checkpoint (if any)."""

    def on_checkpoint_weights_written(self, trainer: Trainer, folder: Path) -> None:
        """Called halfway through writing a checkpoint: its weights are in `folder`, the trainer state is not."""

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None:
        """Called after the last step, checkpoint and evaluation (also after an interrupt)."""
