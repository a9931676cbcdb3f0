"""Workshop sizing for notebook 04: a step budget from measured step times, 16-bit compute per card, and time
estimates per GPU from a simple throughput model (estimates, not measurements)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import ORPOConfig


@dataclass(frozen=True)
class Card:
    """A GPU's peak dense 16-bit tensor-core throughput and its memory."""

    name: str
    tflops: float  # dense (without sparsity), bf16; fp16 on cards without bf16
    memory_gb: int
    bf16: bool


# Vendor figures, dense (the datasheets' headline numbers "with sparsity" are twice these):
#   T4        NVIDIA T4 datasheet: mixed precision FP16/FP32 65 TFLOPS, 16 GB; Turing has no bf16
#   A10       NVIDIA A10 datasheet: BF16 tensor core 125 TFLOPS (250 with sparsity), 24 GB
#   L4        NVIDIA L4 datasheet: BF16 tensor core 121 TFLOPS (242 with sparsity), 24 GB
#   RTX 4090  NVIDIA Ada Lovelace architecture whitepaper: BF16 tensor, FP32 accumulate, 165.2 TFLOPS, 24 GB
#   A100      NVIDIA A100 datasheet: BF16 tensor core 312 TFLOPS (624 with sparsity), 40 or 80 GB
CARDS: tuple[Card, ...] = (
    Card("T4", 65.0, 16, False),
    Card("A10", 125.0, 24, True),
    Card("L4", 121.0, 24, True),
    Card("RTX 4090", 165.2, 24, True),
    Card("A100", 312.0, 40, True),
)

# Mistral-7B-v0.1: its two bf16 safetensors shards hold 14,483,498,040 bytes, 2 bytes per parameter plus headers.
MISTRAL_7B_PARAMS = 7_241_732_096
# FLOPs per token and parameter: forward 2, backward through the frozen 4-bit weights 2 (input gradients only;
# the LoRA weights' gradients are negligible), the forward recomputed by gradient checkpointing 2.
TRAIN_FLOPS_PER_PARAM = 6
EVAL_FLOPS_PER_PARAM = 2  # forward only
# Assumed share of the card's peak that 4-bit QLoRA training reaches (dequantizing every weight before its matmul,
# small LoRA matmuls, a micro-batch of 2): an assumption, not a measurement.
QLORA_EFFICIENCY = 0.25


def workshop_steps(
    minutes: float,
    seconds_per_step: float,
    already_spent_s: float,
    steps_done: int,
    max_steps: int,
    reserve_s: float = 0.0,
) -> int:
    """The run's new max_steps: the steps done plus as many as fit in what is left of `minutes` (after
    `reserve_s` for the last evaluation and checkpoint), at least one more and at most `max_steps`."""
    if minutes <= 0 or seconds_per_step <= 0:
        raise ValueError(
            f"workshop minutes and seconds per step must be positive, got {minutes} and {seconds_per_step}; "
            "set WORKSHOP_MINUTES = None for the recipe's full max_steps"
        )
    left_s = minutes * 60 - already_spent_s - reserve_s
    fit = math.floor(left_s / seconds_per_step) if left_s > 0 else 0
    return min(max_steps, steps_done + max(1, fit))


def seconds_per_step(records: Sequence[Mapping[str, Any]], skip_first: int = 1, count: int = 4) -> float:
    """Median `step_time` of `count` logged training steps after the first `skip_first` (warm-up) ones."""
    times = [r["step_time"] for r in records if "step_time" in r and skip_first < r["step"] <= skip_first + count]
    if not times:
        raise ValueError(
            f"no step_time in the records of steps {skip_first + 1}-{skip_first + count}: train at least "
            f"{skip_first + 1} steps with logging_steps=1 first"
        )
    return float(statistics.median(times))


def workshop_overrides(cfg: ORPOConfig, minutes: float | None) -> dict[str, Any]:
    """For a time-boxed run: warm-up as a share of max_steps, so the schedule follows a max_steps changed on
    resume; {} for the full recipe (`minutes` None)."""
    if minutes is None or cfg.warmup_steps == 0:
        return {}
    return {"warmup_steps": 0, "warmup_ratio": cfg.warmup_steps / cfg.max_steps}


def precision_overrides(bf16_supported: bool) -> dict[str, str]:
    """16-bit compute for a GPU: bf16 where the card has it, else fp16 (T4, V100, free hosted GPUs)."""
    if bf16_supported:
        return {"mixed_precision": "bf16", "bnb_4bit_compute_dtype": "bfloat16"}
    return {"mixed_precision": "fp16", "bnb_4bit_compute_dtype": "float16"}


def gpu_precision_overrides(mixed_precision: str) -> dict[str, str]:
    """precision_overrides for this machine's GPU when a config computes in 16 bits; {} on CPU or in fp32."""
    import torch

    if mixed_precision == "no" or not torch.cuda.is_available():
        return {}
    return precision_overrides(torch.cuda.is_bf16_supported())


def tokens_per_second(card: Card, params: int, flops_per_param: int = TRAIN_FLOPS_PER_PARAM) -> float:
    """Estimated tokens per second: QLORA_EFFICIENCY of the card's peak over the FLOPs of one token."""
    return card.tflops * 1e12 * QLORA_EFFICIENCY / (flops_per_param * params)


def estimate_seconds(card: Card, params: int, train_tokens: float, eval_tokens: float = 0.0) -> float:
    """Estimated seconds to train on `train_tokens` and evaluate `eval_tokens` (forward only)."""
    train_s = train_tokens / tokens_per_second(card, params)
    return train_s + eval_tokens / tokens_per_second(card, params, EVAL_FLOPS_PER_PARAM)


@dataclass(frozen=True)
class Part:
    """A stretch of notebook 04: optimizer steps and held-out pairs evaluated."""

    name: str
    steps: int
    eval_pairs: int


def notebook_parts(cfg: ORPOConfig, interrupt_at: int, resume_steps: int, eval_pairs: int) -> list[Part]:
    """The GPU parts of notebook 04 for a recipe config: the interrupt and resume demos, the full recipe (whose
    evaluations count `eval_pairs` pairs when the config evaluates all of its held-out pairs)."""
    n_evals = math.ceil(cfg.max_steps / cfg.eval_steps) + 1  # before training, every eval_steps, at the end
    full_eval_pairs = cfg.max_eval_pairs if cfg.max_eval_pairs is not None else eval_pairs
    return [
        Part(f"train to step {interrupt_at} (eval first)", interrupt_at, eval_pairs),
        Part(f"resume demo ({resume_steps} steps, eval)", resume_steps, eval_pairs),
        Part(f"full recipe ({cfg.max_steps} steps)", cfg.max_steps, n_evals * full_eval_pairs),
    ]


def format_duration(seconds: float) -> str:
    """Rounded for a reader: '40 s', '12 min', '3.5 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_table(
    cfg: ORPOConfig, parts: Sequence[Part], workshop_minutes: float | None, params: int = MISTRAL_7B_PARAMS
) -> str:
    """Per card: seconds per step, each part's time, and the steps a workshop of `workshop_minutes` fits."""
    tokens_per_pair = 2 * cfg.max_length  # chosen and rejected rows, each counted at max_length (an upper bound)
    step_tokens = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * tokens_per_pair
    rows = [["", *(c.name for c in CARDS)], ["memory (GB)", *(str(c.memory_gb) for c in CARDS)]]
    rows.append(["16-bit compute", *("bf16" if c.bf16 else "fp16" for c in CARDS)])
    rows.append(["time per step", *(format_duration(step_tokens / tokens_per_second(c, params)) for c in CARDS)])
    for part in parts:
        cells = [
            estimate_seconds(c, params, part.steps * step_tokens, part.eval_pairs * tokens_per_pair) for c in CARDS
        ]
        rows.append([part.name, *(format_duration(s) for s in cells)])
    if workshop_minutes is not None:
        fits = [workshop_minutes * 60 * tokens_per_second(c, params) / step_tokens for c in CARDS]
        rows.append([f"steps in {workshop_minutes:g} min", *(f"{f:.0f}" for f in fits)])
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{r[0]:<{width}}  " + "  ".join(f"{cell:>9}" for cell in r[1:]) for r in rows)


def download_minutes(size_bytes: int, mbit_per_s: float) -> float:
    """Minutes to download `size_bytes` at a line speed of `mbit_per_s` megabits per second."""
    return size_bytes * 8 / (mbit_per_s * 1e6) / 60
