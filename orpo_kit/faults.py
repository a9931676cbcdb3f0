"""Faults at exact points, for tests of crash safety and numerical guards: trainer callbacks, never timing guesses.

In-process tests pass these callbacks to the `Trainer`. Tests that run training in another process (the CLI,
`accelerate launch`) name them in environment variables, which the Trainer reads once when it is built
(`from_environment`); nothing reads the environment during training, and with neither variable set there is
no fault callback at all:

- `ORPO_KIT_TEST_NAN_AT="STEP:RANK"` (several joined by commas): the first micro-batch loss of optimizer step
  STEP (counting from 1) on process RANK becomes NaN, as a corrupt batch or an overflow would make it; the NaN
  flows into the gradients (and, under DDP, every process's gradients). `"STEP:RANK:value"` makes only the loss
  value NaN and leaves the gradients finite: then only that process can see the problem.
- `ORPO_KIT_TEST_STOP_AT="save:STEP"`: the process stops itself with SIGSTOP halfway through writing the
  checkpoint of step STEP (after the weights, before the trainer state); `"step:STEP"` stops it once step STEP
  is trained and logged, before any checkpoint of that step. A test then kills it with SIGKILL.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .callbacks import TrainerCallback

if TYPE_CHECKING:
    from .train import Trainer

NAN_AT = "ORPO_KIT_TEST_NAN_AT"
STOP_AT = "ORPO_KIT_TEST_STOP_AT"


@dataclass(frozen=True)
class NanAt:
    """Where a NaN goes: optimizer step (1-based), process rank, and whether only the value (not the graph)."""

    step: int
    rank: int
    value_only: bool = False


class NanLoss(TrainerCallback):
    """Make the first micro-batch loss NaN at the given steps and ranks."""

    def __init__(self, points: list[NanAt]) -> None:
        self.points = points

    def on_loss(self, trainer: Trainer, loss: torch.Tensor, micro_batch: int) -> torch.Tensor:
        """NaN in the graph (gradients NaN too), or in the value only (gradients stay finite)."""
        here = NanAt(trainer.step + 1, trainer.accelerator.process_index, False)
        for point in self.points:
            if micro_batch == 0 and (point.step, point.rank) == (here.step, here.rank):
                return loss + loss.detach() * float("nan") if point.value_only else loss * float("nan")
        return loss


class StopProcess(TrainerCallback):
    """SIGSTOP this process at a point ("save" halfway through a checkpoint, or "step" after a step) of a step."""

    def __init__(self, point: str, step: int) -> None:
        if point not in ("save", "step"):
            raise ValueError(f"{STOP_AT}: the point must be save or step, got {point!r}")
        self.point, self.step = point, step

    def on_step_end(self, trainer: Trainer) -> None:
        """A kill -9 between checkpoints."""
        if self.point == "step" and trainer.step == self.step:
            os.kill(os.getpid(), signal.SIGSTOP)

    def on_checkpoint_weights_written(self, trainer: Trainer, folder: Path) -> None:
        """A kill -9 halfway through a checkpoint's write."""
        if self.point == "save" and trainer.step == self.step:
            os.kill(os.getpid(), signal.SIGSTOP)


def from_environment(env: Mapping[str, str] = os.environ) -> list[TrainerCallback]:
    """The fault callbacks the test variables name (none when they are unset)."""
    found: list[TrainerCallback] = []
    if env.get(NAN_AT, "").strip():
        points = []
        for item in env[NAN_AT].split(","):
            step, _, rest = item.strip().partition(":")
            rank, _, mode = rest.partition(":")
            points.append(NanAt(int(step), int(rank), mode == "value"))
        found.append(NanLoss(points))
    if env.get(STOP_AT, "").strip():
        point, _, step = env[STOP_AT].strip().partition(":")
        found.append(StopProcess(point, int(step)))
    return found
