"""The ORPO training step and loop on `accelerate.Accelerator`: one code path for one or many processes."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed
from tqdm.auto import tqdm
from transformers import get_scheduler

from . import checkpoint as ckpt
from . import faults
from .allocator import return_freed_memory
from .callbacks import TrainerCallback
from .config import ORPOConfig
from .data import DataInspection, DataReport, PreferencePair, TokenizedPair, skill_counts, tokenize_pairs
from .guards import (
    check_replicas_agree,
    guard_if_4bit,
    nonfinite_message,
    nonfinite_on_any_process,
    refuse_sharded_training,
)
from .interrupts import SigintHold, signal_name
from .layouts import PairBatch, choose_layout
from .loss import METRIC_NAMES
from .resume_check import check_resume_config
from .run_dir import (
    CONFIG_FILE,
    METRICS_FILE,
    RunDirBusy,
    RunLock,
    TrainResult,
    append_metrics,
    prepare_output_dir,
    read_metrics,
    refuse_or_replace_earlier_run,
    restart_metrics,
)
from .scoring import collate_onto, scoring_batches
from .step import build_optimizer, orpo_step
from .train_data import BatchOrder, length_grouped, load_train_eval, pair_length

# what other modules and notebooks import from here
__all__ = [
    "CONFIG_FILE",
    "METRICS_FILE",
    "TrainResult",
    "Trainer",
    "TrainerCallback",
    "build_optimizer",
    "length_grouped",
    "load_train_eval",
    "orpo_step",
    "read_metrics",
    "refuse_sharded_training",
    "train",
]


def runs_on_cpu(device: str) -> bool:
    """Whether accelerate must be told to use the CPU: asked for, or `auto` in a launch of several processes on a
    machine without CUDA (left alone, accelerate would run each process as an independent single-process run)."""
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return device == "cpu" or (device == "auto" and launched and not torch.cuda.is_available())


class Trainer:
    """ORPO training: seeded data order, gradient accumulation, clipping, warm-up, eval, logs, checkpoints."""

    def __init__(
        self,
        cfg: ORPOConfig,
        *,
        model: torch.nn.Module | None = None,
        tokenizer: Any = None,
        train_pairs: list[PreferencePair] | None = None,
        eval_pairs: list[PreferencePair] | None = None,
        callbacks: Sequence[TrainerCallback] = (),
    ) -> None:
        from .models import load_model, load_tokenizer

        self.cfg = cfg.with_absolute_paths()  # config.yaml and checkpoints then work from any folder
        self.callbacks = list(callbacks) + faults.from_environment()  # test-only faults: none unless asked
        self.run_dir = prepare_output_dir(cfg.output_dir)
        self._lock: RunLock | None = None
        self.accelerator = Accelerator(
            cpu=runs_on_cpu(cfg.device),
            mixed_precision=cfg.mixed_precision,
            log_with=cfg.report_to or None,
            project_dir=str(self.run_dir),
        )
        refuse_sharded_training(self.accelerator.distributed_type)
        self._lock = self._claim_lock()  # before loading anything: a second run is refused at once
        if cfg.cpu_return_freed_memory and self.accelerator.device.type == "cpu":
            return_freed_memory()  # peak RSS tracks live tensors (orpo_kit.allocator)
        set_seed(cfg.seed)
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(cfg)
        self._prepare_data(train_pairs, eval_pairs)
        t0 = time.perf_counter()
        model = model if model is not None else load_model(cfg, self.tokenizer)
        self.phase_seconds: dict[str, list[float]] = {"load": [time.perf_counter() - t0]}  # wall time per phase
        guard_if_4bit(model)
        ckpt.check_free_space(self.run_dir, ckpt.estimate_checkpoint_bytes(model))
        optimizer = build_optimizer(model, cfg)
        warmup = cfg.warmup_steps or math.ceil(cfg.warmup_ratio * cfg.max_steps)
        self.scheduler = get_scheduler(
            cfg.lr_scheduler_type, optimizer, num_warmup_steps=warmup, num_training_steps=cfg.max_steps
        )
        # The scheduler stays unprepared: accelerate would step it once per process.
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        # sdpa / eager: prefix sharing; flash-attention (no 4D masks): packed rows; else plain rows
        self.layout = choose_layout(model, cfg.prefix_sharing, cfg.packing)
        # Which processes take part (rank order); recorded in every checkpoint's trainer_state.json.
        self.processes = gather_object([{"rank": self.accelerator.process_index, "pid": os.getpid()}])
        self.step = 0
        self.skipped_steps = 0  # updates dropped for a non-finite loss or gradient (see _skip_step)
        self.overflow_steps = 0  # fp16 updates the loss scaler dropped (not skipped steps: the scaler recovers)
        self._sigint = SigintHold()
        self._unlogged: dict[str, float] | None = None
        self._last_eval: tuple[int, dict[str, float]] = (-1, {})
        self._best_value: float | None = None
        self._order: BatchOrder | None = None

    def _prepare_data(self, train_pairs: list[PreferencePair] | None, eval_pairs: list[PreferencePair] | None) -> None:
        """Load (unless given), tokenize and check the data; print the report `orpo-kit inspect-data` prints."""
        cfg = self.cfg
        self.data_report = DataReport(source="pairs given in Python")
        loaded = train_pairs is None or eval_pairs is None
        if loaded:
            loaded_train, loaded_eval, self.data_report = load_train_eval(cfg)
            train_pairs = loaded_train if train_pairs is None else train_pairs
            eval_pairs = loaded_eval if eval_pairs is None else eval_pairs
        assert train_pairs is not None and eval_pairs is not None
        limits: dict[str, Any] = dict(
            max_length=cfg.max_length,
            max_prompt_length=cfg.max_prompt_length,
            min_completion_tokens=cfg.min_completion_tokens,
            report=self.data_report,
            policy=cfg.data_policy,
        )
        self.train_data = tokenize_pairs(self.tokenizer, train_pairs, **limits)
        self.eval_data = tokenize_pairs(
            self.tokenizer, eval_pairs, **{**limits, "report": self.data_report.eval_side or self.data_report}
        )
        eval_side = self.data_report.eval_side
        if (
            loaded or self.data_report.dropped or (eval_side and eval_side.dropped)
        ) and self.accelerator.is_main_process:
            skills = skill_counts(train_pairs + eval_pairs)
            inspection = DataInspection(self.data_report, len(self.train_data), len(self.eval_data), None, skills)
            print("\n".join(inspection.lines()))
        self._check_data_size()  # after the report, which explains what was dropped

    @property
    def global_batch_size(self) -> int:
        """Pairs per optimizer step over all processes and accumulation steps."""
        cfg = self.cfg
        return cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * self.accelerator.num_processes

    def _check_data_size(self) -> None:
        """Refuse too little data at once instead of failing mid-run."""
        if len(self.train_data) < self.global_batch_size:
            raise ValueError(
                f"{len(self.train_data)} training pairs are fewer than one optimizer step needs "
                f"({self.global_batch_size}); lower the batch size or add data"
            )
        if not self.eval_data:
            raise ValueError(
                "the eval split is empty (see what was dropped in the data report above); "
                "pass --eval-data or raise eval_fraction"
            )

    # ---- data order -------------------------------------------------------------------------------------
    def micro_batches(self, step: int) -> list[list[int]]:
        """This process's micro-batches (indices into train data) for an optimizer step (`BatchOrder`)."""
        if self._order is None:
            lengths = [pair_length(t) for t in self.train_data] if self.cfg.group_by_length else None
            self._order = BatchOrder(
                len(self.train_data),
                self.cfg.seed,
                self.cfg.per_device_train_batch_size,
                self.cfg.gradient_accumulation_steps,
                self.accelerator.num_processes,
                self.accelerator.process_index,
                lengths,
            )
        return self._order.micro_batches(step)

    def _collate(self, items: list[TokenizedPair]) -> PairBatch:
        """Padded tensors on this process's device."""
        return collate_onto(self.layout, items, self.tokenizer.pad_token_id, self.accelerator.device)

    # ---- one optimizer step -----------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        """Accumulate gradients over micro-batches, clip, update; return metrics averaged over the step.

        A non-finite loss or gradient on any process skips the update on every process (`_skip_step`); under
        fp16 a non-finite gradient from finite losses is an overflow, which the loss scaler handles.
        """
        self.model.train()
        micro = self.micro_batches(self.step)
        totals = torch.zeros(len(METRIC_NAMES), device=self.accelerator.device)
        bad_rows: list[str] = []
        for m, indices in enumerate(micro):
            batch = self._collate([self.train_data[i] for i in indices])
            sync = m == len(micro) - 1
            with contextlib.nullcontext() if sync else self.accelerator.no_sync(self.model):
                with self.accelerator.autocast():
                    loss, metrics = orpo_step(self.model, batch, self.cfg)
                for cb in self.callbacks:
                    loss = cb.on_loss(self, loss, m)
                if not torch.isfinite(loss):
                    bad_rows.extend(batch.origins)
                # Backward even on a bad loss: under DDP every process must join the gradient all-reduce.
                self.accelerator.backward(loss / len(micro))
            totals += torch.stack([metrics[k] for k in METRIC_NAMES]) / len(micro)
        params = [p for p in self.model.parameters() if p.requires_grad]
        grad_norm = self.accelerator.clip_grad_norm_(params, self.cfg.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        bad_loss, bad_grads = nonfinite_on_any_process(self.accelerator, bad_rows, grad_norm, params)
        scaler = self.accelerator.scaler  # fp16 only
        if bad_loss or (bad_grads and scaler is None):
            return self._skip_step(micro, bad_rows, lr)
        with self._sigint.hold():
            self.optimizer.step()  # under fp16 the scaler drops an overflowed update and lowers its scale
            self._step_schedule()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            self.overflow_steps += int(bad_grads)
        totals = self.accelerator.reduce(totals, reduction="mean")
        out: dict[str, float] = {k: v.item() for k, v in zip(METRIC_NAMES, totals, strict=True)}
        if not bad_grads:
            out["grad_norm"] = float(grad_norm)
        if scaler is not None:
            out.update(loss_scale=float(scaler.get_scale()), overflow_steps=self.overflow_steps)
        return {**out, "learning_rate": lr}

    def _step_schedule(self) -> None:
        """Move the LR schedule on by one step, also when the update was dropped (see `_skip_step`)."""
        with warnings.catch_warnings():
            # torch warns when the schedule moves before any optimizer.step(): here that is the intent
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
            self.scheduler.step()

    def _skip_step(self, micro: list[list[int]], bad_rows: list[str], lr: float) -> dict[str, float]:
        """Drop this step's update on every process, warn with the step and rows, or stop past the limit.

        A skipped step still counts: its batch is consumed and the LR schedule moves on, so the data order
        and the schedule stay pure functions of the step (resume and multi-process runs agree). Only the
        optimizer update (weights and Adam state) is dropped.
        """
        self.optimizer.zero_grad(set_to_none=True)
        if self.accelerator.scaler is not None:
            self.accelerator.scaler.update()  # unscale_ ran in clip_grad_norm_: the scaler expects its update
        step_rows = [self.train_data[i].origin for indices in micro for i in indices]
        reports = gather_object([(self.accelerator.process_index, bad_rows, step_rows)])
        message = nonfinite_message(self.step + 1, reports)
        if self.skipped_steps >= self.cfg.max_skipped_steps:
            raise FloatingPointError(
                f"{message}; {self.skipped_steps} step(s) already skipped "
                f"(max_skipped_steps={self.cfg.max_skipped_steps}): stopping"
            )
        with self._sigint.hold():
            self._step_schedule()
            self.step += 1
            self.skipped_steps += 1
        if self.accelerator.is_main_process:
            tqdm.write(
                f"orpo-kit: warning: {message}; update skipped ({self.skipped_steps} of at most "
                f"{self.cfg.max_skipped_steps})",
                file=sys.stderr,
            )
        return {"skipped_step": 1, "skipped_steps": self.skipped_steps, "learning_rate": lr}

    @torch.no_grad()
    def evaluate(self, data: list[TokenizedPair] | None = None, prefix: str = "eval_") -> dict[str, float]:
        """Metrics over the eval split (or other tokenized pairs), sharded over processes, prefixed."""
        n_proc, rank = self.accelerator.num_processes, self.accelerator.process_index
        shard = (self.eval_data if data is None else data)[rank::n_proc]
        sums = torch.zeros(len(METRIC_NAMES) + 1, device=self.accelerator.device)
        bs = self.cfg.per_device_eval_batch_size
        for _, batch in scoring_batches(self.model, shard, bs, self._collate, desc="evaluating"):
            with self.accelerator.autocast():
                _, metrics = orpo_step(self.model, batch, self.cfg)
            n = batch.num_pairs
            sums += torch.cat([torch.stack([metrics[k] for k in METRIC_NAMES]) * n, sums.new_tensor([n])])
        sums = self.accelerator.reduce(sums, reduction="sum")
        return {f"{prefix}{k}": (sums[i] / sums[-1]).item() for i, k in enumerate(METRIC_NAMES)}

    # ---- the loop -----------------------------------------------------------------------------------------
    def train(self, resume: bool = False, overwrite: bool = False) -> TrainResult:
        """Run to max_steps (or stop_at_step, or resume from the latest checkpoint).

        The run owns its output directory while it trains (a second run there is refused). Without `resume`, a
        directory that already holds a run is refused, or with `overwrite` that run is moved aside (never
        deleted). Ctrl-C (terminal or notebook) finishes or discards the current step, saves a checkpoint and
        returns.
        """
        self._answer_from_main(lambda: self._take_run_dir(resume, overwrite))  # a collective: every process calls
        if self._lock is not None:
            self._lock.training = True
        try:
            with self._sigint.stop_signals():
                return self._train(resume)
        finally:
            if self._lock is not None:
                self._lock.training = False
                self._lock.release()

    def _claim_lock(self) -> RunLock | None:
        """Main process: the run directory's lock (a second run there is refused at once); others: none."""
        lock = RunLock(self.run_dir) if self.accelerator.is_main_process else None
        self._answer_from_main(lock.acquire if lock is not None else None)
        return lock

    def _take_run_dir(self, resume: bool, overwrite: bool) -> None:
        """Main process: hold the lock (again, after an earlier train()), then refuse a fresh run over a run or,
        with `overwrite`, move the earlier run aside."""
        if self._lock is None:
            self._lock = RunLock(self.run_dir)
        if not self._lock.held:
            self._lock.acquire()
        moved = refuse_or_replace_earlier_run(self.run_dir, resume, overwrite)
        if moved is not None:
            print(f"--overwrite: the earlier run in {self.run_dir} was moved to {moved}")

    def _answer_from_main(self, action: Any) -> None:
        """Run `action` on the main process; every process raises if it failed (the same message everywhere)."""
        error = None
        if self.accelerator.is_main_process and action is not None:
            try:
                action()
            except OSError as exc:
                error = exc
        answer = gather_object([str(error) if error is not None else None])[0]
        if error is not None:
            raise error
        if answer is not None:  # not the main process: it refused
            raise RunDirBusy(answer)

    def _train(self, resume: bool) -> TrainResult:
        """The loop, once the run directory is this run's."""
        start = self._resume() if resume else 0
        self._start_logs(resumed=start > 0)
        for cb in self.callbacks:
            cb.on_train_begin(self)
        result = TrainResult(
            self.run_dir,
            start,
            False,
            ckpt.latest_checkpoint(self.run_dir),
            is_main_process=self.accelerator.is_main_process,
        )
        last_saved = start if result.last_checkpoint else -1
        end = min(self.cfg.max_steps, self.cfg.stop_at_step or self.cfg.max_steps)
        quiet = {} if self.accelerator.is_main_process else {"disable": True}  # main: TQDM_DISABLE still works
        bar = tqdm(total=end, initial=start, desc="ORPO", dynamic_ncols=True, **quiet)
        try:
            result.eval_before = self._eval_before(start)
            while self.step < end:
                self._run_one_step(end, result)
                for cb in self.callbacks:
                    cb.on_step_end(self)
                if self.step % self.cfg.save_steps == 0 or self.step == end:
                    with self._sigint.hold():
                        result.last_checkpoint, last_saved = self._timed("save", self.save), self.step
                bar.update(1)
                if "loss" in result.final_train:
                    bar.set_postfix(
                        loss=f"{result.final_train['loss']:.4f}", acc=f"{result.final_train['rewards/accuracies']:.2f}"
                    )
                self._sigint.raise_if_pending()
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM / SIGHUP (interrupts.Stopped)
            result.interrupted = True
            result.stop_signal = getattr(exc, "signum", signal.SIGINT)
            self.optimizer.zero_grad(set_to_none=True)
            with self._sigint.hold():  # a second signal does not cut the save short
                if last_saved != self.step and self.step > 0:
                    result.last_checkpoint = self._timed("save", self.save)
            if self.accelerator.is_main_process:
                tqdm.write(
                    f"orpo-kit: stopped by {signal_name(result.stop_signal)} after step {self.step}; "
                    + (
                        f"checkpoint {result.last_checkpoint}; continue with --resume"
                        if result.last_checkpoint
                        else "no step had finished, nothing to save"
                    ),
                    file=sys.stderr,
                )
            record, self._unlogged = self._unlogged, None
            if record is not None:
                self._log(record)  # the finished step's training record, so resumed logs have no gap
        finally:
            bar.close()
        result.steps = self.step
        result.phase_seconds = self.phase_seconds
        self._finish(result)
        return result

    def _run_one_step(self, end: int, result: TrainResult) -> None:
        """Train one step, then evaluate and log when due (`_unlogged` holds the record until it is written)."""
        t0 = time.perf_counter()
        record = self.train_step()
        record["step_time"] = time.perf_counter() - t0
        self.phase_seconds.setdefault("step", []).append(record["step_time"])
        if "loss" in record:  # a skipped step has no loss: keep the last trained step's record
            result.final_train = dict(record)
        self._unlogged = dict(record)
        is_last = self.step == end
        if self.step % self.cfg.eval_steps == 0 or is_last:
            record.update(self._timed("eval", self.evaluate))
            result.eval_after = {k: v for k, v in record.items() if k.startswith("eval_")}
            self._last_eval = (self.step, result.eval_after)
        due = self.step % self.cfg.logging_steps == 0 or is_last or "eval_loss" in record
        self._unlogged = None
        if due:
            self._log(record)

    def _timed(self, phase: str, action: Any) -> Any:
        """Run `action`, adding its wall time to the phase's list."""
        t0 = time.perf_counter()
        out = action()
        self.phase_seconds.setdefault(phase, []).append(time.perf_counter() - t0)
        return out

    def save(self) -> Path:
        """Write a checkpoint of the current step: every process hands over its RNG state, the main process
        alone writes; all wait for it."""
        self.accelerator.wait_for_everyone()
        check_replicas_agree(self.model, self.accelerator, self.step)
        path = ckpt.checkpoint_path(self.run_dir, self.step)
        rng_states = gather_object([ckpt.rng_state()])  # one per process, in process order
        if self.accelerator.is_main_process:
            state = {
                "config": self.cfg.to_dict(),
                "num_processes": self.accelerator.num_processes,
                "distributed_type": self.accelerator.distributed_type.name,  # NO, MULTI_CPU, MULTI_GPU
                "processes": self.processes,
                "saved_by_pid": os.getpid(),
                "skipped_steps": self.skipped_steps,
                "overflow_steps": self.overflow_steps,
            }
            if self.accelerator.scaler is not None:
                state["grad_scaler"] = self.accelerator.scaler.state_dict()
            path = ckpt.save_checkpoint(
                self.run_dir,
                self.step,
                self.accelerator.unwrap_model(self.model),
                self.tokenizer,
                self.optimizer,
                self.scheduler,
                state,
                keep_last=self.cfg.save_total_limit,
                rng_states=rng_states,
                after_weights=self._weights_written,
            )
            self._maybe_mark_best(path)
        self.accelerator.wait_for_everyone()
        return path

    def _weights_written(self, folder: Path) -> None:
        """Halfway through a checkpoint: the callbacks' event (tests stop or fail the process here)."""
        for cb in self.callbacks:
            cb.on_checkpoint_weights_written(self, folder)

    def _maybe_mark_best(self, path: Path) -> None:
        """Name this checkpoint best when the eval at its step beats every earlier one."""
        step, metrics = self._last_eval
        value = metrics.get(self.cfg.metric_for_best_model)
        if step == self.step and value is not None:
            self._best_value = ckpt.mark_if_best(
                self.run_dir,
                path,
                self.cfg.metric_for_best_model,
                value,
                bool(self.cfg.greater_is_better),
                self._best_value,
            )

    def _resume(self) -> int:
        """Load the latest checkpoint of the run directory; returns its step (0 when there is none)."""
        # the main process verifies and sets damaged checkpoints aside; every process loads the one it chose
        chosen = ckpt.verified_latest_checkpoint(self.run_dir) if self.accelerator.is_main_process else None
        name = gather_object([chosen.name if chosen is not None else None])[0]
        found = self.run_dir / ckpt.CHECKPOINTS / name if name is not None else None
        if found is None:
            if self.accelerator.is_main_process:
                print(f"--resume: no checkpoint in {self.run_dir / ckpt.CHECKPOINTS}; starting from step 0")
            return 0
        saved = json.loads((found / ckpt.STATE_FILE).read_text(encoding="utf-8"))
        notes = check_resume_config(saved.get("config", {}), self.cfg, int(saved["step"]), found)
        if notes and self.accelerator.is_main_process:
            print("--resume: changed settings: " + "; ".join(notes))
        ckpt.load_weights(self.accelerator.unwrap_model(self.model), found)
        state = ckpt.load_trainer_state(found, self.optimizer, self.scheduler, rank=self.accelerator.process_index)
        self.step = int(state["step"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.overflow_steps = int(state.get("overflow_steps", 0))
        if self.accelerator.scaler is not None and "grad_scaler" in state:
            self.accelerator.scaler.load_state_dict(state["grad_scaler"])
        if self.accelerator.is_main_process:
            print(f"resuming from {found} (step {self.step})")
        return self.step

    def _eval_before(self, start: int) -> dict[str, float]:
        """Step-0 eval for a fresh run; for a resumed run, the step-0 record already in metrics.jsonl."""
        if start == 0:
            before = self._timed("eval", self.evaluate)
            self._log({**before})
            return before
        for record in read_metrics(self.run_dir):
            if record.get("step") == 0 and "eval_loss" in record:
                return {k: v for k, v in record.items() if k.startswith("eval_")}
        return {}

    # ---- logs -----------------------------------------------------------------------------------------
    def _start_logs(self, resumed: bool) -> None:
        """Write config.yaml; on resume drop records past the checkpoint step; start trackers."""
        if self.accelerator.is_main_process:
            self.cfg.save_yaml(self.run_dir / CONFIG_FILE)
            restart_metrics(self.run_dir, keep_until=self.step if resumed else None)
        if self.cfg.report_to:
            flat = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in self.cfg.to_dict().items()}
            self.accelerator.init_trackers("orpo_kit", config=flat)

    def _log(self, record: dict[str, float]) -> None:
        """Append one record (with `step`) to metrics.jsonl and to trackers; main process only."""
        record = {"step": self.step, **record}
        if self.accelerator.is_main_process:
            append_metrics(self.run_dir, record)
            for cb in self.callbacks:
                cb.on_log(self, record)
        if self.cfg.report_to:
            self.accelerator.log({k: v for k, v in record.items() if k != "step"}, step=self.step)

    def _finish(self, result: TrainResult) -> None:
        """End trackers and tell callbacks."""
        if self.cfg.report_to:
            self.accelerator.end_training()
        for cb in self.callbacks:
            cb.on_train_end(self, result)


def train(
    cfg: ORPOConfig, resume: bool = False, callbacks: Sequence[TrainerCallback] = (), overwrite: bool = False
) -> TrainResult:
    """Build a Trainer from a config and run it."""
    return Trainer(cfg, callbacks=callbacks).train(resume=resume, overwrite=overwrite)
