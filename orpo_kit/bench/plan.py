"""What the benchmark runs: its knobs, the implementations and variants, and the order of the runs."""

from __future__ import annotations

import importlib.util
from typing import Any

from ..allocator import LEAN_HEAP_SWITCH, lean_heap_env
from .workloads import CPU_MIXES, GPU_MIXES, MIXES

# ---- knobs ----------------------------------------------------------------------------------------------
BATCH_PAIRS = 4  # pairs per optimizer step (the setting)
LEARNING_RATE = 1e-4  # identical for both trainers; any value works (only speed and step-0 loss are compared)
ORPO_LAMBDA = 0.1  # orpo_kit's orpo_lambda == TRL's beta (paper: 0.1)
LORA: dict[str, Any] = dict(r=16, alpha=32, dropout=0.0, target_modules="all-linear")  # the real job's adapter
MAX_LENGTH = 8192  # large enough that nothing is truncated (checked: token ids must match)
SEED = 0
WORKER_TIMEOUT_S = 900
DEFAULT_JSON = "bench-results/bench.json"
QUICK: dict[str, Any] = dict(adapters=("lora",), repeats=1, warmup=1, steps=2)
FULL: dict[str, Any] = dict(
    adapters=("lora", "full"), repeats=2, warmup=1, steps=2
)  # 30 runs: < 20 min on 2 idle cores
MAIN_IMPLS = ("orpo_kit", "trl", "orpo_kit_trl_compat")  # run in this order: A / B / A' per workload
TARGETS = {  # (mix, adapter): (min speed-up of orpo_kit vs TRL, max memory ratio), from the issue
    ("prompt_heavy", "lora"): (2.0, 0.5),
    ("uf_like", "lora"): (1.25, 0.5),
}
LOSS_RTOL = 1e-5  # TRL vs orpo_kit_trl_compat step-0 loss
WALL_LIMITS_S = {"quick": 300, "full": 1200}

# impl name -> orpo_kit config fields (None: TRL)
IMPLS: dict[str, dict[str, Any] | None] = {
    "orpo_kit": dict(nll_tokens="response", prefix_sharing=True, chunked_logps=True),
    "trl": None,
    "orpo_kit_trl_compat": dict(nll_tokens="prompt_and_response", prefix_sharing=True, chunked_logps=True),
    "orpo_kit_no_prefix": dict(nll_tokens="response", prefix_sharing=False, chunked_logps=True),
    "orpo_kit_no_chunk": dict(nll_tokens="response", prefix_sharing=True, chunked_logps=False),
    "orpo_kit_plain": dict(nll_tokens="response", prefix_sharing=False, chunked_logps=False),
    # orpo_kit.allocator on (off by default): what returning freed memory to the OS buys, and costs
    "orpo_kit_return_freed": dict(
        nll_tokens="response", prefix_sharing=True, chunked_logps=True, cpu_return_freed_memory=True
    ),
    # the lean heap's share (orpo_kit.allocator): orpo_kit without it, and TRL given it too
    "orpo_kit_glibc_heap": dict(nll_tokens="response", prefix_sharing=True, chunked_logps=True),
    "trl_lean_heap": None,
    "orpo_kit_unfused": dict(nll_tokens="response", prefix_sharing=True, chunked_logps=True, fused_swiglu=False),
    # GPU with flash-attn installed: no 4D masks, so packed rows instead of prefix sharing (added automatically)
    "orpo_kit_flash_packed": dict(
        nll_tokens="response",
        prefix_sharing=True,
        chunked_logps=True,
        packing=True,
        attn_implementation="flash_attention_2",
    ),
}
# Worker environments beyond the common one. orpo_kit workers restart themselves with the lean heap, as
# `orpo-kit train` does (orpo_kit.allocator.restart_with_lean_heap); TRL workers keep glibc's defaults.
IMPL_ENV = {  # impl -> its worker's environment, from the common one
    "orpo_kit_glibc_heap": lambda env: {**env, LEAN_HEAP_SWITCH: "0"},  # opted out: glibc's defaults
    "trl_lean_heap": lambda env: {**lean_heap_env(env), LEAN_HEAP_SWITCH: "1"},  # started lean, as if restarted
}
VARIANTS = {  # (mix, adapter) -> the variant rows the full run adds there: each optimization's share
    ("prompt_heavy", "lora"): (
        "orpo_kit_no_prefix",
        "orpo_kit_no_chunk",
        "orpo_kit_plain",
        "orpo_kit_return_freed",
        "orpo_kit_glibc_heap",
    ),
    ("uf_like", "lora"): (
        "orpo_kit_no_prefix",
        "orpo_kit_unfused",
        "orpo_kit_return_freed",
        "orpo_kit_glibc_heap",
        "trl_lean_heap",
    ),
}
VARIANT_IMPLS = tuple(dict.fromkeys(v for names in VARIANTS.values() for v in names))
TOKENS_DEFINITION = (
    "logical tokens: len(prompt + chosen) + len(prompt + rejected) per pair, specials "
    "included, padding excluded; the same count for every implementation"
)
FLOPS_DEFINITION = (
    "FLOPs per logical token = 4 x flops_params (LoRA: forward + input gradients of the frozen "
    "base) or 6 x flops_params (full fine-tuning); flops_params = all parameters but the input "
    "embedding (lm_head included); attention score FLOPs, LoRA adapters and the forward that activation "
    "checkpointing recomputes (GPU runs) not counted"
)


# ---- the plan -------------------------------------------------------------------------------------------
def checkpointing_for(device: str) -> bool:
    """Activation checkpointing in both trainers: on a GPU yes (the same setting on both sides), on CPU no.

    Why checkpointing rather than batch 1 on a GPU: at the mixes' longest rows the package's estimator
    (orpo_kit.memory) puts 4 pairs of the 7B without it at about 78 GiB (len1024) and 153 GiB (len2048) for
    orpo_kit, more for TRL's padded rows and full logits, and even 1 pair of len2048 at about 42 GiB; with it the
    len1024 runs need under 24 GiB and the len2048 runs about 23-33 GiB (a 40 or 80 GiB card). Batch 4 keeps the
    measured step the one the CPU runs take (4 pairs, so packing and prefix sharing have rows to work on), and
    checkpointing is how QLoRA jobs on one GPU run (the mistral-7b-qlora preset). Both trainers recompute every
    decoder layer in backward with non-reentrant torch.utils.checkpoint, so the comparison stays fair. The CPU
    models fit without it, and there it would only slow both trainers down.
    """
    return device == "cuda"


def build_plan(
    mode: str,
    device: str,
    mixes: list[str] | None = None,
    adapters: list[str] | None = None,
    impls: list[str] | None = None,
    repeats: int | None = None,
    variants: bool | None = None,
) -> list[dict[str, Any]]:
    """Runs in execution order: for each repeat, for each workload, the implementations in turn (each run with
    the device's checkpointing setting, `checkpointing_for`)."""
    preset = QUICK if mode == "quick" else FULL
    mixes = list(mixes or (GPU_MIXES if device == "cuda" else CPU_MIXES))
    adapters = list(adapters or (("lora",) if device == "cuda" else preset["adapters"]))
    if device == "cuda" and "full" in adapters:
        raise ValueError("the GPU workload is a 4-bit model: only --adapters lora is possible")
    if impls is None and device == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        impls = [*MAIN_IMPLS, "orpo_kit_flash_packed"]  # flash-attention installed: its packed path too
    impls = list(impls or MAIN_IMPLS)
    unknown = [i for i in impls if i not in IMPLS] + [m for m in mixes if m not in MIXES]
    unknown += [a for a in adapters if a not in ("lora", "full")]
    if unknown:
        raise ValueError(f"unknown name(s) {unknown}: impls {list(IMPLS)}, mixes {list(MIXES)}, adapters lora/full")
    variants = (mode == "full") if variants is None else variants
    checkpointing = checkpointing_for(device)
    plan = []
    for repeat in range(repeats or preset["repeats"]):
        for adapter in adapters:
            for mix in mixes:
                names = list(impls)
                if variants:
                    names += [v for v in VARIANTS.get((mix, adapter), ()) if v not in names]
                plan += [
                    dict(impl=i, mix=mix, adapter=adapter, repeat=repeat, gradient_checkpointing=checkpointing)
                    for i in names
                ]
    return plan
