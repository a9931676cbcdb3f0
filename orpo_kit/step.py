"""One ORPO step's pieces: the loss and metrics of a batch, and the optimizer they update."""

from __future__ import annotations

import torch

from .config import ORPOConfig
from .forward import compute_pair_logps
from .layouts import PairBatch
from .loss import orpo_loss


def orpo_step(
    model: torch.nn.Module, batch: PairBatch, cfg: ORPOConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss and metrics of one batch: forward over chosen + rejected together, then the ORPO loss."""
    logps = compute_pair_logps(model, batch, cfg.nll_tokens, chunked=cfg.chunked_logps, chunk_size=cfg.logps_chunk_size)
    return orpo_loss(logps, cfg.orpo_lambda)


def build_optimizer(model: torch.nn.Module, cfg: ORPOConfig) -> torch.optim.AdamW:
    """AdamW over trainable parameters; no weight decay on biases and norms (the field's convention)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon)
