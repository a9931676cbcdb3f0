"""glibc heap settings for CPU training, so peak RSS tracks live tensors rather than heap history.

- Lean heap (on by default for the `orpo-kit train` command): glibc's small-block caches (tcache and fastbins)
  off, so freed small blocks merge at once instead of pinning holes that large tensors cannot reuse. Tunables are
  read only when a process starts, so the command restarts itself once with them (`restart_with_lean_heap`), as
  PyTorch's own CPU launcher does when it preloads jemalloc. In a notebook or your own script, start Python with
  `lean_heap_env()`'s environment. Opt out with `ORPO_KIT_LEAN_HEAP=0`.
- `cpu_return_freed_memory` (off by default): a fixed mmap threshold gives each large block its own mapping,
  returned to the OS on free: less memory, about 30% slower (same as `MALLOC_MMAP_THRESHOLD_=4194304`).

Measured effects of both: docs/memory.md.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

M_MMAP_THRESHOLD = -3  # glibc mallopt parameter number (malloc.h)
DEFAULT_THRESHOLD = 4 << 20  # 4 MiB: activation-sized blocks get their own mapping; small ones stay in the heap
_applied: int | None = None
LEAN_HEAP_TUNABLES = {"glibc.malloc.tcache_count": "0", "glibc.malloc.mxfast": "0"}  # the small-block caches off
LEAN_HEAP_SWITCH = "ORPO_KIT_LEAN_HEAP"  # "0": leave glibc as it is; set to "1" in the restarted process


def return_freed_memory(threshold: int = DEFAULT_THRESHOLD) -> bool:
    """Set glibc's mmap threshold (once per process); False where the C library is not glibc."""
    global _applied
    if _applied == threshold:
        return True
    if not is_glibc():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):
        return False
    if ok:
        _applied = threshold
    return ok


def is_glibc() -> bool:
    """Whether this process runs on Linux with glibc (the only C library these settings apply to)."""
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def lean_heap_env(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of `env` whose GLIBC_TUNABLES turns the small-block caches off (tunables already there are kept)."""
    out = dict(env)
    entries = [e for e in out.get("GLIBC_TUNABLES", "").split(":") if e]
    present = {e.split("=", 1)[0] for e in entries}
    entries += [f"{k}={v}" for k, v in LEAN_HEAP_TUNABLES.items() if k not in present]
    out["GLIBC_TUNABLES"] = ":".join(entries)
    return out


def lean_heap_active(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process was started with both small-block caches off."""
    tunables = dict(
        e.split("=", 1) for e in (os.environ if env is None else env).get("GLIBC_TUNABLES", "").split(":") if "=" in e
    )
    return all(tunables.get(k) == v for k, v in LEAN_HEAP_TUNABLES.items())


def has_nvidia_gpu() -> bool:
    """Whether this host shows an NVIDIA GPU to this process (device files, CUDA_VISIBLE_DEVICES), without
    importing torch: the check runs before the restart, which should stay quick."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return Path("/dev/nvidiactl").exists() and any(Path("/dev").glob("nvidia[0-9]*"))


def module_args(module: str, args: Sequence[str]) -> list[str]:
    """Python arguments that run `module` as `python -m` would, importing orpo_kit from where this process did.

    `python -m` puts the current folder first on sys.path, so a folder there named like the package (a checkout,
    or the `orpo_kit` log folder a tracker writes into a run directory) would shadow the installed one.
    """
    home = str(Path(__file__).resolve().parent.parent)
    code = (
        f"import runpy, sys; sys.path[0] = {home!r}; runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    )
    return ["-c", code, *args]


def restart_with_lean_heap(python_args: Sequence[str]) -> None:
    """Replace this process by `python *python_args` with the lean-heap tunables, once; returns when not needed.

    Nothing happens off glibc, when the process already has them, after one restart, or with ORPO_KIT_LEAN_HEAP=0.
    Call it first thing, before any work: the process image is replaced (same PID, same environment otherwise).
    """
    if os.environ.get(LEAN_HEAP_SWITCH) is not None or lean_heap_active() or not is_glibc() or not sys.executable:
        return
    env = lean_heap_env(os.environ)
    env[LEAN_HEAP_SWITCH] = "1"  # never twice, even if the C library ignored the tunables
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *python_args], env)
