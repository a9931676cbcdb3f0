"""An Ollama Modelfile whose prompt format is the one the run trained with.

Ollama writes prompts with a Go template, not with the Jinja chat template stored in the GGUF, so the Modelfile
must say it again. orpo_kit writes ChatML (its own template, SmolLM2's, Qwen's): `chatml_layout` renders the
tokenizer's template on probe conversations and accepts it only when every rendering equals ChatML's, with at
most a default system prompt (SmolLM2 adds one when the conversation has none) and a leading BOS (which llama.cpp
and Ollama add themselves). Any other template gets a Modelfile without TEMPLATE and a note saying so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# A probe conversation's contents: distinct, and unlike anything a template adds itself.
PROBES: tuple[list[dict[str, str]], ...] = (
    [{"role": "user", "content": "probe question one"}],
    [{"role": "system", "content": "probe rules"}, {"role": "user", "content": "probe question one"}],
    [
        {"role": "user", "content": "probe question one"},
        {"role": "assistant", "content": "probe answer one"},
        {"role": "user", "content": "probe question two"},
    ],
)
CHATML_GO_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
)
CHATML_STOPS = ("<|im_end|>", "<|im_start|>")


@dataclass(frozen=True)
class ChatMLLayout:
    """What a ChatML chat template does beyond the turns themselves."""

    default_system: str | None  # the system prompt it writes when the conversation has none
    leading_bos: bool  # whether it opens with the BOS token


def chatml_text(messages: list[dict[str, str]], default_system: str | None = None) -> str:
    """A conversation in ChatML with the assistant's turn opened (what Ollama's ChatML template writes)."""
    if default_system is not None and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": default_system}, *messages]
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"


def _render(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The tokenizer's chat template as text, the assistant's turn opened."""
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def chatml_layout(tokenizer: Any) -> ChatMLLayout | None:
    """The template's ChatML layout, or None when it does not render every probe as ChatML."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    first = _render(tokenizer, PROBES[0])
    bos = getattr(tokenizer, "bos_token", None) or ""
    # SmolLM2's BOS is <|im_start|> itself: a template opening with it is not one that writes BOS first
    for leading_bos in (False, True) if bos else (False,):
        opening = bos if leading_bos else ""
        body = first.removeprefix(opening) if first.startswith(opening) else ""
        default_system = None
        if body.startswith("<|im_start|>system\n"):
            default_system = body[len("<|im_start|>system\n") :].split("<|im_end|>\n", 1)[0]
        if all(_render(tokenizer, m) == opening + chatml_text(m, default_system) for m in PROBES):
            return ChatMLLayout(default_system, leading_bos)
    return None


def _quoted(text: str) -> str:
    """A Modelfile value in triple quotes (Ollama's multi-line strings)."""
    if '"""' in text:
        raise ValueError(f"cannot write {text[:40]!r}... into a Modelfile: it holds three double quotes")
    return f'"""{text}"""'


def modelfile_text(gguf_name: str, tokenizer: Any) -> str:
    """The Modelfile for a GGUF file in the same folder: template, default system prompt and stop tokens."""
    layout = chatml_layout(tokenizer)
    lines = ["# Ollama: ollama create <name> -f Modelfile, then ollama run <name>", f"FROM ./{gguf_name}", ""]
    stops: list[str] = []
    if layout is not None:
        lines += [f"TEMPLATE {_quoted(CHATML_GO_TEMPLATE)}"]
        if layout.default_system is not None:
            lines += [f"SYSTEM {_quoted(layout.default_system)}"]
        stops += CHATML_STOPS
    else:
        lines += [
            "# The chat template is not ChatML: no TEMPLATE is written here, so Ollama picks one from the chat",
            "# template stored in the GGUF file. Check `ollama show <name> --template` against the run's template.",
        ]
    eos = getattr(tokenizer, "eos_token", None)
    if eos and eos not in stops:
        stops.append(eos)
    lines += [""] + [f'PARAMETER stop "{s}"' for s in stops]
    return "\n".join(lines) + "\n"
