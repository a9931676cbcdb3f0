"""The one loop that runs a model over many tokenized pairs without training it: evaluation, reward accuracy
and the token view all go through `scoring_batches`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from tqdm.auto import tqdm

from .data.tokenize import TokenizedPair
from .layouts import PairBatch, choose_layout


def scoring_batches(
    model: torch.nn.Module,
    tokenized: list[TokenizedPair],
    batch_size: int,
    collate: Callable[[list[TokenizedPair]], PairBatch] | None = None,
    pad_token_id: int | None = None,
    desc: str = "scoring",
) -> Iterator[tuple[list[TokenizedPair], PairBatch]]:
    """(pairs, batch) in order, with the model in eval mode; train mode comes back after. Gradients are the
    caller's choice (`torch.no_grad()` around the loop to score; the trainer's eval keeps its own setting).

    `collate` builds a batch on the model's device (the trainer's, which knows its layout and accelerator);
    by default the model's own layout with `pad_token_id`. A progress bar shows for long lists.
    """
    if collate is None:
        if pad_token_id is None:
            raise ValueError("scoring_batches needs collate= or pad_token_id=")
        layout, device = choose_layout(model), next(model.parameters()).device
        collate = _default_collate(layout, pad_token_id, device)
    was_training = model.training
    model.eval()
    try:
        starts = range(0, len(tokenized), batch_size)
        for start in tqdm(starts, desc=desc, leave=False, disable=len(tokenized) < 20 * batch_size):
            chunk = tokenized[start : start + batch_size]
            yield chunk, collate(chunk)
    finally:
        model.train(was_training)


def _default_collate(
    layout: Any, pad_token_id: int, device: torch.device
) -> Callable[[list[TokenizedPair]], PairBatch]:
    """The layout's collate, moved to the device."""
    return lambda chunk: collate_onto(layout, chunk, pad_token_id, device)


# Row widths on a GPU: a few dozen sizes instead of one per batch keep the CUDA caching allocator from
# fragmenting, and multiples of 64 keep the matmuls and attention masks aligned. On a CPU padding only costs.
CUDA_ROW_MULTIPLE = 64


def collate_onto(layout: Any, pairs: list[TokenizedPair], pad_token_id: int, device: torch.device | str) -> PairBatch:
    """The layout's batch on `device`, rows padded to a multiple of 64 tokens on a GPU."""
    device = torch.device(device)
    multiple = CUDA_ROW_MULTIPLE if device.type == "cuda" else 1
    batch: PairBatch = layout.collate(pairs, pad_token_id, pad_to_multiple_of=multiple)
    return batch.to(device)
