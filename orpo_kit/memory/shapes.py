"""The sizes memory depends on, read from a model's config without loading weights: shape, parameter counts,
LoRA targets, and the vocabulary after orpo_kit adds ChatML tokens."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..config import ORPOConfig

CHATML_NEW_TOKENS = 2  # <|im_start|>, <|im_end|> added to base models without a chat template
MISTRAL_7B = "mistralai/Mistral-7B-v0.1"
KNOWN_BASE_MODELS = {MISTRAL_7B: CHATML_NEW_TOKENS}  # hub base models without a chat template


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a LLaMA / Mistral-style decoder that memory depends on."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tied_embeddings: bool
    attention_bias: bool = False
    mlp_bias: bool = False
    model_type: str = "llama"
    hidden_act: str = "silu"

    @classmethod
    def from_config(cls, config: Any) -> ModelShape:
        """Read a transformers config (LlamaConfig, MistralConfig or alike)."""
        text = getattr(config, "get_text_config", lambda: config)()
        heads = int(text.num_attention_heads)
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        return cls(
            vocab_size=int(text.vocab_size),
            hidden_size=int(text.hidden_size),
            intermediate_size=int(text.intermediate_size),
            num_layers=int(text.num_hidden_layers),
            num_heads=heads,
            num_kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
            head_dim=int(head_dim),
            tied_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
            attention_bias=bool(getattr(text, "attention_bias", False)),
            mlp_bias=bool(getattr(text, "mlp_bias", False)),
            model_type=str(getattr(text, "model_type", "llama")),
            hidden_act=str(getattr(text, "hidden_act", "silu")),
        )

    @property
    def swiglu(self) -> bool:
        """Whether the MLP is SiLU-gated (what `fused_swiglu` changes)."""
        return self.hidden_act in ("silu", "swish")

    @property
    def q_dim(self) -> int:
        """Width of the query projection (heads * head_dim)."""
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of the key and value projections (GQA: kv heads * head_dim)."""
        return self.num_kv_heads * self.head_dim

    def linears(self) -> list[tuple[str, int, int]]:
        """(name, in_features, out_features) of the Linear layers of one decoder layer."""
        h, i = self.hidden_size, self.intermediate_size
        return [
            ("q_proj", h, self.q_dim),
            ("k_proj", h, self.kv_dim),
            ("v_proj", h, self.kv_dim),
            ("o_proj", self.q_dim, h),
            ("gate_proj", h, i),
            ("up_proj", h, i),
            ("down_proj", i, h),
        ]


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts from a config (tied weights counted once, as `model.parameters()` does)."""

    embedding: int
    lm_head: int  # 0 when tied to the embedding
    linear_weights: int  # the decoder's Linear weights (what 4-bit quantizes)
    biases: int
    norms: int

    @property
    def total(self) -> int:
        """All parameters."""
        return self.embedding + self.lm_head + self.linear_weights + self.biases + self.norms

    @property
    def not_quantized(self) -> int:
        """Parameters that stay in floating point under 4-bit loading (embeddings, lm_head, norms, biases)."""
        return self.total - self.linear_weights


def count_parameters(shape: ModelShape, vocab_size: int | None = None) -> ParamCounts:
    """Exact parameter count of a LLaMA / Mistral decoder from its shape (vocab_size: after any resize)."""
    v, h = vocab_size or shape.vocab_size, shape.hidden_size
    linear = shape.num_layers * sum(i * o for _, i, o in shape.linears())
    biases = 0
    if shape.attention_bias:
        biases += shape.q_dim + 2 * shape.kv_dim + h
    if shape.mlp_bias:
        biases += 2 * shape.intermediate_size + h
    return ParamCounts(
        embedding=v * h,
        lm_head=0 if shape.tied_embeddings else v * h,
        linear_weights=linear,
        biases=shape.num_layers * biases,
        norms=(2 * shape.num_layers + 1) * h,
    )


def lora_targets(shape: ModelShape, target_modules: Any) -> list[tuple[str, int, int]]:
    """The Linear layers of the whole model a LoRA config targets, as (name, in, out).

    "all-linear" (peft): every Linear of the decoder, not lm_head. A list: module names matched by suffix
    (peft's rule). A string: a regular expression matched against the full module names.
    """
    layers = [
        (
            f"model.layers.{n}.{'self_attn' if name.endswith(('q_proj', 'k_proj', 'v_proj', 'o_proj')) else 'mlp'}."
            f"{name}",
            i,
            o,
        )
        for n in range(shape.num_layers)
        for name, i, o in shape.linears()
    ]
    head = ("lm_head", shape.hidden_size, shape.vocab_size)
    if target_modules in (None, "all-linear"):
        return layers
    if isinstance(target_modules, str):
        return [t for t in layers + [head] if re.fullmatch(target_modules, t[0])]
    wanted = [str(m) for m in target_modules]
    return [t for t in layers + [head] if any(t[0] == w or t[0].endswith("." + w) for w in wanted)]


def lora_parameters(shape: ModelShape, r: int, target_modules: Any = "all-linear") -> int:
    """Trainable LoRA parameters: r * (in + out) per targeted Linear (A: r x in, B: out x r, no bias)."""
    return sum(r * (i + o) for _, i, o in lora_targets(shape, target_modules))


def mistral_7b_config() -> Any:
    """Mistral-7B-v0.1's config, shipped in the package (no hub access needed)."""
    from transformers import MistralConfig

    path = resources.files("orpo_kit.models") / "assets" / "mistral-7b-v0.1-config.json"
    return MistralConfig.from_json_file(str(path))


def model_config_for(cfg: ORPOConfig) -> Any:
    """The transformers config of the run's model, without loading any weights.

    tiny: the MistralConfig `build_tiny_model` uses; SmolLM2: the converted cache's config.json, else the GGUF
    file's metadata (a few seconds); Mistral-7B-v0.1: the shipped config; anything else: AutoConfig (a local
    folder, or the Hugging Face cache / hub).
    """
    from transformers import AutoConfig, MistralConfig

    from ..models.load import SMOL_GGUF, SMOL_NAMES, TINY, TINY_DEFAULTS, cache_root, smol_gguf_dir

    name = cfg.model_name_or_path
    if name == TINY:
        return MistralConfig(**{**TINY_DEFAULTS, **(cfg.model_config_overrides or {})})
    if name in SMOL_NAMES:
        cached = cache_root() / "smollm2-135m-instruct"
        if (cached / "config.json").is_file():
            return AutoConfig.from_pretrained(str(cached))
        return AutoConfig.from_pretrained(str(smol_gguf_dir()), gguf_file=SMOL_GGUF)  # raises the install hint
    if name == MISTRAL_7B:
        return mistral_7b_config()
    try:
        return AutoConfig.from_pretrained(name, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise OSError(
            f"could not read the config of {name!r}: {exc}\nThe estimate needs only config.json: pass "
            "a local model folder, pre-fill the Hugging Face cache, or pass model_config= in "
            "Python."
        ) from exc


def chat_tokens_added(cfg: ORPOConfig) -> int:
    """How many ChatML tokens orpo_kit will add to the tokenizer (base models without a chat template)."""
    name = cfg.tokenizer_name_or_path or cfg.model_name_or_path
    if name in KNOWN_BASE_MODELS:
        return KNOWN_BASE_MODELS[name]
    folder = Path(name)
    if folder.is_dir() and (folder / "tokenizer_config.json").is_file():
        has = (folder / "chat_template.jinja").is_file() or "chat_template" in json.loads(
            (folder / "tokenizer_config.json").read_text(encoding="utf-8")
        )
        return 0 if has else CHATML_NEW_TOKENS
    return 0
