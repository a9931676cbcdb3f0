"""The run directory's files: created and checked before any work, and its metrics read back."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"


def prepare_output_dir(path: str) -> Path:
    """Create the run directory now, so an unwritable location fails before any work."""
    run_dir = Path(path)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"  # one per process: launched processes probe at once
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise PermissionError(f"output_dir {run_dir} is not writable: {exc}") from exc
    return run_dir


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All records of a run's metrics.jsonl (empty when there is none).

    A last line cut short (a run killed mid-write) is skipped; a bad line anywhere else is an error.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number < len(lines):
                raise ValueError(f"{path}, line {number}: not a JSON record ({exc})") from exc
    return records


def restart_metrics(run_dir: Path, keep_until: int | None) -> None:
    """Start metrics.jsonl afresh, or (resuming) keep the records up to the checkpoint's step; atomic."""
    metrics = run_dir / METRICS_FILE
    kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= keep_until] if keep_until is not None else []
    tmp = metrics.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    tmp.replace(metrics)


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """One record at the end of metrics.jsonl."""
    with (run_dir / METRICS_FILE).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


@dataclass
class TrainResult:
    """Where a run went and how it ended."""

    run_dir: Path
    steps: int
    interrupted: bool
    last_checkpoint: Path | None
    final_train: dict[str, float] = field(default_factory=dict)
    eval_before: dict[str, float] = field(default_factory=dict)
    eval_after: dict[str, float] = field(default_factory=dict)
    is_main_process: bool = True  # under `accelerate launch`, only the main process reports

    def summary(self) -> str:
        """One line: steps, final loss, eval reward accuracy before -> after."""
        fmt = lambda d: f"{d['eval_rewards/accuracies']:.3f}" if "eval_rewards/accuracies" in d else "n/a"
        loss = f"{self.final_train['loss']:.4f}" if "loss" in self.final_train else "n/a"
        state = "interrupted at" if self.interrupted else "finished"
        after = fmt(self.eval_after) if self.eval_after else "n/a (no eval since)"
        return f"{state} step {self.steps}: train loss {loss}, eval reward accuracy {fmt(self.eval_before)} -> {after}"
