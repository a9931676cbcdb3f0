"""This process's memory as the OS counts it: resident set (now and its peak), read once for the estimator's
measurement, the benchmark and the training dashboard."""

from __future__ import annotations

import sys
from pathlib import Path

STATUS = Path("/proc/self/status")


def status_kib(field_name: str) -> int | None:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in KiB; None where there is no /proc (macOS)."""
    try:
        for line in STATUS.read_text(encoding="ascii").splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int | None:
    """Current resident set size (VmRSS, else psutil where installed), None when neither is available."""
    kib = status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.Process().memory_info().rss)


def peak_rss_bytes() -> int:
    """Peak resident set size since this process started (exec): VmHWM, else ru_maxrss.

    ru_maxrss is the fallback only: on Linux it keeps the parent's high-water mark across fork + exec.
    """
    kib = status_kib("VmHWM")
    if kib is None:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kib = kib // 1024 if sys.platform == "darwin" else kib  # bytes on macOS
    return kib * 1024


def reset_peak() -> bool:
    """Set VmHWM back to the current RSS (Linux >= 4.0: write 5 to clear_refs); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5", encoding="ascii")
        return True
    except OSError:
        return False
