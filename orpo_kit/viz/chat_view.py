"""Chat with a finished run: base and tuned answers side by side as HTML, a decoding panel, a merge check.

The answers come from `orpo_kit.runs.side_by_side` (the base is the LoRA adapter switched off); the widget's
"generate" button only calls `chat_html`, which a notebook also runs in an ordinary cell.
"""

from __future__ import annotations

import html
import re
from typing import Any

import torch

from ..runs import LoadedRun, side_by_side


def answers_html(rows: list[dict[str, str]], settings: dict[str, Any] | None = None) -> str:
    """HTML of `side_by_side` rows: each prompt above its base and tuned answers in two columns."""
    cell = (
        '<div style="flex:1;border:1px solid #ccc;border-radius:4px;padding:6px;white-space:pre-wrap">'
        "<b>{}</b><br>{}</div>"
    )
    parts = ['<div class="orpo-chat" style="font-family:sans-serif">']
    if settings:
        parts.append(
            '<div style="font-size:85%;color:#555">'
            + html.escape(", ".join(f"{k} = {v}" for k, v in settings.items()))
            + "</div>"
        )
    for row in rows:
        parts.append(
            f'<div style="margin-top:6px"><b>prompt:</b> {html.escape(row["prompt"])}</div>'
            '<div style="display:flex;gap:8px">'
            + cell.format("base", html.escape(row["base"]) or "<i>(empty answer)</i>")
            + cell.format("tuned", html.escape(row["tuned"]) or "<i>(empty answer)</i>")
            + "</div>"
        )
    return "".join(parts) + "</div>"


def chat_html(
    run: LoadedRun,
    prompt: str,
    temperature: float = 0.0,
    top_p: float = 1.0,
    max_new_tokens: int = 64,
    seed: int = 0,
) -> str:
    """Base and tuned answers to one prompt (greedy at temperature 0, else sampled with `seed`), as HTML."""
    if not prompt.strip():
        raise ValueError("the prompt is empty: type a question first")
    settings = {"temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens, "seed": seed}
    return answers_html(side_by_side(run, [prompt], **settings), settings)


def chat_panel(
    run: LoadedRun, prompt: str = "What is 12 + 7?", max_new_tokens: int = 48, generate_now: bool = True
) -> Any:
    """Widget: a prompt box, temperature / top-p / max-new-tokens sliders and a "generate" button that shows
    `chat_html` for the current settings. With `generate_now` it starts with the answers to `prompt`, so the
    static copy saved with the notebook (`orpo_kit.viz.static`) shows them too."""
    import ipywidgets as widgets

    from .static import StaticView, static_copy_box

    text = widgets.Textarea(value=prompt, description="prompt", layout=widgets.Layout(width="95%"))
    temperature = widgets.FloatSlider(
        value=0.0,
        min=0.0,
        max=1.5,
        step=0.05,
        description="temperature",
        style={"description_width": "initial"},
    )
    top_p = widgets.FloatSlider(value=1.0, min=0.05, max=1.0, step=0.05, description="top-p")
    new_tokens = widgets.IntSlider(
        value=max_new_tokens,
        min=4,
        max=256,
        step=4,
        description="max new tokens",
        style={"description_width": "initial"},
    )
    button = widgets.Button(description="generate", button_style="primary")
    shown = widgets.HTML("<i>press generate</i>")

    def on_click(_: Any) -> None:
        shown.value = "<i>generating...</i>"
        shown.value = chat_html(run, text.value, temperature.value, top_p.value, new_tokens.value)

    def snapshot() -> StaticView:
        settings = f"temperature {temperature.value}, top-p {top_p.value}, max new tokens {new_tokens.value}"
        page = f"<p><b>prompt:</b> {html.escape(text.value)}<br>{settings}</p>{shown.value}"
        return StaticView(f"prompt: {text.value}\n{settings}\n{_answers_text(shown.value)}", html=page)

    button.on_click(on_click)
    if generate_now:
        on_click(button)
    sliders = widgets.HBox([temperature, top_p, new_tokens], layout=widgets.Layout(flex_flow="row wrap"))
    return static_copy_box([text, sliders, button, shown], snapshot)


def _answers_text(page: str) -> str:
    """The text of `answers_html` (tags dropped, entities unescaped), for a plain-text copy."""
    return html.unescape(re.sub(r"<br>|</div>", "\n", re.sub(r"<(?!br>|/div>)[^>]*>", "", page))).strip()


@torch.no_grad()
def prompt_logits(model: Any, tokenizer: Any, prompt: str) -> torch.Tensor:
    """A model's logits [1, T, V] (float32, on CPU) over a chat-formatted user prompt: to compare models."""
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    model.eval()
    ids = ids.to(next(model.parameters()).device)
    return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.float().cpu()
