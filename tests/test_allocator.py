"""The CPU allocator settings: the lean-heap environment, the one-time restart, and who gets it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from orpo_kit import allocator, cli
from orpo_kit.allocator import LEAN_HEAP_SWITCH, lean_heap_active, lean_heap_env

GLIBC = allocator.is_glibc()


def test_lean_heap_env_adds_both_tunables_and_keeps_the_users():
    env = lean_heap_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "PATH": "/bin"})
    assert env["PATH"] == "/bin"
    assert env["GLIBC_TUNABLES"].split(":") == [
        "glibc.malloc.arena_max=2",
        "glibc.malloc.tcache_count=0",
        "glibc.malloc.mxfast=0",
    ]
    assert lean_heap_active(env)
    assert not lean_heap_active({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert not lean_heap_active({})


def test_lean_heap_env_never_overrides_a_users_own_value():
    env = lean_heap_env({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=5"})
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.tcache_count=5:glibc.malloc.mxfast=0"
    assert not lean_heap_active(env)  # the user's choice wins, and is reported as not lean


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", LEAN_HEAP_SWITCH)}
    return {**env, **extra}


PROBE = (
    "import os, sys; from orpo_kit.allocator import restart_with_lean_heap; print('start', flush=True); "
    'restart_with_lean_heap([\'-c\', \'import os; print("restarted", os.environ.get("GLIBC_TUNABLES"), '
    "os.environ.get(\"ORPO_KIT_LEAN_HEAP\"))']); print('not restarted')"
)


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_restart_happens_once_with_the_tunables():
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=_child_env(), capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[0] == "start"
    assert out[1] == "restarted glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0 1"


@pytest.mark.parametrize(
    "extra",
    [
        {LEAN_HEAP_SWITCH: "0"},
        {LEAN_HEAP_SWITCH: "1"},
        {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0"},
    ],
)
def test_no_restart_when_opted_out_already_restarted_or_already_lean(extra):
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=_child_env(**extra), capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[:2] == ["start", "not restarted"]


class Restarted(Exception):
    """What the stand-in for the restart raises (the real one replaces the process)."""


@pytest.fixture
def restarts(monkeypatch) -> list[list[str]]:
    """The arguments of each lean-heap restart the command asks for (none happens)."""
    calls: list[list[str]] = []

    def fake_restart(args):
        calls.append(list(args))
        raise Restarted

    monkeypatch.setattr(allocator, "restart_with_lean_heap", fake_restart)
    return calls


def test_the_console_script_restarts_train_but_in_process_calls_never_do(monkeypatch, restarts):
    monkeypatch.setattr(sys, "argv", ["orpo-kit", "train", "--max-steps", "1"])
    with pytest.raises(Restarted):
        cli.main()
    assert restarts == [allocator.module_args("orpo_kit", ["train", "--max-steps", "1"])]
    monkeypatch.setattr(sys, "argv", ["orpo-kit", "presets"])
    assert cli.main() == 0  # other commands: no restart
    assert cli.main(["presets"]) == 0
    assert len(restarts) == 1


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_orpo_kit_train_runs_with_the_lean_heap(tmp_path):
    """End to end: the command restarts itself, trains, and says which heap it ran with."""
    env = _child_env(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "orpo_kit",
            "train",
            "--preset",
            "tiny",
            "--max-steps",
            "1",
            "--output-dir",
            str(tmp_path / "run"),
            "device=cpu",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "C heap        : lean (glibc small-block caches off)" in out.stdout
    assert (tmp_path / "run" / "checkpoints" / "step-000001").is_dir()


def test_no_lean_heap_restart_when_training_on_a_gpu(monkeypatch, capsys, restarts):
    """The lean heap is for CPU tensors: on a host with a visible GPU the command trains without the restart,
    unless the command line asks for the CPU."""
    monkeypatch.setattr(allocator, "has_nvidia_gpu", lambda: True)
    monkeypatch.setattr(sys, "argv", ["orpo-kit", "train", "--preset", "tiny", "--output-dir", ""])
    assert cli.main() == 2 and restarts == []  # no restart; the empty output dir then stops it
    assert "output_dir='': must not be empty" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["orpo-kit", "train", "--preset", "tiny", "device=cpu"])
    with pytest.raises(Restarted):
        cli.main()
    monkeypatch.setattr(allocator, "has_nvidia_gpu", lambda: False)
    monkeypatch.setattr(sys, "argv", ["orpo-kit", "train", "--preset", "tiny"])
    with pytest.raises(Restarted):
        cli.main()
    assert len(restarts) == 2


def test_hidden_gpus_do_not_count(monkeypatch):
    for hidden in ("-1", "", " "):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert allocator.has_nvidia_gpu() is False
