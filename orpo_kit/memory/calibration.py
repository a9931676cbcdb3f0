"""The estimator's measured constants: allocator factors and block counts, calibrated on CPU peaks.

How each was measured, and the checks of the estimate against measured peaks on today's defaults, are in
docs/memory.md; `scripts/check_memory_estimator.py` re-measures them.
"""

from __future__ import annotations

from typing import Any

from ..logprobs import _ROWS_PER_CHUNK

MiB = 1024**2
GiB = 1024**3

NF4_BLOCKSIZE = 64  # bitsandbytes 4-bit: one absmax per 64 weights
DOUBLE_QUANT_BLOCKSIZE = 256  # double quant: the absmaxes quantized to 8 bit, one fp32 scale per 256 of them
LOSS_CHUNK_ROWS = _ROWS_PER_CHUNK  # rows per log-softmax chunk on the full-logits path
# Chunked log-probs (orpo_kit.logprobs.head_token_logps): [chunk, V] fp32 blocks alive while a chunk's backward
# runs (recomputed logits, logsumexp's exp and gradient, gather's scatter): the step's logits peak.
HEAD_CHUNK_BLOCKS_BACKWARD = 4
# A frozen head (LoRA, QLoRA: orpo_kit.logprobs.FrozenHeadLogps): one chunk's fp32 logits, turned into the
# softmax in place, and its product with the weight: the gradient to the hidden states is kept instead
HEAD_CHUNK_BLOCKS_FROZEN = 2
GLIBC_MMAP_THRESHOLD_MAX = 32 * MiB  # glibc serves larger blocks with mmap and returns them to the OS on free
# cpu_return_freed_memory (orpo_kit.allocator): glibc's mmap threshold fixed at 1 MiB on CPU, so every larger
# block is its own mapping, returned to the OS when freed
RETURN_FREED_MMAP_THRESHOLD = 1 * MiB

CALIBRATION: dict[str, Any] = {
    # glibc heap high-water / live bytes for activations (and logits blocks under the 32 MiB mmap threshold)
    "cpu_heap_factor_full": 1.38,  # full fine-tuning: tiny preset, 8 x 192
    "cpu_heap_factor_lora": 1.85,  # LoRA: smol preset, 2 x 256 (every adapter leaves output-sized holes)
    # CPU + gradient checkpointing: activation RSS kept / activation RSS without checkpointing (smol LoRA 2 x 256)
    "cpu_checkpointing_retained": 0.40,
    # cpu_return_freed_memory=True: peak RSS / live bytes on activations (smol LoRA 2 x 256, default path)
    "cpu_heap_factor_return_freed": 1.10,
    "source_return_freed": "smol (LoRA r16, 2 pairs x 256, prefix sharing + chunked log-probs) with "
    "cpu_return_freed_memory on a 2-core x86-64 CPU, torch 2.13, transformers 5.24, glibc",
    "cuda_allocator_factor": 1.10,  # assumption, not measured: caching-allocator rounding and fragmentation
    "overhead_bytes": 16 * MiB,  # autograd graph, Trainer / accelerate objects, per-thread buffers
    "source": "the tiny preset (full, 8 pairs x 192) and smol (LoRA r16, 2 pairs x 256) on the plain path, on a "
    "2-core x86-64 CPU, torch 2.13, transformers 5.24, peft 0.21, glibc malloc",
}
