"""random_weights=true: a model's architecture with seeded random weights, written once and loaded like a checkpoint
(so 4-bit loading quantizes it layer by layer, as it would the real weights)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from orpo_kit.config import resolve_config
from orpo_kit.models import load_tokenizer
from orpo_kit.models.load import build_tiny_model, load_model
from orpo_kit.models.random_weights import model_config, random_state_dict, shipped_config


@pytest.fixture
def small_config(tmp_path: Path) -> Path:
    folder = tmp_path / "small"
    build_tiny_model({"num_hidden_layers": 3}, seed=0).config.save_pretrained(folder)  # config.json only
    return folder


def test_random_weights_are_seeded_and_shaped_by_the_config(small_config: Path) -> None:
    config = model_config(str(small_config), 1000)
    weights = random_state_dict(config, seed=3)
    assert weights["lm_head.weight"].get_shape() == [1000, config.hidden_size]
    head = weights["lm_head.weight"][...]
    assert head.dtype == torch.bfloat16 and torch.equal(head, random_state_dict(config, seed=3)["lm_head.weight"][...])
    assert not torch.equal(head, random_state_dict(config, seed=4)["lm_head.weight"][...])
    assert head.float().std().item() == pytest.approx(0.02, rel=0.05)
    assert not torch.equal(head, weights["model.embed_tokens.weight"][...][:1000])  # each weight its own draw
    assert torch.equal(weights["model.norm.weight"][...], torch.ones(config.hidden_size, dtype=torch.bfloat16))


def test_a_random_model_in_4bit_loads_the_same_twice(small_config: Path) -> None:
    pytest.importorskip("bitsandbytes")
    overrides = {
        "model_name_or_path": str(small_config),
        "tokenizer_name_or_path": "tiny",
        "random_weights": True,
        "load_in_4bit": True,
        "use_lora": True,
    }
    cfg = resolve_config("tiny", overrides=overrides)
    tokenizer = load_tokenizer(cfg)
    one, two = load_model(cfg, tokenizer), load_model(cfg, tokenizer)
    frozen = {n: p for n, p in one.named_parameters() if not p.requires_grad}
    assert frozen and all(torch.equal(p, dict(two.named_parameters())[n]) for n, p in frozen.items())
    from bitsandbytes.nn import Linear4bit

    assert sum(isinstance(m, Linear4bit) for m in one.modules()) == 3 * 7
    full = load_model(resolve_config("tiny", overrides={**overrides, "load_in_4bit": False}), tokenizer)
    assert full.get_base_model().model.layers[2].mlp.down_proj.weight.dtype == torch.float32


def test_the_shipped_mistral_config_has_the_stand_in_tokenizer_without_a_chat_template() -> None:
    assert shipped_config("mistralai/Mistral-7B-v0.1") is not None and shipped_config("other/model") is None
    config = model_config("mistralai/Mistral-7B-v0.1", 49152)
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.vocab_size) == (
        4096,
        32,
        14336,
        49152,
    )
    cfg = resolve_config("mistral-7b-qlora", overrides={"random_weights": True, "data": "builtin"})
    tokenizer = load_tokenizer(cfg)  # SmolLM2's, as a base model's tokenizer: ChatML set by orpo_kit
    from orpo_kit.models.chat_template import ADDED_IDS, CHATML

    assert tokenizer.chat_template == CHATML
    assert getattr(tokenizer, ADDED_IDS) == tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])


def test_other_data_than_the_presets_drops_its_eval_set() -> None:
    recipe = resolve_config("mistral-7b-qlora")
    assert (recipe.eval_data, recipe.data_split) == ("HuggingFaceH4/ultrafeedback_binarized", "train_prefs")
    mine = resolve_config("mistral-7b-qlora", overrides={"data": "builtin"})
    assert (mine.eval_data, mine.data_split, mine.eval_data_split) == (None, None, None)
    kept = resolve_config("mistral-7b-qlora", overrides={"data": "builtin", "eval_data": "e.jsonl"})
    assert kept.eval_data == "e.jsonl"


def test_an_unknown_model_without_a_config_is_named(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="random_weights: no config for"):
        model_config(str(tmp_path / "nothing-here"), 100)
