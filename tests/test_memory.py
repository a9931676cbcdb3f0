"""The ORPO memory estimator: exact parameter counts, activation tables, monotonicity, a plausible 7B figure,
and one measured check on the tiny preset (in a subprocess; a few seconds)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig

from orpo_kit.config import ORPOConfig, resolve_config
from orpo_kit.memory import (
    GiB, MiB, ModelShape, count_parameters, estimate_command, estimate_memory, layer_activation_bytes,
    lora_parameters, measure_training_peak, mistral_7b_config, model_config_for, synthetic_completion_fraction,
)
from orpo_kit.models.load import apply_lora, build_tiny_model


def meta_numel(config) -> int:
    """Exact parameter count of a config's model without allocating its weights."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def shape_of(cfg: ORPOConfig) -> ModelShape:
    return ModelShape.from_config(model_config_for(cfg))


# ---- parameter counts -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides", [{}, {"tie_word_embeddings": True}, {"hidden_size": 192, "num_hidden_layers": 3,
                                                                           "num_key_value_heads": 4}])
def test_tiny_parameter_count_equals_the_built_model(overrides) -> None:
    cfg = ORPOConfig(model_name_or_path="tiny", model_config_overrides=overrides)
    model = build_tiny_model(overrides)
    assert count_parameters(shape_of(cfg)).total == sum(p.numel() for p in model.parameters())


def test_parameter_count_with_biases_equals_a_meta_model() -> None:
    config = LlamaConfig(hidden_size=128, intermediate_size=320, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=500, attention_bias=True, mlp_bias=True,
                         tie_word_embeddings=False)
    assert count_parameters(ModelShape.from_config(config)).total == meta_numel(config)


def test_mistral_7b_parameter_count_equals_a_meta_model() -> None:
    config = mistral_7b_config()
    counts = count_parameters(ModelShape.from_config(config))
    assert counts.total == meta_numel(config) == 7_241_732_096
    assert counts.embedding == counts.lm_head == 32_000 * 4096  # untied


@pytest.mark.smol
def test_smollm2_parameter_count_equals_a_meta_model() -> None:
    try:
        config = model_config_for(resolve_config("smol"))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    counts = count_parameters(ModelShape.from_config(config))
    assert counts.lm_head == 0  # tied embeddings
    assert counts.total == meta_numel(config)
    assert 134e6 < counts.total < 135e6  # FACTS: 134.5M


@pytest.mark.parametrize("targets", ["all-linear", ["q_proj", "v_proj"], ["down_proj"]])
def test_lora_trainable_count_equals_peft(targets) -> None:
    cfg = ORPOConfig(model_name_or_path="tiny", use_lora=True, lora_r=8, lora_target_modules=targets)
    model = apply_lora(build_tiny_model(), cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert lora_parameters(shape_of(cfg), 8, targets) == trainable
    assert estimate_memory(cfg, device="cpu").params_trainable == trainable


def test_model_config_for_reports_a_missing_model(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="needs only config.json"):
        model_config_for(ORPOConfig(model_name_or_path=str(tmp_path)))


# ---- activation tables ----------------------------------------------------------------------------------------------
def saved_bytes(model: torch.nn.Module, rows: int, seq_len: int) -> int:
    """Bytes of the unique non-parameter storages autograd saves during a forward with a padding mask."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    ids = torch.randint(0, 1000, (rows, seq_len))
    mask = torch.ones_like(ids)
    mask[rows // 2:, seq_len - 8:] = 0
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, attention_mask=mask, use_cache=False)
    return sum(seen.values())


@pytest.mark.parametrize("lora", [False, True])
def test_layer_activation_table_matches_autograd(lora: bool) -> None:
    """Guards the fp32 tables against transformers / torch changes: the per-layer difference of saved bytes."""
    seq_len, per_layer = 48, []
    for layers in (1, 2):
        cfg = ORPOConfig(model_name_or_path="tiny", use_lora=lora, lora_r=8,
                         model_config_overrides={"num_hidden_layers": layers})
        model = build_tiny_model(cfg.model_config_overrides)
        model = apply_lora(model, cfg) if lora else model
        model.train()
        per_layer.append([saved_bytes(model, rows, seq_len) for rows in (2, 4)])
    # differences over layers and over rows cancel everything that is not per layer and per token
    measured = ((per_layer[1][1] - per_layer[0][1]) - (per_layer[1][0] - per_layer[0][0])) / (2 * seq_len)
    shape = shape_of(ORPOConfig(model_name_or_path="tiny"))
    expected = layer_activation_bytes(shape, seq_len, lora=lora, quantized=False, amp=False, lora_r=8)
    assert measured == expected


# ---- monotonicity and structure -------------------------------------------------------------------------------------
SMALL_LLAMA = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                          num_key_value_heads=3, head_dim=64, vocab_size=49152, tie_word_embeddings=True)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_estimates_grow_with_length_and_batch_and_shrink_with_checkpointing(device: str) -> None:
    cfg = ORPOConfig(model_name_or_path="x", use_lora=True)
    est = lambda c=cfg, **kw: estimate_memory(c, SMALL_LLAMA, device=device, new_tokens=0, **kw)  # noqa: E731
    short, long = est(batch_size=2, seq_len=128), est(batch_size=2, seq_len=512)
    assert long.total > short.total and long.activations > short.activations and long.logits > short.logits
    assert est(batch_size=4, seq_len=128).total > short.total
    checkpointed = est(cfg.replace(gradient_checkpointing=True), batch_size=2, seq_len=512)
    assert checkpointed.activations < long.activations and checkpointed.total < long.total
    assert checkpointed.weights == long.weights and checkpointed.logits == long.logits


def test_four_bit_weights_are_smaller_and_full_fine_tuning_costs_optimizer_state() -> None:
    lora = ORPOConfig(model_name_or_path="x", use_lora=True)
    qlora = lora.replace(load_in_4bit=True, bnb_4bit_compute_dtype="float32")
    full = lora.replace(use_lora=False)
    e_lora, e_q, e_full = (estimate_memory(c, SMALL_LLAMA, device="cpu", new_tokens=0) for c in (lora, qlora, full))
    assert e_q.weights < e_lora.weights
    counts = count_parameters(ModelShape.from_config(SMALL_LLAMA))
    # NF4 with double quant: 0.5 B + an 8-bit absmax per 64 weights + an fp32 scale per 256 blocks
    nf4 = counts.linear_weights * (0.5 + 1 / 64 + 4 / (64 * 256))
    assert e_q.weights == int(nf4 + counts.not_quantized * 4)
    assert e_lora.trainable == e_q.trainable > 0 and e_full.trainable == 0
    assert e_full.optimizer == 8 * counts.total and e_full.gradients == 4 * counts.total
    assert e_full.optimizer > 20 * e_lora.optimizer  # 134.5M vs 4.9M trainable


def test_gradient_accumulation_keeps_gradients_alive_during_forward() -> None:
    cfg = ORPOConfig(model_name_or_path="x", use_lora=False)
    one = estimate_memory(cfg, SMALL_LLAMA, device="cpu", batch_size=1, seq_len=64)
    eight = estimate_memory(cfg.replace(gradient_accumulation_steps=8), SMALL_LLAMA, device="cpu", batch_size=1,
                            seq_len=64)
    assert eight.gradients_at_peak == eight.gradients > one.gradients_at_peak
    assert eight.total > one.total


def test_breakdown_and_table() -> None:
    est = estimate_memory(resolve_config("tiny"), device="cpu")
    parts = est.breakdown()
    assert set(parts) == {"weights", "trainable", "gradients", "optimizer", "activations", "logits", "overhead",
                          "total"}
    peak = max(est.activations + est.logits + est.gradients_at_peak, est.gradients + est.optimizer_step_temp)
    assert est.total == est.weights + est.trainable + est.optimizer + est.overhead + peak
    text = est.table()
    assert "total (peak)" in text and "assumptions:" in text and "2 per pair" in text


# ---- the 7B recipe ----------------------------------------------------------------------------------------------
def test_mistral_7b_qlora_estimate_is_plausible() -> None:
    """Mistral-7B QLoRA, 2 pairs x 1024, checkpointing, bf16: about 11.9 GiB allocated (+ the CUDA context).

    Roughly: 3.6 GiB NF4 + 1 GiB fp32 embeddings / lm_head + 0.5 GiB LoRA state, 2 GiB fp32 checkpointed layer
    inputs + 2.5 GiB for the recomputed layer, 1.6 GiB logits and their fp32 log-softmax copies.
    """
    text = estimate_command("mistral-7b-qlora", None, 1024, 2, None)
    assert "QLoRA" in text and "device cuda" in text and "32,064" in text  # ChatML tokens added, rounded to 64
    est = estimate_memory(resolve_config("mistral-7b-qlora", overrides={"max_length": 1024,
                                                                        "per_device_train_batch_size": 2}))
    assert 6 * GiB < est.total < 14 * GiB
    assert 4.0 * GiB < est.weights < 5.0 * GiB
    assert 100 * MiB < est.trainable < 200 * MiB  # r16 on every Linear: 41.9M fp32
    assert est.logits > 1 * GiB


def test_estimate_command_accepts_overrides() -> None:
    text = estimate_command("tiny", None, 64, 2, ["device=cpu", "gradient_checkpointing=true"])
    assert "batch 2 pairs x max_length 64" in text and "checkpointing" in text and "device cpu" in text


# ---- measured ----------------------------------------------------------------------------------------------------
def test_tiny_preset_estimate_is_within_100_mb_of_a_measured_peak() -> None:
    """Real Trainer.train_step in a fresh process (a few seconds: the tiny preset is small)."""
    cfg = resolve_config("tiny")
    measured = measure_training_peak(cfg, steps=4)
    est = estimate_memory(cfg, device="cpu", completion_fraction=synthetic_completion_fraction(cfg.max_length))
    assert measured["peak_was_reset"] and measured["steps"] == 4
    assert abs(est.total / MiB - measured["peak_growth_mb"]) < 100, (est.total / MiB, measured)


def test_estimate_memory_validates_arguments() -> None:
    cfg = ORPOConfig(model_name_or_path="x")
    with pytest.raises(ValueError):
        estimate_memory(cfg, SMALL_LLAMA, completion_fraction=0)
    with pytest.raises(ValueError):
        estimate_memory(dataclasses.replace(cfg), SMALL_LLAMA, batch_size=-1)
