"""Execute notebooks in place (so readers on the web see results) and strip execution noise.

Usage: python scripts/run_notebook.py notebooks/02_orpo_loss.ipynb [...]   (set ORPO_KIT_SMOKE=1 for smoke mode)
Volatile metadata and widget state are removed, execution counts normalized to 1..N; the kernelspec is kept.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


PROGRESS_PREFIXES = ("ORPO:", "Writing model shards", "Loading weights", "scoring", "tokenizing")


def _progress_bar(output: dict) -> bool:
    """A tqdm notebook bar: a widget view whose text is a progress line (its state is not saved anyway)."""
    data = output.get("data", {})
    text = data.get("text/plain", "")
    text = "".join(text) if isinstance(text, list) else text
    return "application/vnd.jupyter.widget-view+json" in data and text.startswith(PROGRESS_PREFIXES)


def strip(nb: nbformat.NotebookNode) -> None:
    """Drop volatile metadata; number code cells 1..N in order (nbval treats a cell with outputs but no
    execution count as an error, so counts are normalized rather than removed); keep the kernelspec."""
    nb.metadata = {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}
    count = 0
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            count += 1
            cell.execution_count = count
            cell.outputs = [o for o in cell.outputs if not _progress_bar(o)]
            for out in cell.outputs:
                if "execution_count" in out:
                    out["execution_count"] = count


def run(path: Path) -> None:
    """Execute top to bottom in the notebook's folder, then save stripped."""
    nb = nbformat.read(path, as_version=4)
    nb.metadata["kernelspec"] = KERNELSPEC
    NotebookClient(
        nb, timeout=7200, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    strip(nb)
    nbformat.write(nb, path)
    print(f"executed {path}")


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars are noise in saved outputs
    if sys.argv[1:2] == ["--strip-only"]:
        for arg in sys.argv[2:]:
            nb = nbformat.read(arg, as_version=4)
            strip(nb)
            nbformat.write(nb, arg)
    else:
        for arg in sys.argv[1:]:
            run(Path(arg))
