"""What training refuses or stops on, with the message: non-finite steps, sharded setups it cannot checkpoint,
and 4-bit layers that need the CPU repack guard."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import torch


def nonfinite_message(step: int, reports: list[tuple[int, list[str], list[str]]]) -> str:
    """Name the step and the rows: those whose loss was non-finite, else every row of the step."""
    bad = [(rank, rows) for rank, rows, _ in reports if rows]
    if bad:
        where = " | ".join(f"process {rank}: {'; '.join(rows)}" for rank, rows in bad)
        return f"non-finite loss at step {step} on rows [{where}]"
    rows = [row for _, _, step_rows in reports for row in step_rows]
    return f"non-finite gradient at step {step} (loss finite) from the batch's rows [{'; '.join(rows)}]"


SHARDED = ("FSDP", "DEEPSPEED")


# What `accelerate launch` puts in the environment of each process when its config asks for sharding
SHARDING_REQUESTS = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DEEPSPEED"}


def sharding_requested(environ: Mapping[str, str] | None = None) -> str | None:
    """The sharded setup the launch asked for (FSDP or DEEPSPEED), from accelerate's environment, or None."""
    env = os.environ if environ is None else environ
    for variable, name in SHARDING_REQUESTS.items():
        if env.get(variable, "").strip().lower() in ("1", "true", "yes"):
            return name
    return None


def refuse_sharded_training(distributed_type: Any, environ: Mapping[str, str] | None = None) -> None:
    """FSDP and DeepSpeed are refused until orpo_kit's checkpoints and step skipping handle sharded state; so is a
    launch that asked for one and got another setup (on a machine without GPUs accelerate runs an FSDP config as
    plain data parallel, silently: the user would believe the model sharded)."""
    name = getattr(distributed_type, "name", str(distributed_type))
    asked = sharding_requested(environ)
    if name in SHARDED:
        raise ValueError(
            f"accelerate is set up for {name}, which orpo-kit train does not support yet: its checkpoints would "
            "hold only the main process's shard of the optimizer state (and, under FSDP, of the weights), and "
            "DeepSpeed steps the optimizer inside backward, where a non-finite step cannot be skipped. Launch "
            "with orpo_kit/accelerate_configs/ddp.yaml (or --multi_gpu); LoRA / QLoRA keeps each copy small."
        )
    if asked is not None:
        raise ValueError(
            f"the launch asked for {asked} (its accelerate config), but accelerate set up {name}: nothing would be "
            f"sharded (on a machine without GPUs accelerate runs an {asked} config as plain data parallel). "
            f"orpo-kit train does not support {asked} yet; launch with orpo_kit/accelerate_configs/ddp.yaml (or "
            "--multi_gpu) for data parallel training"
        )


def guard_if_4bit(model: torch.nn.Module) -> None:
    """Models with bitsandbytes 4-bit layers get the CPU repack guard, however they were loaded."""
    if "bitsandbytes" in sys.modules:
        from .models.quantize import guard_4bit_layers

        guard_4bit_layers(model)


def weights_fingerprint(model: torch.nn.Module) -> torch.Tensor:
    """Sum and sum of squares (float64) of the trainable weights, one tensor at a time: frozen weights (a 4-bit
    base) cannot drift apart, and a float64 copy of all of them would cost four times the model."""
    total = None
    for p in model.parameters():
        if p.requires_grad:
            x = p.detach().double()
            part = torch.stack([x.sum(), (x * x).sum()])
            total = part if total is None else total + part
    device = next(model.parameters()).device
    return total if total is not None else torch.zeros(2, dtype=torch.float64, device=device)


def check_replicas_agree(model: torch.nn.Module, accelerator: Any, step: int) -> None:
    """Data-parallel copies of the weights must be identical and finite on every process before a save."""
    if not isinstance(model, torch.nn.parallel.DistributedDataParallel):  # one process, or sharded
        return
    every = accelerator.gather(weights_fingerprint(model).unsqueeze(0))  # [processes, 2]
    if not bool(torch.isfinite(every).all()):
        bad = [i for i, row in enumerate(every) if not bool(torch.isfinite(row).all())]
        raise FloatingPointError(f"step {step}: non-finite weights on process(es) {bad}; no checkpoint written")
    if not bool((every == every[0]).all()):
        raise RuntimeError(
            f"step {step}: the processes' copies of the weights differ (fingerprints {every.tolist()}); "
            "no checkpoint written"
        )


def nonfinite_on_any_process(
    accelerator: Any, bad_rows: list[str], grad_norm: Any, params: list[torch.Tensor]
) -> tuple[bool, bool]:
    """One decision for all processes: (any non-finite loss, any non-finite gradient).

    `grad_norm` is the clipped norm accelerate returns (it returns None only under DeepSpeed, which training
    refuses); `params` are checked one by one when there is no norm. Under fp16 a non-finite gradient with
    finite losses is the loss scaler's overflow, which the scaler handles itself.
    """
    if grad_norm is not None:
        grads_ok = bool(torch.isfinite(torch.as_tensor(grad_norm)))
    else:
        grads_ok = all(bool(torch.isfinite(p.grad).all()) for p in params if p.grad is not None)
    flags = torch.tensor([float(bool(bad_rows)), float(not grads_ok)], device=accelerator.device)
    bad_loss, bad_grads = (bool(x > 0) for x in accelerator.reduce(flags, reduction="max").tolist())
    return bad_loss, bad_grads
