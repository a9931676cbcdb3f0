"""The machine the benchmark runs on: its matmul rate, whether other work is running, what it is."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from ..procmem import peak_rss_bytes, rss_bytes


def rss_gb() -> float | None:
    """Current resident set size of this process in GB (10^9 bytes)."""
    rss = rss_bytes()
    return None if rss is None else rss / 1e9


def peak_rss_gb() -> float:
    """Peak RSS of this process since it started (exec) in GB."""
    return peak_rss_bytes() / 1e9


def measure_matmul_rate(
    device: str = "cpu", dtype_name: str = "float32", n: int | None = None, seconds: float = 1.5
) -> dict[str, Any]:
    """This machine's matmul rate (GFLOP/s) for n x n matrices: best and median over `seconds` of repeats."""
    import torch

    dtype = getattr(torch, dtype_name)
    n = n or (2048 if device == "cpu" else 8192)
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    rates: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(rates) < 3:
        t0 = time.perf_counter()
        a @ b
        sync()
        rates.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return {
        "n": n,
        "dtype": dtype_name,
        "device": device,
        "gflops_best": max(rates),
        "gflops_median": statistics.median(rates),
        "repeats": len(rates),
    }


def busy_warning(device: str) -> str | None:
    """A warning when other work already loads the CPU: CPU timings then say little (GPU runs do not care).

    Measured over one quiet second (this process sleeps) from /proc/stat, not from the 1-minute load average,
    which still counts work that ended up to a minute ago.
    """
    if device != "cpu":
        return None
    cores = os.cpu_count() or 1
    busy = _busy_cores(1.0)
    if busy is None:
        if not hasattr(os, "getloadavg"):
            return None
        busy, what = os.getloadavg()[0], "1-min load"
    else:
        what = "cores busy over 1 s"
    if busy <= 0.25 * cores:
        return None
    return (
        f"this machine is busy ({what} {busy:.1f} of {cores}): CPU timings will be slow and noisy, "
        "and threads waiting on each other can make small operations far slower; run on an idle machine "
        "for numbers to quote (memory and step-0 losses are still valid)"
    )


def _busy_cores(seconds: float) -> float | None:
    """How many cores other processes kept busy while this one slept `seconds` (Linux /proc/stat), else None."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]) - idle, sum(fields[:8])

    try:
        busy0, total0 = sample()
        time.sleep(seconds)
        busy1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    total = total1 - total0
    return None if total <= 0 else (busy1 - busy0) / total * (os.cpu_count() or 1)


def machine_info(threads: int, device: str) -> dict[str, Any]:
    """CPU model, cores, GPU, library versions, date: what a reader needs to compare numbers."""
    from importlib import metadata

    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "orpo_kit"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
