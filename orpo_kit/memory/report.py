"""The estimate as people read it: the component table, the assumptions behind it, and `orpo-kit estimate`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .calibration import GiB, MiB

if TYPE_CHECKING:
    from ..config import ORPOConfig
    from .estimate import Workload
    from .shapes import ModelShape


@dataclass
class MemoryEstimate:
    """Peak training memory in bytes, by component, plus what it assumed.

    total = weights + trainable + optimizer + overhead
            + max(activations + logits + gradients_at_peak,   # end of forward / start of backward
                  gradients + optimizer_step_temp)            # optimizer step (activations freed)
    """

    weights: int  # frozen or trained base weights as stored (fp32 / NF4 + constants), + autocast 16-bit copies
    trainable: int  # LoRA adapters and new-token rows (0 for full fine-tuning: the weights are the trainables)
    gradients: int  # fp32 gradients of all trainable parameters (live after backward)
    optimizer: int  # AdamW exp_avg + exp_avg_sq, fp32
    activations: int  # saved for backward (times the allocator factor), + the shared layout's 4D attention mask
    logits: int  # chunked: lm_head chunk blocks + gathered hidden states; else [rows, T, V] logits and copies
    overhead: int  # calibrated constant + 4-bit dequantization scratch
    total: int
    gradients_at_peak: int = 0  # gradients already allocated at the activation peak
    optimizer_step_temp: int = 0
    peak_phase: str = "forward/backward"
    params_total: int = 0
    params_trainable: int = 0
    batch_size: int = 0
    seq_len: int = 0  # one sequence: prompt + completion (max_length)
    device: str = "cpu"
    layout: str = "plain"  # plain: 2 rows per pair; shared: 1 per pair, [prompt][chosen][rejected]; packed: 1 row
    rows: int = 0  # rows in the forward
    row_len: int = 0  # padded row width (seq_len in the plain layout)
    chunked_logps: bool = False  # log-probs from hidden states through lm_head in chunks
    logp_positions: int = 0  # positions whose log-probs the loss reads (completions, + prompts for TRL's NLL)
    details: dict[str, str] = field(default_factory=dict)  # one line per component: how it was counted
    assumptions: list[str] = field(default_factory=list)

    def breakdown(self) -> dict[str, int]:
        """Component -> bytes (the table's rows)."""
        return {
            k: getattr(self, k)
            for k in ("weights", "trainable", "gradients", "optimizer", "activations", "logits", "overhead", "total")
        }

    def lines(self) -> list[str]:
        """A readable table (MiB / GiB) followed by the assumptions."""
        rows = [
            ("weights", "weights"),
            ("trainable (adapters)", "trainable"),
            ("gradients", "gradients"),
            ("optimizer (AdamW)", "optimizer"),
            ("activations", "activations"),
            ("logits", "logits"),
            ("overhead", "overhead"),
        ]
        out = [f"{'component':<22}{'size':>11}  how"]
        for label, name in rows:
            out.append(f"{label:<22}{format_bytes(getattr(self, name)):>11}  {self.details.get(name, '')}")
        out.append("-" * 60)
        out.append(f"{'total (peak)':<22}{format_bytes(self.total):>11}  peak at: {self.peak_phase}")
        out.append("")
        out.append(
            "total = weights + trainable + optimizer + overhead + max(activations + logits + gradients "
            "allocated by then, all gradients + optimizer-step temporaries)"
        )
        out.append("assumptions:")
        out.extend(f"  - {a}" for a in self.assumptions)
        return out

    def table(self) -> str:
        """`lines()` joined."""
        return "\n".join(self.lines())

    def __str__(self) -> str:
        return self.table()


def format_bytes(n: float) -> str:
    """1.23 GiB / 456.7 MiB."""
    return f"{n / GiB:.2f} GiB" if abs(n) >= GiB else f"{n / MiB:.1f} MiB"


def format_count(n: float) -> str:
    """7.24B / 134.52M / 0.56M parameters."""
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:,.2f}M"


def assumption_notes(
    cfg: ORPOConfig, shape: ModelShape, work: Workload, chunked: bool, vocab: int, added: int
) -> list[str]:
    """The estimate's first assumptions: layout, log-prob path, model, precision."""
    from .estimate import frozen_head

    amp = cfg.mixed_precision in ("bf16", "fp16")
    share = (
        f" ({work.completion_fraction:.0%} of the plain layout's {2 * work.batch * work.seq_len:,} positions are "
        "completions"
        + (", + chosen prompts (nll_tokens=prompt_and_response)" if cfg.nll_tokens == "prompt_and_response" else "")
        + ")"
    )
    if chunked:
        path = (
            f"logits: chunks of {int(cfg.logps_chunk_size)} rows x V, "
            + ("formed once in the forward (frozen head)" if frozen_head(cfg, added) else "recomputed in backward")
            + "; the model "
            f"computes one logit row per sequence; log-probs needed at {work.needed:,} positions"
        )
    else:
        path = (
            f"logits: full [{work.rows}, {work.row_len}, V] from the model"
            + ("" if not cfg.chunked_logps else " (the model transforms its logits: no chunked path)")
            + f"; log-probs needed at {work.needed:,} positions"
        )
    model = (
        f"model: {shape.model_type}, {shape.num_layers} layers, hidden {shape.hidden_size}, intermediate "
        f"{shape.intermediate_size}, {shape.num_heads} heads / {shape.num_kv_heads} kv heads, vocab {vocab:,}"
        + (f" ({shape.vocab_size:,} + {added} ChatML tokens, rounded to 64)" if added else "")
        + (", tied embeddings" if shape.tied_embeddings else "")
    )
    precision = (
        f"precision: {'16-bit autocast (' + cfg.mixed_precision + ')' if amp else 'fp32'}; "
        f"{'gradient checkpointing' if cfg.gradient_checkpointing else 'no gradient checkpointing'}; "
        f"gradient accumulation {cfg.gradient_accumulation_steps}"
    )
    kernels = "activations: per-layer bytes counted on transformers 5.24 (sdpa); other attention kernels differ"
    return [layout_note(cfg, work), path + share, model, precision, kernels]


def layout_note(cfg: ORPOConfig, work: Workload) -> str:
    """How the batch's rows were counted, in the layout the trainer will use."""
    if work.layout.name == "shared":
        assumed = (
            ""
            if work.row_len_given
            else (
                f" (assumed: max_length {work.seq_len} x (1 + completion fraction {work.completion_fraction:.2f}) = a "
                f"prompt of {work.prompt_len} and chosen and rejected of {math.ceil(work.completion_per_pair / 2)} "
                "tokens each; the worst case at fraction 1; pass completion_fraction or row_len to estimate_memory for "
                "your data)"
            )
        )
        return (
            f"rows = 1 per pair ([prompt][chosen][rejected]) x batch {work.batch} = {work.rows}, each padded to "
            f"{work.row_len} tokens = {work.tokens:,} tokens{assumed}; 4D additive attention mask, positions "
            "restart at the rejected answer"
        )
    if work.layout.name == "packed":
        return (
            f"one packed row: 2 sequences per pair x batch {work.batch}, each up to {work.seq_len} tokens, back "
            f"to back without padding = {work.tokens:,} tokens; no attention mask ({cfg.attn_implementation} "
            "keeps attention inside each sequence from the restarting positions)"
        )
    why = "" if cfg.prefix_sharing else " (prefix_sharing off)"
    if cfg.prefix_sharing:
        why = f" (prefix sharing needs eager or sdpa attention, not {cfg.attn_implementation})"
    return (
        f"rows = 2 per pair (chosen + rejected) x batch {work.batch} = {work.rows}, each padded to "
        f"{work.seq_len} tokens = {work.tokens:,} tokens{why}"
    )


def estimate_command(
    preset: str | None = None,
    config_file: str | Path | None = None,
    max_length: int | None = None,
    batch_size: int | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
) -> str:
    """The text `orpo-kit estimate` prints: the resolved run, the table and the assumptions.

    Config sources as for `orpo-kit train` (preset < config file < overrides; the smol preset when neither a
    preset nor a file is given); max_length and batch_size override the config's max_length and
    per_device_train_batch_size. Overrides may be a dict or KEY=VALUE strings (e.g. device=cpu).
    """
    from ..config import parse_overrides, resolve_config
    from .estimate import estimate_memory

    values = parse_overrides(overrides) if isinstance(overrides, (list, tuple)) else dict(overrides or {})
    if max_length is not None:
        values["max_length"] = int(max_length)
    if batch_size is not None:
        values["per_device_train_batch_size"] = int(batch_size)
    preset = preset or (None if config_file else "smol")
    cfg = resolve_config(preset, config_file, values)
    est = estimate_memory(cfg)
    mode = "QLoRA (4-bit)" if cfg.load_in_4bit else "LoRA" if cfg.use_lora else "full fine-tuning"
    source = f"preset {preset}" if preset else ""
    source += (", " if source and config_file else "") + (f"config {config_file}" if config_file else "")
    head = [
        f"ORPO training memory estimate: {cfg.model_name_or_path} ({source}), {mode}, device {est.device}",
        f"{format_count(est.params_total)} params, {format_count(est.params_trainable)} trainable; "
        f"batch {est.batch_size} pairs x max_length {est.seq_len}, accumulation {cfg.gradient_accumulation_steps}",
        "",
    ]
    return "\n".join(head + est.lines())
