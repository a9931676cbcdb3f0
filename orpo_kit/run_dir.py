"""The run directory: created and checked before any work, owned by one run at a time, never trained into
afresh over an earlier run, and its metrics appended and read back."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"


def refuse_a_shared_folder(path: str) -> None:
    """A run needs a folder of its own: never the current folder, one above it, the home folder or the root."""
    here, target = Path.cwd().resolve(), Path(path).expanduser().resolve()
    if target == here or target in here.parents or target == Path.home().resolve():
        what = "the current folder" if target == here else f"a folder that holds other things ({target})"
        raise ValueError(
            f"output_dir={path!r} is {what}: a run writes config.yaml, metrics.jsonl and checkpoints/ into its "
            "folder, so name one of its own, e.g. --output-dir runs/my-run"
        )


def prepare_output_dir(path: str) -> Path:
    """Create the run directory now, so an unwritable location fails before any work."""
    refuse_a_shared_folder(path)
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
    phase_seconds: dict[str, list[float]] = field(default_factory=dict)  # wall time: load, eval, step, save
    stop_signal: int | None = None  # what stopped an interrupted run: SIGINT (Ctrl-C), SIGTERM, SIGHUP

    @property
    def exit_code(self) -> int:
        """0 when finished; 128 + the signal when stopped (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP), as shells do."""
        return 128 + (self.stop_signal or 2) if self.interrupted else 0

    def timing(self) -> str:
        """One line: wall time of each phase (a count and the mean where it ran more than once)."""
        parts = []
        for phase, times in self.phase_seconds.items():
            mean = sum(times) / len(times)
            parts.append(f"{phase} {times[0]:.1f} s" if len(times) == 1 else f"{phase} {len(times)} x {mean:.1f} s")
        return "; ".join(parts)

    def summary(self) -> str:
        """One line: steps, final loss, eval reward accuracy before -> after."""
        fmt = lambda d: f"{d['eval_rewards/accuracies']:.3f}" if "eval_rewards/accuracies" in d else "n/a"
        loss = f"{self.final_train['loss']:.4f}" if "loss" in self.final_train else "n/a"
        state = "interrupted at" if self.interrupted else "finished"
        after = fmt(self.eval_after) if self.eval_after else "n/a (no eval since)"
        return f"{state} step {self.steps}: train loss {loss}, eval reward accuracy {fmt(self.eval_before)} -> {after}"


# ---- one owner per run directory ------------------------------------------------------------------------------
LOCK_FILE = ".orpo-kit.lock"  # holds an OS lock for as long as a run trains; the OS drops it when the process dies
REPLACED = "replaced"  # a run moved aside by --overwrite: <run>.replaced-<time>, beside the run directory


class RunDirBusy(OSError):
    """Another process is training into this run directory."""


_HELD: dict[str, RunLock] = {}  # the locks this process holds, by lock file


class RunLock:
    """An exclusive, non-blocking OS lock (flock) on run_dir/.orpo-kit.lock, with the holder written inside.

    `kill -9` cannot leave it stale: the OS releases a dead process's locks. Within one process (a notebook), a
    new Trainer takes the lock over from an earlier one that is not training, so re-running a cell works.
    Where the OS has no flock (Windows), runs are not locked and a warning says so.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_FILE
        self.training = False  # set by the trainer while its loop runs: then not even this process may take over
        self._fh: Any = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fh is not None

    def acquire(self) -> None:
        """Take the lock, or raise RunDirBusy naming the directory and the holder (pid, host, start time)."""
        key = str(self.path.resolve())
        earlier = _HELD.get(key)
        if earlier is not None and earlier is not self:
            if earlier.training:
                raise RunDirBusy(f"output_dir {self.path.parent} is in use by a run training in this process")
            self._fh, earlier._fh = earlier._fh, None  # an idle Trainer of this process hands it over
            _HELD[key] = self
            return
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            warnings.warn("this OS has no flock: two runs into one output_dir would not be stopped", stacklevel=2)
            return
        fh = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "an unknown process"
            fh.close()
            raise RunDirBusy(
                f"output_dir {self.path.parent} is in use by another run ({holder}); wait for it to finish, or "
                "train into another --output-dir"
            ) from None
        fh.seek(0)
        fh.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n")
        fh.flush()
        self._fh = fh
        _HELD[key] = self

    def release(self) -> None:
        """Let the lock go (the file stays: removing a lock file while others wait on it would race)."""
        if self._fh is not None:
            self._fh.close()  # closing the file releases the flock
            self._fh = None
            key = str(self.path.resolve())
            if _HELD.get(key) is self:
                del _HELD[key]


def run_contents(run_dir: Path) -> list[Path]:
    """What a run left in the directory (metrics, config, checkpoints); the lock file does not count."""
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.iterdir() if p.name != LOCK_FILE and not p.name.startswith(".write-test-"))


def holds_a_run(run_dir: Path) -> bool:
    """Whether an earlier run trained here: records in metrics.jsonl or any checkpoint."""
    metrics = run_dir / METRICS_FILE
    checkpoints = run_dir / "checkpoints"
    return (metrics.is_file() and metrics.stat().st_size > 0) or (checkpoints.is_dir() and any(checkpoints.iterdir()))


def aside_path(folder: Path) -> Path:
    """A free name beside a folder for what it held: <folder>.replaced-<time> (~1, ~2 ... when taken)."""
    target = folder.parent / f"{folder.name}.{REPLACED}-{time.strftime('%Y%m%d-%H%M%S')}"
    suffix = 1
    while target.exists():
        target = target.with_name(f"{target.name.rsplit('~', 1)[0]}~{suffix}")
        suffix += 1
    return target


def move_run_aside(run_dir: Path) -> Path:
    """Move an earlier run's files into <run>.replaced-<time> beside the run directory (nothing is deleted)."""
    target = aside_path(run_dir)
    target.mkdir(parents=True)
    for entry in run_contents(run_dir):
        shutil.move(str(entry), str(target / entry.name))
    return target


def refuse_or_replace_earlier_run(run_dir: Path, resume: bool, overwrite: bool) -> Path | None:
    """A fresh run never overwrites a run: refuse with the choices, or (overwrite) move the old one aside."""
    if resume or not holds_a_run(run_dir):
        return None
    if overwrite:
        return move_run_aside(run_dir)
    steps = (
        sorted(p.name for p in (run_dir / "checkpoints").glob("step-*")) if (run_dir / "checkpoints").is_dir() else []
    )
    what = f"checkpoints {', '.join(steps)}" if steps else "a metrics.jsonl"
    raise FileExistsError(
        f"output_dir {run_dir} already holds a run ({what}). To continue it: --resume (Python: "
        "train(resume=True)). To start afresh: another --output-dir, or --overwrite (Python: train(overwrite=True)), "
        f"which moves the old run to {run_dir.name}.{REPLACED}-<time> beside it instead of deleting it"
    )
