"""`orpo-kit bench`: orpo_kit against TRL's ORPOTrainer, same model, same pairs, same settings.

    orpo-kit bench --quick            # LoRA CPU workloads once, few steps (< 5 min on 2 cores)
    orpo-kit bench --json out.json    # the full run (< 20 min on 2 cores); also: python -m orpo_kit.bench

What runs
---------
Every measured run is its own process (`python -m orpo_kit.bench --worker SPEC`), so imports, allocator
state and peak memory never leak from one run into the next. Per workload (mix x adapter) the runs go
orpo_kit, trl, orpo_kit_trl_compat (then any variant rows), and the whole sequence repeats: A / B / A / B.
Each run loads the saved model, takes `warmup` steps that are not timed, then `steps` timed optimizer steps.

- `orpo_kit`: orpo_kit's Trainer, default mode (the paper's NLL over the chosen response; needs no prompt
  logits), with its speed options on (prefix sharing, chunked log-probs, the fused SwiGLU).
- `orpo_kit_trl_compat`: the same with `nll_tokens="prompt_and_response"` (TRL's NLL): its step-0 loss must
  equal TRL's.
- `trl`: `trl.experimental.orpo.ORPOTrainer` (a subclass that only records the loss; sequential sampler).
- process setup: orpo_kit workers start themselves as `orpo-kit train` does, with glibc's small-block caches off
  (the lean heap, orpo_kit.allocator); TRL workers run with glibc's defaults.
- variants (full run; LoRA prompt_heavy and uf_like, see VARIANTS): `orpo_kit_no_prefix`, `orpo_kit_no_chunk`,
  `orpo_kit_plain` (both off), `orpo_kit_return_freed` (orpo_kit.allocator on: freed blocks go back to the
  OS; less memory, slower), `orpo_kit_unfused` (without the fused SwiGLU), `orpo_kit_glibc_heap` (orpo_kit
  without the lean heap) and `trl_lean_heap` (TRL with it): each option's share.

Both trainers see identical token ids (checked in every worker), batch i = pairs 4i .. 4i+3 for both, fp32,
dropout off, no gradient checkpointing, AdamW (lr 1e-4, betas 0.9/0.999, eps 1e-8, no weight decay),
linear decay, clipping at 1.0, lambda = beta = 0.1, LoRA r=16 alpha=32 dropout 0 on all linear layers.

What is reported (JSON, a table, a bar chart)
---------------------------------------------
- pairs/s and tokens/s: timed pairs (tokens) / timed wall time, median over repeats. A step's time is the
  interval between the ends of consecutive optimizer steps (data collation, metrics and logging included,
  for both trainers). Logical tokens: those of prompt + chosen and prompt + rejected, without padding
  (what a plain implementation runs; prefix sharing runs fewer, padding adds more).
- peak memory: on CPU the worker's peak RSS (VmHWM, the whole process: Python, libraries, model, data);
  on GPU `torch.cuda.max_memory_allocated`. GB = 10^9 bytes.
- matmul share: FLOPs per logical token x tokens/s / this machine's measured matmul rate, with the same
  FLOPs per token for every implementation: 6 x N for full fine-tuning, 4 x N for LoRA (frozen base: forward
  + input gradients), N = parameters of the layers and lm_head (the input embedding is a lookup).
- loss_step0: the loss of the first step (initial weights; LoRA starts as the identity). TRL and
  orpo_kit_trl_compat must agree (relative difference ~1e-7 in fp32).

GPU (when CUDA is available and --device is auto or cuda): a random-weight model with Mistral-7B's config,
4-bit NF4 + LoRA, bf16 compute, rows of about 1024 and 2048 tokens; with flash-attn installed, also
`orpo_kit_flash_packed` (flash-attention 2, packed rows: it takes no 4D mask, so no prefix sharing).
UNTESTED: written without a GPU.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import typing
from pathlib import Path
from typing import Any

from .allocator import LEAN_HEAP_SWITCH, lean_heap_active, lean_heap_env, restart_with_lean_heap
from .bench_workloads import CPU_MIXES, GPU_MIXES, MIXES, count_params, load_pairs, make_pairs, model_config
from .procmem import peak_rss_bytes, rss_bytes

# ---- knobs ----------------------------------------------------------------------------------------------
BATCH_PAIRS = 4  # pairs per optimizer step (the setting)
LEARNING_RATE = 1e-4  # identical for both trainers; any value works (only speed and step-0 loss are compared)
ORPO_LAMBDA = 0.1  # orpo_kit's orpo_lambda == TRL's beta (paper: 0.1)
LORA = dict(r=16, alpha=32, dropout=0.0, target_modules="all-linear")  # the real job's adapter
MAX_LENGTH = 8192  # large enough that nothing is truncated (checked: token ids must match)
SEED = 0
WORKER_TIMEOUT_S = 900
DEFAULT_JSON = "bench-results/bench.json"
QUICK = dict(adapters=("lora",), repeats=1, warmup=1, steps=2)
FULL = dict(adapters=("lora", "full"), repeats=2, warmup=1, steps=2)  # 30 runs: < 20 min on 2 idle cores
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
    "embedding (lm_head included); attention score FLOPs and LoRA adapters not counted"
)


# ---- small helpers --------------------------------------------------------------------------------------
def rss_gb() -> float | None:
    """Current resident set size of this process in GB (10^9 bytes)."""
    rss = rss_bytes()
    return None if rss is None else rss / 1e9


def peak_rss_gb() -> float:
    """Peak RSS of this process since it started (exec) in GB."""
    return peak_rss_bytes() / 1e9


def measure_matmul_rate(
    device: str = "cpu", dtype_name: str = "float32", n: int | None = None, seconds: float = 1.5
) -> dict[str, float]:
    """This machine's matmul rate (GFLOP/s) for n x n matrices: best and median over `seconds` of repeats."""
    import torch

    dtype = getattr(torch, dtype_name)
    n = n or (2048 if device == "cpu" else 8192)
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    rates, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(rates) < 3:
        t0 = time.perf_counter()
        a @ b
        sync()
        rates.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return {
        "n": n,
        "dtype": dtype_name,
        "device": device,
        "gflops_best": max(rates),
        "gflops_median": statistics.median(rates),
        "repeats": len(rates),
    }


def busy_warning(device: str) -> str | None:
    """A warning when other work already loads the CPU: CPU timings then say little (GPU runs do not care).

    Measured over one quiet second (this process sleeps) from /proc/stat, not from the 1-minute load average,
    which still counts work that ended up to a minute ago.
    """
    if device != "cpu":
        return None
    cores = os.cpu_count() or 1
    busy = _busy_cores(1.0)
    if busy is None:
        if not hasattr(os, "getloadavg"):
            return None
        busy, what = os.getloadavg()[0], "1-min load"
    else:
        what = "cores busy over 1 s"
    if busy <= 0.25 * cores:
        return None
    return (
        f"this machine is busy ({what} {busy:.1f} of {cores}): CPU timings will be slow and noisy, "
        "and threads waiting on each other can make small operations far slower; run on an idle machine "
        "for numbers to quote (memory and step-0 losses are still valid)"
    )


def _busy_cores(seconds: float) -> float | None:
    """How many cores other processes kept busy while this one slept `seconds` (Linux /proc/stat), else None."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]) - idle, sum(fields[:8])

    try:
        busy0, total0 = sample()
        time.sleep(seconds)
        busy1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    total = total1 - total0
    return None if total <= 0 else (busy1 - busy0) / total * (os.cpu_count() or 1)


def machine_info(threads: int, device: str) -> dict[str, Any]:
    """CPU model, cores, GPU, library versions, date: what a reader needs to compare numbers."""
    from importlib import metadata

    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "orpo_kit"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


# ---- the plan -------------------------------------------------------------------------------------------
def build_plan(
    mode: str,
    device: str,
    mixes: list[str] | None = None,
    adapters: list[str] | None = None,
    impls: list[str] | None = None,
    repeats: int | None = None,
    variants: bool | None = None,
) -> list[dict[str, Any]]:
    """Runs in execution order: for each repeat, for each workload, the implementations in turn."""
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
    plan = []
    for repeat in range(repeats or preset["repeats"]):
        for adapter in adapters:
            for mix in mixes:
                names = list(impls)
                if variants:
                    names += [v for v in VARIANTS.get((mix, adapter), ()) if v not in names]
                plan += [dict(impl=i, mix=mix, adapter=adapter, repeat=repeat) for i in names]
    return plan


# ---- the worker (one measured run, in its own process) -------------------------------------------------------
def _expected_rows(pairs) -> list[tuple[list[int], list[int], list[int]]]:
    return [(p.prompt_ids, p.chosen_ids, p.rejected_ids) for p in pairs]


def _assert_same_ids(got: list[tuple[list[int], list[int], list[int]]], pairs, who: str) -> None:
    """Fail the run when a trainer tokenized the texts into other ids than the workload's."""
    want = _expected_rows(pairs)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if [list(x) for x in g] != [list(x) for x in w]:
            raise RuntimeError(
                f"{who} tokenized pair {i} differently from the workload's ids: the comparison "
                "would be unfair; check the benchmark tokenizer and the trainer's tokenization"
            )
    if len(got) != len(want):
        raise RuntimeError(f"{who} kept {len(got)} of {len(want)} pairs")


def _run_orpo_kit(spec: dict[str, Any], pairs, marks: dict[str, float]) -> dict[str, Any]:
    """orpo_kit's Trainer on the workload: its own config, loading, tokenization and train_step."""
    import torch

    from .bench_workloads import preference_pairs
    from .config import ORPOConfig
    from .models import load_tokenizer
    from .train import Trainer

    options = {"attn_implementation": "sdpa", **IMPLS[spec["impl"]]}
    gpu = spec["device"] == "cuda"
    cfg = ORPOConfig(
        model_name_or_path=spec["model_dir"],
        tokenizer_name_or_path=spec["model_dir"],
        use_lora=spec["adapter"] == "lora",
        lora_r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        lora_target_modules=LORA["target_modules"],
        gradient_checkpointing=False,
        load_in_4bit=gpu,
        bnb_4bit_compute_dtype="bfloat16",
        max_length=MAX_LENGTH,
        max_prompt_length=MAX_LENGTH - 1,
        orpo_lambda=ORPO_LAMBDA,
        learning_rate=LEARNING_RATE,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        max_grad_norm=1.0,
        lr_scheduler_type="linear",
        warmup_steps=0,
        warmup_ratio=0.0,
        per_device_train_batch_size=BATCH_PAIRS,
        gradient_accumulation_steps=1,
        max_steps=spec["total_steps"],
        eval_steps=10**6,
        save_steps=10**6,
        logging_steps=10**6,
        output_dir=spec["run_dir"],
        seed=SEED,
        device=spec["device"],
        mixed_precision="bf16" if gpu else "no",
        **options,
    )
    tokenizer = load_tokenizer(cfg)
    marks["rss_before_model_gb"] = rss_gb()
    trainer = Trainer(
        cfg, tokenizer=tokenizer, train_pairs=preference_pairs(pairs), eval_pairs=preference_pairs(pairs[:1])
    )  # never evaluated; the Trainer wants eval data
    _assert_same_ids([(t.prompt_ids, t.chosen_ids, t.rejected_ids) for t in trainer.train_data], pairs, "orpo_kit")
    # Batch i = pairs B*i .. B*i+B-1, in order, as TRL's sequential sampler gives them.
    trainer.micro_batches = lambda step: [list(range(step * BATCH_PAIRS, (step + 1) * BATCH_PAIRS))]
    marks["setup_done"] = time.perf_counter()
    ends, losses = [], []
    for _ in range(spec["total_steps"]):
        record = trainer.train_step()
        if gpu:
            torch.cuda.synchronize()
        ends.append(time.perf_counter())
        losses.append(float(record["loss"]))
    return {
        "step_ends": ends,
        "losses": losses,
        "trainable_params": _trainable(trainer.model),
        **_model_checks(trainer.model),
    }


def _run_trl(spec: dict[str, Any], pairs, marks: dict[str, float]) -> dict[str, Any]:
    """TRL's ORPOTrainer on the same workload, configured like orpo_kit's run."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    from .bench_workloads import trl_rows

    gpu = spec["device"] == "cuda"

    class RecordingORPOTrainer(ORPOTrainer):
        """TRL's trainer unchanged, except that it keeps each step's loss."""

        losses: typing.ClassVar[list[float]] = []

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
            self.losses.append(float((out[0] if return_outputs else out).detach()))
            return out

    class StepClock(TrainerCallback):
        """Wall-clock time at the end of every optimizer step."""

        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            if gpu:
                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())

    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    marks["rss_before_model_gb"] = rss_gb()
    load = dict(dtype=torch.float32, attn_implementation="sdpa")
    if gpu:
        from transformers import BitsAndBytesConfig

        load = dict(
            dtype=torch.bfloat16,
            attn_implementation="sdpa",
            device_map={"": 0},
            quantization_config=BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16,
            ),
        )
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], **load)
    model.config.use_cache = False
    peft_config = None
    if spec["adapter"] == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=LORA["r"],
            lora_alpha=LORA["alpha"],
            lora_dropout=LORA["dropout"],
            target_modules=LORA["target_modules"],
            task_type="CAUSAL_LM",
        )
    import dataclasses

    # transformers 5 renamed gradient_checkpointing (TRL's default: True) to activation_checkpointing
    no_checkpointing = {
        name: False
        for name in ("gradient_checkpointing", "activation_checkpointing")
        if name in {f.name for f in dataclasses.fields(ORPOConfig)}
    }
    args = ORPOConfig(
        output_dir=spec["run_dir"],
        beta=ORPO_LAMBDA,
        max_length=MAX_LENGTH,
        bf16=gpu,
        fp16=False,
        **no_checkpointing,
        use_cpu=not gpu,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        per_device_train_batch_size=BATCH_PAIRS,
        gradient_accumulation_steps=1,
        max_steps=spec["total_steps"],
        logging_steps=10**6,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        max_grad_norm=1.0,
        optim="adamw_torch",
        seed=SEED,
        disable_tqdm=True,
        dataloader_drop_last=False,
        dataloader_num_workers=0,
        train_sampling_strategy="sequential",
        remove_unused_columns=False,
    )
    clock = StepClock()
    trainer = RecordingORPOTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(trl_rows(pairs)),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[clock],
    )
    trainer.losses = []
    got = []
    for row in trainer.train_dataset:
        n = len(row["prompt_input_ids"])
        if any(row[f"{side}_input_ids"][:n] != row["prompt_input_ids"] for side in ("chosen", "rejected")):
            raise RuntimeError("TRL's chosen / rejected rows do not start with its prompt ids")
        got.append((row["prompt_input_ids"], row["chosen_input_ids"][n:], row["rejected_input_ids"][n:]))
    _assert_same_ids(got, pairs, "TRL")
    marks["setup_done"] = time.perf_counter()
    trainer.train()
    if len(clock.ends) != spec["total_steps"]:
        raise RuntimeError(f"TRL took {len(clock.ends)} steps, expected {spec['total_steps']}")
    return {
        "step_ends": clock.ends,
        "losses": list(trainer.losses),
        "trainable_params": _trainable(trainer.model),
        **_model_checks(trainer.model),
    }


def _trainable(model: Any) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _model_checks(model: Any) -> dict[str, Any]:
    """Settings that must be equal on both sides, read from the trained model itself (recorded, then asserted)."""
    import torch

    checkpointing = any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())
    dropout = max([m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] + [0.0])
    config = getattr(model, "config", None)
    dropout = max(dropout, float(getattr(config, "attention_dropout", 0.0) or 0.0))
    if checkpointing or dropout > 0:
        raise RuntimeError(f"unfair settings: activation checkpointing {checkpointing}, dropout {dropout}")
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.requires_grad})
    return {"activation_checkpointing": checkpointing, "max_dropout": dropout, "trainable_dtypes": dtypes}


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One measured run: load, warm up, time; returns the run's record (also written to spec['result_path'])."""
    import torch

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(SEED)
    t_start = time.perf_counter()
    pairs = load_pairs(Path(spec["pairs_path"]))[: BATCH_PAIRS * spec["total_steps"]]
    marks: dict[str, float] = {}
    runner = _run_trl if IMPLS[spec["impl"]] is None else _run_orpo_kit
    out = runner(spec, pairs, marks)
    warmup, ends = spec["warmup"], out["step_ends"]
    starts = [marks["setup_done"]] + ends[:-1]
    step_times = [e - s for s, e in zip(starts, ends, strict=True)]
    timed = step_times[warmup:]
    timed_pairs = pairs[warmup * BATCH_PAIRS :]
    timed_s = sum(timed)
    tokens = sum(p.logical_tokens for p in timed_pairs)
    if spec["device"] == "cuda":
        peak = torch.cuda.max_memory_allocated() / 1e9
    else:
        peak = peak_rss_gb()
    before = marks.get("rss_before_model_gb")
    return {
        "impl": spec["impl"],
        "mix": spec["mix"],
        "adapter": spec["adapter"],
        "repeat": spec["repeat"],
        "device": spec["device"],
        "threads": torch.get_num_threads(),
        "pairs_per_s": len(timed_pairs) / timed_s,
        "tokens_per_s": tokens / timed_s,
        "timed_pairs": len(timed_pairs),
        "timed_tokens": tokens,
        "timed_s": timed_s,
        "step_times_s": timed,
        "warmup_times_s": step_times[:warmup],
        "peak_mem_gb": peak,
        "peak_rss_gb": peak_rss_gb(),
        "rss_before_model_gb": before,
        "peak_growth_gb": (peak_rss_gb() - before) if before is not None else None,
        "loss_step0": out["losses"][0],
        "losses": out["losses"],
        "trainable_params": out["trainable_params"],
        "token_ids_verified": True,
        "setup_s": marks["setup_done"] - t_start,
        **{k: out[k] for k in ("activation_checkpointing", "max_dropout", "trainable_dtypes")},
        "loadavg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "lean_heap": lean_heap_active(),
    }


# ---- the orchestrator ------------------------------------------------------------------------------------
def _launch(spec: dict[str, Any], log_path: Path) -> dict[str, Any]:
    """Run one worker process; its record, or {'error': ...} with the log's tail."""
    spec_path = Path(spec["run_dir"]) / "spec.json"
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(spec["threads"]),
        "MKL_NUM_THREADS": str(spec["threads"]),
        "TOKENIZERS_PARALLELISM": "false",
        "TRL_EXPERIMENTAL_SILENCE": "1",
        "TQDM_DISABLE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
    }
    env = IMPL_ENV.get(spec["impl"], dict)(env)
    t0 = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "orpo_kit.bench", "--worker", str(spec_path)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=WORKER_TIMEOUT_S,
            )
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    wall = time.perf_counter() - t0
    result_path = Path(spec["result_path"])
    if rc == 0 and result_path.is_file():
        return {**json.loads(result_path.read_text(encoding="utf-8")), "worker_wall_s": wall}
    tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
    return {
        "impl": spec["impl"],
        "mix": spec["mix"],
        "adapter": spec["adapter"],
        "repeat": spec["repeat"],
        "error": f"worker exited with {rc}; log {log_path}:\n{tail}",
        "worker_wall_s": wall,
    }


def aggregate(runs: list[dict[str, Any]], flops_params: int, matmul_gflops: float) -> list[dict[str, Any]]:
    """One record per (impl, mix, adapter): medians over repeats, ratios to TRL, matmul share."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["impl"], run["mix"], run["adapter"]), []).append(run)
    records = []
    for (impl, mix, adapter), rs in groups.items():
        ok = [r for r in rs if "error" not in r]
        rec: dict[str, Any] = {"impl": impl, "mix": mix, "adapter": adapter, "repeats": len(ok)}
        if not ok:
            rec["error"] = rs[0]["error"]
            records.append(rec)
            continue
        flops_per_token = (4 if adapter == "lora" else 6) * flops_params
        rec.update(
            pairs_per_s=statistics.median(r["pairs_per_s"] for r in ok),
            tokens_per_s=statistics.median(r["tokens_per_s"] for r in ok),
            peak_mem_gb=max(r["peak_mem_gb"] for r in ok),
            loss_step0=ok[0]["loss_step0"],
            step_time_s=statistics.median(t for r in ok for t in r["step_times_s"]),
            trainable_params=ok[0]["trainable_params"],
            flops_per_token=flops_per_token,
        )
        rec["matmul_share"] = flops_per_token * rec["tokens_per_s"] / (matmul_gflops * 1e9)
        rec["runs"] = [
            {
                k: r[k]
                for k in (
                    "repeat",
                    "pairs_per_s",
                    "tokens_per_s",
                    "peak_mem_gb",
                    "peak_growth_gb",
                    "rss_before_model_gb",
                    "step_times_s",
                    "warmup_times_s",
                    "loss_step0",
                    "setup_s",
                    "worker_wall_s",
                    "loadavg_1min",
                    "lean_heap",
                )
                if k in r
            }
            for r in ok
        ]
        if len(ok) < len(rs):
            rec["error"] = next(r["error"] for r in rs if "error" in r)
        records.append(rec)
    by_key = {(r["impl"], r["mix"], r["adapter"]): r for r in records}
    for rec in records:
        trl = by_key.get(("trl", rec["mix"], rec["adapter"]))
        if trl is not None and "pairs_per_s" in trl and "pairs_per_s" in rec:
            rec["speedup_vs_trl"] = rec["pairs_per_s"] / trl["pairs_per_s"]
            rec["mem_ratio_vs_trl"] = rec["peak_mem_gb"] / trl["peak_mem_gb"]
            growth, trl_growth = _median_growth(rec), _median_growth(trl)
            if growth is not None and trl_growth:
                rec["mem_growth_ratio_vs_trl"] = growth / trl_growth  # without the import baseline
            paired = _paired_speedups(
                groups.get((rec["impl"], rec["mix"], rec["adapter"]), []),
                groups.get(("trl", rec["mix"], rec["adapter"]), []),
            )
            if paired:
                rec["speedup_vs_trl_per_repeat"] = paired
    return records


def _median_growth(rec: dict[str, Any]) -> float | None:
    """Median over repeats of peak RSS minus RSS before the model was loaded (CPU only)."""
    values = [r["peak_growth_gb"] for r in rec.get("runs", []) if r.get("peak_growth_gb") is not None]
    return statistics.median(values) if values else None


def _paired_speedups(runs: list[dict[str, Any]], trl_runs: list[dict[str, Any]]) -> list[float]:
    """pairs/s ratio to the TRL run of the same repeat (the A / B pairs taken close together in time)."""
    trl = {r["repeat"]: r for r in trl_runs if "error" not in r}
    return [r["pairs_per_s"] / trl[r["repeat"]]["pairs_per_s"] for r in runs if "error" not in r and r["repeat"] in trl]


def loss_agreement(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Step-0 loss of TRL vs orpo_kit_trl_compat per workload (and the paper-NLL loss beside it)."""
    by_key = {(r["impl"], r["mix"], r["adapter"]): r for r in records if "loss_step0" in r}
    out = []
    for (impl, mix, adapter), trl in by_key.items():
        compat = by_key.get(("orpo_kit_trl_compat", mix, adapter))
        if impl != "trl" or compat is None:
            continue
        rel = abs(compat["loss_step0"] - trl["loss_step0"]) / abs(trl["loss_step0"])
        default = by_key.get(("orpo_kit", mix, adapter))
        out.append(
            {
                "mix": mix,
                "adapter": adapter,
                "trl": trl["loss_step0"],
                "orpo_kit_trl_compat": compat["loss_step0"],
                "rel_diff": rel,
                "passed": rel <= LOSS_RTOL,
                "orpo_kit_paper_nll": default["loss_step0"] if default else None,
            }
        )
    return out


def acceptance(
    records: list[dict[str, Any]], wall_s: float, mode: str, agreement: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The issue's targets, checked on this run's numbers."""
    by_key = {(r["impl"], r["mix"], r["adapter"]): r for r in records}
    checks = []
    for (mix, adapter), (min_speedup, max_mem) in TARGETS.items():
        rec = by_key.get(("orpo_kit", mix, adapter))
        if rec is None or "speedup_vs_trl" not in rec:
            continue
        checks.append(
            {
                "check": "speed-up vs TRL (pairs/s)",
                "mix": mix,
                "adapter": adapter,
                "value": rec["speedup_vs_trl"],
                "target": f">= {min_speedup}",
                "passed": rec["speedup_vs_trl"] >= min_speedup,
            }
        )
        checks.append(
            {
                "check": "peak memory vs TRL",
                "mix": mix,
                "adapter": adapter,
                "value": rec["mem_ratio_vs_trl"],
                "target": f"<= {max_mem}",
                "passed": rec["mem_ratio_vs_trl"] <= max_mem,
            }
        )
    for a in agreement:
        checks.append(
            {
                "check": "step-0 loss, orpo_kit_trl_compat vs TRL (relative)",
                "mix": a["mix"],
                "adapter": a["adapter"],
                "value": a["rel_diff"],
                "target": f"<= {LOSS_RTOL}",
                "passed": a["passed"],
            }
        )
    if mode in WALL_LIMITS_S:
        checks.append(
            {
                "check": f"wall time of the {mode} benchmark (s)",
                "mix": None,
                "adapter": None,
                "value": wall_s,
                "target": f"< {WALL_LIMITS_S[mode]}",
                "passed": wall_s < WALL_LIMITS_S[mode],
            }
        )
    return checks


# ---- output ---------------------------------------------------------------------------------------------
def format_table(result: dict[str, Any]) -> str:
    """The results as a fixed-width text table, then the loss agreement and the acceptance checks."""
    head = (
        "impl",
        "mix",
        "adapter",
        "pairs/s",
        "tokens/s",
        "peak GB",
        "x TRL speed",
        "x TRL mem",
        "matmul %",
        "loss step0",
    )
    rows = []
    for r in result["records"]:
        if "pairs_per_s" not in r:
            rows.append((r["impl"], r["mix"], r["adapter"], "failed", "", "", "", "", "", ""))
            continue
        rows.append(
            (
                r["impl"],
                r["mix"],
                r["adapter"],
                f"{r['pairs_per_s']:.3f}",
                f"{r['tokens_per_s']:.0f}",
                f"{r['peak_mem_gb']:.2f}",
                f"{r['speedup_vs_trl']:.2f}" if "speedup_vs_trl" in r else "",
                f"{r['mem_ratio_vs_trl']:.2f}" if "mem_ratio_vs_trl" in r else "",
                f"{100 * r['matmul_share']:.1f}",
                f"{r['loss_step0']:.6f}",
            )
        )
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    line = lambda cells: "  ".join(
        str(c).ljust(w) if i < 3 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )
    out = [line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]
    mm = result["matmul"]
    out.append(
        f"\nmatmul rate: {mm['gflops_best']:.1f} GFLOP/s ({mm['dtype']}, {mm['n']}x{mm['n']}, best of "
        f"{mm['repeats']}; median {mm['gflops_median']:.1f})"
    )
    for a in result["loss_agreement"]:
        out.append(
            f"step-0 loss {a['mix']}/{a['adapter']}: TRL {a['trl']:.7f}, orpo_kit_trl_compat "
            f"{a['orpo_kit_trl_compat']:.7f} (relative difference {a['rel_diff']:.1e})"
        )
    for c in result["acceptance"]:
        where = f" {c['mix']}/{c['adapter']}" if c["mix"] else ""
        out.append(
            f"[{'PASS' if c['passed'] else 'FAIL'}] {c['check']}{where}: {c['value']:.4g} (target {c['target']})"
        )
    if result.get("errors"):
        out.append(f"{len(result['errors'])} run(s) failed; see 'errors' in the JSON")
    return "\n".join(out)


def plot_results(result: dict[str, Any], path: Path) -> Path:
    """Horizontal bars, one row of panels per workload: pairs/s and peak memory of each implementation run there."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in result["records"] if "pairs_per_s" in r]
    workloads = list(dict.fromkeys((r["mix"], r["adapter"]) for r in records))
    colors = {impl: f"C{k % 10}" for k, impl in enumerate(dict.fromkeys(r["impl"] for r in records))}
    heights = [len([r for r in records if (r["mix"], r["adapter"]) == w]) for w in workloads]
    fig, axes = plt.subplots(
        len(workloads),
        2,
        figsize=(11, 1.2 + 0.32 * sum(heights) + 0.5 * len(workloads)),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    metrics = (
        ("pairs_per_s", "speedup_vs_trl", "pairs / s (higher is better)"),
        ("peak_mem_gb", "mem_ratio_vs_trl", "peak memory, GB (lower is better)"),
    )
    for row, (mix, adapter) in enumerate(workloads):
        rs = [r for r in records if (r["mix"], r["adapter"]) == (mix, adapter)][::-1]  # first impl on top
        for col, (key, ratio_key, title) in enumerate(metrics):
            ax = axes[row][col]
            bars = ax.barh([r["impl"] for r in rs], [r[key] for r in rs], color=[colors[r["impl"]] for r in rs])
            ax.bar_label(
                bars,
                [
                    f" {r[key]:.2f}"
                    + (f"  ({r[ratio_key]:.2f}x TRL)" if r["impl"] != "trl" and r.get(ratio_key) is not None else "")
                    for r in rs
                ],
                fontsize=7,
            )
            ax.set_title(f"{mix} / {adapter}: {title}", fontsize=9)
            ax.tick_params(axis="y", labelsize=7, labelleft=col == 0)
            ax.tick_params(axis="x", labelsize=7)
            ax.margins(x=0.35)
    m = result["machine"]
    fig.suptitle(
        f"orpo_kit vs TRL ORPOTrainer ({result['mode']} run), {m['gpu'] or m['cpu']}, {m['torch_threads']} threads",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---- entry points ---------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `orpo-kit bench` (also `python -m orpo_kit.bench`)."""
    p.add_argument("--quick", action="store_true", help="LoRA workloads only, one repeat, fewer steps (< 5 min)")
    p.add_argument(
        "--json",
        default=DEFAULT_JSON,
        metavar="PATH",
        help=f"results file (default {DEFAULT_JSON}); the table and chart go beside it",
    )
    p.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="auto: the GPU workloads when CUDA is available, else the CPU ones",
    )
    p.add_argument("--threads", type=int, help="torch threads in every run (default: all cores)")
    p.add_argument("--repeats", type=int, help="A / B / A / B repeats (default: 2, quick 1)")
    p.add_argument("--steps", type=int, help="timed steps per run (default 2)")
    p.add_argument("--warmup", type=int, help="untimed steps before them (default 1; at least 1)")
    p.add_argument(
        "--mixes", nargs="+", help=f"workload mixes (default CPU {' '.join(CPU_MIXES)}; GPU {' '.join(GPU_MIXES)})"
    )
    p.add_argument("--adapters", nargs="+", choices=["lora", "full"], help="default: lora full (quick: lora)")
    p.add_argument(
        "--impls", nargs="+", help=f"implementations (default {' '.join(MAIN_IMPLS)}; also {' '.join(VARIANT_IMPLS)})"
    )
    p.add_argument(
        "--variants",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add the optimization-off rows on LoRA prompt_heavy (default: on in the full run)",
    )
    p.add_argument("--workdir", help="keep the generated model, pairs and logs here (default: a temp dir)")
    p.add_argument("--no-plot", action="store_true", help="skip the bar chart")
    p.add_argument("--model-size", default=None, help=argparse.SUPPRESS)  # "tiny": tests


def run(args: argparse.Namespace) -> int:
    """Generate the workloads, run every worker, aggregate, write JSON / table / chart; 0 when all runs ran."""
    import torch

    t0 = time.perf_counter()
    mode = "quick" if args.quick else "full"
    preset = QUICK if args.quick else FULL
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available here")
    cores = os.cpu_count() or 1
    threads = args.threads or (cores if device == "cpu" else min(8, cores))
    warmup = preset["warmup"] if args.warmup is None else args.warmup
    steps = args.steps or preset["steps"]
    if warmup < 1 or steps < 1:
        raise ValueError("--warmup and --steps must be at least 1 (the first step is never timed)")
    shape = args.model_size or ("mistral-7b" if device == "cuda" else "cpu")
    plan = build_plan(mode, device, args.mixes, args.adapters, args.impls, args.repeats, args.variants)
    if shape != "cpu" and shape != "mistral-7b":
        mode = f"{mode}-{shape}"  # a test run: no wall-time target
    elif any(
        v is not None
        for v in (
            args.mixes,
            args.adapters,
            args.impls,
            args.repeats,
            args.steps,
            args.warmup,
            args.variants,
            args.threads,
        )
    ):
        mode = f"{mode}-custom"  # not the plan: no wall-time target
    json_path = Path(args.json)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    holder = tempfile.TemporaryDirectory(prefix="orpo_kit_bench_") if not args.workdir else None
    workdir = Path(args.workdir or holder.name)
    try:
        print(
            f"orpo_kit bench ({mode}): {len(plan)} runs on {device}, {threads} threads, "
            f"{warmup} warm-up + {steps} timed steps of {BATCH_PAIRS} pairs; workdir {workdir}",
            flush=True,
        )
        result = _run_all(plan, workdir, device, threads, warmup, steps, shape, mode)
    finally:
        if holder is not None:
            holder.cleanup()
    result["wall_s"] = time.perf_counter() - t0
    result["acceptance"] = acceptance(result["records"], result["wall_s"], mode, result["loss_agreement"])
    json_path.write_text(json.dumps(result, indent=2), encoding="utf-8")
    table = format_table(result)
    json_path.with_suffix(".txt").write_text(table + "\n", encoding="utf-8")
    print("\n" + table)
    print(f"\nwall time {result['wall_s']:.0f} s; results: {json_path} (table: {json_path.with_suffix('.txt')})")
    if not args.no_plot and any("pairs_per_s" in r for r in result["records"]):
        print(f"chart: {plot_results(result, json_path.with_suffix('.png'))}")
    return 1 if result["errors"] else 0


def _run_all(
    plan: list[dict[str, Any]], workdir: Path, device: str, threads: int, warmup: int, steps: int, shape: str, mode: str
) -> dict[str, Any]:
    """Workloads, matmul rate, then every run of the plan in order; the raw result dict."""
    import torch

    torch.set_num_threads(threads)
    total_steps = warmup + steps
    model_dir = workdir / f"model-{shape}"
    t = time.perf_counter()
    if not (model_dir / "model.safetensors.index.json").is_file() and not (model_dir / "model.safetensors").is_file():
        from .bench_workloads import save_model_dir

        save_model_dir(model_dir, shape, seed=SEED)  # a kept --workdir reuses it
    pairs_paths = {}
    for mix in dict.fromkeys(r["mix"] for r in plan):
        from .bench_workloads import save_pairs

        pairs_paths[mix] = workdir / f"pairs-{mix}.json"
        save_pairs(make_pairs(MIXES[mix], BATCH_PAIRS * total_steps, seed=SEED), pairs_paths[mix])
    print(f"workloads ready in {time.perf_counter() - t:.1f} s ({shape} model, mixes {list(pairs_paths)})", flush=True)
    busy = busy_warning(device)  # before the matmul measurement, which loads the CPU itself
    matmul = measure_matmul_rate(device, "float32" if device == "cpu" else "bfloat16")
    print(f"matmul rate: {matmul['gflops_best']:.1f} GFLOP/s ({matmul['dtype']})", flush=True)
    config = model_config(shape)
    params = count_params(config)
    if busy:
        print(f"WARNING: {busy}", flush=True)
    runs, started = [], time.perf_counter()
    for k, item in enumerate(plan, start=1):
        run_dir = workdir / "runs" / f"{k:02d}-{item['impl']}-{item['mix']}-{item['adapter']}-r{item['repeat']}"
        spec = {
            **item,
            "device": device,
            "threads": threads,
            "warmup": warmup,
            "total_steps": total_steps,
            "model_dir": str(model_dir),
            "pairs_path": str(pairs_paths[item["mix"]]),
            "run_dir": str(run_dir),
            "result_path": str(run_dir / "result.json"),
        }
        print(
            f"[{k}/{len(plan)}] repeat {item['repeat'] + 1} {item['mix']:<12} {item['adapter']:<4} "
            f"{item['impl']:<20} ...",
            end=" ",
            flush=True,
        )
        rec = _launch(spec, workdir / "runs" / f"{run_dir.name}.log")
        runs.append(rec)
        if "error" in rec:
            print(f"FAILED after {rec['worker_wall_s']:.0f} s\n{rec['error']}", flush=True)
        else:
            print(
                f"{rec['pairs_per_s']:.3f} pairs/s, {rec['tokens_per_s']:.0f} tok/s, peak "
                f"{rec['peak_mem_gb']:.2f} GB, loss0 {rec['loss_step0']:.5f} ({rec['worker_wall_s']:.0f} s)",
                flush=True,
            )
        if k < len(plan):
            left = (time.perf_counter() - started) / k * (len(plan) - k)
            print(f"    about {left / 60:.1f} min left", flush=True)
    records = aggregate(runs, params["flops_params"], matmul["gflops_best"])
    machine = machine_info(threads, device)
    machine["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    machine["busy_warning"] = busy
    return {
        "schema": "orpo_kit.bench/1",
        "mode": mode,
        "machine": machine,
        "matmul": matmul,
        "settings": {
            "batch_pairs": BATCH_PAIRS,
            "learning_rate": LEARNING_RATE,
            "orpo_lambda": ORPO_LAMBDA,
            "lora": LORA,
            "warmup_steps": warmup,
            "timed_steps": steps,
            "repeats": 1 + max(r["repeat"] for r in plan),
            "threads": threads,
            "dtype": "float32" if device == "cpu" else "4-bit NF4 weights, bfloat16 compute",
            "model": {
                "shape": shape,
                **{
                    k: getattr(config, k)
                    for k in (
                        "hidden_size",
                        "intermediate_size",
                        "num_hidden_layers",
                        "num_attention_heads",
                        "num_key_value_heads",
                        "vocab_size",
                    )
                },
                **params,
            },
            "mixes": {m: vars(MIXES[m]) for m in pairs_paths},
            "order": [f"{r['repeat']}:{r['mix']}/{r['adapter']}/{r['impl']}" for r in plan],
            "impls": {i: IMPLS[i] for i in dict.fromkeys(r["impl"] for r in plan)},
            "tokens_definition": TOKENS_DEFINITION,
            "flops_definition": FLOPS_DEFINITION,
            "peak_memory_definition": (
                "CPU: peak RSS of the worker process (VmHWM); GPU: torch.cuda.max_memory_allocated; GB = 1e9 bytes"
            ),
            "step_time_definition": "interval between the ends of consecutive optimizer steps; warm-up excluded",
        },
        "records": records,
        "loss_agreement": loss_agreement(records),
        "errors": [r["error"] for r in runs if "error" in r],
        "trainable_params_equal": _trainable_params_equal(records),
    }


def _trainable_params_equal(records: list[dict[str, Any]]) -> dict[str, bool]:
    """Per adapter: do all implementations train the same number of parameters?"""
    out: dict[str, set[int]] = {}
    for r in records:
        if "trainable_params" in r:
            out.setdefault(r["adapter"], set()).add(r["trainable_params"])
    return {adapter: len(counts) == 1 for adapter, counts in out.items()}


def main(argv: list[str] | None = None) -> int:
    """`python -m orpo_kit.bench [--quick] [--json PATH]`; `--worker SPEC` runs one measured run (internal)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--worker"]:
        spec = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
        if IMPLS[spec["impl"]] is not None:  # an orpo_kit run: the same process setup as `orpo-kit train`
            restart_with_lean_heap(["-m", "orpo_kit.bench", *argv])
        record = run_worker(spec)
        Path(spec["result_path"]).write_text(json.dumps(record), encoding="utf-8")
        return 0
    parser = argparse.ArgumentParser(prog="orpo-kit bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, OSError) as exc:
        print(f"orpo-kit bench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
