"""4-bit QLoRA loading (bitsandbytes NF4) that stays correct on CPUs, where evaluation can silently break training.

The trap: on CPUs with AVX512-BF16, a bitsandbytes `Linear4bit` forward without gradients (evaluation,
generation) repacks its weight in place into an inference-only layout. Every later forward goes through a
kernel with no backward, so LoRA gradients come out mostly wrong with only a warning, and layer widths that
are not multiples of 64 crash. `disable_cpu_repack` (global) and `guard_4bit_layers` (per layer) prevent it;
`load_4bit_model` applies both.
"""

from __future__ import annotations

import importlib.util
import tempfile
import warnings
from typing import Any

import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, PreTrainedModel

from ..config import ORPOConfig

INSTALL_HINT = 'pip install "orpo_kit[qlora]"'
COMPUTE_DTYPES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
}
REPACK_FLAG = "support_avx512bf16_for_cpu"  # Linear4bit attribute: repack the weight on a no-grad CPU forward
PACKED_FLAG = "packing_format_for_cpu"  # QuantState attribute: the weight is already in the inference layout


def require_bitsandbytes() -> Any:
    """The bitsandbytes module, or an ImportError that says how to install it."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError(f"4-bit loading (load_in_4bit) needs bitsandbytes, which is not installed: {INSTALL_HINT}")
    try:
        import bitsandbytes
    except Exception as exc:  # a broken native library fails at import, not at find_spec
        raise ImportError(
            f"bitsandbytes is installed but failed to import ({exc}); reinstall it: {INSTALL_HINT}"
        ) from exc
    return bitsandbytes


def compute_dtype(cfg: ORPOConfig) -> torch.dtype:
    """The torch dtype named by cfg.bnb_4bit_compute_dtype (bfloat16, float16 or float32)."""
    value = cfg.bnb_4bit_compute_dtype
    if isinstance(value, torch.dtype) and value in COMPUTE_DTYPES.values():
        return value
    name = str(value).removeprefix("torch.")
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"bnb_4bit_compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {value!r}")
    return COMPUTE_DTYPES[name]


def quantization_config(cfg: ORPOConfig) -> BitsAndBytesConfig:
    """The transformers BitsAndBytesConfig of the run: 4-bit, quant type, double quant and compute dtype from cfg."""
    if cfg.bnb_4bit_quant_type not in ("nf4", "fp4"):
        raise ValueError(f"bnb_4bit_quant_type must be nf4 or fp4, got {cfg.bnb_4bit_quant_type!r}")
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=cfg.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=cfg.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=compute_dtype(cfg),
    )


def _never() -> bool:
    """Stand-in for bitsandbytes' CPU feature probe: report no AVX512-BF16, so layers never repack."""
    return False


def disable_cpu_repack() -> None:
    """Make every Linear4bit created from now on skip the CPU inference repack (idempotent, process-wide)."""
    require_bitsandbytes()
    import bitsandbytes.nn.modules as bnb_modules

    bnb_modules.has_avx512bf16 = _never  # read once in Linear4bit.__init__ to set REPACK_FLAG


def iter_4bit_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, module) of every bitsandbytes Linear4bit in the model (empty when bitsandbytes is absent)."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return []
    from bitsandbytes.nn import Linear4bit

    return [(name, module) for name, module in model.named_modules() if isinstance(module, Linear4bit)]


def is_repacked(layer: torch.nn.Module) -> bool:
    """Whether a Linear4bit's weight is already in the CPU inference layout (forward has no backward)."""
    return bool(getattr(getattr(layer.weight, "quant_state", None), PACKED_FLAG, False))


def _unpack(layer: Any) -> None:
    """Bring a repacked Linear4bit back to the training layout (bitsandbytes' inverse; scales stay bf16-rounded)."""
    from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

    layer.weight.data, layer.weight.quant_state = _convert_weight_packed_for_cpu_inverse(
        layer.weight.data, layer.weight.quant_state
    )
    layer.quant_state = layer.weight.quant_state


def guard_4bit_layers(model: torch.nn.Module) -> int:
    """Stop every Linear4bit from repacking on CPU (undoing any repack already done); returns how many layers."""
    layers = iter_4bit_layers(model)
    undone = []
    for name, layer in layers:
        setattr(layer, REPACK_FLAG, False)
        if is_repacked(layer):
            _unpack(layer)
            undone.append(name)
    if undone:
        warnings.warn(
            f"{len(undone)} 4-bit layers had already been repacked for CPU inference (e.g. {undone[0]}); "
            "restored for training, with their scales rounded to bfloat16 by that repack",
            stacklevel=2,
        )
    return len(layers)


def unguarded_4bit_layers(model: torch.nn.Module) -> list[str]:
    """Names of Linear4bit layers that could repack (or already have): empty when training after eval is safe."""
    return [name for name, layer in iter_4bit_layers(model) if getattr(layer, REPACK_FLAG, False) or is_repacked(layer)]


def is_guarded(model: torch.nn.Module) -> bool:
    """True when no 4-bit layer of the model can repack on CPU (also true for a model without 4-bit layers)."""
    return not unguarded_4bit_layers(model)


def loads_on_cpu(device_map: Any) -> bool:
    """Whether from_pretrained with this device_map puts any weights on the CPU."""
    if device_map is None or device_map == "auto":
        return not (torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available()))
    if isinstance(device_map, dict):
        return any(loads_on_cpu(v) for v in device_map.values() if v != "auto")
    if isinstance(device_map, torch.device):
        return device_map.type == "cpu"
    return isinstance(device_map, str) and device_map.split(":")[0] == "cpu"


def _from_pretrained(source: str, cfg: ORPOConfig, device_map: Any) -> PreTrainedModel:
    """AutoModelForCausalLM.from_pretrained with the 4-bit config, dtype = compute dtype."""
    from .safety import check_weight_files, explain_refusals, use_safetensors

    check_weight_files(source, cfg.allow_pickle_weights)
    try:
        with explain_refusals(source):
            return AutoModelForCausalLM.from_pretrained(
                source,
                quantization_config=quantization_config(cfg),
                dtype=compute_dtype(cfg),
                device_map=device_map,
                trust_remote_code=cfg.trust_remote_code,
                attn_implementation=cfg.attn_implementation,
                use_safetensors=use_safetensors(cfg.allow_pickle_weights),
            )
    except OSError as exc:
        from .load import gated_message, is_gated_error

        if is_gated_error(exc):
            raise PermissionError(gated_message(source)) from exc
        raise OSError(
            f"could not load {source!r} in 4-bit: {exc}\nIf this machine is offline, download the model "
            "elsewhere and pass its local directory, or pre-fill the Hugging Face cache."
        ) from exc


def load_4bit_model(
    name_or_path: str, cfg: ORPOConfig, device_map: Any = None, random_config: Any = None
) -> PreTrainedModel:
    """A causal LM in 4-bit (NF4), guarded against the CPU repack and prepared for k-bit training (no LoRA yet).

    `device_map`: where the weights are quantized and kept; None: all on the run's device (`run_device(cfg)`:
    cfg.device, LOCAL_RANK), never left to transformers, which picks the GPU whenever one exists.
    `random_config`: build that architecture with random weights instead (`random_weights`), quantized one
    weight at a time as they are made.
    """
    require_bitsandbytes()
    from peft import prepare_model_for_kbit_training

    if device_map is None:
        from .load import run_device

        device_map = {"": str(run_device(cfg))}
    if loads_on_cpu(device_map):
        disable_cpu_repack()
    if random_config is not None:
        from .random_weights import load_random_model

        model = load_random_model(
            random_config,
            cfg.seed,
            quantization_config=quantization_config(cfg),
            dtype=compute_dtype(cfg),
            device_map=device_map,
            attn_implementation=cfg.attn_implementation,
        )
    elif name_or_path == "tiny":  # the random preset has no checkpoint: save it once so transformers can quantize it
        from .load import build_tiny_model

        with tempfile.TemporaryDirectory(prefix="orpo_kit_tiny_") as tmp:
            build_tiny_model(cfg.model_config_overrides, seed=cfg.seed).save_pretrained(tmp)
            model = _from_pretrained(tmp, cfg, device_map)
    else:
        model = _from_pretrained(name_or_path, cfg, device_map)
    if guard_4bit_layers(model) == 0:
        raise RuntimeError(f"{name_or_path!r} loaded without any 4-bit Linear layer; check quantization settings")
    model.config.use_cache = False
    with warnings.catch_warnings():  # peft calls a method transformers 5 deprecated (not ours to change)
        warnings.filterwarnings("ignore", message=".*gradient_checkpointing_enable.*", category=FutureWarning)
        return prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=cfg.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
