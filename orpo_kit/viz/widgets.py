"""Thin ipywidgets for the notebooks: each callback calls one plain function of `orpo_kit.viz` and shows its
result; the notebooks also run that function once in an ordinary (checked) cell.

One section per notebook, each a few clearly named functions that return a widget ready for `display(...)`;
add new ones under their own header."""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets

from ..data import PreferencePair
from .data_view import pair_token_roles, render_pair_html, token_roles_html, truncation_counts, truncation_text
from .loss_view import loss_terms, loss_terms_html

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
    slider.observe(show, names="value")
    show()
    return widgets.VBox([widgets.HBox([prev_button, slider, next_button]), view])


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

    def show(_: Any = None) -> None:
        rows = pair_token_roles(tokenizer, pairs[slider.value], max_length, max_prompt_length, min_completion_tokens)
        view.value = token_roles_html(rows)

    slider.observe(show, names="value")
    show()
    return widgets.VBox([slider, view])


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

    slider.observe(show, names="value")
    show()
    return widgets.VBox([slider, view])


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

    def show(_: Any = None) -> None:
        # round: a slider's 0.15000000000000002 is the 0.15 its readout shows
        view.value = loss_terms_html(loss_terms(*(round(s.value, 6) for s in sliders)))

    for slider in sliders:
        slider.observe(show, names="value")
    show()
    return widgets.VBox([*sliders, view])
