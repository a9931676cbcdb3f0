"""The model card of an export: where the weights came from, how they were trained, what was measured, licences."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..config import ORPOConfig
from ..run_dir import read_metrics

ACCURACY = "eval_rewards/accuracies"
# Licences of the bases and data orpo_kit ships recipes for; anything else is read from a local model card.
KNOWN_LICENCES = {
    "smollm2": "Apache-2.0 (HuggingFaceTB/SmolLM2-135M-Instruct)",
    "smollm2-135m-instruct": "Apache-2.0 (HuggingFaceTB/SmolLM2-135M-Instruct)",
    "HuggingFaceTB/SmolLM2-135M-Instruct": "Apache-2.0",
    "mistralai/Mistral-7B-v0.1": "Apache-2.0",
    "tiny": "Apache-2.0 (random weights made by orpo_kit)",
    "builtin": "Apache-2.0 (orpo_kit's built-in pairs, written for orpo_kit)",
}
UNKNOWN = "not recorded: check the licence on its own card before you share this model"


def licence_of(name: str) -> str:
    """A base model's or data set's licence: known names, else the `license:` of a local folder's README."""
    if name in KNOWN_LICENCES:
        return KNOWN_LICENCES[name]
    readme = Path(name) / "README.md" if Path(name).is_dir() else None
    if readme is not None and readme.is_file():
        found = re.search(r"^license:\s*(\S.*)$", readme.read_text(encoding="utf-8", errors="replace"), re.M)
        if found:
            return found.group(1).strip()
    return UNKNOWN


def accuracy_before_after(run_dir: Path, step: int) -> tuple[float | None, float | None]:
    """Held-out reward accuracy at the first evaluation and at the exported checkpoint's step."""
    evals = [r for r in read_metrics(run_dir) if ACCURACY in r]
    first = evals[0][ACCURACY] if evals else None
    at_step = [r[ACCURACY] for r in evals if r.get("step") == step]
    return first, at_step[-1] if at_step else None


def _share(value: float | None) -> str:
    """An accuracy as written in the card."""
    return "not measured" if value is None else f"{value:.3f}"


def card_text(name: str, cfg: ORPOConfig, run_dir: Path, checkpoint: Path, files: dict[str, Any]) -> str:
    """README.md of an export folder."""
    step = int(checkpoint.name.split("-")[-1]) if checkpoint.name.startswith("step-") else -1
    before, after = accuracy_before_after(run_dir, step)
    data = cfg.data if isinstance(cfg.data, str) else "data given in Python"
    trained = f"LoRA (r = {cfg.lora_r}, alpha = {cfg.lora_alpha}), merged into the weights" if cfg.use_lora else "full"
    gguf_lines = "\n".join(f"- `{f}`: GGUF {t} (llama.cpp, Ollama, LM Studio)" for t, f in files["gguf"].items())
    return f"""---
library_name: transformers
tags: [orpo, orpo_kit, gguf]
base_model: {cfg.model_name_or_path}
---
# {name}

Fine-tuned with ORPO (odds ratio preference optimization) by orpo_kit.

| | |
|---|---|
| base model | `{cfg.model_name_or_path}`{" in 4-bit NF4 during training" if cfg.load_in_4bit else ""} |
| training | {trained}; lambda (orpo_lambda) = {cfg.orpo_lambda}; NLL over {cfg.nll_tokens} tokens |
| data | `{data}` |
| checkpoint | `{checkpoint.name}` ({step} optimizer steps) |
| held-out reward accuracy | {_share(before)} at the first evaluation, {_share(after)} at this checkpoint |
| licence of the base | {licence_of(cfg.model_name_or_path)} |
| licence of the data | {licence_of(data)} |

Reward accuracy is the share of held-out pairs whose chosen answer the model finds more likely than the rejected
one (mean log-probability per answer token).

## Files
- `model.safetensors`, `config.json`, tokenizer files: the merged model for transformers
  (`AutoModelForCausalLM.from_pretrained` on this folder); the chat template is `chat_template.jinja`.
{gguf_lines}
- `Modelfile`: `ollama create {name} -f Modelfile`, then `ollama run {name}`.

The GGUF files were written by llama.cpp's own converter (`convert_hf_to_gguf.py` from llama-cpp-python
{files["llama_cpp"]}'s source distribution) and carry the tokenizer, its special tokens and the chat template.
"""
