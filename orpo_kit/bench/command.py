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
dropout off, no gradient checkpointing on CPU (on a GPU both checkpoint every layer: plan.checkpointing_for),
AdamW (lr 1e-4, betas 0.9/0.999, eps 1e-8, no weight decay), linear decay, clipping at 1.0,
lambda = beta = 0.1, LoRA r=16 alpha=32 dropout 0 on all linear layers.

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
4-bit NF4 + LoRA, bf16 compute, rows of about 1024 and 2048 tokens, activation checkpointing in both trainers
(4 pairs of the 7B do not fit a card without it: plan.checkpointing_for); with flash-attn installed, also
`orpo_kit_flash_packed` (flash-attention 2, packed rows: it takes no 4D mask, so no prefix sharing).
UNTESTED: written without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..allocator import module_args, restart_with_lean_heap
from .machine import busy_warning, machine_info, measure_matmul_rate
from .plan import (
    BATCH_PAIRS,
    DEFAULT_JSON,
    FLOPS_DEFINITION,
    FULL,
    IMPL_ENV,
    IMPLS,
    LEARNING_RATE,
    LORA,
    MAIN_IMPLS,
    ORPO_LAMBDA,
    QUICK,
    SEED,
    TOKENS_DEFINITION,
    VARIANT_IMPLS,
    WORKER_TIMEOUT_S,
    build_plan,
    checkpointing_for,
)
from .report import _trainable_params_equal, acceptance, aggregate, format_table, loss_agreement, plot_results
from .runners import run_worker
from .workloads import CPU_MIXES, GPU_MIXES, MIXES, count_params, make_pairs, model_config


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
        rc: int | str
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


def resolve_device(requested: str) -> str:
    """cuda or cpu for --device: auto takes the GPU when CUDA is available; cuda without CUDA is an error."""
    import torch

    device = requested if requested != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available here")
    return device


def run(args: argparse.Namespace) -> int:
    """Generate the workloads, run every worker, aggregate, write JSON / table / chart; 0 when all runs ran."""
    t0 = time.perf_counter()
    mode = "quick" if args.quick else "full"
    preset = QUICK if args.quick else FULL
    device = resolve_device(args.device)
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
    workdir = Path(args.workdir) if holder is None else Path(holder.name)
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
    model_dir, pairs_paths = _prepare_workloads(plan, workdir, shape, warmup + steps)
    busy = busy_warning(device)  # before the matmul measurement, which loads the CPU itself
    matmul = measure_matmul_rate(device, "float32" if device == "cpu" else "bfloat16")
    print(f"matmul rate: {matmul['gflops_best']:.1f} GFLOP/s ({matmul['dtype']})", flush=True)
    config = model_config(shape)
    params = count_params(config)
    if busy:
        print(f"WARNING: {busy}", flush=True)
    common = {
        "device": device,
        "threads": threads,
        "warmup": warmup,
        "total_steps": warmup + steps,
        "model_dir": str(model_dir),
    }
    runs = _run_plan(plan, workdir, pairs_paths, common)
    records = aggregate(runs, params["flops_params"], matmul["gflops_best"])
    machine = machine_info(threads, device)
    machine["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    machine["busy_warning"] = busy
    return {
        "schema": "orpo_kit.bench/1",
        "mode": mode,
        "machine": machine,
        "matmul": matmul,
        "settings": _settings(plan, device, threads, warmup, steps, shape, config, params, list(pairs_paths)),
        "records": records,
        "loss_agreement": loss_agreement(records),
        "errors": [r["error"] for r in runs if "error" in r],
        "trainable_params_equal": _trainable_params_equal(records),
    }


def _prepare_workloads(
    plan: list[dict[str, Any]], workdir: Path, shape: str, total_steps: int
) -> tuple[Path, dict[str, Path]]:
    """The saved model (reused from a kept --workdir) and one pairs file per mix of the plan."""
    from .workloads import save_model_dir, save_pairs

    t = time.perf_counter()
    model_dir = workdir / f"model-{shape}"
    if not (model_dir / "model.safetensors.index.json").is_file() and not (model_dir / "model.safetensors").is_file():
        save_model_dir(model_dir, shape, seed=SEED)
    pairs_paths = {}
    for mix in dict.fromkeys(r["mix"] for r in plan):
        pairs_paths[mix] = workdir / f"pairs-{mix}.json"
        save_pairs(make_pairs(MIXES[mix], BATCH_PAIRS * total_steps, seed=SEED), pairs_paths[mix])
    print(f"workloads ready in {time.perf_counter() - t:.1f} s ({shape} model, mixes {list(pairs_paths)})", flush=True)
    return model_dir, pairs_paths


def _run_plan(
    plan: list[dict[str, Any]], workdir: Path, pairs_paths: dict[str, Path], common: dict[str, Any]
) -> list[dict[str, Any]]:
    """Every run of the plan, in order, each in its own process, with a line of progress per run."""
    runs, started = [], time.perf_counter()
    for k, item in enumerate(plan, start=1):
        run_dir = workdir / "runs" / f"{k:02d}-{item['impl']}-{item['mix']}-{item['adapter']}-r{item['repeat']}"
        spec = {
            **item,
            **common,
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
                f"{rec['pairs_per_s']:.3f} pairs/s, {rec['tokens_per_s']:.0f} tok/s, peak {rec['peak_mem_gb']:.2f} "
                f"GB, loss0 {rec['loss_step0']:.5f} ({rec['worker_wall_s']:.0f} s)",
                flush=True,
            )
        if k < len(plan):
            left = (time.perf_counter() - started) / k * (len(plan) - k)
            print(f"    about {left / 60:.1f} min left", flush=True)
    return runs


def _settings(
    plan: list[dict[str, Any]],
    device: str,
    threads: int,
    warmup: int,
    steps: int,
    shape: str,
    config: Any,
    params: dict[str, Any],
    mixes: list[str],
) -> dict[str, Any]:
    """What the runs shared: hyperparameters, model, mixes, order and the definitions of every figure."""
    sizes = (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "vocab_size",
    )
    return {
        "batch_pairs": BATCH_PAIRS,
        "learning_rate": LEARNING_RATE,
        "orpo_lambda": ORPO_LAMBDA,
        "lora": LORA,
        "gradient_checkpointing": checkpointing_for(device),  # both trainers alike
        "warmup_steps": warmup,
        "timed_steps": steps,
        "repeats": 1 + max(r["repeat"] for r in plan),
        "threads": threads,
        "dtype": "float32" if device == "cpu" else "4-bit NF4 weights, bfloat16 compute",
        "model": {"shape": shape, **{k: getattr(config, k) for k in sizes}, **params},
        "mixes": {m: vars(MIXES[m]) for m in mixes},
        "order": [f"{r['repeat']}:{r['mix']}/{r['adapter']}/{r['impl']}" for r in plan],
        "impls": {i: IMPLS[i] for i in dict.fromkeys(r["impl"] for r in plan)},
        "tokens_definition": TOKENS_DEFINITION,
        "flops_definition": FLOPS_DEFINITION,
        "peak_memory_definition": (
            "CPU: peak RSS of the worker process (VmHWM); GPU: torch.cuda.max_memory_allocated; GB = 1e9 bytes"
        ),
        "step_time_definition": "interval between the ends of consecutive optimizer steps; warm-up excluded",
    }


def main(argv: list[str] | None = None) -> int:
    """`python -m orpo_kit.bench [--quick] [--json PATH]`; `--worker SPEC` runs one measured run (internal)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--worker"]:
        spec = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
        if IMPLS[spec["impl"]] is not None:  # an orpo_kit run: the same process setup as `orpo-kit train`
            restart_with_lean_heap(module_args("orpo_kit.bench", argv))
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
