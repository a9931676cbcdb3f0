"""Atomic checkpoints: weights (full or adapter) as safetensors with the tokenizer, plus trainer state.

A checkpoint is written into a hidden temporary folder and renamed into place only when complete, so a
crash mid-save never leaves a folder that looks like a checkpoint. Trainer state (optimizer, scheduler,
RNG) is written by orpo_kit itself and read back with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from .manifest import STATE_FILE, set_aside, step_folders, verify_checkpoint, write_manifest

CHECKPOINTS = "checkpoints"
_NAME = re.compile(r"^step-(\d+)$")


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """Where the checkpoint of a given optimizer step lives."""
    return Path(run_dir) / CHECKPOINTS / f"step-{step:06d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary folders of interrupted saves are ignored)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


BEST_FILE = "best.json"  # names the best checkpoint by the eval metric; that checkpoint is never pruned


def best_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint named best (by the eval metric), if it still exists; a damaged best.json is named and ignored."""
    import sys

    pointer = Path(run_dir) / CHECKPOINTS / BEST_FILE
    if not pointer.is_file():
        return None
    try:
        path = Path(run_dir) / CHECKPOINTS / json.loads(pointer.read_text(encoding="utf-8"))["checkpoint"]
    except (ValueError, KeyError, TypeError) as exc:  # ValueError: bad JSON or UTF-8; the others: no name in it
        reason = f"not valid JSON ({exc})" if isinstance(exc, ValueError) else "it names no checkpoint"
        print(
            f"orpo-kit: warning: ignoring {pointer}: {reason}; the newest checkpoint is used instead "
            "(delete the file, or let the next evaluation in training rewrite it)",
            file=sys.stderr,
        )
        return None
    return path if (path / STATE_FILE).is_file() else None


def mark_best(run_dir: str | Path, checkpoint: Path, metric: str, value: float) -> None:
    """Record `checkpoint` as the best one (atomic write)."""
    pointer = Path(run_dir) / CHECKPOINTS / BEST_FILE
    tmp = pointer.with_suffix(".tmp")
    tmp.write_text(json.dumps({"checkpoint": checkpoint.name, "metric": metric, "value": value}), encoding="utf-8")
    os.replace(tmp, pointer)


def mark_if_best(
    run_dir: str | Path,
    checkpoint: Path,
    metric: str,
    value: float,
    greater_is_better: bool,
    best_value: float | None = None,
) -> float | None:
    """Mark `checkpoint` best when `value` beats the best so far (read from best.json when not given); returns
    the best value after the comparison."""
    if best_value is None:
        best = best_checkpoint(run_dir)
        if best is not None:
            best_value = _best_field(best.parent / BEST_FILE, "value")
    if best_value is None or (value > best_value if greater_is_better else value < best_value):
        mark_best(run_dir, checkpoint, metric, value)
        return value
    return best_value


def _best_field(pointer: Path, key: str) -> Any:
    """One field of best.json, or None when the file is missing, damaged or lacks it (best_checkpoint warns)."""
    try:
        found = json.loads(pointer.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found.get(key) if isinstance(found, dict) else None


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def rng_state() -> dict[str, Any]:
    """All RNG states as tensors and plain values (loadable with weights_only=True)."""
    numpy_state: Any = np.random.get_state()
    kind, keys, pos, has_gauss, cached = numpy_state
    state: dict[str, Any] = {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()  # this process's own GPU (each rank has its own)
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` saved."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    saved = state.get("cuda")
    if saved is not None and torch.cuda.is_available():
        if isinstance(saved, (list, tuple)):  # older checkpoints held every visible GPU's state
            index = torch.cuda.current_device()
            saved = saved[index] if index < len(saved) else None
        if saved is not None:
            torch.cuda.set_rng_state(saved)  # onto this process's GPU, however many the machine has


def _check_finite(model: torch.nn.Module) -> None:
    """Refuse to save weights that contain NaN or inf."""
    bad = [n for n, p in model.named_parameters() if p.requires_grad and not torch.isfinite(p).all()]
    if bad:
        raise FloatingPointError(f"refusing to save a checkpoint: non-finite values in {bad[:5]}")


def rng_file(rank: int) -> str:
    """File of one process's RNG state: rank 0 keeps the single-process name, rank r > 0 its own file."""
    return "rng_state.pt" if rank == 0 else f"rng_state_rank{rank}.pt"


def estimate_checkpoint_bytes(model: torch.nn.Module) -> int:
    """Bytes one checkpoint takes: saved weights (all of them, or only the trainable ones under an adapter, new
    token rows included) plus AdamW's two moments per trainable value; tokenizer and small files are not counted."""
    params = dict(model.named_parameters()).values()  # tied weights once
    trainable = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    adapter = hasattr(model, "peft_config")
    weights = trainable if adapter else sum(p.numel() * p.element_size() for p in params)
    return weights + 2 * trainable


def check_free_space(run_dir: Path, needed: int) -> None:
    """Refuse to start when the output directory's disk cannot hold one more checkpoint."""
    free = shutil.disk_usage(run_dir).free
    if free < needed:
        raise OSError(
            f"output_dir {run_dir}: {free / 2**20:.1f} MiB free on its disk, but one checkpoint needs "
            f"about {needed / 2**20:.1f} MiB; free some space or choose another output_dir"
        )


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: Any,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    keep_last: int = 3,
    rng_states: list[dict[str, Any]] | None = None,
    after_weights: Callable[[Path], None] | None = None,
) -> Path:
    """Write a complete checkpoint atomically, then keep only the newest `keep_last` (and the best).

    `rng_states`: one per process (rank order), gathered by the caller; default this process's alone.
    `after_weights`: called with the temporary folder once the weights are in it (the trainer's callbacks).
    """
    _check_finite(model)
    final = checkpoint_path(run_dir, step)
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        with quiet_transformers():
            # An adapter holds its trained token rows, never the whole embedding and lm_head: the rebuilt base has
            # the same grown rows (`fit_embeddings`), and peft's "auto" would ask the hub on every save.
            adapter = {"save_embedding_layers": False} if hasattr(model, "peft_config") else {}
            model.save_pretrained(tmp / "model", safe_serialization=True, **adapter)
            tokenizer.save_pretrained(tmp / "model")
        if after_weights is not None:
            after_weights(tmp)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        for rank, rng in enumerate(rng_states or [rng_state()]):
            torch.save(rng, tmp / rng_file(rank))
        (tmp / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=2), encoding="utf-8")
        write_manifest(tmp)
        _fsync_tree(tmp)
    except OSError as exc:  # a full disk, a lost mount: the previous checkpoints stay as they are
        shutil.rmtree(tmp, ignore_errors=True)
        raise _save_failed(exc, final, Path(run_dir), estimate_checkpoint_bytes(model)) from exc
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    _prune(Path(run_dir), keep_last, final)
    return final


def _save_failed(exc: OSError, final: Path, run_dir: Path, needed: int) -> OSError:
    """The error to stop with: what failed, that nothing older was touched, and how much room a checkpoint needs."""
    previous = latest_checkpoint(run_dir)
    kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint existed"
    return OSError(
        exc.errno,
        f"could not write the checkpoint {final} ({exc.strerror or exc}); the partial copy was removed and {kept}. "
        f"One checkpoint needs about {needed / 2**20:.1f} MiB: free that much space (or pick another output_dir) "
        "and continue with --resume",
    )


def verified_latest_checkpoint(run_dir: str | Path, say: Callable[[str], None] = print) -> Path | None:
    """The newest checkpoint that verifies; damaged ones (naming the file) are moved aside, never deleted, and
    best.json stops pointing at them. Main process only: it moves folders."""
    run_dir = Path(run_dir)
    for folder in step_folders(run_dir / CHECKPOINTS):
        problems = verify_checkpoint(folder)
        if not problems:
            return folder
        pointer = run_dir / CHECKPOINTS / BEST_FILE
        names_it = _best_field(pointer, "checkpoint") == folder.name
        moved = set_aside(folder, run_dir)
        if names_it:
            pointer.unlink()
        say(
            f"orpo-kit: checkpoint {folder.name} is damaged: {'; '.join(problems)}. Moved it to {moved}; "
            "using the newest checkpoint before it."
        )
    return None


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' progress bars off, then as before (a per-save bar would interleave with the training bar; a
    loading bar is noise in a notebook's saved outputs)."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def _fsync_tree(folder: Path) -> None:
    """Flush every file of a folder to disk before it is renamed into place."""
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    """Flush a directory entry (the rename) where the OS supports it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune(run_dir: Path, keep_last: int, just_written: Path | None = None) -> None:
    """Delete old checkpoints and leftovers of interrupted saves by other processes.

    Never the one just written (the run's newest, whatever its number beside others) nor the best one.
    """
    keep = {just_written, best_checkpoint(run_dir)}
    for old in list_checkpoints(run_dir)[: -max(1, keep_last)]:
        if old not in keep:
            shutil.rmtree(old, ignore_errors=True)
    for leftover in (run_dir / CHECKPOINTS).glob(".tmp-*"):
        if not leftover.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(leftover, ignore_errors=True)


def load_weights(model: Any, checkpoint: Path) -> None:
    """Load a checkpoint's weights (adapter or full) into an already built model of the same shape."""
    folder = checkpoint / "model"
    adapter = folder / "adapter_model.safetensors"
    if adapter.is_file():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(adapter))
        return
    weights = load_file(folder / "model.safetensors")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {params[k].data_ptr() for k in weights if k in params}  # a missing key is fine only if tied to these
    untied = [k for k in missing if k not in params or params[k].data_ptr() not in loaded]
    if unexpected or untied:
        raise ValueError(
            f"{folder}: weights do not match the model (unexpected {unexpected[:3]}, missing {untied[:3]})"
        )


def _load(path: Path) -> Any:
    """A trainer file, onto the CPU: saved from cuda:0, it would otherwise land on every rank's cuda:0 (or fail
    on a machine without that GPU)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def load_trainer_state(
    checkpoint: Path,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    rank: int = 0,
) -> dict[str, Any]:
    """Restore optimizer, scheduler and this process's RNG states; return the saved trainer state dict.

    A process whose rank has no RNG file (the run had fewer processes) takes rank 0's. Each process's GPU
    generator state goes back onto its own GPU.
    """
    optimizer.load_state_dict(_load(checkpoint / "optimizer.pt"))  # moves the state onto the weights' device
    scheduler.load_state_dict(_load(checkpoint / "scheduler.pt"))
    rng = checkpoint / rng_file(rank)
    _set_rng_state(_load(rng if rng.is_file() else checkpoint / rng_file(0)))
    return json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
