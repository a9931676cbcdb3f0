"""Thin ipywidgets for the notebooks: each callback calls one plain function of `orpo_kit.viz` and shows its
result; the notebooks also run that function once in an ordinary (checked) cell.

One section per notebook, each a few clearly named functions that return a widget ready for `display(...)`;
add new ones under their own header. Each returns a VBox that, once displayed, also leaves a static copy of its
current view in the saved notebook (`orpo_kit.viz.static`), for readers who open it without running it."""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets

from ..data import PreferencePair
from .data_view import (
    pair_token_roles,
    render_pair_html,
    token_roles_html,
    token_roles_text,
    truncation_counts,
    truncation_text,
)
from .loss_view import loss_terms, loss_terms_html, loss_terms_text
from .static import STATIC_NOTE, StaticView, static_copy_box, token_roles_png

# --- Notebook 01: preference data ---------------------------------------------------------------------------


def _index_slider(n: int, value: int = 0) -> widgets.IntSlider:
    """A slider over pair positions 0..n-1."""
    if n < 1:
        raise ValueError("no pairs to show: the data has no pairs left after validation")
    return widgets.IntSlider(
        value=min(max(value, 0), n - 1), min=0, max=n - 1, description="pair", continuous_update=False
    )


def pair_browser(pairs: list[PreferencePair], index: int = 0) -> widgets.VBox:
    """Page through pairs (slider or previous / next buttons); shows `render_pair_html`."""
    slider = _index_slider(len(pairs), index)
    prev_button, next_button = widgets.Button(description="◀ previous"), widgets.Button(description="next ▶")
    view = widgets.HTML()

    def show(_: Any = None) -> None:
        view.value = render_pair_html(pairs[slider.value], slider.value, len(pairs))

    prev_button.on_click(lambda _: setattr(slider, "value", max(slider.min, slider.value - 1)))
    next_button.on_click(lambda _: setattr(slider, "value", min(slider.max, slider.value + 1)))

    def snapshot() -> StaticView:
        pair = pairs[slider.value]
        messages = [f"{m['role']}: {m['content']}" for m in pair.prompt_messages]
        text = "\n".join([f"pair {slider.value} of {len(pairs)}", *messages, f"chosen: {pair.chosen}"])
        return StaticView(f"{text}\nrejected: {pair.rejected}", html=view.value)

    slider.observe(show, names="value")
    show()
    return static_copy_box([widgets.HBox([prev_button, slider, next_button]), view], snapshot)


def token_roles_browser(
    tokenizer: Any,
    pairs: list[PreferencePair],
    max_length: int,
    max_prompt_length: int,
    min_completion_tokens: int = 8,
    index: int = 0,
) -> widgets.VBox:
    """Pick a pair: its chat-template tokens colored by the role the loss gives them (`pair_token_roles`)."""
    slider = _index_slider(len(pairs), index)
    view = widgets.HTML()

    def rows() -> dict[str, list[tuple[str, str]]]:
        return pair_token_roles(tokenizer, pairs[slider.value], max_length, max_prompt_length, min_completion_tokens)

    def show(_: Any = None) -> None:
        view.value = token_roles_html(rows())

    def snapshot() -> StaticView:
        shown = rows()
        text = f"pair {slider.value} of {len(pairs)}\n{token_roles_text(shown)}"
        return StaticView(text, png=token_roles_png(shown, note=f"{STATIC_NOTE} (pair {slider.value})"))

    slider.observe(show, names="value")
    show()
    return static_copy_box([slider, view], snapshot)


def truncation_explorer(
    tokenizer: Any,
    pairs: list[PreferencePair],
    max_length: int,
    max_prompt_length: int,
    min_completion_tokens: int = 8,
    slider_max: int = 1024,
) -> widgets.VBox:
    """A max_length slider; shows what `truncation_counts` says these limits would cut."""
    slider = widgets.IntSlider(
        value=max_length,
        min=8,
        max=max(slider_max, max_length),
        step=8,
        description="max_length",
        continuous_update=False,
    )
    view = widgets.HTML()

    def show(_: Any = None) -> None:
        counts = truncation_counts(tokenizer, pairs, slider.value, max_prompt_length, min_completion_tokens)
        view.value = f"<pre>max_prompt_length {max_prompt_length}\n{truncation_text(counts)}</pre>"

    def snapshot() -> StaticView:
        counts = truncation_counts(tokenizer, pairs, slider.value, max_prompt_length, min_completion_tokens)
        text = f"max_length {slider.value}, max_prompt_length {max_prompt_length}\n{truncation_text(counts)}"
        return StaticView(text)

    slider.observe(show, names="value")
    show()
    return static_copy_box([slider, view], snapshot)


# --- Notebook 02: the ORPO loss -----------------------------------------------------------------------------


def loss_explorer(p_chosen: float = 0.6, p_rejected: float = 0.4, lam: float = 0.1) -> widgets.VBox:
    """Sliders "p(chosen)", "p(rejected)", "λ"; the HTML below shows `loss_terms` ("loss = 0.xxxx", 4 decimals)."""
    style = {"description_width": "80px"}
    sliders = [
        widgets.FloatSlider(value=p_chosen, min=0.01, max=0.99, step=0.01, description="p(chosen)", style=style),
        widgets.FloatSlider(value=p_rejected, min=0.01, max=0.99, step=0.01, description="p(rejected)", style=style),
        widgets.FloatSlider(value=lam, min=0.0, max=2.0, step=0.05, description="λ", style=style),
    ]
    view = widgets.HTML()

    def terms() -> dict[str, float]:
        # round: a slider's 0.15000000000000002 is the 0.15 its readout shows
        return loss_terms(*(round(s.value, 6) for s in sliders))

    def show(_: Any = None) -> None:
        view.value = loss_terms_html(terms())

    def snapshot() -> StaticView:
        return StaticView(loss_terms_text(terms()), html=view.value)

    for slider in sliders:
        slider.observe(show, names="value")
    show()
    return static_copy_box([*sliders, view], snapshot)
