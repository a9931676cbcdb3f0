"""Take a trained model home: merged weights, GGUF files for llama.cpp / Ollama / LM Studio, a Modelfile and a card.

`export_run` merges the run's adapter (a 4-bit base is reloaded in full precision first, as for `merge`), saves a
transformers folder, and has llama.cpp's own converter turn that folder into GGUF (see `converter`). Everything
is written into a hidden folder beside OUT_DIR and moved into place only when complete.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .converter import LLAMA_CPP_PYTHON, OUTTYPES, ConverterFailed, run_converter
from .modelfile import modelfile_text

__all__ = ["OUTTYPES", "ConverterFailed", "ExportResult", "export_run", "merged_for_export"]

MERGE_DTYPES = {"f16": torch.float16, "q8_0": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}


@dataclass
class ExportResult:
    """Where an export went and what it holds."""

    folder: Path
    gguf: dict[str, Path] = field(default_factory=dict)  # GGUF type -> file
    checkpoint: Path | None = None


def merged_for_export(run: Any) -> Any:
    """The run's model as plain transformers weights: the adapter merged, and the embedding cut to one row per
    token (training pads it to a multiple of 64; llama.cpp wants as many rows as the tokenizer has tokens)."""
    model = run.model.merge_and_unload() if run.is_adapter else run.model
    tokens = len(run.tokenizer)
    if model.get_input_embeddings().weight.shape[0] > tokens:
        model.resize_token_embeddings(tokens, mean_resizing=False)
    return model


def _gguf_name(folder: Path, outtype: str) -> str:
    """File name of one GGUF of an export folder."""
    return f"{folder.name}-{outtype}.gguf"


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    gguf: tuple[str, ...] | list[str] = ("f16",),
    checkpoint: str = "best",
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Export a run: merged transformers weights, one GGUF per type in `gguf`, an Ollama Modelfile (for the first
    GGUF) and a model card. OUT_DIR must be new or empty unless `overwrite` (then moved aside).

    The merge is in `dtype`, by default the first GGUF's float type (float16 for f16 and q8_0): the f16 GGUF then
    holds exactly the merged weights, and a 7B merge needs half the memory of float32."""
    from ..runs import load_run, partial_folder, put_in_place, refuse_a_filled_folder
    from .card import card_text

    types = list(dict.fromkeys(gguf))
    bad = [t for t in types if t not in OUTTYPES]
    if bad or not types:
        raise ValueError(f"GGUF type {', '.join(bad) or '(none)'}: choose from {', '.join(OUTTYPES)}")
    out = Path(out_dir)
    refuse_a_filled_folder(out, overwrite)
    run = load_run(run_dir, checkpoint, dtype=dtype or MERGE_DTYPES[types[0]])
    tmp = partial_folder(out)
    try:
        merged_for_export(run).save_pretrained(tmp, safe_serialization=True)
        run.tokenizer.save_pretrained(tmp)
        files: dict[str, Any] = {"gguf": {}, "llama_cpp": LLAMA_CPP_PYTHON}
        for outtype in types:
            name = _gguf_name(out, outtype)
            print(f"writing {name} with llama.cpp's converter ...", flush=True)
            log = tmp.with_name(f"{tmp.name}-convert-{outtype}.log")
            try:
                run_converter(tmp, tmp / name, outtype, log, out.name)
            finally:
                log.unlink(missing_ok=True)
            files["gguf"][outtype] = name
        first = files["gguf"][types[0]]
        (tmp / "Modelfile").write_text(modelfile_text(first, run.tokenizer), encoding="utf-8")
        (tmp / "README.md").write_text(
            card_text(out.name, run.cfg, Path(run_dir), run.checkpoint, files), encoding="utf-8"
        )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    folder = put_in_place(tmp, out)
    return ExportResult(folder, {t: folder / n for t, n in files["gguf"].items()}, run.checkpoint)
