"""Resume and Ctrl-C through the `orpo-kit train` command line, each run in its own process.

Both tests rely on the `stop_at_step=N` config key (KEY=VALUE override): the run stops after optimizer
step N with a checkpoint and exit status 0, while the learning-rate schedule still spans `max_steps`.
That is what makes "k steps, stop, resume for k more" comparable with one uninterrupted 2k-step run.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from orpo_kit.checkpoint import CHECKPOINTS, STATE_FILE, checkpoint_path, latest_checkpoint

CLI = [sys.executable, "-m", "orpo_kit"]
TOL = 1e-6
K = 10  # resume test: checkpoint / stop at step K, compare at step 2K
RUN_TIMEOUT = 120  # seconds per process; a tiny run takes about 6 s


def _env() -> dict[str, str]:
    """The parent's environment, offline and unbuffered, one thread per run.

    One thread: on a busy 2-core machine a 2-thread torch run is about 3x slower (OpenMP threads wait on
    each other), and it lets two runs go side by side. Every compared run uses the same setting.
    """
    env = dict(os.environ)
    env.update(
        PYTHONUNBUFFERED="1",
        PYTHONHASHSEED="0",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    return env


def _train_cmd(run_dir: Path, max_steps: int, *overrides: str, resume: bool = False) -> list[str]:
    """`orpo-kit train --preset tiny` on the CPU (bitwise-reproducible there) with the given overrides."""
    cmd = [*CLI, "train", "--preset", "tiny", "--output-dir", str(run_dir), "--max-steps", str(max_steps)]
    if resume:
        cmd.append("--resume")
    return [*cmd, "device=cpu", *overrides]


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    """Start a run with stdout/stderr in LOG.out / LOG.err (tqdm output could fill a pipe and block it).

    preexec_fn: a shell without job control starts background jobs with SIGINT ignored, and an ignored
    SIGINT is inherited; a run needs the default handler to see Ctrl-C at all.
    """
    with log.with_suffix(".out").open("w") as fo, log.with_suffix(".err").open("w") as fe:
        return subprocess.Popen(
            cmd, stdout=fo, stderr=fe, env=_env(), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
        )


def _wait(proc: subprocess.Popen, log: Path) -> tuple[int, str]:
    """Wait for a run started by `_start`: (exit status, stdout)."""
    try:
        rc = proc.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"{proc.args} ran past {RUN_TIMEOUT} s:\n{_tail(log.with_suffix('.err'))}")
    return rc, log.with_suffix(".out").read_text()


def _run(cmd: list[str], log: Path) -> tuple[int, str]:
    """Run to the end: (exit status, stdout)."""
    return _wait(_start(cmd, log), log)


def _tail(path: Path, n: int = 3000) -> str:
    """End of a log file, for assertion messages."""
    return path.read_text(errors="replace")[-n:] if path.exists() else "<no log>"


def _metrics(run_dir: Path) -> list[dict]:
    """Records of metrics.jsonl (a partly written last line, possible while a run is alive, is skipped)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return records


def _ckpt_step(ckpt: Path) -> int:
    """The step a checkpoint's trainer_state.json records (checked against its folder name)."""
    step = json.loads((ckpt / STATE_FILE).read_text())["step"]
    assert ckpt.name == f"step-{step:06d}", f"{ckpt} records step {step}"
    return step


def _assert_complete_checkpoint(ckpt: Path) -> None:
    """Every file a resume needs is there and no half-written save is left beside it."""
    for rel in (STATE_FILE, "model/model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pt"):
        assert (ckpt / rel).is_file(), f"{ckpt} lacks {rel}: {sorted(p.name for p in ckpt.rglob('*'))}"
    leftovers = list((ckpt.parent).glob(".tmp-*"))
    assert not leftovers, f"unfinished checkpoint folders left behind: {leftovers}"


def _assert_same_record(a: dict, b: dict, what: str) -> None:
    """Same keys and values within TOL (rel and abs), except the wall-clock step_time."""
    keys_a, keys_b = set(a) - {"step_time"}, set(b) - {"step_time"}
    assert keys_a == keys_b, f"{what}: keys differ: only in A {keys_a - keys_b}, only in B {keys_b - keys_a}"
    bad = {k: (a[k], b[k]) for k in sorted(keys_a) if not math.isclose(a[k], b[k], rel_tol=TOL, abs_tol=TOL)}
    assert not bad, f"{what}: metrics differ (A, B): {bad}"


def _linear_lr(step_done: int, peak: float, warmup: int, max_steps: int) -> float:
    """transformers' linear schedule with warm-up: the rate used for the update after `step_done` steps."""
    if step_done < warmup:
        return peak * step_done / warmup
    return peak * max(0.0, (max_steps - step_done) / (max_steps - warmup))


def test_stop_and_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    """2K steps straight == K steps (stop_at_step=K), then --resume for K more: same metrics at step 2K."""
    common = ["logging_steps=1", f"eval_steps={K}", f"save_steps={K}"]
    run_a, run_b = tmp_path / "straight", tmp_path / "resumed"

    # Run A (straight) and part 1 of run B side by side. Part 1: same max_steps (so the same LR
    # schedule), but stop after step K.
    proc_a = _start(_train_cmd(run_a, 2 * K, *common), tmp_path / "a")
    try:
        rc, _ = _run(_train_cmd(run_b, 2 * K, *common, f"stop_at_step={K}"), tmp_path / "b1")
    finally:
        rc_a, _ = _wait(proc_a, tmp_path / "a")
    assert rc_a == 0, _tail(tmp_path / "a.err")
    assert rc == 0, _tail(tmp_path / "b1.err")
    ckpt = latest_checkpoint(run_b)
    assert ckpt is not None and _ckpt_step(ckpt) == K, f"part 1 should end with a checkpoint at step {K}: {ckpt}"
    _assert_complete_checkpoint(ckpt)
    assert max(r["step"] for r in _metrics(run_b)) == K, "part 1 ran past stop_at_step"

    # Part 2: resume with the plain command.
    rc, out = _run(_train_cmd(run_b, 2 * K, *common, resume=True), tmp_path / "b2")
    assert rc == 0, _tail(tmp_path / "b2.err")
    assert f"resuming from {checkpoint_path(run_b, K)} (step {K})" in out, out

    rec_a, rec_b = _metrics(run_a), _metrics(run_b)
    steps_b = [r["step"] for r in rec_b]
    assert steps_b == list(range(2 * K + 1)), f"resumed metrics.jsonl must hold one record per step: {steps_b}"
    assert [r["step"] for r in rec_a] == steps_b

    final_a, final_b = rec_a[-1], rec_b[-1]
    assert "eval_loss" in final_a and "loss" in final_a and "learning_rate" in final_a
    _assert_same_record(final_a, final_b, f"step {2 * K}")
    for a, b in zip(rec_a, rec_b, strict=True):  # the whole history too: pins down where a difference starts
        _assert_same_record(a, b, f"step {a['step']}")

    weights_a = load_file(checkpoint_path(run_a, 2 * K) / "model" / "model.safetensors")
    weights_b = load_file(checkpoint_path(run_b, 2 * K) / "model" / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    for name, tensor in weights_a.items():
        assert (tensor - weights_b[name]).abs().max().item() <= TOL, f"final weights differ in {name}"


def test_sigint_saves_checkpoint_and_resumes(tmp_path: Path) -> None:
    """Ctrl-C mid-run: exit 130, a complete checkpoint at the last finished step, and --resume continues it."""
    run = tmp_path / "run"
    max_steps, big = 100_000, 1_000_000
    # warmup_steps=1: the resumed steps are past warm-up, where the LR shows which schedule length is used
    overrides = ["logging_steps=1", f"eval_steps={big}", f"save_steps={big}", "warmup_steps=1"]
    out, err = tmp_path / "first.out", tmp_path / "first.err"
    proc = _start(_train_cmd(run, max_steps, *overrides), tmp_path / "first")
    try:
        deadline = time.monotonic() + 90
        while not any(r.get("step", 0) >= 3 and "loss" in r for r in _metrics(run)):
            assert proc.poll() is None, f"training ended early ({proc.returncode}):\n{_tail(err)}"
            assert time.monotonic() < deadline, f"no step 3 within 90 s:\n{_tail(err)}"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 60 s after SIGINT:\n{_tail(err)}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 130, f"exit status {rc}:\n{_tail(err)}"

    ckpt = latest_checkpoint(run)
    assert ckpt is not None, f"no complete checkpoint after Ctrl-C: {list((run / CHECKPOINTS).glob('*'))}"
    _assert_complete_checkpoint(ckpt)
    step = _ckpt_step(ckpt)
    assert step >= 3
    assert f"interrupted at step {step}" in out.read_text(), out.read_text()
    assert all(r["step"] <= step for r in _metrics(run)), "records logged past the saved step"

    # Resume with the same command (same max_steps, so the same schedule) and stop two steps later.
    rc, text = _run(
        _train_cmd(run, max_steps, *overrides, f"stop_at_step={step + 2}", resume=True), tmp_path / "resume"
    )
    assert rc == 0, _tail(tmp_path / "resume.err")
    assert f"resuming from {ckpt} (step {step})" in text, text
    end = latest_checkpoint(run)
    assert end is not None and _ckpt_step(end) == step + 2, f"expected a checkpoint at step {step + 2}: {end}"
    _assert_complete_checkpoint(end)

    records = _metrics(run)
    steps = [r["step"] for r in records]
    assert len(steps) == len(set(steps)), f"duplicate records: {steps}"
    assert steps[-2:] == [step + 1, step + 2], steps
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    for r in records[-2:]:  # the resumed steps follow the max_steps schedule, not one ending at the stop
        expected = _linear_lr(r["step"] - 1, cfg["learning_rate"], cfg["warmup_steps"], max_steps)
        assert r["learning_rate"] == pytest.approx(expected, rel=TOL), f"step {r['step']}: LR schedule changed"
