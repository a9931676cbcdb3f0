"""Static copies of widgets (orpo_kit.viz.static): what a reader of a saved notebook sees without a kernel.

The fallbacks must carry the widget's current view (its text, and for coloured token views the colours, as a PNG
that no renderer strips), the one-line note, and the widget view itself; scripts/run_notebook.py must keep the
widget state that JupyterLab renders a saved widget from.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest

from orpo_kit.viz.data_view import ROLE_COLORS
from orpo_kit.viz.static import (
    STATIC_NOTE,
    Span,
    StaticView,
    layout_lines,
    note_html,
    saved_widget_problems,
    spans_png,
    static_bundle,
    token_roles_png,
)
from orpo_kit.viz.token_view import CompletionTokens, PairTokens, pair_tokens_png

ROOT = Path(__file__).resolve().parents[1]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def _pixels(png: bytes) -> np.ndarray:
    """The PNG's pixels as an (H, W, 3) uint8 array."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"))


def _count(pixels: np.ndarray, rgb: tuple[int, int, int], tol: int = 3) -> int:
    """How many pixels are within `tol` of `rgb` in every channel."""
    return int((np.abs(pixels.astype(int) - np.array(rgb)).max(axis=-1) <= tol).sum())


def _on_white(rgb: tuple[int, int, int], alpha: float) -> tuple[int, int, int]:
    """`rgb` at opacity `alpha` over a white page: the colour a reader sees."""
    return tuple(round(255 * (1 - alpha) + c * alpha) for c in rgb)  # type: ignore[return-value]


GREEN, RED = _on_white((0, 150, 60), 0.75), _on_white((210, 40, 40), 0.75)  # token_view's full colours


def _pair(chosen_delta: float, rejected_delta: float) -> PairTokens:
    """A pair whose chosen tokens moved by `chosen_delta` and rejected tokens by `rejected_delta`."""
    tokens = ["The", " answer", " is", " 19", "."]
    chosen = CompletionTokens(tokens, [-2.0] * 5, [-2.0 + chosen_delta] * 5)
    rejected = CompletionTokens(tokens[:4], [-1.0] * 4, [-1.0 + rejected_delta] * 4)
    return PairTokens(0, "pairs.jsonl, line 1", "math", "What is 12 + 7?", chosen, rejected)


def test_pair_tokens_png_carries_the_token_colours() -> None:
    still = _pixels(pair_tokens_png(_pair(0.0, 0.0), "change", scale=1.0))
    rose = _pixels(pair_tokens_png(_pair(1.0, 0.0), "change", scale=1.0))
    fell = _pixels(pair_tokens_png(_pair(0.0, -1.0), "change", scale=1.0))
    # the legend has one swatch of each; tokens that moved by the full scale add their own
    assert _count(rose, GREEN) > 3 * _count(still, GREEN) > 0
    assert _count(fell, RED) > 3 * _count(still, RED) > 0
    assert _count(rose, RED) == _count(still, RED) and _count(fell, GREEN) == _count(still, GREEN)
    with pytest.raises(ValueError, match="model must be one of"):
        pair_tokens_png(_pair(0.0, 0.0), "after")


def test_token_roles_png_shows_each_role_in_its_colour() -> None:
    rows = {
        "chosen": [("<|user|>", "prompt"), ("Hi\n", "prompt"), ("Hello", "completion")] + [("<pad>", "padding")] * 9,
        "rejected": [("<|user|>", "prompt"), ("Hi\n", "prompt"), ("Go", "completion"), ("away", "completion")],
    }
    pixels = _pixels(token_roles_png(rows, note=STATIC_NOTE))
    counts = {role: _count(pixels, tuple(int(c[i : i + 2], 16) for i in (1, 3, 5))) for role, c in ROLE_COLORS.items()}
    assert all(n > 50 for n in counts.values()), counts
    assert counts["completion"] > counts["padding"]  # three completion tokens; nine paddings drawn once, "x9"


def test_layout_lines_wraps_without_losing_text() -> None:
    spans = [Span("prompt: ", bold=True), Span("word " * 30), Span("tok\n", "#fff"), Span("x" * 250, "#000")]
    lines = layout_lines([spans], width=40)
    assert all(col + len(text) <= 40 for line in lines for col, text, _ in line)
    joined = "".join(text for line in lines for _, text, _ in line)
    assert joined == "prompt: " + "word " * 30 + "tok" + "x" * 250
    assert len(lines) >= 1 + (8 + 150) // 40 + 250 // 40  # the newline after "tok" starts a new line


def test_spans_png_caps_its_height() -> None:
    short = _pixels(spans_png([[Span("a\n" * 10)]], width=20, max_lines=12))
    capped = _pixels(spans_png([[Span("a\n" * 500)]], width=20, max_lines=12))
    assert capped.shape[1] == short.shape[1] and capped.shape[0] <= short.shape[0] * 1.3


def test_static_bundle_prefers_the_png_for_coloured_views() -> None:
    png = spans_png([[Span("red", "#ff0000")]])
    coloured = static_bundle(StaticView("pair 0", png=png))
    assert set(coloured) == {"text/plain", "image/png"}  # no HTML that a renderer could pick and strip
    assert base64.b64decode(coloured["image/png"]) == png
    assert coloured["text/plain"] == f"{STATIC_NOTE}\npair 0"
    text = static_bundle(StaticView("a < b", html="<b>view</b>"))
    assert set(text) == {"text/plain", "text/html"}
    assert STATIC_NOTE in text["text/html"] and text["text/html"].endswith("<b>view</b></div>")
    assert "<pre>a &lt; b</pre>" in static_bundle(StaticView("a < b"))["text/html"]
    assert "jupyter-widgets-disconnected" in note_html() and STATIC_NOTE in note_html()


def _shown_bundle(box) -> dict:
    """The mimebundle `display(box)` would save."""
    return box._repr_mimebundle_()


def test_loss_explorer_saves_its_current_view() -> None:
    pytest.importorskip("ipywidgets")
    from orpo_kit.viz.loss_view import loss_terms, loss_terms_text
    from orpo_kit.viz.widgets import loss_explorer

    box = loss_explorer(0.6, 0.4, 0.1)
    bundle = _shown_bundle(box)
    frame = box._frame  # what is displayed: the note, then the box itself (its children unchanged)
    assert bundle[WIDGET_VIEW]["model_id"] == frame.model_id and frame.children[1] is box
    assert STATIC_NOTE in frame.children[0].value
    assert bundle["text/plain"] == f"{STATIC_NOTE}\n{loss_terms_text(loss_terms(0.6, 0.4, 0.1))}"
    box.children[2].value = 1.5  # λ
    moved = _shown_bundle(box)
    assert f"loss = {loss_terms(0.6, 0.4, 1.5)['loss']:.4f}" in moved["text/html"]
    assert moved[WIDGET_VIEW] == bundle[WIDGET_VIEW]


def test_pair_pager_saves_the_shown_pair_as_png() -> None:
    pytest.importorskip("ipywidgets")
    from orpo_kit.viz.token_view import pair_pager

    views = [_pair(1.0, 0.0), _pair(0.0, -1.0)]
    views[1].index = 1
    box = pair_pager(views)
    first = _shown_bundle(box)
    assert "text/html" not in first and first["text/plain"].startswith(f"{STATIC_NOTE}\npair 0 of 2")
    box.children[0].children[2].click()  # next
    second = _shown_bundle(box)
    assert second["text/plain"].startswith(f"{STATIC_NOTE}\npair 1 of 2")
    assert _count(_pixels(base64.b64decode(second["image/png"])), RED) > _count(
        _pixels(base64.b64decode(first["image/png"])), RED
    )


def test_estimator_widget_shows_the_estimate_for_its_controls() -> None:
    pytest.importorskip("ipywidgets")
    from orpo_kit.envcheck import estimate_fit_text, estimator_widget

    box = estimator_widget("smol", 512, 2, True, 24.0)
    view = box.children[-1]
    assert estimate_fit_text("smol", 512, 2, True, 24.0).splitlines()[0] in view.value
    box.children[2].value = 8  # batch
    expected = estimate_fit_text("smol", 512, 8, True, 24.0)
    bundle = _shown_bundle(box)
    assert bundle["text/plain"].endswith(expected) and "batch = 8" in bundle["text/html"]


def test_answers_text_is_the_plain_answers() -> None:
    from orpo_kit.viz.chat_view import _answers_text, answers_html

    page = answers_html([{"prompt": "a < b?", "base": "no\nyes", "tuned": ""}], {"temperature": 0.0})
    assert _answers_text(page).splitlines() == [
        "temperature = 0.0",
        "prompt: a < b?",
        "base",
        "no",
        "yes",
        "tuned",
        "(empty answer)",
    ]


def _run_notebook_module():
    spec = importlib.util.spec_from_file_location("run_notebook", ROOT / "scripts" / "run_notebook.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_strip_keeps_the_widget_state() -> None:
    import nbformat

    strip = _run_notebook_module().strip
    state = {"state": {"abc": {"model_name": "VBoxModel", "state": {}}}, "version_major": 2, "version_minor": 0}
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")])
    nb.metadata.update({"widgets": {WIDGET_STATE: state}, "papermill": {"duration": 3.2}})
    strip(nb)
    assert nb.metadata["widgets"] == {WIDGET_STATE: state} and "papermill" not in nb.metadata
    nb.metadata["widgets"] = {WIDGET_STATE: {"state": {}, "version_major": 2, "version_minor": 0}}
    strip(nb)
    assert "widgets" not in nb.metadata  # no widgets, no empty block


def test_saved_notebooks_carry_widget_state_and_static_copies() -> None:
    """Every widget in a committed notebook can be shown without a kernel: JupyterLab finds its model in the saved
    state, other renderers find the static copy (fails until the notebooks are executed with
    scripts/run_notebook.py)."""
    problems = [
        problem
        for path in sorted((ROOT / "notebooks").glob("*.ipynb"))
        for problem in saved_widget_problems(json.loads(path.read_text()), path.name)
    ]
    assert not problems, "\n".join(problems)


def test_saved_widget_problems_finds_what_a_reader_would_miss() -> None:
    view = {"model_id": "m1", "version_major": 2, "version_minor": 0}
    bare = {"output_type": "display_data", "data": {WIDGET_VIEW: view, "text/plain": "VBox(children=(...))"}}
    copied = {"output_type": "display_data", "data": {WIDGET_VIEW: view, **static_bundle(StaticView("x"))}}
    state = {WIDGET_STATE: {"state": {"m1": {}}, "version_major": 2, "version_minor": 0}}
    notebook = {"metadata": {}, "cells": [{"cell_type": "code", "outputs": [bare]}]}
    assert [p.split(": ", 1)[1][:9] for p in saved_widget_problems(notebook)] == ["widget st", "no static"]
    notebook = {"metadata": {"widgets": state}, "cells": [{"cell_type": "code", "outputs": [copied]}]}
    assert saved_widget_problems(notebook) == []
