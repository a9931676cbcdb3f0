"""One measured run, in its own process: orpo_kit's Trainer or TRL's ORPOTrainer on the workload."""

from __future__ import annotations

import os
import time
import typing
from pathlib import Path
from typing import Any, cast

from ..allocator import lean_heap_active
from .machine import peak_rss_gb, rss_gb
from .plan import BATCH_PAIRS, IMPLS, LEARNING_RATE, LORA, MAX_LENGTH, ORPO_LAMBDA, SEED, checkpointing_for
from .workloads import load_pairs


def _expected_rows(pairs) -> list[tuple[list[int], list[int], list[int]]]:
    return [(p.prompt_ids, p.chosen_ids, p.rejected_ids) for p in pairs]


def _assert_same_ids(got: list[tuple[list[int], list[int], list[int]]], pairs, who: str) -> int:
    """Fail the run when a trainer tokenized the texts into other ids than the workload's; the pairs compared."""
    want = _expected_rows(pairs)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if [list(x) for x in g] != [list(x) for x in w]:
            raise RuntimeError(
                f"{who} tokenized pair {i} differently from the workload's ids: the comparison "
                "would be unfair; check the benchmark tokenizer and the trainer's tokenization"
            )
    if len(got) != len(want):
        raise RuntimeError(f"{who} kept {len(got)} of {len(want)} pairs")
    return len(want)


def _checkpointing(spec: dict[str, Any]) -> bool:
    """The run's activation checkpointing: the plan's setting (its device's default for older specs)."""
    return bool(spec.get("gradient_checkpointing", checkpointing_for(spec["device"])))


def _orpo_kit_config(spec: dict[str, Any]) -> Any:
    """orpo_kit's config for a run: the benchmark's shared settings plus the implementation's options."""
    from ..config import ORPOConfig

    options: dict[str, Any] = {"attn_implementation": "sdpa", **(IMPLS[spec["impl"]] or {})}
    gpu = spec["device"] == "cuda"
    return ORPOConfig(
        model_name_or_path=spec["model_dir"],
        tokenizer_name_or_path=spec["model_dir"],
        use_lora=spec["adapter"] == "lora",
        lora_r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        lora_target_modules=LORA["target_modules"],
        gradient_checkpointing=_checkpointing(spec),
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


def _run_orpo_kit(spec: dict[str, Any], pairs, marks: dict[str, Any]) -> dict[str, Any]:
    """orpo_kit's Trainer on the workload: its own config, loading, tokenization and train_step."""
    import torch

    from ..models import load_tokenizer
    from ..train import Trainer
    from .workloads import preference_pairs

    gpu = spec["device"] == "cuda"
    cfg = _orpo_kit_config(spec)
    tokenizer = load_tokenizer(cfg)
    marks["rss_before_model_gb"] = rss_gb()
    trainer = Trainer(
        cfg, tokenizer=tokenizer, train_pairs=preference_pairs(pairs), eval_pairs=preference_pairs(pairs[:1])
    )  # never evaluated; the Trainer wants eval data
    checked = _assert_same_ids(
        [(t.prompt_ids, t.chosen_ids, t.rejected_ids) for t in trainer.train_data], pairs, "orpo_kit"
    )
    # Batch i = pairs B*i .. B*i+B-1, in order, as TRL's sequential sampler gives them.
    trainer.micro_batches = lambda step: [list(range(step * BATCH_PAIRS, (step + 1) * BATCH_PAIRS))]  # type: ignore[method-assign]
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
        "token_ids_checked": checked,
        **_model_checks(trainer.model, _checkpointing(spec)),
    }


def _trl_model(spec: dict[str, Any]) -> tuple[Any, Any]:
    """The model TRL trains (4-bit on a GPU) and its LoRA config (None for full fine-tuning)."""
    import torch
    from transformers import AutoModelForCausalLM

    gpu = spec["device"] == "cuda"
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
    return model, peft_config


def _trl_args(spec: dict[str, Any]) -> Any:
    """TRL's ORPOConfig with the benchmark's shared settings (the plan's checkpointing, sequential sampler)."""
    from trl.experimental.orpo import ORPOConfig

    gpu = spec["device"] == "cuda"
    import dataclasses

    # transformers 5 renamed gradient_checkpointing (TRL's default: True) to activation_checkpointing; both names
    # are set alike. Non-reentrant checkpointing, as orpo_kit's loaders ask (orpo_kit.models).
    on = _checkpointing(spec)
    options = {"use_reentrant": False} if on else None
    settings = {
        "gradient_checkpointing": on,
        "activation_checkpointing": on,
        "gradient_checkpointing_kwargs": options,
        "activation_checkpointing_kwargs": options,
    }
    fields = {f.name for f in dataclasses.fields(ORPOConfig)}
    checkpointing: dict[str, Any] = {name: value for name, value in settings.items() if name in fields}
    return ORPOConfig(
        output_dir=spec["run_dir"],
        beta=ORPO_LAMBDA,
        max_length=MAX_LENGTH,
        bf16=gpu,
        fp16=False,
        **checkpointing,
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


# Longer than 60 lines: the two small subclasses of TRL's classes must be defined after TRL is imported, which
# happens in the worker process only.
def _run_trl(spec: dict[str, Any], pairs, marks: dict[str, Any]) -> dict[str, Any]:
    """TRL's ORPOTrainer on the same workload, configured like orpo_kit's run."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import datasets
    import torch
    from transformers import AutoTokenizer, TrainerCallback
    from trl.experimental.orpo import ORPOTrainer

    from .workloads import trl_rows

    gpu = spec["device"] == "cuda"

    class RecordingORPOTrainer(ORPOTrainer):
        """TRL's trainer unchanged, except that it keeps each step's loss."""

        losses: typing.ClassVar[list[float]] = []

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
            loss: Any = out[0] if return_outputs else out
            self.losses.append(float(loss.detach()))
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
    model, peft_config = _trl_model(spec)
    args = _trl_args(spec)
    clock = StepClock()
    trainer = RecordingORPOTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(trl_rows(pairs)),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[clock],
    )
    trainer.losses.clear()  # the class-level list: this process runs one trainer
    got = []
    for row in cast(Any, trainer.train_dataset):
        n = len(row["prompt_input_ids"])
        if any(row[f"{side}_input_ids"][:n] != row["prompt_input_ids"] for side in ("chosen", "rejected")):
            raise RuntimeError("TRL's chosen / rejected rows do not start with its prompt ids")
        got.append((row["prompt_input_ids"], row["chosen_input_ids"][n:], row["rejected_input_ids"][n:]))
    checked = _assert_same_ids(got, pairs, "TRL")
    marks["setup_done"] = time.perf_counter()
    trainer.train()
    if len(clock.ends) != spec["total_steps"]:
        raise RuntimeError(f"TRL took {len(clock.ends)} steps, expected {spec['total_steps']}")
    return {
        "step_ends": clock.ends,
        "losses": list(trainer.losses),
        "trainable_params": _trainable(trainer.model),
        "token_ids_checked": checked,
        **_model_checks(trainer.model, _checkpointing(spec)),
    }


def _trainable(model: Any) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _model_checks(model: Any, want_checkpointing: bool = False) -> dict[str, Any]:
    """Settings that must be equal on both sides, read from the trained model itself (recorded, then asserted):
    activation checkpointing as the plan asks, no dropout."""
    import torch

    checkpointing = any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())
    dropout = max([m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] + [0.0])
    config = getattr(model, "config", None)
    dropout = max(dropout, float(getattr(config, "attention_dropout", 0.0) or 0.0))
    if checkpointing != want_checkpointing or dropout > 0:
        raise RuntimeError(
            f"unfair settings: activation checkpointing {checkpointing} (the plan asks {want_checkpointing}), "
            f"dropout {dropout}"
        )
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.requires_grad})
    return {"activation_checkpointing": checkpointing, "max_dropout": dropout, "trainable_dtypes": dtypes}


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One measured run: load, warm up, time; returns the run's record (also written to spec['result_path'])."""
    import torch

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(SEED)
    t_start = time.perf_counter()
    pairs = load_pairs(Path(spec["pairs_path"]))[: BATCH_PAIRS * spec["total_steps"]]
    marks: dict[str, Any] = {}
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
        "token_ids_checked": out["token_ids_checked"],  # pairs whose ids equal the workload's
        "setup_s": marks["setup_done"] - t_start,
        **{k: out[k] for k in ("activation_checkpointing", "max_dropout", "trainable_dtypes")},
        "loadavg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "lean_heap": lean_heap_active(),
    }
