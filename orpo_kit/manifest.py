"""Checkpoints that prove themselves: every file's size and SHA-256 in a manifest written before the rename, and
a check that names the file that is wrong (a bad disk, a partial copy, a sync tool)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path

MANIFEST = "manifest.json"
STATE_FILE = "trainer_state.json"  # written last: its presence marks a complete checkpoint
DAMAGED = "damaged-checkpoints"  # beside checkpoints/: where a checkpoint that fails its check is moved
_STEP = re.compile(r"^step-(\d+)$")
_CHUNK = 1 << 20


def _sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: Path) -> None:
    """Record every file under `folder` (size and SHA-256) in folder/manifest.json."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    entries = {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files}
    (folder / MANIFEST).write_text(json.dumps({"files": entries}, indent=1), encoding="utf-8")


def verify_checkpoint(folder: Path) -> list[str]:
    """What is wrong with a checkpoint, one line per problem naming the file (empty when it verifies).

    A checkpoint written before manifests existed is checked for its trainer state only.
    """
    if not (folder / STATE_FILE).is_file():
        return [f"{folder / STATE_FILE} is missing"]
    path = folder / MANIFEST
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, TypeError) as exc:
        return [f"{path} is not a readable manifest ({exc})"]
    problems = []
    for name, want in entries.items():
        file = folder / name
        if not file.is_file():
            problems.append(f"{file} is missing")
        elif file.stat().st_size != want["size"]:
            problems.append(f"{file} is {file.stat().st_size:,} bytes, the manifest says {want['size']:,}")
        elif _sha256(file) != want["sha256"]:
            problems.append(f"{file} does not match its SHA-256 in the manifest (changed or damaged)")
    return problems


def step_folders(checkpoints: Path) -> list[Path]:
    """Every `step-N` folder, complete or not, newest first (temporary folders of saves in progress excluded)."""
    if not checkpoints.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in checkpoints.iterdir() if (m := _STEP.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found, reverse=True)]


def set_aside(folder: Path, run_dir: Path) -> Path:
    """Move a damaged checkpoint to run_dir/damaged-checkpoints/ (never deleted); returns where it went."""
    target_dir = run_dir / DAMAGED
    target_dir.mkdir(exist_ok=True)
    target = target_dir / f"{folder.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    shutil.move(str(folder), str(target))
    return target
