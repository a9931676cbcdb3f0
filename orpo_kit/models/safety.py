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


# Files that mark a saved folder (one of each group is enough); save_pretrained writes them.
FOLDER_FILES: dict[str, tuple[str, ...]] = {
    "model": ("config.json", "adapter_config.json"),
    "tokenizer": ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json"),
}
SAVED_FILES = "config.json, model.safetensors, tokenizer.json, tokenizer_config.json"
MISSING_HINTS = {"checkpoint": "its weights were deleted or moved; pick another checkpoint with --checkpoint"}


def looks_local(name: str | Path) -> bool:
    """Whether a model name is a local path, never sent to the hub: it exists or cannot be a hub id (owner/name)."""
    text = str(name)
    return Path(text).expanduser().exists() or text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text


def check_model_folder(name: str | Path, what: str = "model", part: str = "model") -> None:
    """Refuse a local path that is missing, not a folder, or holds no `part` files; hub ids pass unchecked."""
    if not looks_local(name):
        return
    folder = Path(name).expanduser()
    if not folder.exists():
        hint = MISSING_HINTS.get(what)
        raise FileNotFoundError(f"{what} folder {name} does not exist" + (f": {hint}" if hint else ""))
    if not folder.is_dir():
        raise NotADirectoryError(f"{what} folder {name} is a file; pass the folder that holds {SAVED_FILES}")
    missing = [kind for kind, files in FOLDER_FILES.items() if not any((folder / f).is_file() for f in files)]
    if part in missing:
        held = sorted(p.name for p in folder.iterdir())
        holds = f"it holds {', '.join(held[:5])}{', ...' if len(held) > 5 else ''}" if held else "it is empty"
        raise FileNotFoundError(
            f"{what} folder {name} holds no {' or '.join(missing)} files ({holds}); expected those "
            f"save_pretrained writes: {SAVED_FILES}"
        )


def check_weight_files(source: str | Path, allow_pickle_weights: bool, what: str = "model") -> None:
    """Refuse a local folder that is missing, holds no model, or holds pickled weights only (unless allowed)."""
    folder = Path(source).expanduser()
    pickled = pickled_weight_files(folder)
    if pickled and not allow_pickle_weights:
        raise ValueError(
            f"{folder}: the {what} weights are pickle files only ({', '.join(pickled)}); loading a pickle can run "
            "arbitrary code. Convert them to safetensors, or set allow_pickle_weights=true if you trust the source."
        )
    check_model_folder(source, what)


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
