"""SwiGLU MLPs that keep two activations per layer for backward instead of three (Liger-Kernel's fused SwiGLU idea).

The gated MLP of LLaMA, Mistral, Qwen2, SmolLM2 and their kin is down(silu(gate(x)) * up(x)). Plain autograd keeps
three [tokens, intermediate] tensors per layer for it: gate(x) for the SiLU, and silu(gate(x)) and up(x) for the
product. `SiluMul` keeps gate(x) and up(x) only and recomputes the SiLU in backward, where it is one elementwise
pass next to the layer's matmuls. Backward calls the very kernels autograd would (`aten.silu_backward`, two
multiplications), in the same order, so the gradients are the same numbers. What it saves: docs/memory.md.
"""

from __future__ import annotations

import functools
import inspect
import types
from typing import Any, cast

import torch
import torch.nn.functional as F

MLP_PARTS = ("gate_proj", "up_proj", "down_proj", "act_fn")
SILU_NAMES = {"SiLU", "SiLUActivation"}  # torch.nn.SiLU and transformers' ACT2FN["silu"] / ["swish"]
SWIGLU_LINE = "self.down_proj(self.act_fn(self.gate_proj(x))*self.up_proj(x))"  # the forward we replace


class SiluMul(torch.autograd.Function):
    """silu(gate) * up, saving gate and up only (the SiLU is recomputed in backward)."""

    @staticmethod
    def forward(ctx: Any, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        """The product; neither the SiLU output nor the product is kept."""
        ctx.save_for_backward(gate, up)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Autograd's own formulas: d up = grad * silu(gate); d gate = silu_backward(grad * up, gate)."""
        gate, up = ctx.saved_tensors
        grad_gate = grad_up = None
        if ctx.needs_input_grad[1]:
            grad_up = grad * F.silu(gate)
        if ctx.needs_input_grad[0]:
            grad_gate = torch.ops.aten.silu_backward(grad * up, gate)
        return grad_gate, grad_up


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up: through SiluMul when autograd records, plainly otherwise (inference keeps nothing anyway)."""
    if torch.is_grad_enabled() and (gate.requires_grad or up.requires_grad):
        return SiluMul.apply(gate, up)
    return F.silu(gate) * up


def _fused_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    """The gated MLP's forward with the SiLU and the product fused (same values as the module's own forward)."""
    return self.down_proj(silu_mul(self.gate_proj(x), self.up_proj(x)))


def is_swiglu_mlp(module: torch.nn.Module) -> bool:
    """A gated MLP whose activation is SiLU and whose class computes exactly down(act(gate(x)) * up(x))."""
    return (
        all(hasattr(module, name) for name in MLP_PARTS)
        and type(module.act_fn).__name__ in SILU_NAMES
        and _forward_is_swiglu(cast(Any, type(module)))
    )


@functools.cache
def _forward_is_swiglu(cls: Any) -> bool:
    """Whether the class's own forward is the plain SwiGLU line (read from its source; False when unreadable)."""
    try:
        source = inspect.getsource(cls.forward)
    except (OSError, TypeError):
        return False
    return SWIGLU_LINE in "".join(source.split())


def fuse_swiglu(model: torch.nn.Module) -> int:
    """Route every SwiGLU MLP of `model` through `SiluMul` (in place; wrappers such as peft keep working); returns
    how many MLPs were changed. Models without such MLPs are left as they are."""
    count = 0
    for module in model.modules():
        if is_swiglu_mlp(module) and not is_fused(module):
            module.forward = types.MethodType(_fused_forward, module)
            count += 1
    return count


def is_fused(module: torch.nn.Module) -> bool:
    """Whether `fuse_swiglu` has changed this MLP."""
    forward = module.__dict__.get("forward")
    return getattr(forward, "__func__", None) is _fused_forward


def unfuse_swiglu(model: torch.nn.Module) -> int:
    """Undo `fuse_swiglu` (the class's own forward again); returns how many MLPs were restored."""
    count = 0
    for module in model.modules():
        if is_fused(module):
            del module.forward
            count += 1
    return count
