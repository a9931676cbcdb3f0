"""Read preference pairs from the built-in set, a JSON / JSONL file or Python rows, and split off an eval set."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

BUILTIN = "builtin"
REQUIRED = ("prompt", "chosen", "rejected")


@dataclass(frozen=True)
class PreferencePair:
    """One prompt with a preferred (chosen) and a dispreferred (rejected) answer; `origin` names file and row."""

    prompt: str
    chosen: str
    rejected: str
    origin: str = ""
    split: str | None = None
    skill: str | None = None


def builtin_path() -> Path:
    """Path of the built-in pairs file shipped in the package."""
    return Path(str(resources.files("orpo_kit.data") / "builtin" / "pairs.jsonl"))


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a .jsonl or .json file; a bad line is an error naming the file and line."""
    if not path.is_file():
        raise FileNotFoundError(f"preference data not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        rows = json.loads(text)
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a JSON list of objects")
        return rows
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}, line {lineno}: not valid JSON ({exc.msg})") from None
    return rows


def pairs_from_rows(rows: Iterable[dict[str, Any]], source: str = "rows") -> list[PreferencePair]:
    """Validate rows of {prompt, chosen, rejected} strings into pairs; errors name source, row and field."""
    pairs = []
    for i, row in enumerate(rows):
        where = f"{source}, row {i}"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected an object with fields {REQUIRED}, got {type(row).__name__}")
        for name in REQUIRED:
            value = row.get(name)
            if not isinstance(value, str):
                got = "missing" if name not in row else f"a {type(value).__name__}"
                raise ValueError(f"{where}, field {name!r}: expected a string, got {got}")
            if name != "prompt" and not value.strip():
                raise ValueError(f"{where}, field {name!r}: empty completion")
        pairs.append(PreferencePair(row["prompt"], row["chosen"], row["rejected"], origin=where,
                                    split=row.get("split"), skill=row.get("skill")))
    return pairs


def load_preference_pairs(source: str | Path | list[dict[str, Any]]) -> list[PreferencePair]:
    """Pairs from "builtin", a .jsonl / .json path or a list of dicts."""
    if isinstance(source, list):
        return pairs_from_rows(source)
    if str(source) == BUILTIN:
        path = builtin_path()
        return pairs_from_rows(_read_rows(path), source=f"builtin ({path.name})")
    path = Path(source)
    if path.suffix not in (".jsonl", ".json"):
        raise ValueError(f"{path}: unsupported data file type {path.suffix!r}; use .jsonl or .json")
    return pairs_from_rows(_read_rows(path), source=str(path))


def split_train_eval(
    pairs: list[PreferencePair], eval_fraction: float, seed: int,
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Use the rows' own train/eval split when present, else hold out a seeded fraction of the prompts.

    Splitting is by prompt, so no eval prompt also occurs in training.
    """
    splits = {p.split for p in pairs}
    if splits == {"train", "eval"}:
        return [p for p in pairs if p.split == "train"], [p for p in pairs if p.split == "eval"]
    prompts = sorted({p.prompt for p in pairs})
    random.Random(seed).shuffle(prompts)
    n_eval = max(1, round(len(prompts) * eval_fraction))
    held_out = set(prompts[:n_eval])
    return [p for p in pairs if p.prompt not in held_out], [p for p in pairs if p.prompt in held_out]
