"""The ORPO memory estimator: exact parameter counts, activation tables, the two paths (prefix sharing +
chunked log-probs, the default; plain rows + full logits), monotonicity, a plausible 7B figure, and measured
checks on the tiny and smol presets (in subprocesses; the tiny ones and smol's default path in the default suite)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from orpo_kit.config import ORPOConfig, resolve_config
from orpo_kit.fused_mlp import fuse_swiglu
from orpo_kit.layouts import PLAIN as PLAIN_LAYOUT
from orpo_kit.layouts import SHARED as SHARED_LAYOUT
from orpo_kit.memory import (
    GiB,
    MiB,
    ModelShape,
    count_parameters,
    estimate_command,
    estimate_memory,
    layer_activation_bytes,
    lora_parameters,
    measure_training_peak,
    mistral_7b_config,
    model_config_for,
    synthetic_estimate_kwargs,
    synthetic_pairs,
    synthetic_row_len,
)
from orpo_kit.models.load import apply_lora, build_tiny_model

PLAIN = {"prefix_sharing": False, "chunked_logps": False}  # the old path: 2 rows per pair, full logits


def meta_numel(config) -> int:
    """Exact parameter count of a config's model without allocating its weights."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def shape_of(cfg: ORPOConfig) -> ModelShape:
    return ModelShape.from_config(model_config_for(cfg))


# ---- parameter counts -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides",
    [{}, {"tie_word_embeddings": True}, {"hidden_size": 192, "num_hidden_layers": 3, "num_key_value_heads": 4}],
)
def test_tiny_parameter_count_equals_the_built_model(overrides) -> None:
    cfg = ORPOConfig(model_name_or_path="tiny", model_config_overrides=overrides)
    model = build_tiny_model(overrides)
    assert count_parameters(shape_of(cfg)).total == sum(p.numel() for p in model.parameters())


def test_parameter_count_with_biases_equals_a_meta_model() -> None:
    config = LlamaConfig(
        hidden_size=128,
        intermediate_size=320,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=500,
        attention_bias=True,
        mlp_bias=True,
        tie_word_embeddings=False,
    )
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
    assert 134e6 < counts.total < 135e6  # SmolLM2-135M: 134.5M (docs/facts.md)


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
def saved_bytes(model: torch.nn.Module, rows: int, seq_len: int, inputs: dict | None = None) -> int:
    """Bytes of the unique non-parameter storages autograd saves during a forward (default: a padding mask)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    if inputs is None:
        ids = torch.randint(0, 1000, (rows, seq_len))
        mask = torch.ones_like(ids)
        mask[rows // 2 :, seq_len - 8 :] = 0
        inputs = {"input_ids": ids, "attention_mask": mask}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**inputs, use_cache=False)
    return sum(seen.values())


def _tiny_train_model(layers: int, lora: bool, fused: bool = False) -> torch.nn.Module:
    """The tiny model with `layers` layers (LoRA r8 when asked, the fused SwiGLU when asked), in train mode."""
    cfg = ORPOConfig(
        model_name_or_path="tiny", use_lora=lora, lora_r=8, model_config_overrides={"num_hidden_layers": layers}
    )
    model = build_tiny_model(cfg.model_config_overrides)
    if fused:
        fuse_swiglu(model)
    return (apply_lora(model, cfg) if lora else model).train()


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("lora", [False, True])
def test_layer_activation_table_matches_autograd(lora: bool, fused: bool) -> None:
    """Guards the fp32 tables against transformers / torch changes: the per-layer difference of saved bytes."""
    seq_len, per_layer = 48, []
    for layers in (1, 2):
        model = _tiny_train_model(layers, lora, fused)
        per_layer.append([saved_bytes(model, rows, seq_len) for rows in (2, 4)])
    # differences over layers and over rows cancel everything that is not per layer and per token
    measured = ((per_layer[1][1] - per_layer[0][1]) - (per_layer[1][0] - per_layer[0][0])) / (2 * seq_len)
    shape = shape_of(ORPOConfig(model_name_or_path="tiny"))
    expected = layer_activation_bytes(
        shape, seq_len, lora=lora, quantized=False, amp=False, lora_r=8, fused_swiglu=fused
    )
    assert measured == expected


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("lora", [False, True])
def test_layer_activation_table_matches_autograd_in_the_shared_layout(lora: bool, fused: bool) -> None:
    """[prompt][chosen][rejected] rows with the 4D fp32 mask: the mask is saved once, not per layer (no T term)."""
    seq_len, per_layer = 48, []
    width = synthetic_row_len(seq_len)
    for layers in (1, 2):
        model = _tiny_train_model(layers, lora, fused)
        batches = [SHARED_LAYOUT.collate(synthetic_pairs(pairs, seq_len, 1000), 0) for pairs in (1, 2)]
        assert all(b.input_ids.shape[1] == width for b in batches)
        per_layer.append([saved_bytes(model, 0, 0, b.model_inputs(torch.float32)) for b in batches])
    measured = ((per_layer[1][1] - per_layer[0][1]) - (per_layer[1][0] - per_layer[0][0])) / width
    shape = shape_of(ORPOConfig(model_name_or_path="tiny"))
    kw = dict(lora=lora, quantized=False, amp=False, lora_r=8, fused_swiglu=fused)
    assert measured == layer_activation_bytes(shape, width, mask_per_layer=False, **kw)
    assert measured == layer_activation_bytes(shape, width, **kw) - 4 * width  # the plain table's mask term


# ---- the two paths ---------------------------------------------------------------------------------------------------
def test_synthetic_workload_matches_the_collated_batches() -> None:
    """The estimator's view of the synthetic workload (width, completion share, log-prob positions) is what the
    trainer's collate functions build from `synthetic_pairs`, in both layouts and for both NLL choices."""
    seq_len, batch = 100, 3
    pairs = synthetic_pairs(batch, seq_len, 500)
    plain, shared = PLAIN_LAYOUT.collate(pairs, 0), SHARED_LAYOUT.collate(pairs, 0)
    kw = synthetic_estimate_kwargs(seq_len)
    assert plain.input_ids.shape == (2 * batch, seq_len) and shared.input_ids.shape == (batch, kw["row_len"])
    assert kw["completion_fraction"] == pytest.approx(float(plain.completion_mask.sum()) / (2 * batch * seq_len))
    for nll in ("response", "prompt_and_response"):
        for extra, layout in ((PLAIN, plain), ({}, shared)):
            cfg = ORPOConfig(model_name_or_path="tiny", nll_tokens=nll, **extra)
            est = estimate_memory(cfg, batch_size=batch, device="cpu", **kw)
            assert (est.rows, est.row_len) == tuple(layout.input_ids.shape)
            targets = layout.targets(with_prompt=nll == "prompt_and_response")
            assert est.logp_positions == targets.positions.numel(), (nll, est.layout)


def test_default_row_width_is_max_length_plus_the_completion() -> None:
    cfg = ORPOConfig(model_name_or_path="x", use_lora=True)
    assert estimate_memory(cfg, SMALL_LLAMA, device="cpu", new_tokens=0, seq_len=512).row_len == 1024  # f = 1
    half = estimate_memory(cfg, SMALL_LLAMA, device="cpu", new_tokens=0, seq_len=512, completion_fraction=0.5)
    assert (half.rows, half.row_len, half.logp_positions) == (4, 768, 4 * 512)  # prompt 256 + 2 x 256
    plain = estimate_memory(
        cfg.replace(**PLAIN), SMALL_LLAMA, device="cpu", new_tokens=0, seq_len=512, completion_fraction=0.5
    )
    assert (plain.rows, plain.row_len, plain.logp_positions) == (8, 512, 4 * 512)


def test_the_config_selects_the_path() -> None:
    base = ORPOConfig(model_name_or_path="x", use_lora=True)
    est = lambda c, config=SMALL_LLAMA: estimate_memory(c, config, device="cpu", new_tokens=0)
    assert (est(base).layout, est(base).chunked_logps) == ("shared", True)
    assert (est(base.replace(**PLAIN)).layout, est(base.replace(**PLAIN)).chunked_logps) == ("plain", False)
    assert est(base.replace(prefix_sharing=False)).layout == "plain"
    assert est(base.replace(prefix_sharing=False)).chunked_logps
    assert est(base.replace(chunked_logps=False)).layout == "shared"
    assert not est(base.replace(chunked_logps=False)).chunked_logps
    # flash-attention takes no 4D mask: the trainer packs (the estimator asks the same rule), else plain rows
    flash = est(base.replace(attn_implementation="flash_attention_2"))
    assert (flash.layout, flash.rows, flash.chunked_logps) == ("packed", 1, True) and "one packed row" in flash.table()
    assert flash.row_len == 2 * base.per_device_train_batch_size * base.max_length
    unpacked = est(base.replace(attn_implementation="flash_attention_2", packing=False))
    assert unpacked.layout == "plain" and "prefix sharing needs eager or sdpa" in unpacked.table()
    capped = SMALL_LLAMA.to_dict() | {"final_logit_softcapping": 30.0}  # logits are not lm_head(hidden)
    soft = est(base, LlamaConfig(**capped))
    assert soft.layout == "shared" and not soft.chunked_logps and "no chunked path" in soft.table()


def test_chunked_logits_hold_one_chunk_and_the_shared_mask_grows_with_width() -> None:
    cfg = ORPOConfig(model_name_or_path="x", use_lora=True, logps_chunk_size=1024)
    est = lambda c=cfg, **kw: estimate_memory(c, SMALL_LLAMA, device="cuda", new_tokens=0, **kw)
    v, h = SMALL_LLAMA.vocab_size, SMALL_LLAMA.hidden_size
    # 2 pairs x 1024, f = 1: 4,096 positions in 4 chunks of 1,024. LoRA leaves the head frozen: 2 fp32 blocks of
    # 1,024 x V while a chunk runs, and d logp / d hidden [4096, H] kept (orpo_kit.logprobs.FrozenHeadLogps)
    long = est(batch_size=2, seq_len=1024)
    assert long.logp_positions == 4096
    assert long.logits == int((2 * 1024 * v * 4 + 2 * 4096 * h * 4 + 2 * v * 4) * 1.10)
    assert "nothing recomputed" in long.details["logits"]
    # a trainable head (full fine-tuning) recomputes each chunk in backward: 4 blocks, no kept gradient
    full = est(cfg.replace(use_lora=False), batch_size=2, seq_len=1024)
    assert full.logits == int((4 * 1024 * v * 4 + 4096 * h * 4 + 2 * v * 4) * 1.10)
    assert "recomputed in backward" in full.details["logits"]
    assert est(cfg.replace(logps_chunk_size=256), batch_size=2, seq_len=1024).logits < long.logits / 3
    # plain: [4, 1024, V] + the 4,096 selected rows + a 4,096-row log-softmax temporary, all fp32: 3x 4 blocks
    assert est(cfg.replace(**PLAIN), batch_size=2, seq_len=1024).logits > 2.5 * long.logits
    # the [B, 1, W, W] fp32 mask: quadratic in the row width, once (the per-layer tables have no T term)
    shared = est(batch_size=2, seq_len=2048, completion_fraction=0.5)  # rows of 1,024 + 2 x 1,024 tokens
    assert (shared.rows, shared.row_len) == (2, 3072)
    assert "[2, 1, 3072, 3072] fp32 attention mask 72.0 MiB" in shared.details["activations"]


# ---- monotonicity and structure -------------------------------------------------------------------------------------
SMALL_LLAMA = LlamaConfig(
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    head_dim=64,
    vocab_size=49152,
    tie_word_embeddings=True,
)


@pytest.mark.parametrize("path", [{}, PLAIN])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_estimates_grow_with_length_and_batch_and_shrink_with_checkpointing(device: str, path: dict) -> None:
    cfg = ORPOConfig(model_name_or_path="x", use_lora=True, **path)
    est = lambda c=cfg, **kw: estimate_memory(c, SMALL_LLAMA, device=device, new_tokens=0, **kw)
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


@pytest.mark.skipif(
    "cpu_return_freed_memory" not in {f.name for f in dataclasses.fields(ORPOConfig)},
    reason="no cpu_return_freed_memory switch in this ORPOConfig",
)
def test_returning_freed_memory_lowers_the_cpu_estimate_and_drops_the_checkpointing_floor() -> None:
    cfg = ORPOConfig(model_name_or_path="x", use_lora=True, gradient_checkpointing=True)
    est = lambda c: estimate_memory(
        c,
        SMALL_LLAMA,
        device="cpu",
        new_tokens=0,
        batch_size=2,
        seq_len=256,
    )
    freed, heap = est(cfg.replace(cpu_return_freed_memory=True)), est(cfg.replace(cpu_return_freed_memory=False))
    assert freed.activations < heap.activations and "CPU heap floor" in heap.details["activations"]
    assert "CPU heap floor" not in freed.details["activations"] and "returned to the OS" in freed.table()
    on_gpu = lambda c: estimate_memory(c, SMALL_LLAMA, device="cuda", new_tokens=0)
    assert (
        on_gpu(cfg.replace(cpu_return_freed_memory=True)).total
        == on_gpu(cfg.replace(cpu_return_freed_memory=False)).total
    )  # a CPU allocator setting


def test_gradient_accumulation_keeps_gradients_alive_during_forward() -> None:
    cfg = ORPOConfig(model_name_or_path="x", use_lora=False)
    one = estimate_memory(cfg, SMALL_LLAMA, device="cpu", batch_size=1, seq_len=64)
    eight = estimate_memory(
        cfg.replace(gradient_accumulation_steps=8), SMALL_LLAMA, device="cpu", batch_size=1, seq_len=64
    )
    assert eight.gradients_at_peak == eight.gradients > one.gradients_at_peak
    assert eight.total > one.total


@pytest.mark.parametrize("path", [{}, PLAIN])
def test_breakdown_and_table(path: dict) -> None:
    est = estimate_memory(resolve_config("tiny", overrides=path), device="cpu")
    parts = est.breakdown()
    assert set(parts) == {
        "weights",
        "trainable",
        "gradients",
        "optimizer",
        "activations",
        "logits",
        "overhead",
        "total",
    }
    peak = max(est.activations + est.logits + est.gradients_at_peak, est.gradients + est.optimizer_step_temp)
    assert est.total == est.weights + est.trainable + est.optimizer + est.overhead + peak
    text = est.table()
    assert "total (peak)" in text and "assumptions:" in text
    if path:
        assert "rows = 2 per pair (chosen + rejected) x batch 8 = 16, each padded to 192 tokens" in text
        assert "logits: full [16, 192, V] from the model" in text and "attention mask" not in text
    else:
        assert "rows = 1 per pair ([prompt][chosen][rejected]) x batch 8 = 8, each padded to 384 tokens" in text
        assert f"logits: chunks of {ORPOConfig().logps_chunk_size} rows x V, recomputed in backward" in text
        assert "[8, 1, 384, 384] fp32 attention mask" in text


# ---- the 7B recipe ----------------------------------------------------------------------------------------------
def test_mistral_7b_qlora_estimate_is_plausible() -> None:
    """Mistral-7B QLoRA, 2 pairs x 1024, checkpointing, bf16: about 10.6 GiB allocated (+ the CUDA context).

    Roughly: 3.6 GiB NF4 + 1 GiB fp32 embeddings / lm_head + 0.5 GiB LoRA state, 2 GiB fp32 checkpointed layer
    inputs + 2.5 GiB for the recomputed layer, 0.5 GiB for the chunked head.
    """
    text = estimate_command("mistral-7b-qlora", None, 1024, 2, None)
    assert "QLoRA" in text and "device cuda" in text and "32,064" in text  # ChatML tokens added, rounded to 64
    overrides = {"max_length": 1024, "per_device_train_batch_size": 2, "logps_chunk_size": 1024}
    assert "1 per pair ([prompt][chosen][rejected])" in text
    assert f"chunks of {ORPOConfig().logps_chunk_size} rows x V" in text
    est = estimate_memory(resolve_config("mistral-7b-qlora", overrides=overrides))
    assert 6 * GiB < est.total < 14 * GiB
    assert 4.0 * GiB < est.weights < 5.0 * GiB
    assert 100 * MiB < est.trainable < 200 * MiB  # r16 on every Linear: 41.9M fp32
    assert (est.rows, est.row_len) == (2, 2048)  # worst case: both completions max_length long
    # the frozen head (ChatML rows train in it): 2 fp32 + 2 bf16 blocks of 1,024 x 32,064, the [4096, 4096]
    # gathered hidden states and their gradient, x1.1; no merged copy of lm_head
    assert 500 * MiB < est.logits < 600 * MiB
    assert "[2, 1, 2048, 2048] fp32 attention mask 32.0 MiB" in est.details["activations"]
    plain = estimate_memory(resolve_config("mistral-7b-qlora", overrides={**overrides, **PLAIN}))
    assert plain.logits > 1.5 * GiB and plain.total > est.total  # [4, 1024, V] bf16 logits and fp32 copies
    small = estimate_memory(resolve_config("mistral-7b-qlora", overrides={**overrides, "logps_chunk_size": 256}))
    assert small.logits < est.logits / 2 and small.activations == est.activations


def test_estimate_command_accepts_overrides() -> None:
    text = estimate_command("tiny", None, 64, 2, ["device=cpu", "gradient_checkpointing=true"])
    assert "batch 2 pairs x max_length 64" in text and "checkpointing" in text and "device cpu" in text


# ---- measured ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [{}, PLAIN], ids=["default", "plain"])
def test_tiny_preset_estimate_is_within_100_mb_of_a_measured_peak(path: dict) -> None:
    """Real Trainer.train_step in a fresh process (about 5 s each on 2 cores: in the default suite)."""
    cfg = resolve_config("tiny", overrides=path)
    measured = measure_training_peak(cfg, steps=4)
    est = estimate_memory(cfg, device="cpu", **synthetic_estimate_kwargs(cfg.max_length))
    assert measured["peak_was_reset"] and measured["steps"] == 4
    assert (measured["layout"], measured["chunked_logps"]) == (est.layout, est.chunked_logps)
    assert abs(est.total / MiB - measured["peak_growth_mb"]) < 100, (est.total / MiB, measured)


@pytest.mark.smol
@pytest.mark.parametrize(
    "path", [{}, pytest.param(PLAIN, marks=pytest.mark.slow)], ids=["default", "plain"]
)  # the default path (about 15 s on 2 cores) runs in the default suite; the plain path on demand
def test_smol_estimate_is_within_25_percent_of_a_measured_peak(path: dict) -> None:
    """SmolLM2 LoRA, 1 pair x 384 (not a calibration setting); needs the SmolLM2 wheel (the `smol` marker)."""
    cfg = resolve_config("smol", overrides={**path, "device": "cpu"})
    measured = measure_training_peak(cfg, steps=2, seq_len=384, batch_size=1)
    est = estimate_memory(cfg, batch_size=1, device="cpu", **synthetic_estimate_kwargs(384))
    assert (measured["layout"], measured["chunked_logps"]) == (est.layout, est.chunked_logps)
    assert abs(est.total / MiB / measured["peak_growth_mb"] - 1) < 0.25, (est.total / MiB, measured)


def test_estimate_memory_validates_arguments() -> None:
    cfg = ORPOConfig(model_name_or_path="x")
    with pytest.raises(ValueError):
        estimate_memory(cfg, SMALL_LLAMA, completion_fraction=0)
    with pytest.raises(ValueError):
        estimate_memory(dataclasses.replace(cfg), SMALL_LLAMA, batch_size=-1)
    with pytest.raises(ValueError):
        estimate_memory(cfg, SMALL_LLAMA, row_len=0)


@pytest.mark.parametrize("impl", ["eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention"])
@pytest.mark.parametrize("prefix_sharing,packing", [(True, True), (True, False), (False, True), (False, False)])
def test_the_estimators_layout_is_the_one_the_trainer_picks(impl: str, prefix_sharing: bool, packing: bool) -> None:
    """The estimate's layout (from the config) equals `choose_layout` on a model loaded with that attention."""
    from orpo_kit.layouts import choose_layout
    from orpo_kit.memory.estimate import trainer_layout

    cfg = ORPOConfig(
        model_name_or_path="some/model", attn_implementation=impl, prefix_sharing=prefix_sharing, packing=packing
    )
    model = build_tiny_model()
    model.config._attn_implementation = impl  # what from_pretrained(attn_implementation=impl) sets
    assert trainer_layout(cfg) is choose_layout(model, prefix_sharing, packing)
    tiny = resolve_config(
        "tiny", overrides=dict(attn_implementation=impl, prefix_sharing=prefix_sharing, packing=packing)
    )
    assert trainer_layout(tiny) is choose_layout(build_tiny_model(), prefix_sharing, packing)  # tiny: always sdpa
