"""llama.cpp's own Hugging Face -> GGUF converter: find it, fetch it once from PyPI, run it in a child process.

The converter (`convert_hf_to_gguf.py`, its `conversion/` package and its `gguf-py`) is not on PyPI as a package
of its own, but llama-cpp-python's source distribution vendors llama.cpp whole. orpo_kit takes those three parts
from that source distribution (pinned, so every export uses the converter the tests ran) and keeps them in its
cache. It runs in a child process because it puts its own `gguf-py` first on `sys.path`, which must not replace
the `gguf` package transformers uses in this process.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

LLAMA_CPP_PYTHON = "0.3.36"  # the llama-cpp-python release whose vendored llama.cpp converts (and is tested)
LLAMA_CPP_ENV = "ORPO_KIT_LLAMA_CPP"  # a llama.cpp folder, or a llama-cpp-python source distribution (.tar.gz)
CONVERTER = "convert_hf_to_gguf.py"
PARTS = (CONVERTER, "conversion/", "gguf-py/", "LICENSE")  # what the converter needs, inside vendor/llama.cpp
OUTTYPES = ("f16", "q8_0", "bf16", "f32")


class ConverterFailed(RuntimeError):
    """llama.cpp's converter exited with an error (its last lines are in the message)."""


def converter_dir() -> Path:
    """A llama.cpp folder holding the converter: $ORPO_KIT_LLAMA_CPP (a folder or a source distribution), else
    orpo_kit's cache, filled once from PyPI (llama-cpp-python's source distribution, about 77 MB)."""
    given = os.environ.get(LLAMA_CPP_ENV, "").strip()
    if given:
        path = Path(given).expanduser()
        if path.is_dir():
            if not (path / CONVERTER).is_file():
                raise FileNotFoundError(
                    f"{LLAMA_CPP_ENV}={given}: no {CONVERTER} in that folder (a llama.cpp checkout)"
                )
            return path
        if path.is_file():
            return _unpacked(path)
        raise FileNotFoundError(f"{LLAMA_CPP_ENV}={given}: no such folder or file")
    cached = _cache_dir()
    if (cached / CONVERTER).is_file():
        return cached
    with tempfile.TemporaryDirectory(prefix="orpo-kit-llama-cpp-") as tmp:
        return _unpacked(download_sdist(Path(tmp)))


def _cache_dir() -> Path:
    """Where the converter of the pinned release is kept."""
    from ..models.load import cache_root

    return cache_root() / f"llama.cpp-{LLAMA_CPP_PYTHON}"


def download_sdist(folder: Path) -> Path:
    """llama-cpp-python's source distribution from PyPI (through pip: its index, proxy and certificates)."""
    print(
        f"fetching llama.cpp's converter once: llama-cpp-python {LLAMA_CPP_PYTHON}'s source distribution "
        f"(about 77 MB) from PyPI into {_cache_dir()}",
        flush=True,
    )
    spec = f"llama-cpp-python=={LLAMA_CPP_PYTHON}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", spec, "-d", str(folder)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(folder.glob("llama_cpp_python-*.tar.gz"))
    if done.returncode != 0 or not found:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise OSError(
            f"could not download {spec} from PyPI ({tail}). Offline: download it elsewhere "
            f"(pip download --no-deps --no-binary :all: {spec}) and set {LLAMA_CPP_ENV} to the .tar.gz, "
            "or to a llama.cpp checkout"
        )
    return found[0]


def _unpacked(sdist: Path) -> Path:
    """The converter's parts from a llama-cpp-python source distribution, unpacked into the cache (atomically:
    a copy cut short is never taken for a whole one)."""
    target = _cache_dir() if sdist.name.startswith(f"llama_cpp_python-{LLAMA_CPP_PYTHON}.") else None
    target = target or _cache_dir().with_name(f"llama.cpp-{sdist.name.removesuffix('.tar.gz')}")
    if (target / CONVERTER).is_file():
        return target
    try:
        archive = tarfile.open(sdist, "r:gz")  # noqa: SIM115 - closed below, after the members are read
        members = [m for m in archive.getmembers() if _converter_part(m.name)]
    except (tarfile.TarError, EOFError, gzip.BadGzipFile) as exc:
        raise OSError(f"{sdist} is not a readable llama-cpp-python source distribution: {exc}") from exc
    with archive:
        if not any(m.name.endswith("/" + CONVERTER) for m in members):
            raise FileNotFoundError(f"{sdist} holds no vendor/llama.cpp/{CONVERTER}")
        _extract(archive, members, target)
    return target


def _extract(archive: tarfile.TarFile, members: list[tarfile.TarInfo], target: Path) -> None:
    """Unpack members under <root>/vendor/llama.cpp/ into `target`, through a temporary folder beside it."""
    root = members[0].name.split("/vendor/llama.cpp/")[0] + "/vendor/llama.cpp"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        if hasattr(tarfile, "data_filter"):
            archive.extractall(tmp, members=members, filter="data")
        else:  # pragma: no cover - Pythons before the extraction filters
            archive.extractall(tmp, members=members)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp / root, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _converter_part(name: str) -> bool:
    """Whether a path inside the source distribution belongs to the converter."""
    _, sep, rest = name.partition("/vendor/llama.cpp/")
    return bool(sep) and any(rest == p or (p.endswith("/") and rest.startswith(p)) for p in PARTS)


def run_converter(model_dir: Path, outfile: Path, outtype: str, log: Path, name: str) -> None:
    """Convert a transformers model folder to one GGUF file named `name` inside (general.name) with llama.cpp's
    converter; its output goes to `log`, and its last lines are shown when it fails."""
    if outtype not in OUTTYPES:
        raise ValueError(f"GGUF type {outtype!r} is not one of {', '.join(OUTTYPES)}")
    llama_cpp = converter_dir()
    cmd = [sys.executable, "-m", "orpo_kit.export.convert_child", str(llama_cpp), str(model_dir)]
    cmd += ["--outfile", str(outfile), "--outtype", outtype, "--model-name", name]
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # the converter's own gguf-py, always
    with log.open("w", encoding="utf-8") as out:
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0 or not outfile.is_file():
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        raise ConverterFailed(
            f"llama.cpp's converter ({llama_cpp / CONVERTER}) failed to write {outfile.name} "
            f"(exit {done.returncode}); its last lines:\n" + "\n".join(lines[-12:])
        )
