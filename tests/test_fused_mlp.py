"""The fused SwiGLU: autograd's numbers, two saved activations instead of three, only where the forward matches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from orpo_kit.config import ORPOConfig
from orpo_kit.fused_mlp import SiluMul, fuse_swiglu, is_fused, is_swiglu_mlp, unfuse_swiglu
from orpo_kit.models import build_tiny_model, load_model


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_silu_mul_gives_autograds_exact_values_and_gradients(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    gate, up = (
        (torch.randn(37, 53, dtype=dtype) * 3).requires_grad_(),
        torch.randn(37, 53, dtype=dtype).requires_grad_(),
    )
    grad = torch.randn(37, 53, dtype=dtype)
    want = nn.functional.silu(gate) * up
    want_g = torch.autograd.grad(want, (gate, up), grad)
    got = SiluMul.apply(gate, up)
    got_g = torch.autograd.grad(got, (gate, up), grad)
    assert torch.equal(got, want)
    assert torch.equal(got_g[0], want_g[0]) and torch.equal(got_g[1], want_g[1])


def test_silu_mul_passes_gradcheck() -> None:
    gate = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    up = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(SiluMul.apply, (gate, up))


def _saved_bytes(fn) -> int:
    """Bytes of the unique non-parameter storages autograd saves while fn runs."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if not isinstance(t, nn.Parameter):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


@pytest.mark.parametrize("use_lora", [False, True])
def test_fused_model_matches_unfused_and_saves_one_intermediate_tensor_less(use_lora: bool) -> None:
    torch.manual_seed(0)
    model = load_model(ORPOConfig(use_lora=use_lora, lora_dropout=0.0)).train()
    assert sum(is_fused(m) for m in model.modules()) == 2  # the tiny model's two layers
    ids = torch.randint(0, 1000, (3, 40))
    out = {}
    for fused in (True, False):
        (fuse_swiglu if fused else unfuse_swiglu)(model)
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=ids, use_cache=False).logits
        logits.square().mean().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        saved = _saved_bytes(lambda: model(input_ids=ids, use_cache=False))
        out[fused] = (logits.detach(), grads, saved)
    torch.testing.assert_close(out[True][0], out[False][0], rtol=0, atol=0)
    for name, g in out[False][1].items():
        torch.testing.assert_close(out[True][1][name], g, rtol=1e-6, atol=1e-9, msg=name)
    intermediate = model.config.intermediate_size
    assert out[False][2] - out[True][2] == 2 * 3 * 40 * intermediate * 4  # 2 layers x tokens x I x fp32


def test_only_silu_gated_mlps_with_the_plain_forward_are_fused() -> None:
    model = build_tiny_model()
    mlps = [m for m in model.modules() if type(m).__name__ == "MistralMLP"]
    assert all(is_swiglu_mlp(m) for m in mlps)
    mlps[0].act_fn = nn.GELU()  # another activation: not SwiGLU any more
    assert fuse_swiglu(model) == 1 and not is_fused(mlps[0]) and is_fused(mlps[1])
    assert fuse_swiglu(model) == 0  # never twice

    class OddMLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gate_proj, self.up_proj, self.down_proj = nn.Linear(4, 8), nn.Linear(4, 8), nn.Linear(8, 4)
            self.act_fn = nn.SiLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.down_proj(self.act_fn(self.gate_proj(x)) + self.up_proj(x))  # not a product

    assert not is_swiglu_mlp(OddMLP()) and fuse_swiglu(OddMLP()) == 0


def test_config_switch_turns_it_off() -> None:
    model = load_model(ORPOConfig(fused_swiglu=False))
    assert not any(is_fused(m) for m in model.modules())


def test_fused_mlp_under_activation_checkpointing_gives_the_same_gradients() -> None:
    """Checkpointing recomputes each layer's forward in backward: the fused MLP must survive the replay."""
    ids = torch.randint(0, 1000, (2, 24), generator=torch.Generator().manual_seed(1))
    grads = []
    for fused in (False, True):
        torch.manual_seed(0)
        model = load_model(
            ORPOConfig(use_lora=True, lora_dropout=0.0, gradient_checkpointing=True, fused_swiglu=fused)
        ).train()
        assert sum(is_fused(m) for m in model.modules()) == (2 if fused else 0)
        model(input_ids=ids, use_cache=False).logits.square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-6, atol=1e-9, msg=name)
