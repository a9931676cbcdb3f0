"""The parameters' share of the peak: base weights as stored, trainable parameters, their gradients and AdamW."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import ORPOConfig
from .calibration import DOUBLE_QUANT_BLOCKSIZE, NF4_BLOCKSIZE
from .report import format_bytes, format_count
from .shapes import ModelShape, ParamCounts, lora_targets


@dataclass
class Trainables:
    """Trainable parameters and what they cost (bytes)."""

    count: int
    adapters: int  # LoRA adapters + new-token rows (0 for full fine-tuning)
    gradients: int
    optimizer: int
    gradients_at_peak: int
    optimizer_step_temp: int
    per_layer_targets: int


def weight_bytes(
    cfg: ORPOConfig,
    shape: ModelShape,
    counts: ParamCounts,
    amp: bool,
    details: dict[str, str],
    notes: list[str],
    device: str = "cpu",
) -> float:
    """Base weights as stored (fp32, 16-bit for a LoRA base on a GPU, or NF4 + constants), + autocast's 16-bit
    copies under mixed precision."""
    from ..models.load import base_weights_dtype

    if not cfg.load_in_4bit and base_weights_dtype(cfg, torch.device(device)) != torch.float32:
        details["weights"] = (
            f"{format_count(counts.total)} params in {cfg.mixed_precision} (a frozen LoRA base on a GPU loads in "
            "the compute dtype; autocast needs no copies)"
        )
        return counts.total * 2
    if cfg.load_in_4bit:
        constants = (
            1 / NF4_BLOCKSIZE + 4 / (NF4_BLOCKSIZE * DOUBLE_QUANT_BLOCKSIZE)
            if cfg.bnb_4bit_use_double_quant
            else 4 / NF4_BLOCKSIZE
        )
        per_weight = 0.5 + constants
        weights = counts.linear_weights * per_weight + counts.not_quantized * 4
        details["weights"] = (
            f"{format_count(counts.linear_weights)} Linear weights in NF4 at {per_weight:.4f} B "
            f"+ {format_count(counts.not_quantized)} others in fp32"
        )
        blocks = (
            f"1/{NF4_BLOCKSIZE} (8-bit absmax per {NF4_BLOCKSIZE}-weight block, double quant) + "
            f"4/({NF4_BLOCKSIZE}*{DOUBLE_QUANT_BLOCKSIZE}) (an fp32 scale per {DOUBLE_QUANT_BLOCKSIZE} blocks)"
            if cfg.bnb_4bit_use_double_quant
            else f"4/{NF4_BLOCKSIZE} (fp32 absmax per block)"
        )
        notes.append(
            f"4-bit: {per_weight:.4f} byte/weight = 0.5 (two NF4 codes per byte) + {blocks}; embeddings, "
            "lm_head, norms stay floating point and peft's prepare_model_for_kbit_training casts them to fp32"
        )
    else:
        weights = counts.total * 4
        details["weights"] = (
            f"{format_count(counts.total)} params in fp32 (orpo_kit loads fp32; AMP keeps fp32 masters)"
        )
    if amp:  # autocast casts each matmul weight to 16 bit per forward; the copy is saved for backward
        matmul_params = counts.embedding if shape.tied_embeddings else counts.lm_head
        if not cfg.load_in_4bit:
            matmul_params += counts.linear_weights
        weights += matmul_params * 2
        details["weights"] += f" + {format_bytes(matmul_params * 2)} 16-bit autocast copies"
        notes.append(
            "mixed precision: autocast's 16-bit copies of the fp32 matmul weights"
            + (" (lm_head; 4-bit layers dequantize themselves)" if cfg.load_in_4bit else "")
            + " live until backward"
        )
    return weights


def trainable_bytes(
    cfg: ORPOConfig,
    shape: ModelShape,
    shape_v: ModelShape,
    counts: ParamCounts,
    added: int,
    dev: str,
    details: dict[str, str],
) -> Trainables:
    """Trainable parameters, their gradients, AdamW's state and the optimizer step's temporary."""
    lora = bool(cfg.use_lora or cfg.load_in_4bit)
    if lora:
        targets = lora_targets(shape_v, cfg.lora_target_modules)
        n_lora = sum(cfg.lora_r * (i + o) for _, i, o in targets)
        n_tok = added * shape.hidden_size * (1 if shape.tied_embeddings else 2) if added else 0
        n_train, adapters = n_lora + n_tok, (n_lora + n_tok) * 4
        head_trainable = sum(cfg.lora_r * (i + o) for name, i, o in targets if name == "lm_head")
        per_layer_targets = len({n.rsplit(".", 1)[-1] for n, _, _ in targets if n != "lm_head"})
        details["trainable"] = f"LoRA r={cfg.lora_r} on {len(targets)} Linear layers: {format_count(n_lora)} fp32" + (
            f" + {n_tok:,} new-token rows" if n_tok else ""
        )
        sizes = [cfg.lora_r * max(i, o) for _, i, o in targets]
    else:
        n_train, adapters, per_layer_targets = counts.total, 0, 0
        head_trainable = (counts.lm_head or counts.embedding) + shape.hidden_size  # lm_head (or tied) + final norm
        details["trainable"] = "none besides the weights (full fine-tuning)"
        sizes = [counts.embedding, counts.lm_head, *(i * o for _, i, o in shape.linears())]
    details["gradients"] = f"fp32, {format_count(n_train)} trainable params"
    details["optimizer"] = "AdamW exp_avg + exp_avg_sq, fp32 (8 B per trainable param)"
    # accumulated gradients are alive during the next micro-batch; else only the first backward node's
    at_peak = n_train * 4 if cfg.gradient_accumulation_steps > 1 else head_trainable * 4
    # CPU: single-tensor AdamW, one temporary the size of the largest param; CUDA: foreach over all of them
    opt_temp = max(sizes, default=0) * 4 if dev == "cpu" else n_train * 4
    return Trainables(n_train, adapters, n_train * 4, n_train * 8, at_peak, opt_temp, per_layer_targets)
