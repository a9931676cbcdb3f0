"""Two processes through `accelerate launch` on the CPU (gloo), against one process with the same global batch.

On a machine without a GPU, `accelerate launch --multi_gpu --num_processes 2` starts two CPU processes;
`--cpu --num_processes 2` silently starts only one (docs/facts.md). So each test checks, from what the run
wrote, that two processes really took part. The tiny preset has no dropout (attention_dropout 0, no LoRA) and
the loss is a mean of per-pair terms, so 2 processes x 2 pairs and 1 process x 4 pairs make the same update.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from orpo_kit import checkpoint as ckpt
from orpo_kit.config import resolve_config
from orpo_kit.faults import NAN_AT
from orpo_kit.manifest import MANIFEST
from orpo_kit.run_dir import LOCK_FILE
from orpo_kit.train import Trainer, read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

ACCELERATE = Path(sys.executable).with_name("accelerate")
STEPS = 4
NAN_STEP = 2  # second test: the loss of this step becomes NaN on process 1 (and so every gradient, via DDP)
VALUE_NAN_STEP = 3  # ...and this step's loss value only (gradients stay finite: only process 1 can tell)
COMMON = {
    "max_steps": STEPS,
    "save_steps": STEPS,
    "eval_steps": STEPS,
    "logging_steps": 1,
    "max_eval_pairs": 8,
    "device": "cpu",
}
TOL = 1e-5
TIMEOUT = 240  # seconds; a launch takes about 10 s on an idle 2-core machine


def _free_port() -> int:
    """A TCP port nobody listens on now, for the processes' rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(run_dir: Path, tmp_path: Path, extra_env: dict[str, str] | None = None) -> tuple[str, str]:
    """`accelerate launch --multi_gpu --num_processes 2 -m orpo_kit train` on the tiny preset: (stdout, stderr)."""
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        **(extra_env or {}),
    }
    overrides = [f"{k}={v}" for k, v in COMMON.items()]
    cmd = [
        str(ACCELERATE),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        "-m",
        "orpo_kit",
        "train",
        "--preset",
        "tiny",
        "--output-dir",
        str(run_dir),
        "per_device_train_batch_size=2",
        *overrides,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=TIMEOUT, cwd=tmp_path)
    assert done.returncode == 0, f"launch failed ({done.returncode}):\n{done.stderr[-4000:]}"
    return done.stdout, done.stderr


def _single_process(run_dir: Path, **overrides) -> Trainer:
    """The reference: one process, 4 pairs per step (the same global batch)."""
    trainer = Trainer(
        resolve_config(
            "tiny", overrides={**COMMON, "output_dir": str(run_dir), "per_device_train_batch_size": 4, **overrides}
        )
    )
    trainer.train()
    return trainer


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """Weights of the last checkpoint of a run."""
    return load_file(ckpt.checkpoint_path(run_dir, STEPS) / "model" / "model.safetensors")


def _assert_two_processes_and_one_writer(run_dir: Path, stdout: str) -> dict:
    """Two distinct processes took part; files, records and the report come from the main process only."""
    state = json.loads((ckpt.checkpoint_path(run_dir, STEPS) / ckpt.STATE_FILE).read_text())
    assert state["num_processes"] == 2, state["num_processes"]
    assert state["distributed_type"] == "MULTI_CPU", state["distributed_type"]  # data parallel over gloo
    ranks, pids = [p["rank"] for p in state["processes"]], [p["pid"] for p in state["processes"]]
    assert ranks == [0, 1] and len(set(pids)) == 2, state["processes"]
    assert state["saved_by_pid"] == pids[0], "a checkpoint was written by a process other than the main one"
    steps = [r["step"] for r in read_metrics(run_dir)]
    assert steps == list(range(STEPS + 1)), f"one record per step expected (a second writer duplicates): {steps}"
    assert stdout.count("run directory :") == 1, stdout
    # the main process's lock file, and nothing from the other process
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILE, "checkpoints", "config.yaml", "metrics.jsonl"]
    assert f"pid {pids[0]} on " in (run_dir / LOCK_FILE).read_text()  # the main process held the lock
    files = sorted(p.name for p in ckpt.checkpoint_path(run_dir, STEPS).iterdir())
    want = [MANIFEST, "model", "optimizer.pt", "rng_state.pt", "rng_state_rank1.pt", "scheduler.pt", ckpt.STATE_FILE]
    assert files == want, files
    return state


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    """DDP over 2 processes x 2 pairs == 1 process x 4 pairs after STEPS steps (weights within 1e-5)."""
    stdout, _ = _launch(tmp_path / "ddp", tmp_path)
    _assert_two_processes_and_one_writer(tmp_path / "ddp", stdout)
    config = json.loads((ckpt.checkpoint_path(tmp_path / "ddp", STEPS) / "model" / "config.json").read_text())
    assert config["attention_dropout"] == 0.0, "the comparison needs dropout off"

    _single_process(tmp_path / "single")
    two, one = _final_weights(tmp_path / "ddp"), _final_weights(tmp_path / "single")
    assert two.keys() == one.keys()
    for name, tensor in one.items():
        torch.testing.assert_close(two[name], tensor, rtol=TOL, atol=TOL, msg=lambda m, name=name: f"{name}: {m}")
    rec_two, rec_one = read_metrics(tmp_path / "ddp")[-1], read_metrics(tmp_path / "single")[-1]
    assert rec_two["loss"] == pytest.approx(rec_one["loss"], rel=TOL)
    assert rec_two["eval_loss"] == pytest.approx(rec_one["eval_loss"], rel=TOL)


def test_nan_on_one_process_skips_the_step_on_every_process(tmp_path: Path, monkeypatch) -> None:
    """A NaN loss on process 1 only: both processes skip those steps, the warnings name them, weights stay
    finite and equal to a single-process run that skipped the same steps."""
    skipped = (NAN_STEP, VALUE_NAN_STEP)
    stdout, stderr = _launch(tmp_path / "ddp", tmp_path, {NAN_AT: f"{NAN_STEP}:1,{VALUE_NAN_STEP}:1:value"})
    state = _assert_two_processes_and_one_writer(tmp_path / "ddp", stdout)
    assert state["skipped_steps"] == len(skipped)
    records = {r["step"]: r for r in read_metrics(tmp_path / "ddp")}
    for step in range(1, STEPS + 1):
        if step in skipped:
            assert records[step].get("skipped_step") == 1 and "loss" not in records[step], records[step]
        else:
            assert "loss" in records[step] and "skipped_step" not in records[step], records[step]
    warnings = [line for line in stderr.splitlines() if "warning: non-finite loss" in line]
    assert len(warnings) == len(skipped), stderr[-3000:]  # the main process reports each, once
    for step, line in zip(skipped, warnings, strict=True):
        assert f"at step {step} " in line and "process 1:" in line and "process 0:" not in line, line

    weights = _final_weights(tmp_path / "ddp")
    assert all(bool(torch.isfinite(t).all()) for t in weights.values())
    # The processes' copies agreed at the save (checked before writing), so both skipped VALUE_NAN_STEP,
    # which only process 1 could see; and skipping on both equals one process skipping the same steps.
    monkeypatch.setenv(NAN_AT, f"{NAN_STEP}:0,{VALUE_NAN_STEP}:0")
    _single_process(tmp_path / "single")
    for name, tensor in _final_weights(tmp_path / "single").items():
        torch.testing.assert_close(weights[name], tensor, rtol=TOL, atol=TOL, msg=lambda m, name=name: f"{name}: {m}")


def test_shipped_accelerate_configs_parse_and_sharded_ones_are_refused() -> None:
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    from orpo_kit.accelerate_configs import accelerate_config_names, accelerate_config_path
    from orpo_kit.train import refuse_sharded_training

    kinds = {
        name: load_config_from_file(str(accelerate_config_path(name))).distributed_type
        for name in accelerate_config_names()
    }
    assert kinds == {
        "ddp": DistributedType.MULTI_GPU,
        "fsdp": DistributedType.FSDP,
        "deepspeed_zero2": DistributedType.DEEPSPEED,
        "deepspeed_zero3": DistributedType.DEEPSPEED,
    }
    for name in ("fsdp", "deepspeed_zero3"):  # sharded 4-bit weights need a float storage dtype
        assert "bnb_4bit_quant_storage" in accelerate_config_path(name).read_text(), name
    for name in ("fsdp", "deepspeed_zero2", "deepspeed_zero3"):
        assert "QLoRA caveats" in accelerate_config_path(name).read_text(), name
        with pytest.raises(ValueError, match="does not support yet"):
            refuse_sharded_training(kinds[name])
    for kind in (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU):
        refuse_sharded_training(kind, environ={})  # accepted
        for variable in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"):  # asked for, not set up: refused too
            with pytest.raises(ValueError, match=rf"the launch asked for .*but accelerate set up {kind.name}"):
                refuse_sharded_training(kind, environ={variable: "true"})
            refuse_sharded_training(kind, environ={variable: "false"})


def test_an_fsdp_launch_on_a_machine_without_gpus_is_refused_not_run_as_data_parallel(tmp_path: Path) -> None:
    """On a machine without CUDA accelerate runs the FSDP config as plain data parallel: two processes train a
    replicated model and exit 0. The user asked for sharding, so the run must say no instead."""
    if torch.cuda.is_available():
        pytest.skip("checks the machine without CUDA")
    from orpo_kit.accelerate_configs import accelerate_config_path

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    cmd = [str(ACCELERATE), "launch", "--config_file", str(accelerate_config_path("fsdp")), "--num_processes", "2"]
    cmd += ["--main_process_port", str(_free_port()), "-m", "orpo_kit", "train", "--preset", "tiny"]
    cmd += ["--output-dir", "r", "max_steps=2"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=TIMEOUT, cwd=tmp_path)
    assert done.returncode != 0, done.stdout[-3000:]
    assert "the launch asked for FSDP (its accelerate config), but accelerate set up MULTI_CPU" in done.stderr
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_0_the_readme_command_with_device_auto_trains_one_run_of_two_processes(tmp_path: Path) -> None:
    """The README's launch line as typed (no device=cpu): on a machine without CUDA it must still be one DDP run
    of two processes, never two independent single-process runs writing into one folder."""
    if torch.cuda.is_available():
        pytest.skip("checks the machine without CUDA")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    cmd = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port"]
    cmd += [str(_free_port()), "-m", "orpo_kit", "train", "--preset", "tiny", "--output-dir", "r"]
    cmd += [f"{k}={v}" for k, v in COMMON.items() if k != "device"] + ["per_device_train_batch_size=2"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=TIMEOUT, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    _assert_two_processes_and_one_writer(tmp_path / "r", done.stdout)
