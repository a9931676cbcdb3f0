"""What may change when a run is resumed: settings that only say how to watch, save or run it may; settings that
the saved optimizer state, learning-rate schedule, data order or model depend on may not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import LOCAL_PATH_FIELDS, ORPOConfig

# Settings that do not change what the resumed steps compute (same pairs, same order, same math).
SAFE_TO_CHANGE = frozenset(
    {
        "max_steps",  # checked below: not below the checkpoint; the schedule then ends at the new step
        "stop_at_step",
        "eval_steps",
        "logging_steps",
        "save_steps",
        "save_total_limit",
        "max_eval_pairs",
        "per_device_eval_batch_size",
        "report_to",
        "output_dir",
        "device",
        "mixed_precision",
        "cpu_return_freed_memory",
        "max_skipped_steps",
        "max_bad_row_fraction",
        "gradient_checkpointing",
        "chunked_logps",
        "logps_chunk_size",
        "prefix_sharing",
        "packing",
        "fused_swiglu",
        "attn_implementation",
        "trust_remote_code",
        "allow_pickle_weights",
    }
)


def _same(name: str, saved: Any, now: Any) -> bool:
    """Equal, where a local path counts as equal to the same file written another way (relative, ~)."""
    if name in LOCAL_PATH_FIELDS and isinstance(saved, str) and isinstance(now, str):
        return _resolved(saved) == _resolved(now)
    return bool(saved == now)


def _resolved(value: str) -> str:
    """An existing local path made absolute; anything else as it is."""
    path = Path(value).expanduser()
    return str(path.resolve()) if path.exists() else value


def check_resume_config(saved: dict[str, Any], cfg: ORPOConfig, step: int, checkpoint: Path) -> list[str]:
    """Refuse settings that differ from the checkpoint's in ways the resumed state cannot follow; return notes
    on the safe changes (each names the setting, old and new value)."""
    now = cfg.to_dict()
    changed = [k for k in now if k in saved and not _same(k, saved[k], now[k])]
    refused = [f"{k}={saved[k]!r} -> {now[k]!r}" for k in changed if k not in SAFE_TO_CHANGE]
    if refused:
        raise ValueError(
            f"--resume: {checkpoint} was trained with other settings ({'; '.join(refused)}); the optimizer state, "
            "learning-rate schedule and data order of the resumed run depend on them. Resume without changing "
            "them (orpo-kit train --resume --output-dir RUN takes the run's config.yaml), or start a new run"
        )
    if cfg.max_steps < step:
        raise ValueError(
            f"--resume: max_steps={cfg.max_steps} is below the checkpoint's step {step} ({checkpoint}): nothing "
            "would be trained; give a max_steps of at least that"
        )
    notes = [f"{k}: {saved[k]!r} -> {now[k]!r}" for k in changed if k != "output_dir"]
    if "max_steps" in changed and cfg.lr_scheduler_type not in ("constant", "constant_with_warmup"):
        notes.append(f"the {cfg.lr_scheduler_type} learning-rate schedule now ends at step {cfg.max_steps}")
    return notes
