"""What one decoder layer saves for backward, per token: the tables the activation estimate multiplies out."""

from __future__ import annotations

from .shapes import ModelShape


def layer_activation_bytes(
    shape: ModelShape,
    seq_len: int,
    *,
    lora: bool,
    quantized: bool,
    amp: bool,
    lora_r: int = 0,
    n_lora_targets: int = 7,
    mask_per_layer: bool = True,
    fused_swiglu: bool = False,
) -> float:
    """Bytes one decoder layer saves for backward, per token (transformers 5.24, sdpa attention).

    Counted with `torch.autograd.graph.saved_tensors_hooks` (unique storages, parameters excluded) on LLaMA
    and Mistral blocks, fitting h (hidden), I (intermediate), q (heads * head_dim), heads and T (padded length):

        fp32, full fine-tuning     24h + 16I + 16q + 4 heads + 4T + 8
        fp32, LoRA / QLoRA         16h + 16I + 16q + 4 heads + 4T + 8 + 4 r * targets
        16-bit autocast, full      26h +  8I +  8q + 4 heads + 2T + 8
        16-bit autocast, LoRA      18h +  8I + 10q + 4 heads + 2T + 8 + 2 r * targets
        16-bit autocast, QLoRA     18h + 14I + 10q + 4 heads + 2T + 8 + 2 r * targets

    The T term is the attention mask sdpa keeps per layer with a padding mask (the plain layout). The shared
    layout's one 4D mask is saved once in fp32 (`mask_per_layer=False`; the caller counts it); under 16-bit
    autocast sdpa saves a 16-bit cast per layer, so the 2T term stays. The fused SwiGLU does not keep the SiLU
    output: 4I fewer in fp32, 2I under 16-bit autocast.
    """
    h, i, q, heads = shape.hidden_size, shape.intermediate_size, shape.q_dim, shape.num_heads
    r_term = lora_r * n_lora_targets if lora else 0
    if not amp:
        base = (16 if lora else 24) * h + 16 * i + 16 * q + 4 * heads + (4 * seq_len if mask_per_layer else 0) + 8
        return base + 4 * r_term - (4 * i if fused_swiglu else 0)
    fused = 2 * i if fused_swiglu else 0
    if not lora:
        return 26 * h + 8 * i + 8 * q + 4 * heads + 2 * seq_len + 8 - fused
    return 18 * h + (14 if quantized else 8) * i + 10 * q + 4 * heads + 2 * seq_len + 8 + 2 * r_term - fused
