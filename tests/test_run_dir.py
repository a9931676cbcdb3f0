"""A run directory is never lost, mixed or silently corrupted: one owner at a time (real `orpo-kit train`
processes), no fresh run over an old one, checkpoints that verify themselves, and a full disk mid-save."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orpo_kit import checkpoint as ckpt
from orpo_kit.cli import main
from orpo_kit.config import resolve_config
from orpo_kit.faults import STOP_AT
from orpo_kit.manifest import DAMAGED, MANIFEST, verify_checkpoint
from orpo_kit.run_dir import LOCK_FILE, RunDirBusy, RunLock
from orpo_kit.train import Trainer, TrainerCallback, read_metrics

CLI = [sys.executable, "-m", "orpo_kit", "train", "--preset", "tiny", "device=cpu", "eval_steps=5", "max_eval_pairs=8"]
TIMEOUT = 180


def _env(**extra: str) -> dict[str, str]:
    """Offline, one thread, unbuffered, no test faults unless given."""
    env = {k: v for k, v in os.environ.items() if k not in (STOP_AT, "ORPO_KIT_TEST_NAN_AT")}
    env.update(
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TQDM_DISABLE="1",
        **extra,
    )
    return env


def _start(run: Path, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*CLI, "--output-dir", str(run), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(**env),
    )


def _losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(run) if "loss" in r]


# ---- one owner -------------------------------------------------------------------------------------------------
def test_a_second_run_on_a_locked_directory_is_refused_at_once_and_the_first_is_unharmed(tmp_path: Path) -> None:
    alone, shared = tmp_path / "alone", tmp_path / "shared"
    long = (
        "--max-steps",
        "300",
        "eval_steps=100",
        "save_steps=100",
    )  # long enough to be running when the second starts
    first = _start(shared, *long)
    deadline = time.time() + 60
    while not (shared / "metrics.jsonl").is_file() and time.time() < deadline:  # the first run is training
        time.sleep(0.2)
    assert (shared / "metrics.jsonl").is_file(), first.stderr.read() if first.poll() is not None else "no metrics"
    t0 = time.time()
    second = subprocess.run(
        [*CLI, "--output-dir", str(shared), *long],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=TIMEOUT,
    )
    refused_after = time.time() - t0
    assert second.returncode == 2, second.stderr
    message = second.stderr.strip().splitlines()[-1]
    assert f"output_dir {shared} is in use by another run (pid {first.pid} on " in message, message
    # refused while the first still trains (not after waiting for it); the time is printed, not asserted
    assert first.poll() is None, "the first run ended before the second was refused: make it longer"
    print(f"[run dir lock] second run refused {refused_after:.1f} s after its start (imports included)")
    assert first.wait(timeout=TIMEOUT) == 0, first.stderr.read()
    assert (
        subprocess.run(
            [*CLI, "--output-dir", str(alone), *long], env=_env(), capture_output=True, timeout=TIMEOUT
        ).returncode
        == 0
    )
    assert _losses(shared) == _losses(alone) and len(_losses(shared)) > 0


def test_a_lock_left_by_kill_9_does_not_block_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _start(run, "--max-steps", "8", "save_steps=2", **{STOP_AT: "step:3"})
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:  # stopped (SIGSTOP) after step 3, holding the lock
        with open(f"/proc/{proc.pid}/stat") as fh:
            if fh.read().split()[2] == "T":
                break
        time.sleep(0.2)
    with pytest.raises(RunDirBusy, match="in use by another run"):
        RunLock(run).acquire()  # while it lives, the lock is held
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    done = subprocess.run(
        [*CLI, "--output-dir", str(run), "--max-steps", "8", "save_steps=2", "--resume"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stdout and max(s for s, _ in _losses(run)) == 8
    assert (run / LOCK_FILE).is_file()  # the file stays; the OS lock went with the process


def test_a_fresh_run_over_a_run_is_refused_and_overwrite_keeps_the_old_run(tmp_path: Path, capsys) -> None:
    run = tmp_path / "r1"
    assert (
        main(
            [
                "train",
                "--preset",
                "tiny",
                "--output-dir",
                str(run),
                "--max-steps",
                "4",
                "save_steps=2",
                "eval_steps=2",
                "max_eval_pairs=8",
            ]
        )
        == 0
    )
    before = read_metrics(run)
    assert main(["train", "--preset", "tiny", "--output-dir", str(run), "--max-steps", "2"]) == 2
    err = capsys.readouterr().err
    assert f"output_dir {run} already holds a run (checkpoints step-000002, step-000004)" in err
    assert "--resume" in err and "--overwrite" in err and read_metrics(run) == before  # nothing touched
    assert (
        main(
            [
                "train",
                "--preset",
                "tiny",
                "--output-dir",
                str(run),
                "--max-steps",
                "2",
                "--overwrite",
                "eval_steps=2",
                "max_eval_pairs=8",
            ]
        )
        == 0
    )
    assert "was moved to" in capsys.readouterr().out
    [old] = [p for p in tmp_path.iterdir() if p.name.startswith("r1.replaced-")]
    assert read_metrics(old) == before and [p.name for p in ckpt.list_checkpoints(old)] == [
        "step-000002",
        "step-000004",
    ]
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step-000002"] and max(
        r["step"] for r in read_metrics(run)
    ) == 2


# ---- checkpoints that prove themselves --------------------------------------------------------------------------
def _tiny(run: Path, max_steps: int, **extra) -> Trainer:
    cfg = resolve_config(
        "tiny",
        overrides={
            "output_dir": str(run),
            "max_steps": max_steps,
            "save_steps": 2,
            "eval_steps": 2,
            "max_eval_pairs": 8,
            "device": "cpu",
            **extra,
        },
    )
    return Trainer(cfg)


def _truncate_weights(step: Path) -> str:
    path = step / "model" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    return "model.safetensors is 100 bytes"


def _flip_optimizer_byte(step: Path) -> str:
    path = step / "optimizer.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return "optimizer.pt does not match its SHA-256"


def _remove_state(step: Path) -> str:
    (step / ckpt.STATE_FILE).unlink()
    return "trainer_state.json is missing"


@pytest.mark.parametrize("damage", [_truncate_weights, _flip_optimizer_byte, _remove_state])
def test_resume_names_the_damaged_file_falls_back_and_ends_as_a_run_resumed_from_the_previous(
    tmp_path: Path, damage, capsys
) -> None:
    run, reference = tmp_path / "run", tmp_path / "reference"
    _tiny(run, 6, stop_at_step=4).train()
    assert [verify_checkpoint(p) for p in ckpt.list_checkpoints(run)] == [[], []]
    shutil.copytree(run, reference)
    shutil.rmtree(reference / "checkpoints" / "step-000004")  # what an undamaged run has before step 4
    expected = damage(ckpt.checkpoint_path(run, 4))
    capsys.readouterr()
    _tiny(run, 6).train(resume=True)
    out = capsys.readouterr().out
    assert f"checkpoint step-000004 is damaged: {ckpt.checkpoint_path(run, 4)}" in out and expected in out
    assert "resuming from" in out and "step-000002 (step 2)" in out
    assert next(p.name for p in (run / DAMAGED).iterdir()).startswith("step-000004-")  # set aside, not deleted
    _tiny(reference, 6).train(resume=True)
    tail = lambda d: [{k: v for k, v in r.items() if k != "step_time"} for r in read_metrics(d) if r["step"] > 2]
    assert tail(run) == tail(reference) and max(r["step"] for r in tail(run)) == 6
    best = ckpt.best_checkpoint(run)
    assert best is None or not verify_checkpoint(best)  # best.json never names a damaged checkpoint


def test_verify_command_and_load_run_name_the_damaged_file(tmp_path: Path, capsys) -> None:
    from orpo_kit.runs import load_run

    run = tmp_path / "run"
    _tiny(run, 4).train()
    assert main(["verify", str(run)]) == 0 and "all 2 checkpoints verify" in capsys.readouterr().out
    manifest = json.loads((ckpt.checkpoint_path(run, 4) / MANIFEST).read_text())
    assert {"model/model.safetensors", "optimizer.pt", ckpt.STATE_FILE} <= set(manifest["files"])
    _flip_optimizer_byte(ckpt.checkpoint_path(run, 4))
    assert main(["verify", str(run)]) == 1
    out = capsys.readouterr().out
    assert "step-000002: ok" in out and "step-000004: DAMAGED" in out and "optimizer.pt does not match" in out
    with pytest.raises(ValueError, match="optimizer.pt does not match its SHA-256"):
        load_run(run, "latest")


# ---- a full disk mid-save -----------------------------------------------------------------------------------------
def test_a_full_disk_mid_save_keeps_the_previous_checkpoint_and_says_how_much_room_is_needed(tmp_path: Path) -> None:
    class DiskFull(TrainerCallback):
        def on_checkpoint_weights_written(self, trainer: Trainer, folder: Path) -> None:
            if trainer.step == 4:
                raise OSError(errno.ENOSPC, "No space left on device")

    run = tmp_path / "run"
    cfg = _tiny(run, 6).cfg
    with pytest.raises(
        OSError,
        match=r"No space left on device.*previous checkpoint .*step-000002 is intact.*"
        r"One checkpoint needs about [\d.]+ MiB",
    ) as info:
        Trainer(cfg, callbacks=[DiskFull()]).train()
    assert info.value.errno == errno.ENOSPC
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step-000002"]
    assert not verify_checkpoint(ckpt.checkpoint_path(run, 2))
    assert not list((run / ckpt.CHECKPOINTS).glob(".tmp-*"))  # the partial copy is gone


# ---- metrics.jsonl -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("harm", ["missing", "torn"])
def test_resume_continues_when_metrics_are_missing_or_end_in_a_torn_line(tmp_path: Path, harm: str) -> None:
    run = tmp_path / "run"
    _tiny(run, 6, stop_at_step=4).train()
    metrics = run / "metrics.jsonl"
    kept = read_metrics(run)
    if harm == "missing":
        metrics.unlink()
        kept = []
    else:
        metrics.write_text(metrics.read_text() + '{"step": 5, "loss": 1.2')  # a write cut short
    _tiny(run, 6).train(resume=True)
    records = read_metrics(run)
    assert records[: len(kept)] == kept and max(r["step"] for r in records) == 6
