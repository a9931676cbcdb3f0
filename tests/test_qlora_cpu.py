"""QLoRA (bitsandbytes NF4) on CPU: LoRA gradients stay exact after evaluation and generation between steps.

The trap this guards against (docs/facts.md): on CPUs with AVX512-BF16, a no-grad `Linear4bit` forward
repacks the weight in place into an inference layout whose kernel has no backward, so LoRA gradients taken
after an evaluation pass come out mostly wrong with only a warning. `load_4bit_model` turns the repack off.

`test_lora_gradients_exact_after_eval_and_generate` loads the tiny Mistral in 4-bit (fp32 compute), adds LoRA,
takes one AdamW step (so LoRA B is non-zero and both A and B get non-trivial gradients), runs an evaluation
pass and a 3-token generation, then takes ORPO gradients on a batch and compares every LoRA gradient with those
of an fp32 Mistral holding the dequantized 4-bit weights and the same LoRA weights (relative error < 1e-4).

Reproducible demonstration that the test catches the trap: with ORPO_KIT_TEST_DISABLE_4BIT_GUARD=1 the test
re-arms the repack on every 4-bit layer after loading (what an unguarded model has on such a CPU), and the
gradient check fails. On a CPU without AVX512-BF16 there is nothing to demonstrate and that mode skips.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("bitsandbytes", reason='QLoRA tests need bitsandbytes: pip install "orpo_kit[qlora]"')

import bitsandbytes.functional as bnbf
from bitsandbytes.nn import Linear4bit

from orpo_kit.config import ORPOConfig
from orpo_kit.data import load_pairs, tokenize_pairs
from orpo_kit.layouts import PLAIN, PairBatch
from orpo_kit.models import quantize
from orpo_kit.models.load import apply_lora, build_tiny_model, load_tokenizer
from orpo_kit.train import orpo_step

GUARD_OFF = os.environ.get("ORPO_KIT_TEST_DISABLE_4BIT_GUARD") == "1"
TOL = 1e-4


def _cfg(dtype: str) -> ORPOConfig:
    """A 4-bit LoRA config: no dropout, so the fp32 reference sees the same computation."""
    return ORPOConfig(
        load_in_4bit=True,
        bnb_4bit_compute_dtype=dtype,
        use_lora=True,
        lora_r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        orpo_lambda=1.0,
        seed=0,
    )


def _batches(cfg: ORPOConfig) -> tuple[PairBatch, PairBatch, object]:
    """Two 4-pair batches of the built-in data (tiny tokenizer) and the tokenizer."""
    tokenizer = load_tokenizer(cfg)
    pairs, _ = load_pairs("builtin")
    items = tokenize_pairs(tokenizer, pairs[:8], max_length=96, max_prompt_length=48)
    return (
        PLAIN.collate(items[:4], tokenizer.pad_token_id),
        PLAIN.collate(items[4:8], tokenizer.pad_token_id),
        tokenizer,
    )


def _load(tmp_path: Path, cfg: ORPOConfig) -> torch.nn.Module:
    """The tiny Mistral saved to disk and loaded back in 4-bit through load_4bit_model."""
    build_tiny_model(seed=0).save_pretrained(tmp_path / "tiny")
    return quantize.load_4bit_model(str(tmp_path / "tiny"), cfg, device_map="cpu")


def _rearm_repack(model: torch.nn.Module) -> None:
    """Demonstration mode only: undo the guard, as on a model loaded without load_4bit_model."""
    if not bnbf.has_avx512bf16():
        pytest.skip("this CPU has no AVX512-BF16: bitsandbytes never repacks here, nothing to demonstrate")
    for _, layer in quantize.iter_4bit_layers(model):
        setattr(layer, quantize.REPACK_FLAG, True)


def _fp32_reference(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Float weights of the 4-bit model, with every Linear4bit weight dequantized to fp32."""
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.dtype.is_floating_point}
    for name, layer in quantize.iter_4bit_layers(model):
        assert not quantize.is_repacked(layer)
        weights[f"{name}.weight"] = bnbf.dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
    return weights


def _lora_grads(model: torch.nn.Module, batch: PairBatch, cfg: ORPOConfig) -> tuple[float, dict[str, torch.Tensor]]:
    """ORPO loss and the gradient of every LoRA parameter on one batch (train mode)."""
    model.train()
    model.zero_grad(set_to_none=True)
    loss, _ = orpo_step(model, batch, cfg)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    model.zero_grad(set_to_none=True)
    return loss.item(), grads


def _eval_and_generate(model: torch.nn.Module, batch: PairBatch, tokenizer) -> None:
    """What a training loop does between steps: a no-grad evaluation pass and a short generation."""
    model.eval()
    with torch.no_grad():
        orpo_step(model, batch, _cfg("float32"))
    prompt = batch.input_ids[:1, :8]
    out = model.generate(
        input_ids=prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=3,
        min_new_tokens=3,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    assert out.shape[1] == prompt.shape[1] + 3
    model.train()


def _relative_errors(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> dict[str, float]:
    """||got - ref|| / ||ref|| per tensor (every reference gradient must be non-zero)."""
    assert got.keys() == ref.keys() and got
    for name, g in ref.items():
        assert g.norm() > 0, f"trivial reference gradient for {name}"
    return {n: ((got[n].float() - ref[n].float()).norm() / ref[n].float().norm()).item() for n in ref}


def _report(errors: dict[str, float]) -> str:
    """The errors above tolerance, worst first, for the assertion message."""
    bad = sorted(((e, n) for n, e in errors.items() if not e < TOL), reverse=True)
    lines = [f"  {e:.3e}  {n}" for e, n in bad]
    return f"{len(bad)}/{len(errors)} LoRA gradients off by more than {TOL:g} (relative):\n" + "\n".join(lines)


def test_lora_gradients_exact_after_eval_and_generate(tmp_path: Path) -> None:
    cfg = _cfg("float32")
    train_batch, eval_batch, tokenizer = _batches(cfg)
    base = _load(tmp_path, cfg)
    layers = quantize.iter_4bit_layers(base)
    assert layers and all(isinstance(layer, Linear4bit) for _, layer in layers)
    assert quantize.unguarded_4bit_layers(base) == [] and quantize.is_guarded(base)
    if GUARD_OFF:
        _rearm_repack(base)
    torch.manual_seed(0)
    model = apply_lora(base, cfg)
    reference_weights = _fp32_reference(model)  # 4-bit weights do not change while LoRA trains
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss, _ = orpo_step(model, train_batch, cfg)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    assert all(p.abs().max() > 0 for n, p in model.named_parameters() if "lora_B" in n)

    _eval_and_generate(model, eval_batch, tokenizer)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss_4bit, grads_4bit = _lora_grads(model, train_batch, cfg)

    reference = build_tiny_model(seed=0)
    torch.manual_seed(0)
    reference = apply_lora(reference, cfg)
    missing = set(dict(reference.named_parameters())) - set(reference_weights) - set(grads_4bit)
    assert not missing, f"reference parameters with no source: {sorted(missing)[:5]}"
    with torch.no_grad():
        lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
        for name, param in reference.named_parameters():
            param.copy_(lora[name] if name in lora else reference_weights[name])
    loss_ref, grads_ref = _lora_grads(reference, train_batch, cfg)

    errors = _relative_errors(grads_4bit, grads_ref)
    print(
        f"\nloss 4-bit {loss_4bit:.6f} vs fp32 reference {loss_ref:.6f}; max relative gradient error "
        f"{max(errors.values()):.3e} over {len(errors)} LoRA tensors"
    )
    kernel_warnings = {str(w.message).split(". ")[0] for w in caught if "autograd kernel" in str(w.message)}
    hints = "".join(f"\n  warning: {w}" for w in kernel_warnings)
    assert all(e < TOL for e in errors.values()), _report(errors) + hints
    assert not kernel_warnings
    assert abs(loss_4bit - loss_ref) <= TOL * abs(loss_ref)
    assert quantize.unguarded_4bit_layers(model) == []
    assert not any(quantize.is_repacked(layer) for _, layer in quantize.iter_4bit_layers(model))


def test_default_bf16_compute_gradients_unchanged_by_eval(tmp_path: Path) -> None:
    """The default compute dtype (bfloat16): gradients after eval + generate equal those before them."""
    cfg = _cfg("bfloat16")
    train_batch, eval_batch, tokenizer = _batches(cfg)
    base = _load(tmp_path, cfg)
    assert {layer.compute_dtype for _, layer in quantize.iter_4bit_layers(base)} == {torch.bfloat16}
    if GUARD_OFF:
        _rearm_repack(base)
    model = apply_lora(base, cfg)
    with torch.no_grad():  # non-zero B so that A's gradients are non-trivial too
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02, generator=torch.Generator().manual_seed(1))
    _, before = _lora_grads(model, train_batch, cfg)
    _eval_and_generate(model, eval_batch, tokenizer)
    _, after = _lora_grads(model, train_batch, cfg)
    errors = _relative_errors(after, before)
    assert all(e < TOL for e in errors.values()), _report(errors)
    assert quantize.is_guarded(model)


def test_guard_is_idempotent_and_covers_new_layers() -> None:
    quantize.disable_cpu_repack()
    quantize.disable_cpu_repack()
    layer = Linear4bit(64, 64, bias=False, quant_type="nf4")
    assert getattr(layer, quantize.REPACK_FLAG) is False
    setattr(layer, quantize.REPACK_FLAG, True)
    model = torch.nn.Sequential(layer, torch.nn.Linear(64, 64))
    assert quantize.unguarded_4bit_layers(model) == ["0"] and not quantize.is_guarded(model)
    assert quantize.guard_4bit_layers(model) == 1
    assert quantize.guard_4bit_layers(model) == 1
    assert quantize.unguarded_4bit_layers(model) == []


def _quantized_layer(n_in: int, n_out: int) -> Linear4bit:
    """An NF4 Linear4bit (fp32 compute) quantized on CPU from a seeded dense layer."""
    torch.manual_seed(0)
    dense = torch.nn.Linear(n_in, n_out, bias=False)
    layer = Linear4bit(n_in, n_out, bias=False, quant_type="nf4", compute_dtype=torch.float32)
    layer.load_state_dict(dense.state_dict())
    return layer.to("cpu")  # quantizes


def test_guard_restores_a_layer_already_repacked() -> None:
    """A model evaluated before it was guarded: the guard brings the training layout back, with a warning."""
    if not bnbf.has_avx512bf16():
        pytest.skip("this CPU has no AVX512-BF16: bitsandbytes never repacks here")
    layer = _quantized_layer(128, 64)
    setattr(layer, quantize.REPACK_FLAG, True)
    model = torch.nn.Sequential(layer).eval()
    with torch.no_grad():
        model(torch.randn(2, 128))
    assert quantize.is_repacked(layer) and quantize.unguarded_4bit_layers(model) == ["0"]
    with pytest.warns(UserWarning, match="already been repacked"):
        assert quantize.guard_4bit_layers(model) == 1
    assert quantize.unguarded_4bit_layers(model) == []
    x = torch.randn(3, 128, requires_grad=True)
    model.train()
    model(x).sum().backward()
    w = bnbf.dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
    torch.testing.assert_close(x.grad, torch.ones(3, 64) @ w)


def test_guarded_layer_with_width_not_multiple_of_64_evaluates() -> None:
    """Widths that are not multiples of 64 crash in the repack; a guarded layer just computes."""
    layer = _quantized_layer(96, 80)
    setattr(layer, quantize.REPACK_FLAG, True)  # as created without disable_cpu_repack on an AVX512-BF16 CPU
    model = torch.nn.Sequential(layer).eval()
    quantize.guard_4bit_layers(model)
    x = torch.randn(3, 96)
    with torch.no_grad():
        got = model(x)
    w = bnbf.dequantize_4bit(layer.weight.data, layer.weight.quant_state)
    torch.testing.assert_close(got, x @ w.float().T)


def test_quantization_config_from_cfg() -> None:
    q = quantize.quantization_config(ORPOConfig(load_in_4bit=True))
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16
    q = quantize.quantization_config(ORPOConfig(bnb_4bit_compute_dtype="float32", bnb_4bit_use_double_quant=False))
    assert q.bnb_4bit_compute_dtype == torch.float32 and not q.bnb_4bit_use_double_quant
    with pytest.raises(ValueError, match="bnb_4bit_compute_dtype"):
        quantize.quantization_config(ORPOConfig(bnb_4bit_compute_dtype="int8"))


def test_missing_bitsandbytes_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = quantize.importlib.util.find_spec
    monkeypatch.setattr(
        quantize.importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a)
    )
    with pytest.raises(ImportError, match=r'pip install "orpo_kit\[qlora\]"'):
        quantize.load_4bit_model("tiny", ORPOConfig(load_in_4bit=True))
    assert sys.modules.get("bitsandbytes") is not None  # only the lookup was faked
