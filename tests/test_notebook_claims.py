"""The saved notebooks say what their saved outputs show: read as committed (no kernel), every stated result
matches the numbers printed beside it, and the outputs come from a full (non-smoke) run.

These tests read the notebooks' saved outputs only; re-executing a notebook (scripts/run_notebook.py) can make
them fail, which is the point: then a sentence no longer matches its run.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ALL = sorted(NOTEBOOKS.glob("0*.ipynb"))
# words that mark a sentence as a statement about this notebook's own run (not a definition or a rule of thumb)
RESULT_WORDS = ("saved output", "saved run", "this run", "rose from", "fell from", "fell to", "went from")
DECIMAL = re.compile(r"[−-]?\d+\.\d{2,}")


def outputs_text(nb: nbformat.NotebookNode) -> str:
    """Every text the saved outputs show (streams, plain text and HTML), minus signs normalised."""
    parts: list[str] = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            data = out.get("data", {})
            parts += [data.get("text/plain", ""), data.get("text/html", "")]
    text = "\n".join("".join(p) if isinstance(p, list) else p for p in parts)
    return text.replace("−", "-")


def markdown_sentences(nb: nbformat.NotebookNode) -> list[str]:
    """The markdown's sentences, inline code removed (code is not a claim about results)."""
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    text = re.sub(r"`[^`]*`", "", text)
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n\n", text) if s.strip()]


def read(name: str) -> nbformat.NotebookNode:
    """A committed notebook by file-name prefix."""
    (path,) = [p for p in ALL if p.name.startswith(name)]
    return nbformat.read(path, as_version=4)


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_saved_outputs_come_from_a_full_run(path: Path) -> None:
    text = outputs_text(nbformat.read(path, as_version=4))
    assert re.search(r"smoke mode\s+False", text), f"{path.name}: saved outputs are from smoke mode (or unsaved)"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_results_stated_in_the_text_are_in_the_saved_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    shown = outputs_text(nb)
    for sentence in markdown_sentences(nb):
        if not any(word in sentence.lower() for word in RESULT_WORDS):
            continue
        for number in DECIMAL.findall(sentence):
            value = number.replace("−", "-")
            assert value in shown, f"{path.name}: '{number}' in {sentence!r} is not in the saved outputs"


def test_03_sft_left_the_rejected_answers_up_and_orpo_pushed_them_down() -> None:
    text = outputs_text(read("03_"))
    assert "SFT did not push the rejected answers down: True" in text
    assert "ORPO pushed them below where SFT left them: True" in text
    assert "ORPO widened the chosen - rejected gap more than SFT: True" in text
    rows = re.findall(r"^\s*([\d.]+)\s+\d+\s+(\S+) →\s+(\S+)\s+(\S+) →\s+(\S+)\s+(\S+) →\s+(\S+)$", text, re.M)
    by_lambda = {float(r[0]): [float(x) for x in r[1:]] for r in rows}
    sft, orpo = by_lambda[0.0], by_lambda[1.0]  # chosen start, end; rejected start, end; gap start, end
    assert sft[3] > sft[2] - 0.1, "the printed table contradicts: SFT pushed the rejected answers down"
    assert orpo[3] < sft[3] - 0.1, "the printed table contradicts: ORPO's rejected answers are not below SFT's"
    assert orpo[5] > sft[5] + 0.1, "the printed table contradicts: ORPO's gap is not wider than SFT's"


def test_05_the_printed_directions_match_the_printed_numbers() -> None:
    text = outputs_text(read("05_"))
    lines = re.findall(r"^mean (chosen logp|rejected logp|margin)\s+(\S+) ->\s+(\S+) \((\w+)\)$", text, re.M)
    assert len(lines) == 3, lines
    for what, before, after, word in lines:
        up, down = ("widened", "narrowed") if what == "margin" else ("rose", "fell")
        expected = up if float(after) > float(before) else down if float(after) < float(before) else "unchanged"
        assert word == expected, f"05: mean {what} {before} -> {after} printed as {word!r}"


def test_06_no_skill_rests_on_fewer_than_20_held_out_pairs() -> None:
    text = outputs_text(read("06_"))
    table = text[text.index("held-out pairs per skill: share") :]
    rows = re.findall(r"^(\w+)\s+(\d+)\s{2}", table, re.M)
    skills = {skill: int(n) for skill, n in rows if skill != "skill"}
    assert len(skills) >= 7, skills  # six skills and "all"
    assert min(skills.values()) >= 20, skills
