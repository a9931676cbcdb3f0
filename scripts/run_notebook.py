"""Execute notebooks in place (so readers on the web see results) and strip execution noise.

Usage: python scripts/run_notebook.py notebooks/02_orpo_loss.ipynb [...]   (set ORPO_KIT_SMOKE=1 for smoke mode)
Volatile metadata is removed and execution counts normalized to 1..N; the kernelspec and the widget state are
kept: JupyterLab renders a saved widget from that state when a reader opens the notebook before running it (without
it: "Error displaying widget: model not found"). Each widget's output also carries a static copy of its view
(`orpo_kit.viz.static`) for renderers that ignore widgets.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from orpo_kit.viz.static import WIDGET_STATE, saved_widget_problems

KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


PROGRESS_PREFIXES = (
    "ORPO:",
    "Writing model shards",
    "Loading weights",
    "Converting and de-quantizing GGUF tensors",
    "scoring",
    "tokenizing",
)


def _progress_bar(output: dict) -> bool:
    """A tqdm notebook bar: a widget view whose text is a progress line (noise; its saved state goes unused)."""
    data = output.get("data", {})
    text = data.get("text/plain", "")
    text = "".join(text) if isinstance(text, list) else text
    return "application/vnd.jupyter.widget-view+json" in data and text.startswith(PROGRESS_PREFIXES)


def strip(nb: nbformat.NotebookNode) -> None:
    """Drop volatile metadata; number code cells 1..N in order (nbval treats a cell with outputs but no
    execution count as an error, so counts are normalized rather than removed); keep the kernelspec and the
    saved widget state."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE)
    nb.metadata = {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}
    if state and state.get("state"):
        nb.metadata["widgets"] = {WIDGET_STATE: state}
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
    """Execute top to bottom in the notebook's folder (saving the widget state), then save stripped."""
    nb = nbformat.read(path, as_version=4)
    nb.metadata["kernelspec"] = KERNELSPEC
    nb.metadata.pop("widgets", None)  # the previous run's state: replaced by this run's
    NotebookClient(
        nb,
        timeout=7200,
        kernel_name="python3",
        store_widget_state=True,
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    strip(nb)
    nbformat.write(nb, path)
    print(f"executed {path}")
    for problem in saved_widget_problems(nb, path.name):
        print(f"warning: {problem}")


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
