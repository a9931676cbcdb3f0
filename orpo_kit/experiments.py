"""Experiments that compare runs: one config trained at several λ, the trainer's own log records collected.

Nothing here re-implements training: every run is an `orpo_kit.train.Trainer`, and the records are the ones
it writes to metrics.jsonl (received through `TrainerCallback.on_log`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import ORPOConfig
from .data import PreferencePair
from .train import Trainer, TrainerCallback, load_train_eval

Record = dict[str, Any]


class RecordCollector(TrainerCallback):
    """Keeps a copy of every record the trainer logs (train steps and evaluations, step 0 included)."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def on_log(self, trainer: Trainer, record: Record) -> None:
        self.records.append(dict(record))


class InterruptAtStep(TrainerCallback):
    """Raises KeyboardInterrupt once the training record of `step` is logged: what Ctrl-C or a notebook's
    Interrupt button does, at a known step (for demonstrations and tests)."""

    def __init__(self, step: int) -> None:
        if step < 1:
            raise ValueError(f"step must be at least 1, got {step}")
        self.step = step
        self.fired = False

    def on_log(self, trainer: Trainer, record: Record) -> None:
        if not self.fired and "loss" in record and record["step"] >= self.step:
            self.fired = True
            raise KeyboardInterrupt(f"simulated interrupt at step {record['step']}")


def eval_records(records: Sequence[Record]) -> list[Record]:
    """The records that carry an evaluation (step 0 is the evaluation before training)."""
    return [r for r in records if "eval_loss" in r]


def train_records(records: Sequence[Record]) -> list[Record]:
    """The records that carry training metrics of a step."""
    return [r for r in records if "loss" in r]


def skill_pairs(
    cfg: ORPOConfig,
    skills: Sequence[str] | None = None,
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Train and eval pairs of the config's data, only the given skills (None: all); then max_*_pairs."""
    train, evals, _ = load_train_eval(cfg.replace(max_train_pairs=None, max_eval_pairs=None))
    if skills is not None:
        found = {p.skill for p in train} | {p.skill for p in evals}
        unknown = sorted(set(skills) - found)
        if unknown:
            raise ValueError(f"skills {unknown} are not in {cfg.data}; its skills: {sorted(s for s in found if s)}")
        train = [p for p in train if p.skill in skills]
        evals = [p for p in evals if p.skill in skills]
    return train[: cfg.max_train_pairs], evals[: cfg.max_eval_pairs]


def lambda_run_dir(output_root: str | Path, orpo_lambda: float) -> Path:
    """Where compare_lambdas writes the run of one λ: OUTPUT_ROOT/lambda-0.1 and so on."""
    return Path(output_root) / f"lambda-{orpo_lambda:g}"


def compare_lambdas(
    base_cfg: ORPOConfig,
    lambdas: Sequence[float] = (0.0, 1.0),
    eval_every: int | None = None,
    *,
    skills: Sequence[str] | None = None,
    output_root: str | Path | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> dict[float, list[Record]]:
    """Train `base_cfg` once per λ and return every logged record of each run, keyed by λ.

    The runs differ only in λ: same initial weights, seed, data order and evaluation pairs. λ = 0 is plain
    SFT on the chosen answers. `eval_every` overrides eval_steps (each run also evaluates before the first
    step and at the end); `skills` keeps only those skills of the data (e.g. ["instructions"]); runs are
    written under `output_root` (default: base_cfg.output_dir), one folder per λ (see lambda_run_dir).
    """
    if len(set(lambdas)) != len(lambdas) or not lambdas:
        raise ValueError(f"lambdas must be distinct and non-empty, got {list(lambdas)}")
    root = Path(output_root if output_root is not None else base_cfg.output_dir)
    train, evals = skill_pairs(base_cfg, skills)
    results: dict[float, list[Record]] = {}
    for lam in lambdas:
        cfg = base_cfg.replace(
            orpo_lambda=float(lam),
            output_dir=str(lambda_run_dir(root, lam)),
            eval_steps=eval_every or base_cfg.eval_steps,
        )
        collector = RecordCollector()
        Trainer(cfg, train_pairs=train, eval_pairs=evals, callbacks=[collector, *callbacks]).train()
        results[float(lam)] = collector.records
    return results


def logps_summary(results: dict[float, list[Record]]) -> list[dict[str, float]]:
    """Per λ: held-out mean log-probs of chosen and rejected answers at the first and last evaluation,
    and the gap chosen − rejected at both."""
    rows = []
    for lam, records in results.items():
        first, last = eval_records(records)[0], eval_records(records)[-1]
        row: dict[str, float] = {"lambda": lam, "steps": last["step"]}
        for when, rec in (("start", first), ("end", last)):
            row[f"chosen_{when}"] = rec["eval_logps/chosen"]
            row[f"rejected_{when}"] = rec["eval_logps/rejected"]
            row[f"gap_{when}"] = rec["eval_logps/chosen"] - rec["eval_logps/rejected"]
        rows.append(row)
    return rows


def format_logps_summary(rows: Sequence[dict[str, float]]) -> str:
    """logps_summary as a small text table."""
    lines = [f"{'λ':>5} {'steps':>5}   {'chosen':>15}   {'rejected':>15}   {'gap':>13}"]
    for r in rows:
        lines.append(
            f"{r['lambda']:>5g} {r['steps']:>5d}   {r['chosen_start']:6.2f} → {r['chosen_end']:6.2f}   "
            f"{r['rejected_start']:6.2f} → {r['rejected_end']:6.2f}   "
            f"{r['gap_start']:5.2f} → {r['gap_end']:5.2f}"
        )
    return "\n".join(lines)
