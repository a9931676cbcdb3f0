"""Where and in which dtype the base model loads: the run's device decides, not whether the machine has a GPU.

A frozen LoRA base on CUDA loads in the run's 16-bit compute dtype (a 7B in fp32 is ~29 GB of weights) while
the adapters stay fp32; full fine-tuning and CPU runs stay fp32. A 4-bit model is quantized straight onto the
run's device (`device=cpu` on a GPU machine stays on the CPU, with the CPU repack guard). CUDA is faked: the
models stay on the CPU and the 4-bit load is stopped at from_pretrained, whose arguments are checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import peft  # noqa: F401  (imported before CUDA is faked)
import pytest
import torch

import orpo_kit.train  # noqa: F401  (the Trainer's device rule; imported before CUDA is faked)
from orpo_kit.config import ORPOConfig, resolve_config
from orpo_kit.models import load as load_module
from orpo_kit.models.load import build_tiny_model, load_model

bitsandbytes = pytest.importorskip("bitsandbytes")
from orpo_kit.models import quantize  # noqa: E402

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)


class StopLoading(Exception):
    """Raised by the from_pretrained stand-in once it has recorded its arguments."""


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Mistral saved as a model folder (fp32 safetensors)."""
    folder = tmp_path_factory.mktemp("placement") / "tiny"
    build_tiny_model(TINY).save_pretrained(folder)
    return folder


@pytest.fixture
def gpu_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine that reports two CUDA devices; single-process unless a test sets LOCAL_RANK / WORLD_SIZE."""
    for name in ("LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def frozen_and_trainable_dtypes(model: torch.nn.Module) -> tuple[set[torch.dtype], set[torch.dtype]]:
    """The dtypes of the frozen parameters and of the trainable ones."""
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    trainable = {p.dtype for p in model.parameters() if p.requires_grad}
    return frozen, trainable


@pytest.mark.parametrize(("mixed_precision", "half"), [("bf16", torch.bfloat16), ("fp16", torch.float16)])
@pytest.mark.parametrize("source", ["folder", "tiny"])
def test_lora_base_on_cuda_loads_in_compute_dtype_adapters_fp32(
    gpu_host: None, tiny_dir: Path, source: str, mixed_precision: str, half: torch.dtype
) -> None:
    name = str(tiny_dir) if source == "folder" else "tiny"
    cfg = ORPOConfig(
        model_name_or_path=name, model_config_overrides=TINY, use_lora=True, mixed_precision=mixed_precision
    )
    frozen, trainable = frozen_and_trainable_dtypes(load_model(cfg))
    assert frozen == {half}
    assert trainable == {torch.float32}


def test_lora_base_passes_compute_dtype_to_from_pretrained(
    gpu_host: None, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 16-bit dtype is asked of from_pretrained, so the fp32 weights never exist whole in memory."""
    seen: dict[str, Any] = {}

    def record(source: str, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise StopLoading

    monkeypatch.setattr(load_module.AutoModelForCausalLM, "from_pretrained", record)
    with pytest.raises(StopLoading):
        load_model(ORPOConfig(model_name_or_path=str(tiny_dir), use_lora=True, mixed_precision="bf16"))
    assert seen["dtype"] == torch.bfloat16


@pytest.mark.parametrize(
    ("device", "use_lora", "mixed_precision"),
    [("cpu", True, "bf16"), ("auto", False, "bf16"), ("auto", True, "no")],
    ids=["cpu-run-on-gpu-host", "full-fine-tuning", "no-mixed-precision"],
)
def test_fp32_base_off_cuda_for_full_fine_tuning_and_without_mixed_precision(
    gpu_host: None, tiny_dir: Path, device: str, use_lora: bool, mixed_precision: str
) -> None:
    cfg = ORPOConfig(
        model_name_or_path=str(tiny_dir), device=device, use_lora=use_lora, mixed_precision=mixed_precision
    )
    frozen, trainable = frozen_and_trainable_dtypes(load_model(cfg))
    assert frozen | trainable == {torch.float32}


@pytest.fixture
def quantize_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Record the 4-bit from_pretrained arguments (then stop the load) and whether the CPU repack was disabled."""
    calls: dict[str, Any] = {"repack_disabled": False}

    def record(source: str, **kwargs: Any) -> Any:
        calls.update(kwargs)
        raise StopLoading

    def disabled() -> None:
        calls["repack_disabled"] = True

    monkeypatch.setattr(quantize.AutoModelForCausalLM, "from_pretrained", record)
    monkeypatch.setattr(quantize, "disable_cpu_repack", disabled)
    return calls


def load_4bit(tiny_dir: Path, device: str) -> None:
    """load_model of the tiny folder in 4-bit on `device` (stopped at from_pretrained)."""
    cfg = ORPOConfig(model_name_or_path=str(tiny_dir), use_lora=True, load_in_4bit=True, device=device)
    with pytest.raises(StopLoading):
        load_model(cfg)


def test_4bit_cpu_run_on_gpu_host_quantizes_on_cpu_with_repack_guard(
    gpu_host: None, tiny_dir: Path, quantize_calls: dict[str, Any]
) -> None:
    load_4bit(tiny_dir, "cpu")
    assert quantize_calls["device_map"] == {"": "cpu"}
    assert quantize_calls["repack_disabled"]


@pytest.mark.parametrize("device", ["auto", "cuda"])
def test_4bit_gpu_run_quantizes_on_its_cuda_device(
    gpu_host: None, tiny_dir: Path, quantize_calls: dict[str, Any], device: str
) -> None:
    load_4bit(tiny_dir, device)
    assert quantize_calls["device_map"] == {"": "cuda:0"}
    assert not quantize_calls["repack_disabled"]


def test_4bit_each_process_quantizes_on_its_local_rank(
    gpu_host: None, tiny_dir: Path, quantize_calls: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    load_4bit(tiny_dir, "auto")
    assert quantize_calls["device_map"] == {"": "cuda:1"}


def test_4bit_multi_process_run_without_cuda_stays_on_cpu(
    tiny_dir: Path, quantize_calls: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    load_4bit(tiny_dir, "auto")
    assert quantize_calls["device_map"] == {"": "cpu"}
    assert quantize_calls["repack_disabled"]


def test_load_4bit_model_without_device_map_uses_the_run_device(
    gpu_host: None, tiny_dir: Path, quantize_calls: dict[str, Any]
) -> None:
    """Called directly (no device_map), load_4bit_model still follows cfg.device, not the GPU's presence."""
    cfg = ORPOConfig(use_lora=True, load_in_4bit=True, device="cpu")
    with pytest.raises(StopLoading):
        quantize.load_4bit_model(str(tiny_dir), cfg)
    assert quantize_calls["device_map"] == {"": "cpu"}
    assert quantize_calls["repack_disabled"]


def test_the_memory_estimate_counts_a_16_bit_lora_base_on_a_gpu() -> None:
    from orpo_kit.memory import estimate_memory

    cfg = resolve_config("mistral-7b-qlora", overrides={"load_in_4bit": False, "mixed_precision": "bf16"})
    gpu, cpu = (estimate_memory(cfg, device=d) for d in ("cuda", "cpu"))
    params = 7.25e9  # Mistral-7B with the ChatML rows
    assert 1.9 * params < gpu.weights < 2.1 * params  # bf16, no autocast copies
    assert cpu.weights > 4 * params  # fp32 on a CPU (+ autocast's 16-bit copies)
    assert "bf16" in gpu.details["weights"]
