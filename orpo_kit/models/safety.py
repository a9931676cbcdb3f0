"""Safe loading of weights that can come from elsewhere: safetensors only unless pickles are allowed, and no
repository code unless `trust_remote_code` is set.

Unpickling a `.bin` / `.pt` file can run arbitrary code; safetensors files hold only tensors. orpo_kit loads
models and adapters with `use_safetensors=True` and refuses a folder whose weights exist only as pickles,
unless `allow_pickle_weights=true`. Its own trainer state (optimizer, scheduler, RNG), written inside a run
directory, is read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
NOT_WEIGHTS = ("training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pt")  # trainer files, never loaded


def pickled_weight_files(folder: Path) -> list[str]:
    """Names of pickle weight files in a folder that has no safetensors weights (empty otherwise)."""
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return []
    return sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES and p.name not in NOT_WEIGHTS)


def check_weight_files(source: str | Path, allow_pickle_weights: bool, what: str = "model") -> None:
    """Refuse a local folder whose weights exist only as pickle files, unless they are explicitly allowed."""
    folder = Path(source).expanduser()
    pickled = pickled_weight_files(folder)
    if pickled and not allow_pickle_weights:
        raise ValueError(
            f"{folder}: the {what} weights are pickle files only ({', '.join(pickled)}); loading a pickle can run "
            "arbitrary code. Convert them to safetensors, or set allow_pickle_weights=true if you trust the source."
        )


def use_safetensors(allow_pickle_weights: bool) -> bool | None:
    """transformers' `use_safetensors`: True (refuse pickles) unless they are allowed (None: prefer safetensors)."""
    return None if allow_pickle_weights else True


@contextlib.contextmanager
def explain_refusals(name: str) -> Iterator[None]:
    """Re-raise transformers' refusals (remote code, missing safetensors) in orpo_kit's terms."""
    try:
        yield
    except ValueError as exc:
        if "trust_remote_code" not in str(exc):
            raise
        raise ValueError(
            f"{name!r} ships its own Python code, which orpo_kit does not run unless you set "
            f"trust_remote_code=true (read that code first). transformers said: {exc}"
        ) from exc
