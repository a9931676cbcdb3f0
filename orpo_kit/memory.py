"""Draft: measurement helper only (estimator follows)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Any

from .config import ORPOConfig

MEASURE_TAG = "ORPO_KIT_MEMORY_RESULT "


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


def synthetic_pairs(batch_size: int, seq_len: int, vocab_size: int, seed: int = 0, n_pairs: int | None = None):
    """Tokenized pairs whose chosen row is exactly seq_len tokens and whose rejected row is a little shorter
    (so batches carry a real padding mask): prompt max(1, seq_len // 8) tokens."""
    import torch

    from .data import TokenizedPair

    gen = torch.Generator().manual_seed(seed)
    prompt_len = max(1, seq_len // 8)
    chosen_len = seq_len - prompt_len
    rejected_len = max(1, chosen_len - max(1, seq_len // 16)) if seq_len > 2 else chosen_len
    out = []
    for i in range(n_pairs or batch_size):
        ids = torch.randint(3, vocab_size, (prompt_len + chosen_len + rejected_len,), generator=gen).tolist()
        out.append(TokenizedPair(ids[:prompt_len], ids[prompt_len:prompt_len + chosen_len],
                                 ids[prompt_len + chosen_len:], origin=f"synthetic:{i}"))
    return out


def synthetic_completion_fraction(seq_len: int) -> float:
    """Fraction of the 2 * seq_len positions of a synthetic pair whose next-token log-prob the loss needs."""
    prompt_len = max(1, seq_len // 8)
    chosen_len = seq_len - prompt_len
    rejected_len = max(1, chosen_len - max(1, seq_len // 16)) if seq_len > 2 else chosen_len
    return (chosen_len + rejected_len) / (2 * seq_len)


def _measure_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run in a fresh process: baseline RSS, load the model, train `steps` optimizer steps, peak RSS."""
    import torch

    from .models import load_model, load_tokenizer
    from .train import Trainer

    torch.set_num_threads(int(spec.get("threads") or torch.get_num_threads()))
    cfg = ORPOConfig(**spec["cfg"])
    batch, seq_len, steps = int(spec["batch_size"]), int(spec["seq_len"]), int(spec["steps"])
    tokenizer = load_tokenizer(cfg)
    from .data import PreferencePair

    few = [PreferencePair([{"role": "user", "content": f"Question {i}?"}], f"Answer {i}.", f"No {i}.")
           for i in range(batch + 1)]
    import gc

    gc.collect()
    reset = _reset_peak()
    baseline_kb = _proc_status_kb("VmRSS")
    model = load_model(cfg, tokenizer)
    after_load_kb = _proc_status_kb("VmRSS")
    with tempfile.TemporaryDirectory(prefix="orpo_kit_mem_") as tmp:
        cfg = cfg.replace(output_dir=tmp, per_device_train_batch_size=batch, gradient_accumulation_steps=1,
                          max_steps=max(steps, 1), device="cpu")
        trainer = Trainer(cfg, model=model, tokenizer=tokenizer, train_pairs=few[:batch], eval_pairs=few[batch:])
        vocab = model.get_input_embeddings().weight.shape[0]
        trainer.train_data = synthetic_pairs(batch, seq_len, min(vocab, len(tokenizer)), seed=cfg.seed)
        losses = []
        rss_after_steps = []
        for _ in range(steps):
            losses.append(trainer.train_step()["loss"])
            rss_after_steps.append(_proc_status_kb("VmRSS"))
        peak_kb = _proc_status_kb("VmHWM")
    mb = 1024.0
    return {
        "baseline_mb": baseline_kb / mb, "after_load_mb": after_load_kb / mb, "peak_mb": peak_kb / mb,
        "peak_growth_mb": (peak_kb - baseline_kb) / mb, "rss_after_steps_mb": [r / mb for r in rss_after_steps],
        "peak_was_reset": reset, "losses": losses, "batch_size": batch, "seq_len": seq_len, "steps": steps,
        "threads": torch.get_num_threads(),
    }


def measure_training_peak(cfg: ORPOConfig, steps: int = 2, seq_len: int | None = None,
                          batch_size: int | None = None, threads: int | None = 2,
                          timeout: float | None = 1800) -> dict[str, Any]:
    """Peak RSS growth of real training steps, measured in a fresh Python process (so earlier peaks don't count).

    The child loads the tokenizer, records VmRSS just before the model loads (and resets VmHWM there), loads
    the model as `orpo-kit train` does, builds a `Trainer`, swaps its training data for synthetic pairs padded to
    exactly `seq_len` tokens, runs `steps` optimizer steps (>= 2 so AdamW's state exists during a forward) and
    reads VmHWM. Returns MB figures: baseline_mb, after_load_mb, peak_mb, peak_growth_mb (peak - baseline).
    Linux only (reads /proc/self/status).
    """
    spec = {
        "cfg": cfg.to_dict(), "steps": steps, "threads": threads,
        "seq_len": seq_len or cfg.max_length, "batch_size": batch_size or cfg.per_device_train_batch_size,
    }
    code = ("import json, sys\nfrom orpo_kit.memory import _measure_worker, MEASURE_TAG\n"
            "res = _measure_worker(json.loads(sys.argv[1]))\nprint(MEASURE_TAG + json.dumps(res), flush=True)\n")
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "TRL_EXPERIMENTAL_SILENCE": "1"}
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True,
                          timeout=timeout, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith(MEASURE_TAG):
            return json.loads(line[len(MEASURE_TAG):])
    raise RuntimeError(f"memory measurement failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
