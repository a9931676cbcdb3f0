"""Read an exported GGUF back with transformers (a second, independent reader) and compare it with the merged
model: the same token ids for chat prompts, the same logits within the file's precision, the same greedy answers."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..checkpoint import quiet_transformers
from ..runs import Prompt, as_messages, generate, shown


@contextmanager
def _alone(gguf_file: Path) -> Iterator[Path]:
    """A folder holding only the GGUF file (linked), so transformers reads the tokenizer from the file itself and
    not from tokenizer files that sit beside it."""
    with tempfile.TemporaryDirectory(prefix="orpo-kit-gguf-") as tmp:
        target = Path(tmp) / gguf_file.name
        try:
            os.symlink(gguf_file.resolve(), target)
        except OSError:  # no symlinks here: a copy
            shutil.copyfile(gguf_file, target)
        yield Path(tmp)


def load_gguf(gguf_file: str | Path) -> tuple[Any, Any]:
    """Model (dequantized to float32) and tokenizer (with the file's chat template) from one GGUF file."""
    path = Path(gguf_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such GGUF file")
    with _alone(path) as folder, quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=path.name, dtype=torch.float32)
    return model.eval(), tokenizer


def chat_ids(tokenizer: Any, prompt: Prompt) -> list[int]:
    """Token ids of a prompt through the chat template, the assistant's turn opened."""
    out = tokenizer.apply_chat_template(as_messages(prompt), add_generation_prompt=True, return_dict=True)
    return list(out["input_ids"])


@dataclass
class RoundTrip:
    """How a GGUF file read back compares with the merged model."""

    prompts: int = 0
    same_ids: int = 0  # prompts whose chat-templated token ids are identical
    max_logit_diff: float = 0.0  # over every position of every prompt with identical ids
    answers: list[dict[str, str]] = field(default_factory=list)  # prompt, merged, gguf (greedy)

    @property
    def same_answers(self) -> int:
        """Greedy answers that are identical."""
        return sum(a["merged"] == a["gguf"] for a in self.answers)


def _max_logit_diff(a: Any, b: Any, rows: list[list[int]], batch: int = 16) -> float:
    """Largest |logit difference| of two models over every position of token rows (right-padded batches: a
    causal model's logits at real positions do not see the padding)."""
    worst = 0.0
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        width = max(map(len, chunk))
        ids = torch.tensor([r + [0] * (width - len(r)) for r in chunk])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in chunk])
        diff = (a(input_ids=ids, attention_mask=mask).logits - b(input_ids=ids, attention_mask=mask).logits).abs()
        worst = max(worst, diff.amax(dim=-1).masked_fill(mask == 0, 0).max().item())
    return worst


@torch.no_grad()
def compare(
    merged: tuple[Any, Any],
    gguf: tuple[Any, Any],
    prompts: Sequence[Prompt],
    n_generate: int = 5,
    max_new_tokens: int = 32,
) -> RoundTrip:
    """Compare (model, tokenizer) of the merged model with the GGUF's on chat prompts: ids and logits on all,
    greedy answers on the first `n_generate`."""
    (m_model, m_tok), (g_model, g_tok) = merged, gguf
    rows = [chat_ids(m_tok, p) for p in prompts]
    same = [r for r, p in zip(rows, prompts, strict=True) if r == chat_ids(g_tok, p)]
    result = RoundTrip(prompts=len(prompts), same_ids=len(same))
    result.max_logit_diff = _max_logit_diff(m_model, g_model, same) if same else float("nan")
    chosen = list(prompts[:n_generate])
    ours = generate(m_model, m_tok, chosen, max_new_tokens=max_new_tokens)
    theirs = generate(g_model, g_tok, chosen, max_new_tokens=max_new_tokens)
    result.answers = [
        {"prompt": shown(p), "merged": a, "gguf": b} for p, a, b in zip(chosen, ours, theirs, strict=True)
    ]
    return result


def load_merged(folder: str | Path) -> tuple[Any, Any]:
    """The merged transformers model of an export folder, in float32, with its tokenizer."""
    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, use_safetensors=True)
    return model.eval(), AutoTokenizer.from_pretrained(folder)
