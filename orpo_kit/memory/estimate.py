"""Peak memory of one ORPO training step, by component, from a config alone (no weights loaded).

What is alive at the peak, for the layout and the log-prob path the trainer will take:

* weights: fp32 for full and LoRA runs (orpo_kit loads fp32); QLoRA keeps the decoder's Linear layers in NF4
  (0.5 byte per weight plus quantization constants) and everything else in fp32 (peft's
  `prepare_model_for_kbit_training` casts every non-4-bit 16-bit parameter to fp32);
* trainable parameters (LoRA adapters and new-token rows, or all parameters), their fp32 gradients and AdamW's
  two fp32 states;
* activations saved for backward, per token and per decoder layer (`layer_activation_bytes`); with gradient
  checkpointing each layer's input plus one recomputed layer; the shared layout's one 4D mask;
* logits: chunked through lm_head (`chunked_logps`) or the model's full [rows, T, V] logits; with trainable
  new-token rows, the merged [V, H] copy of lm_head that peft's forward builds (`merged_head_copy`);
* an allocator factor on activations and a small constant overhead (`calibration`).

The layout comes from `orpo_kit.layouts.layout_for`, the same rule the trainer uses.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..config import ORPOConfig
from ..layouts import PACKED, SHARED, Layout, layout_for
from .activations import layer_activation_bytes
from .calibration import (
    CALIBRATION,
    GLIBC_MMAP_THRESHOLD_MAX,
    HEAD_CHUNK_BLOCKS_BACKWARD,
    HEAD_CHUNK_BLOCKS_FROZEN,
    LOSS_CHUNK_ROWS,
    RETURN_FREED_MMAP_THRESHOLD,
)
from .parameters import trainable_bytes, weight_bytes
from .report import MemoryEstimate, assumption_notes, format_bytes
from .shapes import ModelShape, chat_tokens_added, count_parameters, model_config_for


@dataclass(frozen=True)
class Workload:
    """One micro-batch as the forward sees it: rows, their width, and the positions the loss reads."""

    batch: int  # pairs
    seq_len: int  # one sequence, prompt + completion (the plain layout's padded width)
    layout: Layout
    rows: int
    row_len: int
    needed: int  # positions whose log-probs the loss needs
    prompt_len: int  # one pair's prompt (shared-row view)
    completion_per_pair: int  # chosen + rejected tokens of one pair
    completion_fraction: float
    row_len_given: bool

    @property
    def tokens(self) -> int:
        """Positions in the forward."""
        return self.rows * self.row_len


def trainer_layout(cfg: ORPOConfig) -> Layout:
    """The layout the trainer will pick for this config (the tiny model is always built with sdpa)."""
    from ..models.load import TINY

    impl = "sdpa" if cfg.model_name_or_path == TINY else (cfg.attn_implementation or "eager")
    return layout_for(impl, cfg.prefix_sharing, cfg.packing)


def uses_prefix_sharing(cfg: ORPOConfig) -> bool:
    """Whether the trainer will use the shared layout."""
    return trainer_layout(cfg) is SHARED


def uses_chunked_logps(cfg: ORPOConfig, model_config: Any) -> bool:
    """Whether the trainer will take the hidden-state path: asked for, and logits are plain lm_head(hidden)
    (`orpo_kit.forward.supports_chunked_logps`: no soft-capping or logit scaling in the config)."""
    from ..forward import _LOGIT_TRANSFORMS

    configs = [model_config, getattr(model_config, "get_text_config", lambda: model_config)()]
    return bool(cfg.chunked_logps) and all(
        getattr(c, name, None) in (None, 1, 1.0) for c in configs for name in _LOGIT_TRANSFORMS
    )


def workload(cfg: ORPOConfig, batch: int, t: int, completion_fraction: float, row_len: int | None) -> Workload:
    """Rows and widths of one micro-batch in the trainer's layout (see `estimate_memory` for the arguments)."""
    if batch < 1 or t < 1:
        raise ValueError(f"batch_size and seq_len must be at least 1, got {batch} and {t}")
    if not 0.0 < completion_fraction <= 1.0:
        raise ValueError(f"completion_fraction must be in (0, 1], got {completion_fraction}")
    layout = trainer_layout(cfg)
    completion_per_pair = math.ceil(completion_fraction * 2 * t - 1e-9)
    width = int(row_len) if row_len is not None else min(2 * t, t + math.ceil(completion_fraction * t - 1e-9))
    if width < 1:
        raise ValueError(f"row_len must be at least 1, got {width}")
    prompt_len = max(0, width - completion_per_pair)
    if layout is SHARED:
        rows, row_w = batch, width
    elif layout is PACKED:  # the plain layout's sequences back to back, unpadded (counted at full length)
        rows, row_w = 1, 2 * batch * t
    else:
        rows, row_w = 2 * batch, t
    needed = batch * completion_per_pair
    if cfg.nll_tokens == "prompt_and_response":
        needed += batch * max(0, prompt_len - 1)
    needed = min(needed, 2 * batch * t)
    return Workload(
        batch, t, layout, rows, row_w, needed, prompt_len, completion_per_pair, completion_fraction, row_len is not None
    )


def resolve_device(cfg: ORPOConfig, device: str | None) -> str:
    """cpu or cuda (mps counts as cuda-like: no glibc heap factor)."""
    if device:
        return device
    if cfg.device != "auto":
        return cfg.device
    try:
        import torch

        if torch.cuda.is_available():
            return "cuda"
    except ImportError:  # pragma: no cover
        pass
    # A recipe with mixed precision or 4-bit weights is meant for a GPU: estimate for one.
    return "cuda" if cfg.mixed_precision != "no" or cfg.load_in_4bit else "cpu"


def dtype_bytes(name: Any) -> int:
    """Bytes per element of bfloat16 / float16 / float32 (names or torch dtypes)."""
    return 4 if str(name).removeprefix("torch.") in ("float32", "fp32") else 2


def allocator_factor(cfg: ORPOConfig, dev: str, lora: bool) -> tuple[float, int, str]:
    """(factor on live bytes, mmap threshold, why): how much more the allocator holds than is alive."""
    if dev == "cpu" and cfg.cpu_return_freed_memory:
        return (
            CALIBRATION["cpu_heap_factor_return_freed"],
            RETURN_FREED_MMAP_THRESHOLD,
            ("allocator factor (freed blocks > 1 MiB returned to the OS)"),
        )
    if dev == "cpu":
        return (
            CALIBRATION["cpu_heap_factor_lora" if lora else "cpu_heap_factor_full"],
            GLIBC_MMAP_THRESHOLD_MAX,
            ("glibc heap factor"),
        )
    return CALIBRATION["cuda_allocator_factor"], GLIBC_MMAP_THRESHOLD_MAX, "caching-allocator factor (assumed)"


def activation_bytes(
    cfg: ORPOConfig,
    shape: ModelShape,
    work: Workload,
    per_layer_targets: int,
    dev: str,
    details: dict[str, str],
    notes: list[str],
) -> float:
    """Activations saved for backward (times the allocator factor), + the shared layout's 4D mask."""
    lora, amp = bool(cfg.use_lora or cfg.load_in_4bit), cfg.mixed_precision in ("bf16", "fp16")
    a_layer = layer_activation_bytes(
        shape,
        work.row_len,
        lora=lora,
        quantized=bool(cfg.load_in_4bit),
        amp=amp,
        lora_r=cfg.lora_r,
        n_lora_targets=per_layer_targets,
        mask_per_layer=work.layout.name == "plain",
        fused_swiglu=cfg.fused_swiglu and shape.swiglu,
    )
    tokens, layers = work.tokens, shape.num_layers
    non_layer = (12 if not lora else 4) * shape.hidden_size  # final norm / lm_head input, per token
    act_full = tokens * (layers * a_layer + non_layer + a_layer)  # + backward temporaries of a layer
    if cfg.gradient_checkpointing:
        ckpt = 4 * shape.hidden_size * layers  # each layer's input (the fp32 residual stream)
        act_raw = tokens * (ckpt + non_layer + 2 * a_layer)  # + one layer recomputed and its backward temporaries
        details["activations"] = (
            f"checkpointing: {tokens:,} tokens x ({layers} layer inputs x "
            f"{4 * shape.hidden_size} B + 2 x {a_layer / 1024:,.1f} KiB recomputed layer)"
        )
    else:
        act_raw = act_full
        details["activations"] = (
            f"{tokens:,} tokens x {layers} layers x {a_layer / 1024:,.1f} KiB (+1 layer of backward temporaries)"
        )
    factor, mmap_threshold, why = allocator_factor(cfg, dev, lora)
    activations = act_raw * factor
    details["activations"] += f", x{factor:.2f} {why}"
    returns_freed = dev == "cpu" and cfg.cpu_return_freed_memory
    if dev == "cpu" and cfg.gradient_checkpointing and not returns_freed:
        # glibc keeps the heap the recomputed layers' temporaries grew to: a floor on what checkpointing saves
        retained = CALIBRATION["cpu_checkpointing_retained"]
        if retained * act_full * factor > activations:
            activations = retained * act_full * factor
            details["activations"] += f"; CPU heap floor: {retained:.0%} of the activations without checkpointing"
        notes.append(
            "CPU + gradient checkpointing: the glibc heap keeps what the recomputed layers' temporaries "
            f"grew it to; floor = {retained:.0%} of the no-checkpointing activations (measured on smol, LoRA, "
            "2 x 256, plain layout)"
        )
    if work.layout is SHARED:  # the [B, 1, W, W] additive mask in fp32, alive for the whole step
        mask = work.rows * work.row_len * work.row_len * 4
        activations += mask if dev == "cpu" and mask >= mmap_threshold else mask * factor
        details["activations"] += (
            f"; + [{work.rows}, 1, {work.row_len}, {work.row_len}] fp32 attention mask {format_bytes(mask)}"
        )
    return activations


def frozen_head(cfg: ORPOConfig, added: int) -> bool:
    """Whether the output layer is a frozen Linear (LoRA / QLoRA; new-token rows on it may train): log-probs
    then take `FrozenHeadLogps`, which forms the gradients in the forward instead of recomputing the logits."""
    return bool(cfg.use_lora or cfg.load_in_4bit)


def merged_head_copy(cfg: ORPOConfig, vocab: int, hidden: int, added: int) -> int:
    """Bytes of one merged [V, H] fp32 copy of lm_head that peft's trainable-tokens layer builds in the model's
    own forward (base weight with the new-token rows written in); 0 without trainable rows. The chunked log-prob
    path never builds one (its one-row forward uses the stored layer); the full-logits path does, and keeps it
    for backward. The embedding's copy is freed at once, before the peak."""
    return vocab * hidden * 4 if added and (cfg.use_lora or cfg.load_in_4bit) else 0


def logits_bytes(
    cfg: ORPOConfig,
    work: Workload,
    hidden: int,
    vocab: int,
    chunked: bool,
    dev: str,
    details: dict[str, str],
    added: int = 0,
) -> float:
    """Chunked: lm_head chunk blocks + gathered hidden states; else the model's full logits and their copies."""
    amp = cfg.mixed_precision in ("bf16", "fp16")
    logit_bytes, needed = (2 if amp else 4), work.needed
    if chunked:
        chunk = max(1, min(needed, int(cfg.logps_chunk_size)))
        block = chunk * vocab * 4  # one chunk's fp32 logits (or their fp32 copy under autocast)
        frozen = frozen_head(cfg, added)
        blocks = HEAD_CHUNK_BLOCKS_FROZEN if frozen else HEAD_CHUNK_BLOCKS_BACKWARD
        head = [
            blocks * block,  # one chunk's logits at a time (formed in the forward, or recomputed in backward)
            needed * hidden * 4 * (2 if frozen else 1)  # gathered hidden states [N, H] (+ d logp / d hidden)
            + (needed * added * 4 if frozen else 0),  # softmax columns of the trainable new-token rows [N, K]
        ]
        pieces = [*head, work.rows * vocab * logit_bytes]  # + one logit row
        if logit_bytes != 4:
            pieces.append(2 * chunk * vocab * logit_bytes)  # the 16-bit logits and their 16-bit gradient
        n_chunks = -(-needed // chunk)
        how = (
            "the frozen head's d logp / d hidden formed in the forward, nothing recomputed"
            if frozen
            else "recomputed in backward (the head trains)"
        )
        details["logits"] = (
            f"chunks of {chunk:,} rows x V {vocab:,}, {how} ({blocks} fp32 blocks of {format_bytes(block)} while "
            f"one runs; {n_chunks} chunk{'s' if n_chunks != 1 else ''} for {needed:,} positions) + "
            f"[{needed:,}, {hidden}] gathered hidden states" + (" and their gradients" if frozen else "")
        )
    else:
        pieces = [
            work.tokens * vocab * logit_bytes,  # the model's logits
            needed * vocab * logit_bytes,  # flat[positions]: the rows the loss uses
            min(needed, LOSS_CHUNK_ROWS) * vocab * 4,
        ]  # one fp32 log-softmax chunk
        if logit_bytes != 4:
            pieces.append(needed * vocab * 4)  # .float() copies of each chunk, saved by logsumexp
        copy = merged_head_copy(cfg, vocab, hidden, added)
        pieces += [copy, copy] if copy else []  # peft's merged lm_head, saved for backward, and its gradient
        details["logits"] = (
            f"[{work.rows}, {work.row_len}, {vocab:,}] {'16-bit' if amp else 'fp32'} + {needed:,} selected rows + "
            f"{min(needed, LOSS_CHUNK_ROWS):,}-row fp32 log-softmax chunk" + (" + fp32 copies" if amp else "")
        ) + (f" + peft's merged lm_head copy and its gradient, 2 x {format_bytes(copy)}" if copy else "")
    factor, mmap_threshold, _ = allocator_factor(cfg, dev, bool(cfg.use_lora or cfg.load_in_4bit))
    if dev == "cpu":  # blocks under glibc's mmap threshold live in the heap and fragment like activations
        return sum(p if p >= mmap_threshold else p * factor for p in pieces)
    return sum(pieces) * factor


def overhead_bytes(cfg: ORPOConfig, shape: ModelShape, details: dict[str, str]) -> float:
    """The calibrated constant, + one dequantized 4-bit weight (the largest Linear) under QLoRA."""
    overhead = CALIBRATION["overhead_bytes"]
    details["overhead"] = "calibrated constant"
    if cfg.load_in_4bit:
        scratch = max(i * o for _, i, o in shape.linears()) * dtype_bytes(cfg.bnb_4bit_compute_dtype)
        overhead += scratch
        details["overhead"] += f" + {format_bytes(scratch)} dequantized 4-bit weight (largest Linear)"
    return overhead


# Longer than 60 lines only because the estimate's fields are spelled out; each component is its own function.
def estimate_memory(
    cfg: ORPOConfig,
    model_config: Any = None,
    batch_size: int | None = None,
    seq_len: int | None = None,
    *,
    completion_fraction: float = 1.0,
    device: str | None = None,
    new_tokens: int | None = None,
    row_len: int | None = None,
) -> MemoryEstimate:
    """Peak memory of one ORPO training step (bytes, by component) for a config, without loading weights.

    batch_size: pairs per micro-batch (default cfg.per_device_train_batch_size); seq_len: length of one
    sequence, prompt + completion (default cfg.max_length, the worst case): the padded row width of the plain
    layout. completion_fraction: share of the plain layout's 2 * batch * seq_len positions that are completion
    tokens (1.0, the default, is the upper bound). row_len: the padded width of a prefix-shared row (default
    seq_len * (1 + completion_fraction)). device: "cpu" or "cuda" (default: cfg.device; auto -> cuda when
    available or when the recipe uses mixed precision / 4-bit, else cpu). new_tokens: ChatML tokens orpo_kit
    adds to a base model's vocabulary (default: guessed from the name). On CUDA the CUDA context is not included.
    """
    model_config = model_config_for(cfg) if model_config is None else model_config
    shape = ModelShape.from_config(model_config)
    work = workload(
        cfg,
        int(batch_size or cfg.per_device_train_batch_size),
        int(seq_len or cfg.max_length),
        completion_fraction,
        row_len,
    )
    dev, chunked = resolve_device(cfg, device), uses_chunked_logps(cfg, model_config)
    added = chat_tokens_added(cfg) if new_tokens is None else int(new_tokens)
    vocab = shape.vocab_size if added == 0 else -(-(shape.vocab_size + added) // 64) * 64  # rounded up to 64
    counts = count_parameters(shape, vocab)
    notes: list[str] = []
    details: dict[str, str] = {}
    amp = cfg.mixed_precision in ("bf16", "fp16")
    weights = int(weight_bytes(cfg, shape, counts, amp, details, notes, device=dev))
    train = trainable_bytes(cfg, shape, dataclasses.replace(shape, vocab_size=vocab), counts, added, dev, details)
    activations = int(activation_bytes(cfg, shape, work, train.per_layer_targets, dev, details, notes))
    logits = int(logits_bytes(cfg, work, shape.hidden_size, vocab, chunked, dev, details, added))
    overhead = int(overhead_bytes(cfg, shape, details))
    during = activations + logits + train.gradients_at_peak  # end of forward / start of backward
    after = train.gradients + train.optimizer_step_temp  # the optimizer step, activations freed
    total = weights + train.adapters + train.optimizer + overhead + max(during, after)
    notes[:0] = assumption_notes(cfg, shape, work, chunked, vocab, added)
    notes += device_notes(dev, cfg.cpu_return_freed_memory)
    return MemoryEstimate(
        weights=weights,
        trainable=train.adapters,
        gradients=train.gradients,
        optimizer=train.optimizer,
        activations=activations,
        logits=logits,
        overhead=overhead,
        total=total,
        gradients_at_peak=train.gradients_at_peak,
        optimizer_step_temp=train.optimizer_step_temp,
        peak_phase="end of forward / start of backward" if during >= after else "optimizer step (after backward)",
        params_total=counts.total,
        params_trainable=train.count,
        batch_size=work.batch,
        seq_len=work.seq_len,
        device=dev,
        layout=work.layout.name,
        rows=work.rows,
        row_len=work.row_len,
        chunked_logps=chunked,
        logp_positions=work.needed,
        details=details,
        assumptions=notes,
    )


def device_notes(dev: str, returns_freed: bool) -> list[str]:
    """What the figure means on this device, and where its factors come from."""
    if dev == "cpu":
        heap = (
            f"cpu_return_freed_memory: freed blocks over {format_bytes(RETURN_FREED_MMAP_THRESHOLD)} go back to the "
            f"OS; factor calibrated on {CALIBRATION['source_return_freed']}"
            if returns_freed
            else f"glibc's default allocator; heap factor calibrated on {CALIBRATION['source']}"
        )
        first = (
            "device cpu: the figure is peak RSS growth from just before the model loads (Python, torch and the "
            f"tokenizer not included); {heap}"
        )
    else:
        first = (
            f"device {dev}: allocated memory; add the CUDA context (0.3-1 GiB) for nvidia-smi; the allocator "
            "factor is an assumption, checked on CPU only"
        )
    return [first, "evaluation runs without gradients (smaller) and is not included"]
