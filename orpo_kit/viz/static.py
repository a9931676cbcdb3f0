"""Static copies of widgets, so a reader who only opens a saved notebook sees what each widget showed.

A widget's saved output is the widget view plus fallbacks: a renderer without a kernel (JupyterLab with an
untrusted notebook, a code-hosting site, nbconvert) shows `text/html` or `image/png` instead of the widget's
`VBox(children=...` repr. JupyterLab with a trusted notebook renders the widget itself from the widget state that
`scripts/run_notebook.py` saves; there a note above it says it is a copy until its cell runs, and hides itself
once the widget is live. Coloured views ship as PNG images: renderers on code-hosting sites strip inline styles.
"""

from __future__ import annotations

import base64
import html
import io
import re
import unicodedata
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

STATIC_NOTE = "Static copy of the widget: run the cells above to interact."
NOTE_CLASS = "orpo-static-note"  # the note inside a saved widget; shown only while the widget is not live
COPY_CLASS = "orpo-static-copy"  # the HTML fallback of a widget output
# Visible only in a widget restored from saved state (ipywidgets marks it jupyter-widgets-disconnected);
# a live widget hides the whole note, its line included.
_NOTE_CSS = (
    f".{NOTE_CLASS}{{display:none}}"
    f".jupyter-widgets-disconnected .{NOTE_CLASS}{{display:block;font-style:italic;color:#555}}"
    f".widget-html:not(.jupyter-widgets-disconnected):has(.{NOTE_CLASS}){{display:none}}"
)
FONT_SIZE, LINE_HEIGHT, DPI = 8.0, 1.7, 150
_CHAR_WIDTH = 0.6021  # DejaVu Sans Mono's advance, in ems


@dataclass
class StaticView:
    """What a widget shows now, for readers without a kernel: plain text, and HTML or a PNG (coloured views)."""

    text: str
    html: str = ""
    png: bytes | None = None


@dataclass
class Span:
    """A run of text in a PNG view: its background colour (any matplotlib colour; None: none), bold or not.
    A newline in `text` ends the line there."""

    text: str
    colour: Any = None
    bold: bool = False


def static_bundle(view: StaticView, note: str = STATIC_NOTE) -> dict[str, str]:
    """The fallback mimetypes of a widget output: text/plain always, then image/png for a coloured view (so no
    renderer prefers style-stripped HTML over it) or else text/html; each starts with `note`."""
    bundle = {"text/plain": f"{note}\n{view.text}"}
    if view.png is not None:
        bundle["image/png"] = base64.b64encode(view.png).decode("ascii")
    else:
        body = view.html or f"<pre>{html.escape(view.text)}</pre>"
        bundle["text/html"] = f'<div class="{COPY_CLASS}"><p><i>{html.escape(note)}</i></p>{body}</div>'
    return bundle


def note_html(note: str = STATIC_NOTE) -> str:
    """HTML of the note that a widget restored from saved state shows above itself (hidden once it is live)."""
    return f'<style>{_NOTE_CSS}</style><div class="{NOTE_CLASS}">{html.escape(note)}</div>'


_BOX_CLASS: Any = None


def _box_class() -> Any:
    """The VBox subclass behind `static_copy_box` (built on first use: ipywidgets is an optional dependency)."""
    global _BOX_CLASS
    if _BOX_CLASS is None:
        import ipywidgets as widgets

        class StaticCopyBox(widgets.VBox):
            """A VBox whose display also carries a static copy of its current view and a note for saved state."""

            def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
                if getattr(self, "_frame", None) is None:  # the displayed widget: the note above this box
                    self._frame = widgets.VBox([widgets.HTML(note_html()), self])
                bundle = self._frame._repr_mimebundle_(**kwargs)
                bundle.update(static_bundle(self.snapshot()))
                return bundle

        _BOX_CLASS = StaticCopyBox
    return _BOX_CLASS


def static_copy_box(children: Sequence[Any], snapshot: Callable[[], StaticView]) -> Any:
    """A VBox of `children` that displays like one, and also leaves `snapshot()` (its current view) in the saved
    output for readers without a kernel."""
    box = _box_class()(list(children))
    box.snapshot = snapshot
    return box


def _columns(text: str) -> int:
    """Monospace columns of `text` (East Asian wide characters take two)."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _units(spans: Sequence[Span]) -> list[tuple[str, Span] | None]:
    """Spans cut into pieces to wrap between (words of uncoloured text, whole tokens); None is a line break."""
    units: list[tuple[str, Span] | None] = []
    for span in spans:
        for k, part in enumerate(span.text.split("\n")):
            if k:
                units.append(None)
            if span.colour is None:
                units += [(word, span) for word in re.findall(r"\s*\S+\s*|\s+", part)]
            elif part:
                units.append((part, span))
    return units


def layout_lines(paragraphs: Sequence[Sequence[Span]], width: int) -> list[list[tuple[int, str, Span]]]:
    """Paragraphs wrapped to `width` columns: per line, (column, text, span) pieces; long pieces are split."""
    lines: list[list[tuple[int, str, Span]]] = []
    for paragraph in paragraphs:
        line: list[tuple[int, str, Span]] = []
        col, broke = 0, False
        for unit in _units(paragraph):
            broke = unit is None
            if unit is None:
                lines.append(line)
                line, col = [], 0
                continue
            text, span = unit
            while text:
                if col and col + _columns(text) > width:
                    lines.append(line)
                    line, col = [], 0
                piece = text
                while _columns(piece) > width:
                    piece = piece[: max(1, len(piece) // 2)] if _columns(piece) > 2 * width else piece[:-1]
                line.append((col, piece, span))
                col += _columns(piece)
                text = text[len(piece) :]
        if line or not broke:  # a paragraph ending in a newline (a "↵" token) adds no empty line
            lines.append(line)
    return lines


def spans_png(
    paragraphs: Sequence[Sequence[Span]], note: str | None = None, width: int = 100, max_lines: int = 60
) -> bytes:
    """A PNG of coloured text (a token view): monospace, wrapped to `width` columns, at most `max_lines` lines
    (the rest counted in a last line); `note` in italics on top. Colours survive any notebook renderer."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    lines = layout_lines(paragraphs, width)
    if len(lines) > max_lines:
        more = len(lines) - max_lines + 1
        lines = lines[: max_lines - 1] + [[(0, f"... {more} more lines", Span(""))]]
    top = 1 if note else 0
    char_in, line_in = _CHAR_WIDTH * FONT_SIZE / 72, LINE_HEIGHT * FONT_SIZE / 72
    fig = plt.figure(figsize=(width * char_in + 0.2, (len(lines) + top) * line_in + 0.2), dpi=DPI)
    ax = fig.add_axes((0.1 / (width * char_in + 0.2), 0, 1, 1))
    ax.set_xlim(0, width + 0.2 / char_in)
    ax.set_ylim(len(lines) + top + 0.2 / line_in, 0)
    ax.axis("off")
    font: dict[str, Any] = {"family": "DejaVu Sans Mono", "size": FONT_SIZE, "parse_math": False, "va": "center"}
    if note:
        ax.text(0, 0.5, note, color="#555555", style="italic", **font)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a glyph the font lacks (emoji) draws as a box
        for row, line in enumerate(lines, start=top):
            for col, text, span in line:
                if span.colour is not None:
                    box = Rectangle((col, row + 0.05), _columns(text), 0.9, facecolor=span.colour, edgecolor="white")
                    ax.add_patch(box)  # the white edge marks where one token ends and the next begins
                ax.text(col, row + 0.5, text, weight="bold" if span.bold else "normal", **font)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    plt.close(fig)
    return buffer.getvalue()


def token_roles_png(rows: dict[str, list[tuple[str, str]]], note: str | None = None, width: int = 100) -> bytes:
    """`token_roles_html` as a PNG (tokens on their role's colour; runs of one padding token written once with
    their count), for renderers that strip the HTML's colours."""
    from .data_view import ROLE_COLORS, ROLES, _visible, role_counts

    legend = [Span("legend: ")] + [s for r in ROLES for s in (Span(r, ROLE_COLORS[r]), Span(" "))]
    paragraphs = [legend]
    for name, tokens in rows.items():
        counts = role_counts(tokens)
        paragraphs.append([Span(f"{name} ({', '.join(f'{counts[r]} {r}' for r in ROLES)})", bold=True)])
        spans: list[Span] = []
        j = 0
        while j < len(tokens):
            text, role = tokens[j]
            run = 1
            while role == "padding" and j + run < len(tokens) and tokens[j + run] == tokens[j]:
                run += 1
            shown = _visible(text) + (f" x{run}" if run > 1 else "")
            spans.append(Span(shown + ("\n" if "\n" in text else ""), ROLE_COLORS[role]))
            j += run
        paragraphs.append(spans)
    return spans_png(paragraphs, note, width)


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def saved_widget_problems(notebook: dict[str, Any], name: str = "notebook") -> list[str]:
    """What a reader of this saved notebook (nbformat JSON) would miss: per widget output, a widget whose state
    was not saved (JupyterLab: "Error displaying widget") or that has no static copy (web pages: its repr)."""
    saved = notebook.get("metadata", {}).get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    problems = []
    for i, cell in enumerate(notebook.get("cells", [])):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_VIEW not in data:
                continue
            if data[WIDGET_VIEW].get("model_id") not in saved:
                problems.append(f"{name} cell {i}: widget state not saved (execute it with scripts/run_notebook.py)")
            text = data.get("text/html", "") if "image/png" not in data else data.get("text/plain", "")
            if STATIC_NOTE not in ("".join(text) if isinstance(text, list) else text):
                problems.append(f"{name} cell {i}: no static copy (display a widget from orpo_kit.viz)")
    return problems
