"""Measure what training really takes: peak RSS growth of real `Trainer.train_step`s on synthetic pairs, in a
fresh process, to check the estimate against (scripts/check_memory_estimator.py compares the two)."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
from typing import Any, cast

from ..config import ORPOConfig
from ..procmem import peak_rss_bytes, reset_peak, rss_bytes

MEASURE_TAG = "ORPO_KIT_MEMORY_RESULT "  # marks the child process's JSON line


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

    from ..data import TokenizedPair

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

    from ..data import PreferencePair
    from ..forward import supports_chunked_logps
    from ..logprobs import plain_layer
    from ..models import load_model, load_tokenizer
    from ..train import Trainer

    torch.set_num_threads(int(spec.get("threads") or torch.get_num_threads()))
    cfg = ORPOConfig(**spec["cfg"])
    batch, seq_len, steps = int(spec["batch_size"]), int(spec["seq_len"]), int(spec["steps"])
    tokenizer = load_tokenizer(cfg)
    few = [
        PreferencePair([{"role": "user", "content": f"Question {i}?"}], f"Answer {i}.", f"No {i}.")
        for i in range(batch + 1)
    ]
    gc.collect()
    reset = reset_peak()
    baseline_kb = _rss_kib()
    model = load_model(cfg, tokenizer)
    after_load_kb = _rss_kib()
    with tempfile.TemporaryDirectory(prefix="orpo_kit_mem_") as tmp:
        cfg = cfg.replace(
            output_dir=tmp,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=1,
            max_steps=max(steps, 1),
            device="cpu",
        )
        trainer = Trainer(cfg, model=model, tokenizer=tokenizer, train_pairs=few[:batch], eval_pairs=few[batch:])
        vocab = int(cast(Any, plain_layer(cast(Any, model).get_input_embeddings())).weight.shape[0])  # no copy
        trainer.train_data = synthetic_pairs(batch, seq_len, min(vocab, len(tokenizer)), seed=cfg.seed)
        layout = trainer.layout.name
        chunked = bool(cfg.chunked_logps and supports_chunked_logps(trainer.model))
        losses = []
        rss_after_steps = []
        for _ in range(steps):
            losses.append(trainer.train_step()["loss"])
            rss_after_steps.append(_rss_kib())
        peak_kb = peak_rss_bytes() // 1024
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
        "import json, sys\nfrom orpo_kit.memory.measure import _measure_worker, MEASURE_TAG\n"
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


def _rss_kib() -> int:
    """Current RSS in KiB (Linux: the measurement reads /proc)."""
    rss = rss_bytes()
    if rss is None:
        raise RuntimeError("measuring training memory needs /proc/self/status (Linux)")
    return rss // 1024
