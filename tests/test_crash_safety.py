"""kill -9 mid-save and between checkpoints, then `--resume`: the run ends exactly where an uninterrupted one does.

The kills land at exact points, not timing guesses: the test-only hook `ORPO_KIT_TEST_STOP_AT` (see
orpo_kit/faults.py) makes the run stop itself with SIGSTOP halfway through writing a checkpoint (weights written,
trainer state not yet) or right after a step between checkpoints; the test waits for the stop and sends SIGKILL.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from orpo_kit import checkpoint as ckpt
from orpo_kit.faults import STOP_AT
from orpo_kit.train import read_metrics

CLI = [sys.executable, "-m", "orpo_kit"]
STEPS, SAVE_EVERY = 8, 2
KILL_IN_SAVE, KILL_AFTER_STEP = 4, 5  # first kill: while writing step 4's checkpoint; second: after step 5
TOL = 1e-6
TIMEOUT = 120  # seconds per run; a tiny run takes about 6 s


def _cmd(run_dir: Path, resume: bool = False) -> list[str]:
    """`orpo-kit train` on the tiny preset, CPU, a checkpoint every SAVE_EVERY steps."""
    cmd = [
        *CLI,
        "train",
        "--preset",
        "tiny",
        "--output-dir",
        str(run_dir),
        "--max-steps",
        str(STEPS),
        "device=cpu",
        f"save_steps={SAVE_EVERY}",
        "eval_steps=4",
        "logging_steps=1",
        "max_eval_pairs=8",
    ]
    return [*cmd, "--resume"] if resume else cmd


def _start(cmd: list[str], log: Path, stop_at: str | None = None) -> subprocess.Popen:
    """Start a run, one thread, offline; stdout/stderr to LOG.out/LOG.err."""
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
    }
    env.pop(STOP_AT, None)
    if stop_at:
        env[STOP_AT] = stop_at
    with log.with_suffix(".out").open("w") as fo, log.with_suffix(".err").open("w") as fe:
        return subprocess.Popen(cmd, stdout=fo, stderr=fe, env=env)


def _tail(log: Path) -> str:
    """End of a run's stderr, for failure messages."""
    err = log.with_suffix(".err")
    return err.read_text(errors="replace")[-3000:] if err.exists() else "<no log>"


def _finish(proc: subprocess.Popen, log: Path) -> str:
    """Wait for a run to end with status 0; its stdout."""
    try:
        rc = proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"run ran past {TIMEOUT} s:\n{_tail(log)}")
    assert rc == 0, f"exit status {rc}:\n{_tail(log)}"
    return log.with_suffix(".out").read_text()


def _kill_when_stopped(proc: subprocess.Popen, log: Path) -> str:
    """Wait until the run stops itself (SIGSTOP from the hook), then SIGKILL it; its stdout."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        pid, status = os.waitpid(proc.pid, os.WNOHANG | os.WUNTRACED)
        if pid and os.WIFSTOPPED(status):
            break
        assert not pid, f"the run ended before the hook stopped it ({status}):\n{_tail(log)}"
        assert time.monotonic() < deadline, f"the hook did not stop the run within {TIMEOUT} s:\n{_tail(log)}"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    return log.with_suffix(".out").read_text()


def _assert_same_records(a: list[dict], b: list[dict]) -> None:
    """Same steps, keys and values within TOL (rel and abs), except wall-clock step_time."""
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(STEPS + 1))
    for ra, rb in zip(a, b, strict=True):
        keys = set(ra) - {"step_time"}
        assert keys == set(rb) - {"step_time"}, f"step {ra['step']}: keys differ"
        bad = {k: (ra[k], rb[k]) for k in keys if not math.isclose(ra[k], rb[k], rel_tol=TOL, abs_tol=TOL)}
        assert not bad, f"step {ra['step']}: metrics differ (uninterrupted, killed twice): {bad}"


def test_kill_9_mid_save_and_between_checkpoints_then_resume_matches(tmp_path: Path) -> None:
    """Killed while writing step 4's checkpoint and again after step 5; two resumes end as one straight run."""
    straight, run = tmp_path / "straight", tmp_path / "killed"
    reference = _start(_cmd(straight), tmp_path / "straight")  # side by side with the first killed run
    try:
        # 1) killed halfway through the checkpoint of step KILL_IN_SAVE: only the older checkpoint counts
        proc = _start(_cmd(run), tmp_path / "k1", stop_at=f"save:{KILL_IN_SAVE}")
        _kill_when_stopped(proc, tmp_path / "k1")
    finally:
        _finish(reference, tmp_path / "straight")
    half = list((run / ckpt.CHECKPOINTS).glob(f".tmp-step-{KILL_IN_SAVE:06d}-*"))
    assert len(half) == 1 and (half[0] / "model").is_dir() and not (half[0] / ckpt.STATE_FILE).exists(), half
    assert ckpt.latest_checkpoint(run) == ckpt.checkpoint_path(run, KILL_IN_SAVE - SAVE_EVERY)

    # 2) resumed from there, killed right after step KILL_AFTER_STEP, before its next checkpoint
    proc = _start(_cmd(run, resume=True), tmp_path / "k2", stop_at=f"step:{KILL_AFTER_STEP}")
    out = _kill_when_stopped(proc, tmp_path / "k2")
    assert f"resuming from {ckpt.checkpoint_path(run, KILL_IN_SAVE - SAVE_EVERY)}" in out, out
    assert ckpt.latest_checkpoint(run) == ckpt.checkpoint_path(run, KILL_IN_SAVE)
    assert max(r["step"] for r in read_metrics(run)) == KILL_AFTER_STEP  # a step past the checkpoint was logged
    assert not half[0].exists(), "the half-written checkpoint of the killed save was not cleaned up"

    # 3) resumed to the end
    out = _finish(_start(_cmd(run, resume=True), tmp_path / "k3"), tmp_path / "k3")
    assert f"resuming from {ckpt.checkpoint_path(run, KILL_IN_SAVE)} (step {KILL_IN_SAVE})" in out, out
    assert not list((run / ckpt.CHECKPOINTS).glob(".tmp-*")), "unfinished checkpoint folders left behind"

    _assert_same_records(read_metrics(straight), read_metrics(run))
    final = "model/model.safetensors"
    a, b = load_file(ckpt.checkpoint_path(straight, STEPS) / final), load_file(ckpt.checkpoint_path(run, STEPS) / final)
    assert a.keys() == b.keys()
    for name, tensor in a.items():
        assert (tensor - b[name]).abs().max().item() <= TOL, f"final weights differ in {name}"
