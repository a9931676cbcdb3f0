"""A training run's data: train and eval pairs from the config, and the order batches take them in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .config import ORPOConfig
from .data import DataReport, PreferencePair, TokenizedPair, drop_eval_overlap, load_pairs, split_train_eval
from .data.sources import BUILTIN, builtin_path


def load_train_eval(cfg: ORPOConfig) -> tuple[list[PreferencePair], list[PreferencePair], DataReport]:
    """Train and eval pairs plus one report: --eval-data when given, else the data's split or a held-out fraction."""
    opts: dict[str, Any] = dict(
        format=cfg.data_format,
        column_map=cfg.column_map,
        policy=cfg.data_policy,
        min_score_margin=cfg.min_score_margin,
        max_bad_fraction=cfg.max_bad_row_fraction,
    )
    pairs, report = load_pairs(cfg.data, split=cfg.data_split, **opts)
    if cfg.eval_data:
        evals, eval_report = load_pairs(cfg.eval_data, split=cfg.eval_data_split, **opts)
        train, evals = [p for p in pairs if p.split != "eval"], [p for p in evals if p.split != "train"]
        report.eval_side = eval_report  # each file's rows counted in its own report
    else:
        train, evals = split_train_eval(pairs, cfg.eval_fraction, cfg.seed)
    kept = drop_eval_overlap(train, evals, report.eval_side or report, cfg.data_policy)
    if evals and not kept:
        raise ValueError(_all_eval_overlap(cfg, len(train), len(evals)))
    return train[: cfg.max_train_pairs], kept[: cfg.max_eval_pairs], report


def same_file(a: str, b: str) -> bool:
    """Whether two data sources name one local file ("builtin" included)."""
    paths = [builtin_path() if s == BUILTIN else Path(s).expanduser() for s in (a, b)]
    return all(p.is_file() for p in paths) and paths[0].resolve() == paths[1].resolve()


def _all_eval_overlap(cfg: ORPOConfig, n_train: int, n_eval: int) -> str:
    """Why no eval pair is left when every eval prompt also occurs in training, with the counts and what to do."""
    dropped = (
        f"all {n_eval} eval pairs were dropped as duplicates of the {n_train} training pairs (eval_overlap: "
        "their prompts occur in training), so no eval split is left"
    )
    if cfg.eval_data and same_file(cfg.eval_data, cfg.data):
        what = f"--eval-data {cfg.eval_data} is the training file (--data {cfg.data})"
        return f"{what}: {dropped}; pass another file, or no --eval-data to hold out eval_fraction of the prompts"
    if cfg.eval_data:
        return f"--eval-data {cfg.eval_data}: {dropped}; pass eval pairs with other prompts"
    return f"{cfg.data}: {dropped}; label as eval only rows whose prompts have no train rows"


def length_grouped(order: list[int], lengths: list[int], batch_size: int, megabatch_batches: int = 50) -> list[int]:
    """A shuffled order regrouped so each batch holds pairs of similar length (less padding).

    Like transformers' LengthGroupedSampler: split the shuffled order into megabatches of 50 batches, sort each
    by length (longest first), and keep the megabatch order, so batches stay random across the epoch.
    """
    size = batch_size * megabatch_batches
    megabatches = [order[i : i + size] for i in range(0, len(order), size)]
    return [i for mb in megabatches for i in sorted(mb, key=lambda j: -lengths[j])]


def pair_length(t: TokenizedPair) -> int:
    """Tokens a pair occupies in the shared layout: what its row's length depends on."""
    return len(t.prompt_ids) + len(t.chosen_ids) + len(t.rejected_ids)


class BatchOrder:
    """Which pairs each optimizer step trains on: a pure function of (seed, step), so resuming needs only the step
    and any process count sees the same global batch (each process takes its share of every micro-batch)."""

    def __init__(
        self,
        n_pairs: int,
        seed: int,
        per_device: int,
        accumulation: int,
        n_proc: int,
        rank: int,
        lengths: list[int] | None = None,
    ) -> None:
        self.n_pairs, self.seed, self.per_device, self.accumulation = n_pairs, seed, per_device, accumulation
        self.n_proc, self.rank, self.lengths = n_proc, rank, lengths
        self.global_size = per_device * accumulation * n_proc
        self._epoch: tuple[int, list[int]] | None = None

    def epoch_order(self, epoch: int) -> list[int]:
        """The seeded shuffle of one epoch (regrouped by length when lengths are given)."""
        if self._epoch is None or self._epoch[0] != epoch:
            gen = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(self.n_pairs, generator=gen).tolist()
            if self.lengths is not None:
                order = length_grouped(order, self.lengths, self.global_size)
            self._epoch = (epoch, order)
        return self._epoch[1]

    def micro_batches(self, step: int) -> list[list[int]]:
        """This process's micro-batches (indices into the train pairs) for an optimizer step."""
        epoch, k = divmod(step, self.n_pairs // self.global_size)
        chunk = self.epoch_order(epoch)[k * self.global_size : (k + 1) * self.global_size]
        first = [(m * self.n_proc + self.rank) * self.per_device for m in range(self.accumulation)]
        return [chunk[i : i + self.per_device] for i in first]
