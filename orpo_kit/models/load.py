"""Load tokenizers and causal LMs: the tiny preset (built from a config, no download) or any HF model."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, MistralConfig, MistralForCausalLM, PreTrainedModel

from ..config import ORPOConfig

TINY = "tiny"
TINY_DEFAULTS: dict[str, Any] = dict(
    hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    vocab_size=1024, max_position_embeddings=2048, tie_word_embeddings=False, sliding_window=None,
)


def tiny_tokenizer_dir() -> Path:
    """Directory of the tokenizer shipped for the tiny preset (built by scripts/make_tiny_tokenizer.py)."""
    return Path(str(resources.files("orpo_kit.models") / "assets" / "tiny-tokenizer"))


def _offline_hint(name: str, exc: Exception) -> OSError:
    """An error that says what to do when a hub model is not reachable or cached."""
    return OSError(f"could not load {name!r}: {exc}\nIf this machine is offline, download the model elsewhere "
                   "and pass its local directory, or pre-fill the Hugging Face cache.")


def load_tokenizer(cfg: ORPOConfig) -> Any:
    """The tokenizer of the run; needs a chat template and a pad token (eos when none is set)."""
    name = cfg.tokenizer_name_or_path or cfg.model_name_or_path
    source = str(tiny_tokenizer_dir()) if name == TINY else name
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=cfg.trust_remote_code)
    except OSError as exc:
        raise _offline_hint(name, exc) from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        raise ValueError(f"tokenizer {name!r} has no chat template; set one before training")
    return tokenizer


def build_tiny_model(overrides: dict[str, Any] | None = None, seed: int = 0) -> MistralForCausalLM:
    """A random Mistral from a config (hidden sizes multiples of 64): seconds on a CPU, no download."""
    config = MistralConfig(**{**TINY_DEFAULTS, **(overrides or {})})
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MistralForCausalLM(config)


def load_model(cfg: ORPOConfig) -> PreTrainedModel:
    """The base model of the run (fp32 unless mixed precision is asked for), with LoRA when configured."""
    if cfg.model_name_or_path == TINY:
        model = build_tiny_model(cfg.model_config_overrides, seed=cfg.seed)
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(
                cfg.model_name_or_path, dtype=torch.float32, trust_remote_code=cfg.trust_remote_code,
                attn_implementation=cfg.attn_implementation, use_safetensors=True,
            )
        except OSError as exc:
            raise _offline_hint(cfg.model_name_or_path, exc) from exc
    model.config.use_cache = False
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return apply_lora(model, cfg) if cfg.use_lora else model


def apply_lora(model: PreTrainedModel, cfg: ORPOConfig) -> Any:
    """Wrap the model with peft LoRA adapters on the configured modules (all linear layers by default)."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, lora)
