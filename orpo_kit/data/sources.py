"""Read raw preference rows from anywhere: the built-in set, local files, datasets, DataFrames, the hub.

Every row comes back with a `where` label for messages: text files count lines from 1 as in an editor
("line 3"); tables (JSON lists, Parquet, datasets, DataFrames, Python lists) count rows from 0 ("row 0").
Damage that concerns a single line (bad JSON, bad UTF-8, a CSV row longer than its header) becomes a row-level
problem, so a drop policy can skip it; damage to the whole source (missing, a directory, empty, unreadable)
raises `DataSourceError`.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

BUILTIN = "builtin"
FILE_TYPES = (".jsonl", ".json", ".parquet", ".csv")  # each also gzip-compressed (HH-RLHF ships .jsonl.gz)


class DataSourceError(ValueError):
    """The source as a whole cannot be read (names the file or dataset and what to do)."""


@dataclass
class RawRow:
    """One row as read, or the reason it could not be read (`problem` = (kind, message))."""

    where: str
    values: dict[str, Any] | None
    problem: tuple[str, str] | None = None


def builtin_path() -> Path:
    """Path of the built-in pairs file shipped in the package."""
    return Path(str(resources.files("orpo_kit.data") / "builtin" / "pairs.jsonl"))


def _jsonl_rows(path: Path, data: bytes) -> list[RawRow]:
    """One row per non-blank line; undecodable or unparsable lines become row problems."""
    rows = []
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        where = f"{path}, line {lineno}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            rows.append(RawRow(where, None, ("encoding", f"{where}: not valid UTF-8 (byte {exc.start})")))
            continue
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            rows.append(RawRow(where, None, ("bad_json", f"{where}: not valid JSON ({exc.msg} at column {exc.colno})")))
            continue
        if not isinstance(value, dict):
            rows.append(
                RawRow(where, None, ("wrong_type", f"{where}: expected a JSON object, got {type(value).__name__}"))
            )
            continue
        rows.append(RawRow(where, value))
    return rows


def _plain(value: Any) -> Any:
    """Table cells as plain Python: arrays to lists (Parquet message lists), NaN / NA to None (missing)."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, float) and value != value:
        return None
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    return value


def _table_rows(label: str, records: list[Any]) -> list[RawRow]:
    """Rows of a table (0-based); non-mapping rows become row problems."""
    rows = []
    for i, value in enumerate(records):
        where = f"{label}, row {i} (counting from 0)"
        if isinstance(value, dict):
            rows.append(RawRow(where, {k: _plain(v) for k, v in value.items()}))
        else:
            rows.append(RawRow(where, None, ("wrong_type", f"{where}: expected an object, got {type(value).__name__}")))
    return rows


def _decode(path: Path, data: bytes) -> str:
    """Whole-file UTF-8 text, or an error naming the file and the line of the bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataSourceError(
            f"{path}, line {line}: not valid UTF-8 (byte {exc.start}); re-save the file as UTF-8"
        ) from None


def file_type(path: Path) -> str:
    """The data extension of a file name, looking through a .gz ('train.jsonl.gz' -> '.jsonl')."""
    suffix = Path(path.stem).suffix if path.suffix.lower() == ".gz" else path.suffix
    return suffix.lower()


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when gzip, without a UTF-8 byte-order mark."""
    data = path.read_bytes()
    if path.suffix.lower() == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise DataSourceError(f"{path}: not a complete gzip file ({exc}); download it again") from None
    return data.removeprefix(b"\xef\xbb\xbf")  # a byte-order mark is not content


def _file_rows(path: Path) -> list[RawRow]:
    """Rows of a local file, by extension."""
    if path.is_dir():
        raise DataSourceError(f"{path} is a directory; pass a .jsonl, .json, .parquet or .csv file inside it")
    if not path.is_file():
        raise DataSourceError(f"preference data not found: {path}")
    kind = file_type(path)
    if kind not in FILE_TYPES:
        raise DataSourceError(
            f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(FILE_TYPES)} "
            "(or the same gzip-compressed, e.g. .jsonl.gz)"
        )
    data = _read_bytes(path)
    if not data.strip():
        raise DataSourceError(f"{path} is empty: no rows to read")
    if kind == ".jsonl":
        return _jsonl_rows(path, data)
    if kind == ".json":
        return _json_rows(path, data)
    if kind == ".csv":
        return _csv_rows(path, _decode(path, data))
    import pandas as pd

    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise DataSourceError(f"{path}: not a readable Parquet file ({exc})") from exc
    return _table_rows(str(path), frame.to_dict("records"))


def _csv_rows(path: Path, text: str) -> list[RawRow]:
    """CSV rows named by the editor line where each starts (the header is line 1); too many fields: a row problem."""
    reader = csv.DictReader(io.StringIO(text))
    rows, start = [], 2
    try:
        for row in reader:
            where = f"{path}, line {start}"
            extra = row.pop(None, None)  # DictReader files surplus fields under the key None
            if extra is None:
                rows.append(RawRow(where, dict(row)))
            else:
                rows.append(RawRow(where, None, ("extra_fields", _extra_fields(where, reader.fieldnames, extra))))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataSourceError(f"{path}, line {reader.line_num}: not readable as CSV ({exc})") from None
    return rows


def _extra_fields(where: str, header: Sequence[str] | None, extra: Sequence[str]) -> str:
    """Message for a CSV row longer than its header, guessing the cause from the header."""
    names = list(header or [])
    separator = next((s for s in (";", "\t", "|") if len(names) == 1 and s in names[0]), None)
    hint = (
        f"the header is one field holding {separator!r}: the file looks separated by {separator!r}, not commas; "
        "save it as comma-separated CSV"
        if separator
        else "put any field that holds a comma in double quotes"
    )
    return f"{where}: {len(names) + len(extra)} fields but the header (line 1) has {len(names)}; {hint}"


def _json_rows(path: Path, data: bytes) -> list[RawRow]:
    """A JSON file holding a list of objects (or {"data": [...]}); one object per line is read as JSON lines
    (Stanford SHP publishes its JSON lines as .json files)."""
    text = _decode(path, data)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            return _jsonl_rows(path, data)
        raise DataSourceError(
            f"{path}, line {exc.lineno}: not valid JSON ({exc.msg}); for one object per line use the .jsonl extension"
        ) from None
    if isinstance(value, dict) and isinstance(value.get("data"), list):
        value = value["data"]
    if not isinstance(value, list):
        raise DataSourceError(f"{path}: expected a JSON list of objects, got {type(value).__name__}")
    if not value:
        raise DataSourceError(f"{path} is empty: the JSON list has no rows")
    return _table_rows(str(path), value)


def _hub_rows(name: str, split: str | None) -> list[RawRow]:
    """Rows of a hub dataset through datasets.load_dataset, with a clear message when offline."""
    import datasets

    try:
        loaded = datasets.load_dataset(name, split=split)
    except Exception as exc:
        raise DataSourceError(
            f"could not load dataset {name!r} from the Hugging Face hub: {exc}\nIf this machine is offline, "
            "download it elsewhere and pass a local file, or set HF_DATASETS_OFFLINE=1 with a filled cache."
        ) from exc
    return _dataset_rows(loaded, name, split)


def _dataset_rows(ds: Any, label: str, split: str | None) -> list[RawRow]:
    """Rows of a datasets.Dataset, or one split of a DatasetDict (train-like split by default)."""
    import datasets

    if isinstance(ds, datasets.DatasetDict):
        names = list(ds.keys())
        if split is None:
            split = next((s for s in ("train_prefs", "train") if s in names), names[0])
        if split not in names:
            raise DataSourceError(f"{label}: no split {split!r}; available: {', '.join(names)}")
        ds, label = ds[split], f"{label}[{split}]"
    return _table_rows(label, ds.to_list())


def read_rows(source: Any, split: str | None = None) -> tuple[str, list[RawRow]]:
    """(label, rows) from "builtin", a path, a hub name, a Dataset / DatasetDict, a DataFrame or a list of dicts."""
    if isinstance(source, list):
        return "rows", _table_rows("rows", source)
    if hasattr(source, "to_dict") and hasattr(source, "columns"):  # pandas DataFrame
        return "DataFrame", _table_rows("DataFrame", source.to_dict("records"))
    if type(source).__module__.startswith("datasets."):
        return "Dataset", _dataset_rows(source, "Dataset", split)
    text = str(source)
    if text == BUILTIN:
        return f"builtin ({builtin_path().name})", _file_rows(builtin_path())
    path = Path(text)
    # a path that looks local is never sent to the hub: it exists, has an extension, starts like a path, or has
    # more folders than a hub id (owner/name)
    if path.exists() or path.suffix or text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text:
        return str(path), _file_rows(path.expanduser())
    return text, _hub_rows(text, split)
