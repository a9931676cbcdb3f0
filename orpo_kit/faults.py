"""Test-only fault injection, driven by environment variables; inert unless one is set.

Crash-safety and numerical-guard tests need failures at exact points, not timing guesses:

- `ORPO_KIT_TEST_NAN_AT="STEP:RANK"` (several joined by commas): the first micro-batch loss of optimizer
  step STEP (counting from 1) on process RANK becomes NaN, as a corrupt batch or an overflow would make it;
  the NaN flows into the gradients (and, under DDP, into every process's gradients). `"STEP:RANK:value"`
  makes only the loss value NaN and leaves the gradients finite: then only that process can see the
  problem, which tests that the skip decision is shared.
- `ORPO_KIT_TEST_STOP_AT="save:STEP"`: the process stops itself with SIGSTOP halfway through writing the
  checkpoint of step STEP (after the weights, before the trainer state); `"step:STEP"` stops it once step
  STEP is trained and logged, before any checkpoint of that step. A test then kills it with SIGKILL.

Never set these outside tests.
"""

from __future__ import annotations

import os
import signal

import torch

NAN_AT = "ORPO_KIT_TEST_NAN_AT"
STOP_AT = "ORPO_KIT_TEST_STOP_AT"


def inject_nan(loss: torch.Tensor, step: int, rank: int) -> torch.Tensor:
    """The loss, made NaN when the test hook names optimizer step `step` (1-based) on process `rank`."""
    for item in os.environ.get(NAN_AT, "").split(","):
        at_step, _, rest = item.strip().partition(":")
        at_rank, _, mode = rest.partition(":")
        if at_step == str(step) and at_rank == str(rank):
            return loss + loss.detach() * float("nan") if mode == "value" else loss * float("nan")
    return loss


def stop_if_requested(point: str, step: int) -> None:
    """SIGSTOP this process when the test hook names this point ("save" or "step") and step."""
    if os.environ.get(STOP_AT, "").strip() == f"{point}:{step}":
        os.kill(os.getpid(), signal.SIGSTOP)
