"""How much memory ORPO training needs: an estimator (full / LoRA / QLoRA) and a measurement to check it.

`estimate_memory(cfg)` adds up, in bytes, what is alive at the peak of a training step, for the layout and the
log-prob path the config selects (the trainer's default: prefix sharing + chunked log-probs):

* weights: fp32 for full and LoRA runs (orpo_kit loads in fp32); QLoRA keeps the decoder's Linear layers in
  NF4 (0.5 byte per weight plus quantization constants) and everything else (embeddings, lm_head, norms,
  biases) in fp32, because peft's `prepare_model_for_kbit_training` casts every non-4-bit fp16/bf16 param
  to fp32;
* trainable parameters (LoRA adapters: r * (in + out) per targeted Linear; all parameters for full
  fine-tuning), their fp32 gradients and AdamW's two fp32 states;
* activations saved for backward, per token and per decoder layer, from tables counted with
  `torch.autograd.graph.saved_tensors_hooks` on transformers 5.24 LLaMA / Mistral blocks (sdpa attention):
  see `layer_activation_bytes`; with gradient checkpointing only each layer's input is kept, plus one layer
  recomputed during backward. The prefix-shared layout passes one [B, 1, W, W] additive mask in the model's
  dtype (fp32 in orpo_kit): it is kept once, not per layer (under 16-bit autocast sdpa casts it per layer);
* logits, two paths (`orpo_kit.forward`):
  - chunked (`chunked_logps`, the default): the model computes one logit row per sequence; the hidden states of
    the N needed positions ([N, H]) go through lm_head in chunks of `logps_chunk_size` rows under activation
    checkpointing, so only one chunk's [chunk, V] logits exist at a time: 2 fp32 blocks in the forward,
    4 while its backward runs (measured on CPU), plus the [N, H] gathered hidden states;
  - full logits (`chunked_logps=False`, or a model with logit soft-capping / scaling): the model returns
    [rows, T, V] logits, the loss copies the rows it needs and runs log-softmax on chunks of at most 4096 rows;
* an allocator factor on activations (glibc's heap keeps holes on CPU; the CUDA caching allocator rounds and
  fragments) and a small constant overhead, both calibrated on measured CPU peaks (see CALIBRATION). The CPU
  factors are glibc's defaults, which is how Python and notebooks run; `orpo-kit train` runs with the lean heap
  (orpo_kit.allocator), which keeps fewer holes, so for that command the estimate is an upper bound (about 20%
  over on the benchmark's UltraFeedback-like workload: 1.84 vs 2.50 GB peak RSS, most of it activations).

Rows per step: plain layout (`prefix_sharing=False`, or flash-attention, which takes no 4D mask): 2 per pair
(chosen + rejected), each `[prompt][completion]` padded to T = seq_len, so tokens = 2 * batch * seq_len.
Prefix-shared layout: 1 per pair, `[prompt][chosen][rejected]`, of width W = `row_len`, so tokens = batch * W.
seq_len (default cfg.max_length) stays the length of ONE sequence (prompt + completion, as max_length is), and
completion_fraction f is the share of the plain layout's 2 * batch * seq_len positions that are completion
tokens: with both completions f * seq_len long and the prompt (1 - f) * seq_len, a shared row holds
W = seq_len * (1 + f) tokens (the default when row_len is not given; 2 * max_length at f = 1, the worst case).
`measure_training_peak` runs real `Trainer.train_step`s on synthetic pairs in a fresh process and reports the
peak RSS growth; `synthetic_estimate_kwargs(seq_len)` gives the estimator the same workload (exact row width);
scripts/check_memory_estimator.py compares the two.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .config import ORPOConfig

MiB = 1024**2
GiB = 1024**3

MEASURE_TAG = "ORPO_KIT_MEMORY_RESULT "  # marks the child process's JSON line

# ---- constants ------------------------------------------------------------------------------------------------
NF4_BLOCKSIZE = 64  # bitsandbytes 4-bit: one absmax per 64 weights
DOUBLE_QUANT_BLOCKSIZE = 256  # double quant: the absmaxes quantized to 8 bit, one fp32 scale per 256 of them
LOSS_CHUNK_ROWS = 4096  # orpo_kit.loss._ROWS_PER_CHUNK: rows per log-softmax chunk
# Chunked log-probs (orpo_kit.loss.head_token_logps): [chunk, V] fp32 blocks alive at once while a chunk runs,
# measured as peak RSS growth of head_token_logps forward + backward on CPU (smol: V 49,152, H 576; N 864 /
# 2,048 / 3,000 rows, chunk 1024): 2.0 blocks in the forward, 4.0 during the chunk's backward (recomputed
# logits, logsumexp's exp and gradient, gather's scatter); the backward is the peak. Under bf16 autocast
# (V 32,064, H 1024): 4.6 fp32-block equivalents, counted as 4 fp32 + 2 16-bit blocks.
HEAD_CHUNK_BLOCKS_BACKWARD = 4
GLIBC_MMAP_THRESHOLD_MAX = 32 * MiB  # glibc serves larger blocks with mmap and returns them to the OS on free
# cpu_return_freed_memory (orpo_kit.allocator.DEFAULT_THRESHOLD): the trainer fixes glibc's mmap threshold at
# 1 MiB on CPU, so every larger block is its own mapping, returned to the OS when freed
RETURN_FREED_MMAP_THRESHOLD = 1 * MiB
CHATML_NEW_TOKENS = 2  # <|im_start|>, <|im_end|> added to base models without a chat template
MISTRAL_7B = "mistralai/Mistral-7B-v0.1"
KNOWN_BASE_MODELS = {MISTRAL_7B: CHATML_NEW_TOKENS}  # hub base models without a chat template

# Calibrated on measured CPU peaks (scripts/check_memory_estimator.py; values and data in CALIBRATION).
CALIBRATION: dict[str, Any] = {
    # glibc heap high-water / live bytes for activations (and logits blocks under the 32 MiB mmap threshold):
    "cpu_heap_factor_full": 1.38,  # full fine-tuning: tiny preset, 8 x 192: peak ~195 MiB over 6-12 steps
    #                                (runs: 189, 200, 204) against 125 MiB of live activations + logits
    "cpu_heap_factor_lora": 1.85,  # LoRA: smol preset, 2 x 256: peak 3597 MiB (median of 3,596 / 3,597 / 3,666)
    #                                against 1,350 MiB of live activations; every adapter adds output-sized
    #                                temporaries that leave holes in the heap
    # CPU + gradient checkpointing: activation RSS kept / activation RSS without checkpointing. smol LoRA 2 x 256
    # with checkpointing peaked at 2105 MiB: its heap held ~985 MiB against 2496 MiB without checkpointing.
    "cpu_checkpointing_retained": 0.40,
    # cpu_return_freed_memory=True (opt-in, orpo_kit.allocator: glibc's mmap threshold fixed (fitted at 1 MiB, now
    # 4 MiB: same peaks), freed blocks over it go back to the OS): peak RSS / live bytes on activations.
    # smol LoRA, 2 x 256, default path (prefix sharing + chunked log-probs, chunk 256): peak 2093 MiB against
    # 1976 MiB estimated at factor 1.00 (1,195 MiB of activations): 1 + 117 / 1195 = 1.10. The checkpointing
    # floor above does not apply in this mode (nothing of activation size stays in the heap).
    "cpu_heap_factor_return_freed": 1.10,
    "source_return_freed": "smol (LoRA r16, 2 pairs x 256, prefix sharing + chunked log-probs) with "
    "cpu_return_freed_memory on a 2-core x86-64 CPU, torch 2.13, transformers 5.24, glibc",
    "cuda_allocator_factor": 1.10,  # assumption, not measured: caching-allocator rounding and fragmentation
    "overhead_bytes": 16 * MiB,  # autograd graph, Trainer / accelerate objects, per-thread buffers
    "source": "the tiny preset (full, 8 pairs x 192) and smol (LoRA r16, 2 pairs x 256) on the plain path, on a "
    "2-core x86-64 CPU, torch 2.13, transformers 5.24, peft 0.21, glibc malloc",
}
# The glibc-heap factors (cpu_return_freed_memory=False) were fitted on the plain path (2 rows per pair, full
# logits). The prefix-shared + chunked path uses them unchanged: its activations are the same kinds of tensors
# (fewer tokens, no per-layer mask copy) and its lm_head chunk blocks were measured directly
# (HEAD_CHUNK_BLOCKS_BACKWARD). Checked, not refitted, with cpu_return_freed_memory=False and
# logps_chunk_size=1024 (MiB, estimate / measured peak growth, 2 cores, scripts/check_memory_estimator.py):
#   tiny 8 x 192: 159 / 144; smol LoRA 1 x 384: 2736 / 2633 (+3.9%); 4 x 192: 4681 / 4510 (+3.8%);
#   2 x 512 (two lm_head chunks): 5796 / 5609 (+3.3%); 1 x 384 + checkpointing: 1741 / 1676 (+3.9%);
#   2 x 256 (the calibration setting): 3452 / 3360 (+2.7%); plain path 1 x 384: 2867 / 2865, 4 x 192: 5084 / 5057.
# Today's defaults (cpu_return_freed_memory=False, logps_chunk_size=256, frozen-head log-probs), checked after the
# switch (MiB, estimate / measured): smol LoRA 1 x 384: 2442 / 2354 (+3.7%); 4 x 192: 4105 / 3945 (+4.1%);
#   tiny 8 x 192: 142 / 121.
# cpu_return_freed_memory=True, logps_chunk_size=256 (factor from smol 2 x 256 shared path), checked:
#   default path: smol 1 x 384: 1767 / 1780 (-0.7%); 4 x 192: 2755 / 2534 (+8.7%); tiny 8 x 192: 117 / 108;
#   plain path:   smol 1 x 384: 2099 / 2205 (-4.8%); 4 x 192: 3574 / 3517 (+1.6%); 2 x 256: 2586 / 2766 (-6.5%);
#                 tiny 8 x 192: 157 / 152.


# ---- model shape and parameter counts -------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelShape:
    """The sizes of a LLaMA / Mistral-style decoder that memory depends on."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tied_embeddings: bool
    attention_bias: bool = False
    mlp_bias: bool = False
    model_type: str = "llama"
    hidden_act: str = "silu"

    @classmethod
    def from_config(cls, config: Any) -> ModelShape:
        """Read a transformers config (LlamaConfig, MistralConfig or alike)."""
        text = getattr(config, "get_text_config", lambda: config)()
        heads = int(text.num_attention_heads)
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        return cls(
            vocab_size=int(text.vocab_size),
            hidden_size=int(text.hidden_size),
            intermediate_size=int(text.intermediate_size),
            num_layers=int(text.num_hidden_layers),
            num_heads=heads,
            num_kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
            head_dim=int(head_dim),
            tied_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
            attention_bias=bool(getattr(text, "attention_bias", False)),
            mlp_bias=bool(getattr(text, "mlp_bias", False)),
            model_type=str(getattr(text, "model_type", "llama")),
            hidden_act=str(getattr(text, "hidden_act", "silu")),
        )

    @property
    def swiglu(self) -> bool:
        """Whether the MLP is SiLU-gated (what `fused_swiglu` changes)."""
        return self.hidden_act in ("silu", "swish")

    @property
    def q_dim(self) -> int:
        """Width of the query projection (heads * head_dim)."""
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of the key and value projections (GQA: kv heads * head_dim)."""
        return self.num_kv_heads * self.head_dim

    def linears(self) -> list[tuple[str, int, int]]:
        """(name, in_features, out_features) of the Linear layers of one decoder layer."""
        h, i = self.hidden_size, self.intermediate_size
        return [
            ("q_proj", h, self.q_dim),
            ("k_proj", h, self.kv_dim),
            ("v_proj", h, self.kv_dim),
            ("o_proj", self.q_dim, h),
            ("gate_proj", h, i),
            ("up_proj", h, i),
            ("down_proj", i, h),
        ]


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts from a config (tied weights counted once, as `model.parameters()` does)."""

    embedding: int
    lm_head: int  # 0 when tied to the embedding
    linear_weights: int  # the decoder's Linear weights (what 4-bit quantizes)
    biases: int
    norms: int

    @property
    def total(self) -> int:
        """All parameters."""
        return self.embedding + self.lm_head + self.linear_weights + self.biases + self.norms

    @property
    def not_quantized(self) -> int:
        """Parameters that stay in floating point under 4-bit loading (embeddings, lm_head, norms, biases)."""
        return self.total - self.linear_weights


def count_parameters(shape: ModelShape, vocab_size: int | None = None) -> ParamCounts:
    """Exact parameter count of a LLaMA / Mistral decoder from its shape (vocab_size: after any resize)."""
    v, h = vocab_size or shape.vocab_size, shape.hidden_size
    linear = shape.num_layers * sum(i * o for _, i, o in shape.linears())
    biases = 0
    if shape.attention_bias:
        biases += shape.q_dim + 2 * shape.kv_dim + h
    if shape.mlp_bias:
        biases += 2 * shape.intermediate_size + h
    return ParamCounts(
        embedding=v * h,
        lm_head=0 if shape.tied_embeddings else v * h,
        linear_weights=linear,
        biases=shape.num_layers * biases,
        norms=(2 * shape.num_layers + 1) * h,
    )


def lora_targets(shape: ModelShape, target_modules: Any) -> list[tuple[str, int, int]]:
    """The Linear layers of the whole model a LoRA config targets, as (name, in, out).

    "all-linear" (peft): every Linear of the decoder, not lm_head. A list: module names matched by suffix
    (peft's rule). A string: a regular expression matched against the full module names.
    """
    layers = [
        (
            f"model.layers.{n}.{'self_attn' if name.endswith(('q_proj', 'k_proj', 'v_proj', 'o_proj')) else 'mlp'}."
            f"{name}",
            i,
            o,
        )
        for n in range(shape.num_layers)
        for name, i, o in shape.linears()
    ]
    head = ("lm_head", shape.hidden_size, shape.vocab_size)
    if target_modules in (None, "all-linear"):
        return layers
    if isinstance(target_modules, str):
        return [t for t in layers + [head] if re.fullmatch(target_modules, t[0])]
    wanted = [str(m) for m in target_modules]
    return [t for t in layers + [head] if any(t[0] == w or t[0].endswith("." + w) for w in wanted)]


def lora_parameters(shape: ModelShape, r: int, target_modules: Any = "all-linear") -> int:
    """Trainable LoRA parameters: r * (in + out) per targeted Linear (A: r x in, B: out x r, no bias)."""
    return sum(r * (i + o) for _, i, o in lora_targets(shape, target_modules))


# ---- activations ------------------------------------------------------------------------------------------------
def layer_activation_bytes(
    shape: ModelShape,
    seq_len: int,
    *,
    lora: bool,
    quantized: bool,
    amp: bool,
    lora_r: int = 0,
    n_lora_targets: int = 7,
    mask_per_layer: bool = True,
    fused_swiglu: bool = False,
) -> float:
    """Bytes one decoder layer saves for backward, per token (transformers 5.24, sdpa attention).

    Counted with `torch.autograd.graph.saved_tensors_hooks` (unique storages, parameters excluded) on LLaMA
    and Mistral blocks, fitting h (hidden), I (intermediate), q (heads * head_dim), heads and T (padded length):

        fp32, full fine-tuning     24h + 16I + 16q + 4 heads + 4T + 8
        fp32, LoRA / QLoRA         16h + 16I + 16q + 4 heads + 4T + 8 + 4 r * targets
        16-bit autocast, full      26h +  8I +  8q + 4 heads + 2T + 8
        16-bit autocast, LoRA      18h +  8I + 10q + 4 heads + 2T + 8 + 2 r * targets
        16-bit autocast, QLoRA     18h + 14I + 10q + 4 heads + 2T + 8 + 2 r * targets

    (GQA keys/values are saved after being repeated to all heads, so the kv width does not appear; the T term is
    the attention mask sdpa keeps per layer: quadratic in the padded length.) With a padding mask (the plain
    layout) sdpa saves a float copy of the mask in every layer. The prefix-shared layout passes a 4D additive
    mask in the model's dtype: in fp32 every layer saves that same tensor, so the per-layer 4T term is gone
    (`mask_per_layer=False`; the one mask is counted by the caller); under 16-bit autocast sdpa still saves a
    16-bit cast per layer, so the 2T term stays (both counted on the tiny model, the shared layout, W = 87).
    The fused SwiGLU (orpo_kit.fused_mlp) does not keep the SiLU output: 4I fewer in fp32 (counted), 2I under
    16-bit autocast (the same tensor in 16 bits).
    """
    h, i, q, heads = shape.hidden_size, shape.intermediate_size, shape.q_dim, shape.num_heads
    r_term = lora_r * n_lora_targets if lora else 0
    if not amp:
        base = (16 if lora else 24) * h + 16 * i + 16 * q + 4 * heads + (4 * seq_len if mask_per_layer else 0) + 8
        return base + 4 * r_term - (4 * i if fused_swiglu else 0)
    fused = 2 * i if fused_swiglu else 0
    if not lora:
        return 26 * h + 8 * i + 8 * q + 4 * heads + 2 * seq_len + 8 - fused
    return 18 * h + (14 if quantized else 8) * i + 10 * q + 4 * heads + 2 * seq_len + 8 + 2 * r_term - fused


# ---- configs without weights ------------------------------------------------------------------------------------
def mistral_7b_config() -> Any:
    """Mistral-7B-v0.1's config, shipped in the package (no hub access needed)."""
    from transformers import MistralConfig

    path = resources.files("orpo_kit.models") / "assets" / "mistral-7b-v0.1-config.json"
    return MistralConfig.from_json_file(str(path))


def model_config_for(cfg: ORPOConfig) -> Any:
    """The transformers config of the run's model, without loading any weights.

    tiny: the MistralConfig `build_tiny_model` uses; SmolLM2: the converted cache's config.json, else the GGUF
    file's metadata (a few seconds); Mistral-7B-v0.1: the shipped config; anything else: AutoConfig (a local
    folder, or the Hugging Face cache / hub).
    """
    from transformers import AutoConfig, MistralConfig

    from .models.load import SMOL_GGUF, SMOL_NAMES, TINY, TINY_DEFAULTS, cache_root, smol_gguf_dir

    name = cfg.model_name_or_path
    if name == TINY:
        return MistralConfig(**{**TINY_DEFAULTS, **(cfg.model_config_overrides or {})})
    if name in SMOL_NAMES:
        cached = cache_root() / "smollm2-135m-instruct"
        if (cached / "config.json").is_file():
            return AutoConfig.from_pretrained(str(cached))
        return AutoConfig.from_pretrained(str(smol_gguf_dir()), gguf_file=SMOL_GGUF)  # raises the install hint
    if name == MISTRAL_7B:
        return mistral_7b_config()
    try:
        return AutoConfig.from_pretrained(name, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise OSError(
            f"could not read the config of {name!r}: {exc}\nThe estimate needs only config.json: pass "
            "a local model folder, pre-fill the Hugging Face cache, or pass model_config= in "
            "Python."
        ) from exc


def chat_tokens_added(cfg: ORPOConfig) -> int:
    """How many ChatML tokens orpo_kit will add to the tokenizer (base models without a chat template)."""
    name = cfg.tokenizer_name_or_path or cfg.model_name_or_path
    if name in KNOWN_BASE_MODELS:
        return KNOWN_BASE_MODELS[name]
    folder = Path(name)
    if folder.is_dir() and (folder / "tokenizer_config.json").is_file():
        has = (folder / "chat_template.jinja").is_file() or "chat_template" in json.loads(
            (folder / "tokenizer_config.json").read_text(encoding="utf-8")
        )
        return 0 if has else CHATML_NEW_TOKENS
    return 0


# ---- the estimate -------------------------------------------------------------------------------------------------
@dataclass
class MemoryEstimate:
    """Peak training memory in bytes, by component, plus what it assumed.

    total = weights + trainable + optimizer + overhead
            + max(activations + logits + gradients_at_peak,   # end of forward / start of backward
                  gradients + optimizer_step_temp)            # optimizer step (activations freed)
    """

    weights: int  # frozen or trained base weights as stored (fp32 / NF4 + constants), + autocast 16-bit copies
    trainable: int  # LoRA adapters and new-token rows (0 for full fine-tuning: the weights are the trainables)
    gradients: int  # fp32 gradients of all trainable parameters (live after backward)
    optimizer: int  # AdamW exp_avg + exp_avg_sq, fp32
    activations: int  # saved for backward (times the allocator factor), + the shared layout's 4D attention mask
    logits: int  # chunked: lm_head chunk blocks + gathered hidden states; else [rows, T, V] logits and copies
    overhead: int  # calibrated constant + 4-bit dequantization scratch
    total: int
    gradients_at_peak: int = 0  # gradients already allocated at the activation peak
    optimizer_step_temp: int = 0
    peak_phase: str = "forward/backward"
    params_total: int = 0
    params_trainable: int = 0
    batch_size: int = 0
    seq_len: int = 0  # one sequence: prompt + completion (max_length)
    device: str = "cpu"
    layout: str = "plain"  # plain: 2 rows per pair; shared: 1 row per pair, [prompt][chosen][rejected]
    rows: int = 0  # rows in the forward
    row_len: int = 0  # padded row width (seq_len in the plain layout)
    chunked_logps: bool = False  # log-probs from hidden states through lm_head in chunks
    logp_positions: int = 0  # positions whose log-probs the loss reads (completions, + prompts for TRL's NLL)
    details: dict[str, str] = field(default_factory=dict)  # one line per component: how it was counted
    assumptions: list[str] = field(default_factory=list)

    def breakdown(self) -> dict[str, int]:
        """Component -> bytes (the table's rows)."""
        return {
            k: getattr(self, k)
            for k in ("weights", "trainable", "gradients", "optimizer", "activations", "logits", "overhead", "total")
        }

    def lines(self) -> list[str]:
        """A readable table (MiB / GiB) followed by the assumptions."""
        rows = [
            ("weights", "weights"),
            ("trainable (adapters)", "trainable"),
            ("gradients", "gradients"),
            ("optimizer (AdamW)", "optimizer"),
            ("activations", "activations"),
            ("logits", "logits"),
            ("overhead", "overhead"),
        ]
        out = [f"{'component':<22}{'size':>11}  how"]
        for label, name in rows:
            out.append(f"{label:<22}{format_bytes(getattr(self, name)):>11}  {self.details.get(name, '')}")
        out.append("-" * 60)
        out.append(f"{'total (peak)':<22}{format_bytes(self.total):>11}  peak at: {self.peak_phase}")
        out.append("")
        out.append(
            "total = weights + trainable + optimizer + overhead + max(activations + logits + gradients "
            "allocated by then, all gradients + optimizer-step temporaries)"
        )
        out.append("assumptions:")
        out.extend(f"  - {a}" for a in self.assumptions)
        return out

    def table(self) -> str:
        """`lines()` joined."""
        return "\n".join(self.lines())

    def __str__(self) -> str:
        return self.table()


def format_bytes(n: float) -> str:
    """1.23 GiB / 456.7 MiB."""
    return f"{n / GiB:.2f} GiB" if abs(n) >= GiB else f"{n / MiB:.1f} MiB"


def format_count(n: float) -> str:
    """7.24B / 134.52M / 0.56M parameters."""
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:,.2f}M"


def _resolve_device(cfg: ORPOConfig, device: str | None) -> str:
    """cpu or cuda (mps counts as cuda-like: no glibc heap factor)."""
    if device:
        return device
    if cfg.device != "auto":
        return cfg.device
    try:
        import torch

        if torch.cuda.is_available():
            return "cuda"
    except ImportError:  # pragma: no cover
        pass
    # A recipe with mixed precision or 4-bit weights is meant for a GPU: estimate for one.
    return "cuda" if cfg.mixed_precision != "no" or cfg.load_in_4bit else "cpu"


def _dtype_bytes(name: Any) -> int:
    """Bytes per element of bfloat16 / float16 / float32 (names or torch dtypes)."""
    return 4 if str(name).removeprefix("torch.") in ("float32", "fp32") else 2


def uses_prefix_sharing(cfg: ORPOConfig) -> bool:
    """Whether the trainer will use the shared layout: the layout `orpo_kit.layouts.layout_for` picks for the
    config's attention backend (the tiny model is always built with sdpa)."""
    from .layouts import SHARED, layout_for
    from .models.load import TINY

    impl = "sdpa" if cfg.model_name_or_path == TINY else (cfg.attn_implementation or "eager")
    return layout_for(impl, cfg.prefix_sharing, cfg.packing) is SHARED


def uses_chunked_logps(cfg: ORPOConfig, model_config: Any) -> bool:
    """Whether the trainer will take the hidden-state path: asked for, and logits are plain lm_head(hidden)
    (`orpo_kit.forward.supports_chunked_logps`: no soft-capping or logit scaling in the config)."""
    from .forward import _LOGIT_TRANSFORMS

    configs = [model_config, getattr(model_config, "get_text_config", lambda: model_config)()]
    return bool(cfg.chunked_logps) and all(
        getattr(c, name, None) in (None, 1, 1.0) for c in configs for name in _LOGIT_TRANSFORMS
    )


def estimate_memory(
    cfg: ORPOConfig,
    model_config: Any = None,
    batch_size: int | None = None,
    seq_len: int | None = None,
    *,
    completion_fraction: float = 1.0,
    device: str | None = None,
    new_tokens: int | None = None,
    row_len: int | None = None,
) -> MemoryEstimate:
    """Peak memory of one ORPO training step (bytes, by component) for a config, without loading weights.

    batch_size: pairs per micro-batch (default cfg.per_device_train_batch_size); seq_len: length of one
    sequence, prompt + completion (default cfg.max_length, the worst case): the padded row width of the plain
    layout. completion_fraction: share of the plain layout's 2 * batch * seq_len positions that are completion
    tokens, whose log-probs the loss needs (1.0, the default, is the upper bound). row_len: the padded width of
    a prefix-shared row, prompt + chosen + rejected (default seq_len * (1 + completion_fraction): both
    completions completion_fraction * seq_len long, the prompt the rest; 2 * seq_len at the default fraction).
    The layout and the log-prob path follow the config (prefix_sharing, chunked_logps, logps_chunk_size,
    attn_implementation). device: "cpu" or "cuda" (default: cfg.device; auto -> cuda when available or when the
    recipe uses mixed precision / 4-bit, else cpu). new_tokens: ChatML tokens orpo_kit adds to a base model's
    vocabulary (default: guessed from the name). On CUDA the CUDA context (0.3-1 GiB, visible in nvidia-smi)
    is not included.
    """
    if model_config is None:
        model_config = model_config_for(cfg)
    shape = ModelShape.from_config(model_config)
    batch = int(batch_size or cfg.per_device_train_batch_size)
    t = int(seq_len or cfg.max_length)
    if batch < 1 or t < 1:
        raise ValueError(f"batch_size and seq_len must be at least 1, got {batch} and {t}")
    if not 0.0 < completion_fraction <= 1.0:
        raise ValueError(f"completion_fraction must be in (0, 1], got {completion_fraction}")
    dev = _resolve_device(cfg, device)
    quantized = bool(cfg.load_in_4bit)
    lora = bool(cfg.use_lora or quantized)
    amp = cfg.mixed_precision in ("bf16", "fp16")
    shared = uses_prefix_sharing(cfg)
    chunked = uses_chunked_logps(cfg, model_config)
    completion_per_pair = math.ceil(completion_fraction * 2 * t - 1e-9)  # chosen + rejected tokens of one pair
    width = int(row_len) if row_len is not None else min(2 * t, t + math.ceil(completion_fraction * t - 1e-9))
    if width < 1:
        raise ValueError(f"row_len must be at least 1, got {width}")
    prompt_len = max(0, width - completion_per_pair)  # one pair's prompt (shared-row view of the workload)
    if shared:
        rows, row_w = batch, width
    else:
        rows, row_w = 2 * batch, t
    tokens = rows * row_w
    # Positions whose log-probs the loss needs: completion tokens, + the chosen prompts under TRL's NLL.
    needed = batch * completion_per_pair
    if cfg.nll_tokens == "prompt_and_response":
        needed += batch * max(0, prompt_len - 1)
    needed = min(needed, 2 * batch * t)
    notes: list[str] = []
    details: dict[str, str] = {}

    # Vocabulary after orpo_kit adds ChatML tokens to a base model (rounded up to a multiple of 64).
    added = chat_tokens_added(cfg) if new_tokens is None else int(new_tokens)
    vocab = shape.vocab_size if added == 0 else -(-(shape.vocab_size + added) // 64) * 64
    counts = count_parameters(shape, vocab)
    shape_v = dataclasses.replace(shape, vocab_size=vocab)

    # ---- weights
    if quantized:
        per_weight = 0.5 + (
            1 / NF4_BLOCKSIZE + 4 / (NF4_BLOCKSIZE * DOUBLE_QUANT_BLOCKSIZE)
            if cfg.bnb_4bit_use_double_quant
            else 4 / NF4_BLOCKSIZE
        )
        w4 = counts.linear_weights * per_weight
        wf = counts.not_quantized * 4
        weights = w4 + wf
        details["weights"] = (
            f"{format_count(counts.linear_weights)} Linear weights in NF4 at {per_weight:.4f} B "
            f"+ {format_count(counts.not_quantized)} others in fp32"
        )
        notes.append(
            f"4-bit: {per_weight:.4f} byte/weight = 0.5 (two NF4 codes per byte) + "
            + (
                f"1/{NF4_BLOCKSIZE} (8-bit absmax per {NF4_BLOCKSIZE}-weight block, double quant) + "
                f"4/({NF4_BLOCKSIZE}*{DOUBLE_QUANT_BLOCKSIZE}) (an fp32 scale per {DOUBLE_QUANT_BLOCKSIZE} "
                "blocks)"
                if cfg.bnb_4bit_use_double_quant
                else f"4/{NF4_BLOCKSIZE} (fp32 absmax per block)"
            )
            + "; embeddings, lm_head, norms stay floating point and peft's prepare_model_for_kbit_training "
            "casts them to fp32"
        )
    else:
        weights = counts.total * 4
        details["weights"] = (
            f"{format_count(counts.total)} params in fp32 (orpo_kit loads fp32; AMP keeps fp32 masters)"
        )
    autocast_copies = 0
    if amp:
        # Autocast casts each matmul weight to 16 bit per forward and the cast copy is saved for backward.
        matmul_params = counts.embedding if shape.tied_embeddings else counts.lm_head
        if not quantized:
            matmul_params += counts.linear_weights
        autocast_copies = matmul_params * 2
        weights += autocast_copies
        details["weights"] += f" + {format_bytes(autocast_copies)} 16-bit autocast copies"
        notes.append(
            "mixed precision: autocast's 16-bit copies of the fp32 matmul weights"
            + (" (lm_head; 4-bit layers dequantize themselves)" if quantized else "")
            + " live until backward"
        )

    # ---- trainable parameters, gradients, optimizer
    if lora:
        targets = lora_targets(shape_v, cfg.lora_target_modules)
        n_lora = sum(cfg.lora_r * (i + o) for _, i, o in targets)
        n_tok = added * shape.hidden_size * (1 if shape.tied_embeddings else 2) if added else 0
        n_train = n_lora + n_tok
        trainable = n_train * 4
        head_trainable = sum(cfg.lora_r * (i + o) for name, i, o in targets if name == "lm_head")
        per_layer_targets = len({n.rsplit(".", 1)[-1] for n, _, _ in targets if n != "lm_head"})
        details["trainable"] = f"LoRA r={cfg.lora_r} on {len(targets)} Linear layers: {format_count(n_lora)} fp32" + (
            f" + {n_tok:,} new-token rows" if n_tok else ""
        )
    else:
        n_train = counts.total
        trainable = 0
        head_trainable = (counts.lm_head or counts.embedding) + shape.hidden_size  # lm_head (or tied) + final norm
        per_layer_targets = 0
        details["trainable"] = "none besides the weights (full fine-tuning)"
    gradients = n_train * 4
    optimizer = n_train * 8
    details["gradients"] = f"fp32, {format_count(n_train)} trainable params"
    details["optimizer"] = "AdamW exp_avg + exp_avg_sq, fp32 (8 B per trainable param)"
    if cfg.gradient_accumulation_steps > 1:
        grads_at_peak = gradients  # accumulated gradients are alive during the next micro-batch
    else:
        grads_at_peak = head_trainable * 4  # allocated at the first backward node, before activations free
    if dev == "cpu":  # single-tensor AdamW: one temporary (the denominator) the size of the largest param
        if lora:
            sizes = [cfg.lora_r * max(i, o) for _, i, o in lora_targets(shape_v, cfg.lora_target_modules)]
        else:
            sizes = [counts.embedding, counts.lm_head, *(i * o for _, i, o in shape.linears())]
        opt_temp = max(sizes, default=0) * 4
    else:  # foreach AdamW on CUDA: a temporary over all trainable params at once
        opt_temp = n_train * 4

    # ---- activations
    a_layer = layer_activation_bytes(
        shape,
        row_w,
        lora=lora,
        quantized=quantized,
        amp=amp,
        lora_r=cfg.lora_r,
        n_lora_targets=per_layer_targets,
        mask_per_layer=not shared,
        fused_swiglu=cfg.fused_swiglu and shape.swiglu,
    )
    non_layer = (12 if not lora else 4) * shape.hidden_size  # final norm / lm_head input, per token
    act_full = tokens * (shape.num_layers * a_layer + non_layer + a_layer)  # + backward temporaries of a layer
    if cfg.gradient_checkpointing:
        ckpt = 4 * shape.hidden_size * shape.num_layers  # each layer's input (the fp32 residual stream)
        act_raw = tokens * (ckpt + non_layer + 2 * a_layer)  # + one layer recomputed and its backward temporaries
        details["activations"] = (
            f"checkpointing: {tokens:,} tokens x ({shape.num_layers} layer inputs x "
            f"{4 * shape.hidden_size} B + 2 x {a_layer / 1024:,.1f} KiB recomputed layer)"
        )
    else:
        act_raw = act_full
        details["activations"] = (
            f"{tokens:,} tokens x {shape.num_layers} layers x {a_layer / 1024:,.1f} KiB "
            f"(+1 layer of backward temporaries)"
        )
    # CPU with cpu_return_freed_memory (opt-in): blocks over the threshold go back to the OS when freed,
    # so the heap keeps no holes of that size; else glibc's own threshold (up to 32 MiB) and its heap history.
    cpu_mmap = dev == "cpu" and bool(getattr(cfg, "cpu_return_freed_memory", False))
    mmap_threshold = RETURN_FREED_MMAP_THRESHOLD if cpu_mmap else GLIBC_MMAP_THRESHOLD_MAX
    if cpu_mmap:
        factor = CALIBRATION["cpu_heap_factor_return_freed"]
        why = "allocator factor (freed blocks > 1 MiB returned to the OS)"
    elif dev == "cpu":
        factor = CALIBRATION["cpu_heap_factor_lora" if lora else "cpu_heap_factor_full"]
        why = "glibc heap factor"
    else:
        factor = CALIBRATION["cuda_allocator_factor"]
        why = "caching-allocator factor (assumed)"
    activations = act_raw * factor
    details["activations"] += f", x{factor:.2f} {why}"
    if dev == "cpu" and cfg.gradient_checkpointing and not cpu_mmap:
        # glibc keeps the heap the per-layer temporaries grew to (forward and each recomputed layer): on CPU,
        # checkpointing saved only about 60% of the activation RSS in our measurements.
        floor = CALIBRATION["cpu_checkpointing_retained"] * act_full * factor
        if floor > activations:
            activations = floor
            details["activations"] += (
                f"; CPU heap floor: {CALIBRATION['cpu_checkpointing_retained']:.0%} of the "
                "activations without checkpointing"
            )
        notes.append(
            "CPU + gradient checkpointing: the glibc heap keeps what the recomputed layers' temporaries "
            f"grew it to; floor = {CALIBRATION['cpu_checkpointing_retained']:.0%} of the "
            "no-checkpointing activations (measured on smol, LoRA, 2 x 256, plain layout)"
        )
    if shared:  # the [B, 1, W, W] additive mask in the model's dtype (fp32), alive for the whole step
        mask = rows * row_w * row_w * 4
        mask_held = mask if dev == "cpu" and mask >= mmap_threshold else mask * factor
        activations += mask_held
        details["activations"] += f"; + [{rows}, 1, {row_w}, {row_w}] fp32 attention mask {format_bytes(mask)}"

    # ---- logits
    logit_bytes = 2 if amp else 4
    if chunked:
        chunk = max(1, min(needed, int(cfg.logps_chunk_size)))
        block = chunk * vocab * 4  # one chunk's fp32 logits (or their fp32 copy under autocast)
        pieces = [
            HEAD_CHUNK_BLOCKS_BACKWARD * block,  # a chunk's backward: recomputed logits and gradients
            needed * shape.hidden_size * 4,  # hidden states of the needed positions, gathered: [N, H]
            rows * vocab * logit_bytes,
        ]  # the model's own logits: one position per row (logits_to_keep=1)
        if logit_bytes != 4:
            pieces.append(2 * chunk * vocab * logit_bytes)  # the 16-bit logits and their 16-bit gradient
        n_chunks = -(-needed // chunk)
        details["logits"] = (
            f"chunks of {chunk:,} rows x V {vocab:,}, recomputed in backward "
            f"({HEAD_CHUNK_BLOCKS_BACKWARD} fp32 blocks of {format_bytes(block)} while one runs; "
            f"{n_chunks} chunk{'s' if n_chunks != 1 else ''} for {needed:,} positions) "
            f"+ [{needed:,}, {shape.hidden_size}] gathered hidden states"
        )
    else:
        pieces = [
            rows * row_w * vocab * logit_bytes,  # the model's logits
            needed * vocab * logit_bytes,  # flat[positions]: the rows the loss uses
            min(needed, LOSS_CHUNK_ROWS) * vocab * 4,
        ]  # log-softmax temporary of one chunk (fp32)
        if logit_bytes != 4:
            pieces.append(needed * vocab * 4)  # .float() copies of each chunk, saved by logsumexp
        details["logits"] = (
            f"[{rows}, {row_w}, {vocab:,}] {'16-bit' if amp else 'fp32'} + {needed:,} selected "
            f"rows + {min(needed, LOSS_CHUNK_ROWS):,}-row fp32 log-softmax chunk"
            + (" + fp32 copies" if logit_bytes != 4 else "")
        )
    if dev == "cpu":  # blocks under glibc's mmap threshold live in the heap and fragment like activations
        logits = sum(p if p >= mmap_threshold else p * factor for p in pieces)
    else:
        logits = sum(pieces) * factor

    # ---- overhead
    overhead = CALIBRATION["overhead_bytes"]
    details["overhead"] = "calibrated constant"
    if quantized:
        largest_linear = max(i * o for _, i, o in shape.linears())
        scratch = largest_linear * _dtype_bytes(cfg.bnb_4bit_compute_dtype)
        overhead += scratch
        details["overhead"] += f" + {format_bytes(scratch)} dequantized 4-bit weight (largest Linear)"

    # ---- peak (whole bytes first, so the fields add up to the total exactly)
    weights, trainable, gradients, optimizer, activations, logits, overhead, grads_at_peak, opt_temp = (
        int(x)
        for x in (weights, trainable, gradients, optimizer, activations, logits, overhead, grads_at_peak, opt_temp)
    )
    base = weights + trainable + optimizer + overhead
    during = activations + logits + grads_at_peak
    after = gradients + opt_temp
    total = base + max(during, after)
    phase = "end of forward / start of backward" if during >= after else "optimizer step (after backward)"

    if shared:
        layout_note = (
            f"rows = 1 per pair ([prompt][chosen][rejected]) x batch {batch} = {rows}, each padded to "
            f"{row_w} tokens = {tokens:,} tokens"
            + (
                ""
                if row_len is not None
                else f" (assumed: max_length {t} x (1 + completion fraction {completion_fraction:.2f}) = a "
                f"prompt of {prompt_len} and chosen and rejected of {math.ceil(completion_per_pair / 2)} "
                "tokens each; the worst case at fraction 1; pass completion_fraction or row_len to "
                "estimate_memory for your data)"
            )
            + "; 4D additive attention mask, positions restart at the rejected answer"
        )
    else:
        layout_note = (
            f"rows = 2 per pair (chosen + rejected) x batch {batch} = {rows}, each padded to {t} tokens "
            f"= {tokens:,} tokens"
            + ("" if cfg.prefix_sharing else " (prefix_sharing off)")
            + (
                f" (prefix sharing needs eager or sdpa attention, not {cfg.attn_implementation})"
                if cfg.prefix_sharing
                else ""
            )
        )
    if chunked:
        path_note = (
            f"logits: chunks of {int(cfg.logps_chunk_size)} rows x V, recomputed in backward; the model "
            f"computes one logit row per sequence; log-probs needed at {needed:,} positions"
        )
    else:
        path_note = (
            f"logits: full [{rows}, {row_w}, V] from the model"
            + ("" if not cfg.chunked_logps else " (the model transforms its logits: no chunked path)")
            + f"; log-probs needed at {needed:,} positions"
        )
    notes[:0] = [
        layout_note,
        path_note
        + f" ({completion_fraction:.0%} of the plain layout's {2 * batch * t:,} positions are completions"
        + (", + chosen prompts (nll_tokens=prompt_and_response)" if cfg.nll_tokens == "prompt_and_response" else "")
        + ")",
        f"model: {shape.model_type}, {shape.num_layers} layers, hidden {shape.hidden_size}, intermediate "
        f"{shape.intermediate_size}, {shape.num_heads} heads / {shape.num_kv_heads} kv heads, vocab {vocab:,}"
        + (f" ({shape.vocab_size:,} + {added} ChatML tokens, rounded to 64)" if added else "")
        + (", tied embeddings" if shape.tied_embeddings else ""),
        f"precision: {'16-bit autocast (' + cfg.mixed_precision + ')' if amp else 'fp32'}; "
        f"{'gradient checkpointing' if cfg.gradient_checkpointing else 'no gradient checkpointing'}; "
        f"gradient accumulation {cfg.gradient_accumulation_steps}",
        "activations: per-layer bytes counted on transformers 5.24 (sdpa); other attention kernels differ",
    ]
    if dev == "cpu":
        notes.append(
            "device cpu: the figure is peak RSS growth from just before the model loads (Python, torch "
            "and the tokenizer not included); "
            + (
                f"cpu_return_freed_memory: freed blocks over {format_bytes(mmap_threshold)} go back to the OS; "
                f"factor calibrated on {CALIBRATION['source_return_freed']}"
                if cpu_mmap
                else f"glibc's default allocator; heap factor calibrated on {CALIBRATION['source']}"
            )
        )
    else:
        notes.append(
            f"device {dev}: allocated memory; add the CUDA context (0.3-1 GiB) for nvidia-smi; the "
            "allocator factor is an assumption, checked on CPU only"
        )
    notes.append("evaluation runs without gradients (smaller) and is not included")
    return MemoryEstimate(
        weights=weights,
        trainable=trainable,
        gradients=gradients,
        optimizer=optimizer,
        activations=activations,
        logits=logits,
        overhead=overhead,
        total=total,
        gradients_at_peak=grads_at_peak,
        optimizer_step_temp=opt_temp,
        peak_phase=phase,
        params_total=counts.total,
        params_trainable=n_train,
        batch_size=batch,
        seq_len=t,
        device=dev,
        layout="shared" if shared else "plain",
        rows=rows,
        row_len=row_w,
        chunked_logps=chunked,
        logp_positions=needed,
        details=details,
        assumptions=notes,
    )


def estimate_command(
    preset: str | None = None,
    config_file: str | Path | None = None,
    max_length: int | None = None,
    batch_size: int | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
) -> str:
    """The text `orpo-kit estimate` prints: the resolved run, the table and the assumptions.

    Config sources as for `orpo-kit train` (preset < config file < overrides; the smol preset when neither a
    preset nor a file is given); max_length and batch_size override the config's max_length and
    per_device_train_batch_size. Overrides may be a dict or KEY=VALUE strings (e.g. device=cpu).
    """
    from .config import parse_overrides, resolve_config

    values = parse_overrides(overrides) if isinstance(overrides, (list, tuple)) else dict(overrides or {})
    if max_length is not None:
        values["max_length"] = int(max_length)
    if batch_size is not None:
        values["per_device_train_batch_size"] = int(batch_size)
    preset = preset or (None if config_file else "smol")
    cfg = resolve_config(preset, config_file, values)
    est = estimate_memory(cfg)
    mode = "QLoRA (4-bit)" if cfg.load_in_4bit else "LoRA" if cfg.use_lora else "full fine-tuning"
    source = f"preset {preset}" if preset else ""
    source += (", " if source and config_file else "") + (f"config {config_file}" if config_file else "")
    head = [
        f"ORPO training memory estimate: {cfg.model_name_or_path} ({source}), {mode}, device {est.device}",
        f"{format_count(est.params_total)} params, {format_count(est.params_trainable)} trainable; "
        f"batch {est.batch_size} pairs x max_length {est.seq_len}, accumulation {cfg.gradient_accumulation_steps}",
        "",
    ]
    return "\n".join(head + est.lines())


# ---- measurement ---------------------------------------------------------------------------------------
def _proc_status_kb(field_name: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in kB (Linux only)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field_name} not found in /proc/self/status")


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs); False when not allowed."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _synthetic_lengths(seq_len: int) -> tuple[int, int, int]:
    """(prompt, chosen, rejected) token counts of a synthetic pair: prompt + chosen is exactly seq_len."""
    if seq_len < 4:
        raise ValueError(f"synthetic pairs need seq_len >= 4, got {seq_len}")
    prompt = max(1, seq_len // 8)
    chosen = seq_len - prompt
    return prompt, chosen, chosen - max(1, seq_len // 16)


def synthetic_pairs(batch_size: int, seq_len: int, vocab_size: int, seed: int = 0) -> list[Any]:
    """`batch_size` random TokenizedPairs: prompt + chosen is exactly seq_len tokens (the plain layout's padded
    length) and the rejected answer is seq_len // 16 shorter, so plain batches carry a real padding mask as in
    training; a prefix-shared row holds prompt + chosen + rejected = `synthetic_row_len(seq_len)` tokens."""
    import torch

    from .data import TokenizedPair

    gen = torch.Generator().manual_seed(seed)
    prompt, chosen, rejected = _synthetic_lengths(seq_len)
    out = []
    for i in range(batch_size):
        ids = torch.randint(3, vocab_size, (prompt + chosen + rejected,), generator=gen).tolist()
        out.append(
            TokenizedPair(ids[:prompt], ids[prompt : prompt + chosen], ids[prompt + chosen :], origin=f"synthetic:{i}")
        )
    return out


def synthetic_completion_fraction(seq_len: int) -> float:
    """Share of a synthetic batch's 2 * B * seq_len positions whose log-probs the loss needs (completion tokens):
    pass it to `estimate_memory(completion_fraction=...)` to compare with `measure_training_peak`."""
    _, chosen, rejected = _synthetic_lengths(seq_len)
    return (chosen + rejected) / (2 * seq_len)


def synthetic_row_len(seq_len: int) -> int:
    """Width of a synthetic pair's prefix-shared row: prompt + chosen + rejected (about 1.81 * seq_len)."""
    return sum(_synthetic_lengths(seq_len))


def synthetic_estimate_kwargs(seq_len: int) -> dict[str, Any]:
    """`estimate_memory` keywords describing `measure_training_peak`'s synthetic workload at seq_len (either
    layout): `estimate_memory(cfg, batch_size=b, device="cpu", **synthetic_estimate_kwargs(seq_len))`."""
    return {
        "seq_len": seq_len,
        "completion_fraction": synthetic_completion_fraction(seq_len),
        "row_len": synthetic_row_len(seq_len),
    }


def _measure_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run in a fresh process: baseline RSS, load the model, train `steps` optimizer steps, peak RSS."""
    import torch

    from .data import PreferencePair
    from .forward import supports_chunked_logps
    from .models import load_model, load_tokenizer
    from .train import Trainer

    torch.set_num_threads(int(spec.get("threads") or torch.get_num_threads()))
    cfg = ORPOConfig(**spec["cfg"])
    batch, seq_len, steps = int(spec["batch_size"]), int(spec["seq_len"]), int(spec["steps"])
    tokenizer = load_tokenizer(cfg)
    few = [
        PreferencePair([{"role": "user", "content": f"Question {i}?"}], f"Answer {i}.", f"No {i}.")
        for i in range(batch + 1)
    ]
    gc.collect()
    reset = _reset_peak()
    baseline_kb = _proc_status_kb("VmRSS")
    model = load_model(cfg, tokenizer)
    after_load_kb = _proc_status_kb("VmRSS")
    with tempfile.TemporaryDirectory(prefix="orpo_kit_mem_") as tmp:
        cfg = cfg.replace(
            output_dir=tmp,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=1,
            max_steps=max(steps, 1),
            device="cpu",
        )
        trainer = Trainer(cfg, model=model, tokenizer=tokenizer, train_pairs=few[:batch], eval_pairs=few[batch:])
        vocab = model.get_input_embeddings().weight.shape[0]
        trainer.train_data = synthetic_pairs(batch, seq_len, min(vocab, len(tokenizer)), seed=cfg.seed)
        layout = trainer.layout.name
        chunked = bool(cfg.chunked_logps and supports_chunked_logps(trainer.model))
        losses = []
        rss_after_steps = []
        for _ in range(steps):
            losses.append(trainer.train_step()["loss"])
            rss_after_steps.append(_proc_status_kb("VmRSS"))
        peak_kb = _proc_status_kb("VmHWM")
    mb = 1024.0
    return {
        "baseline_mb": baseline_kb / mb,
        "after_load_mb": after_load_kb / mb,
        "peak_mb": peak_kb / mb,
        "peak_growth_mb": (peak_kb - baseline_kb) / mb,
        "rss_after_steps_mb": [r / mb for r in rss_after_steps],
        "peak_was_reset": reset,
        "losses": losses,
        "batch_size": batch,
        "seq_len": seq_len,
        "steps": steps,
        "threads": torch.get_num_threads(),
        "layout": layout,
        "chunked_logps": chunked,
    }


def measure_training_peak(
    cfg: ORPOConfig,
    steps: int = 2,
    seq_len: int | None = None,
    batch_size: int | None = None,
    threads: int | None = 2,
    timeout: float | None = 1800,
) -> dict[str, Any]:
    """Peak RSS growth of real training steps, measured in a fresh Python process (so earlier peaks don't count).

    The child loads the tokenizer, records VmRSS just before the model loads (and resets VmHWM there), loads
    the model as `orpo-kit train` does, builds a `Trainer`, swaps its training data for synthetic pairs padded to
    exactly `seq_len` tokens (prompt + chosen; the layout and log-prob path are the config's), runs `steps`
    optimizer steps (>= 2 so AdamW's state exists during a forward) and reads VmHWM. Always on CPU (RSS is host
    memory). Returns figures in MiB (2**20 bytes; the keys say "mb"):
    baseline_mb, after_load_mb, peak_mb, peak_growth_mb (peak - baseline), rss_after_steps_mb, plus the losses
    and the path the trainer took (layout: plain / shared, chunked_logps). Linux only (reads /proc/self/status).
    Compare with `estimate_memory(cfg, batch_size=..., device="cpu", **synthetic_estimate_kwargs(seq_len))`.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    spec = {
        "cfg": cfg.to_dict(),
        "steps": steps,
        "threads": threads,
        "seq_len": seq_len or cfg.max_length,
        "batch_size": batch_size or cfg.per_device_train_batch_size,
    }
    code = (
        "import json, sys\nfrom orpo_kit.memory import _measure_worker, MEASURE_TAG\n"
        "res = _measure_worker(json.loads(sys.argv[1]))\nprint(MEASURE_TAG + json.dumps(res), flush=True)\n"
    )
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "TRL_EXPERIMENTAL_SILENCE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True, timeout=timeout, env=env
    )
    for line in proc.stdout.splitlines():
        if line.startswith(MEASURE_TAG):
            return json.loads(line[len(MEASURE_TAG) :])
    raise RuntimeError(f"memory measurement failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
