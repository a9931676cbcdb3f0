"""Use a finished run: load it back in one call, chat with it (base vs tuned), merge LoRA into full weights."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from . import checkpoint as ckpt
from .config import ORPOConfig
from .manifest import verify_checkpoint
from .models.safety import check_weight_files
from .run_dir import aside_path
from .train import CONFIG_FILE


@dataclass
class LoadedRun:
    """A trained model with its tokenizer and the config it was trained with."""

    model: Any
    tokenizer: Any
    cfg: ORPOConfig
    checkpoint: Path

    @property
    def is_adapter(self) -> bool:
        """Whether the weights are a LoRA adapter over a base model."""
        return (self.checkpoint / "model" / "adapter_model.safetensors").is_file()


def find_checkpoint(run_dir: str | Path, which: str = "best") -> Path:
    """'best' (falls back to the newest), 'latest', or a checkpoint folder."""
    if which not in ("best", "latest"):
        path = Path(which)
        if not path.is_dir() and (Path(run_dir) / ckpt.CHECKPOINTS / which).is_dir():
            path = Path(run_dir) / ckpt.CHECKPOINTS / which  # a checkpoint's name, looked up inside the run
        if not (path / ckpt.STATE_FILE).is_file():
            raise FileNotFoundError(f"{path} is not a complete orpo_kit checkpoint")
        return path
    found = (ckpt.best_checkpoint(run_dir) if which == "best" else None) or ckpt.latest_checkpoint(run_dir)
    if found is None:
        raise FileNotFoundError(f"no complete checkpoint in {Path(run_dir) / ckpt.CHECKPOINTS}")
    return found


def _base_model(cfg: ORPOConfig, tokenizer: Any, dtype: torch.dtype | None = None) -> Any:
    """The run's base model without LoRA: 4-bit as trained, or, when `dtype` is given, the original
    full-precision weights in that dtype (what a merge should start from)."""
    from .models.load import load_base_model

    base_cfg = cfg.replace(
        use_lora=False, gradient_checkpointing=False, load_in_4bit=cfg.load_in_4bit and dtype is None
    )
    model, _ = load_base_model(base_cfg, tokenizer)
    return cast(Any, model).to(dtype) if dtype is not None else model


def load_run(run_dir: str | Path, checkpoint: str = "best", dtype: torch.dtype | None = None) -> LoadedRun:
    """Load a run's model (adapter over its base, or full weights), tokenizer and config in one call."""
    from peft import PeftModel

    run_dir = Path(run_dir)
    cfg = ORPOConfig.from_yaml(run_dir / CONFIG_FILE)
    path = find_checkpoint(run_dir, checkpoint)
    weights = path / "model"
    check_weight_files(weights, cfg.allow_pickle_weights, what="checkpoint")
    problems = verify_checkpoint(path)
    if problems:
        raise ValueError(
            f"checkpoint {path} is damaged: {'; '.join(problems)} (`orpo-kit verify {run_dir}` checks "
            "every checkpoint; --resume moves damaged ones aside and uses the newest good one)"
        )
    tokenizer = AutoTokenizer.from_pretrained(weights)
    model: Any
    if (weights / "adapter_config.json").is_file():
        from .models.load import quiet_peft

        with quiet_peft():
            model = PeftModel.from_pretrained(_base_model(cfg, tokenizer, dtype), weights)
    else:
        model = AutoModelForCausalLM.from_pretrained(weights, dtype=dtype or torch.float32, use_safetensors=True)
    model.eval()
    return LoadedRun(model, tokenizer, cfg, path)


Prompt = str | list[dict[str, str]]  # a user message, or messages (system, earlier turns) as the data holds them


def as_messages(prompt: Prompt) -> list[dict[str, str]]:
    """Chat messages of a prompt: a string is one user message; messages are used as they are."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def shown(prompt: Prompt) -> str:
    """A prompt as text for a table or a printout (each message on a line of its own, with its role)."""
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1 and prompt[0]["role"] == "user":
        return prompt[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
) -> list[str]:
    """Answers to prompts through the chat template, as training saw them (system message and earlier turns
    included), greedy at temperature 0, one at a time."""
    answers = []
    device = next(model.parameters()).device
    for prompt in prompts:
        ids = tokenizer.apply_chat_template(
            as_messages(prompt), add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"].to(device)
        torch.manual_seed(seed)
        sampling = (
            dict(do_sample=True, temperature=temperature, top_p=top_p) if temperature > 0 else dict(do_sample=False)
        )
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **sampling,
        )
        answers.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip())
    return answers


def side_by_side(run: LoadedRun, prompts: Sequence[Prompt], **kwargs: Any) -> list[dict[str, str]]:
    """Base and tuned answers to the same prompts (the base is the adapter switched off, or a fresh base)."""
    tuned = generate(run.model, run.tokenizer, prompts, **kwargs)
    if run.is_adapter:
        with run.model.disable_adapter():
            base = generate(run.model, run.tokenizer, prompts, **kwargs)
    else:
        base = generate(_base_model(run.cfg, run.tokenizer).eval(), run.tokenizer, prompts, **kwargs)
    return [{"prompt": shown(p), "base": b, "tuned": t} for p, b, t in zip(prompts, base, tuned, strict=True)]


MODEL_CARD = """---
library_name: transformers
tags: [orpo, orpo_kit]
---
# {name}

Fine-tuned with ORPO (odds ratio preference optimization) by orpo_kit from `{base}`.

- checkpoint: `{checkpoint}`, lambda (orpo_lambda) = {lam}, NLL over {nll}
- LoRA r = {r}, alpha = {alpha}, merged into the weights ({dtype})
- data: `{data}`

Load with plain transformers: `AutoModelForCausalLM.from_pretrained("{name}")`; the chat template is included.
"""


def merge_run(
    run_dir: str | Path,
    out_dir: str | Path,
    checkpoint: str = "best",
    dtype: torch.dtype = torch.float32,
    overwrite: bool = False,
) -> Path:
    """Merge a LoRA run into full weights and save safetensors, tokenizer, chat template and a model card,
    loadable by plain transformers. A QLoRA run merges into the original full-precision base weights in
    `dtype` (not the 4-bit rounding it trained on), as is usual for QLoRA merges.

    A folder that already holds files is refused, or with `overwrite` moved aside to <out>.replaced-<time>
    once the merged model is complete: files the merge did not write are never touched.
    """
    out = Path(out_dir)
    refuse_a_filled_folder(out, overwrite)
    run = load_run(run_dir, checkpoint, dtype=dtype)
    if not run.is_adapter:
        raise ValueError(f"{run.checkpoint} holds full weights already; nothing to merge")
    merged = run.model.merge_and_unload()
    tmp = partial_folder(out)
    try:
        merged.save_pretrained(tmp, safe_serialization=True)
        run.tokenizer.save_pretrained(tmp)
        _write_model_card(tmp, out.name, run, dtype)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return put_in_place(tmp, out)


def partial_folder(out: Path) -> Path:
    """An empty hidden folder beside `out` where its new contents are written before they replace it."""
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def put_in_place(tmp: Path, out: Path) -> Path:
    """Move a finished folder to `out`; what `out` held (--overwrite) goes to <out>.replaced-<time>."""
    if out.is_dir() and any(out.iterdir()):
        print(f"--overwrite: the earlier contents of {out} were moved to {_renamed_aside(out)}")
    elif out.is_dir():
        out.rmdir()
    os.replace(tmp, out)
    return out


def refuse_a_filled_folder(out: Path, overwrite: bool) -> None:
    """A merge or export goes into a new or empty folder, unless the user asked to replace what is there."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file, not a folder: pick another output folder for the merged model")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        names = sorted(p.name for p in out.iterdir())
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        raise FileExistsError(
            f"{out} is not empty ({shown}): pick a new folder, or pass --overwrite (Python: overwrite=True), "
            f"which moves what is there to {out.name}.replaced-<time> beside it instead of deleting it"
        )


def _renamed_aside(folder: Path) -> Path:
    """Rename a folder to a free <folder>.replaced-<time> beside it, keeping everything in it."""
    target = aside_path(folder)
    folder.rename(target)
    return target


def _write_model_card(folder: Path, name: str, run: LoadedRun, dtype: torch.dtype) -> None:
    """README.md of a merged model: where it came from and how it was trained."""
    cfg = run.cfg
    (folder / "README.md").write_text(
        MODEL_CARD.format(
            name=name,
            base=cfg.model_name_or_path,
            checkpoint=run.checkpoint.name,
            lam=cfg.orpo_lambda,
            nll=cfg.nll_tokens,
            r=cfg.lora_r,
            alpha=cfg.lora_alpha,
            dtype=str(dtype).replace("torch.", ""),
            data=cfg.data,
        ),
        encoding="utf-8",
    )


def _eval_model(
    model: Any, tokenizer: Any, pairs: list, tokenized: list, max_new_tokens: int, with_generation: bool
) -> dict[str, Any]:
    """Reward accuracy (overall, per skill) and, optionally, per-skill checks of greedy answers, each with n,
    standard error and 95% interval (`generation` keeps the plain shares, `generation_stats` the rest)."""
    from .evaluate import generation_stats, reward_accuracy, score_pairs

    result: dict[str, Any] = {
        "reward_accuracy": reward_accuracy(score_pairs(model, tokenized, tokenizer.pad_token_id, pairs=pairs))
    }
    if with_generation:
        answers = generate(model, tokenizer, [p.prompt_messages for p in pairs], max_new_tokens=max_new_tokens)
        stats = generation_stats(answers, pairs)
        result["generation"] = stats["per_skill"]
        result["generation_stats"] = stats
    return result


def evaluate_run(
    run_dir: str | Path,
    checkpoint: str = "best",
    max_pairs: int | None = None,
    with_generation: bool = True,
    include_base: bool = True,
    max_new_tokens: int = 48,
) -> dict[str, Any]:
    """Held-out reward accuracy and generation checks per skill, for the tuned model and (optionally) its base."""
    from .data import tokenize_pairs
    from .train import load_train_eval

    run = load_run(run_dir, checkpoint)
    cfg = run.cfg
    evals = load_train_eval(cfg.replace(max_eval_pairs=max_pairs or cfg.max_eval_pairs))[1]
    tokenized = tokenize_pairs(run.tokenizer, evals, cfg.max_length, cfg.max_prompt_length, cfg.min_completion_tokens)
    out = {
        "run": str(run_dir),
        "checkpoint": run.checkpoint.name,
        "n_pairs": len(evals),
        "tuned": _eval_model(run.model, run.tokenizer, evals, tokenized, max_new_tokens, with_generation),
    }
    if include_base and run.is_adapter:
        with run.model.disable_adapter():
            out["base"] = _eval_model(run.model, run.tokenizer, evals, tokenized, max_new_tokens, with_generation)
    elif include_base:  # a full fine-tune: the base is the model it started from
        base = _base_model(cfg, run.tokenizer).eval()
        out["base"] = _eval_model(base, run.tokenizer, evals, tokenized, max_new_tokens, with_generation)
    return out


def results_table(results: list[dict[str, Any]]) -> list[str]:
    """Text table: one row per model (base, then each run), one column per skill and 'all', then the number of
    held-out pairs behind each column."""
    rows: list[tuple[str, dict[str, float], dict[str, float]]] = []
    counts: dict[str, int] = {}  # pairs per skill, from the first model (every model sees the same pairs)
    for res in results:
        for which in ("base", "tuned"):
            if which in res:
                name = f"{Path(res['run']).name}:{which}"
                acc = res[which]["reward_accuracy"]
                gen = res[which].get("generation", {})
                rows.append((name, {"all": acc["all"], **acc.get("per_skill", {})}, gen))
                counts = counts or {"all": acc.get("n", 0), **acc.get("n_per_skill", {})}
    skills = sorted({k for _, acc, _ in rows for k in acc if k != "all"})
    lines = [
        "reward accuracy (held-out pairs) | generation checks",
        f"{'model':28s} {'all':>6s} " + " ".join(f"{s:>{_width(s)}s}" for s in skills),
    ]
    for name, acc, gen in rows:
        cells = " ".join(f"{_result_cell(acc, gen, s):>{_width(s)}s}" for s in skills)
        lines.append(f"{name[:28]:28s} {acc['all']:>6.3f} {cells}")
    if counts:
        cells = " ".join(f"{counts.get(s, 0):>{_width(s)}d}" for s in skills)
        lines.append(f"{'n (pairs)':28s} {counts.get('all', 0):>6d} {cells}")
    return lines


def _width(skill: str) -> int:
    """Column width of a skill in the results table: its whole name, at least 11 characters."""
    return max(11, len(skill))


def _result_cell(acc: dict[str, float], gen: dict[str, float], skill: str) -> str:
    """'0.95|0.80': reward accuracy | generation check of one skill ('  -  ' when not generated)."""
    check = f"{gen[skill]:<5.2f}" if skill in gen else "  -  "
    return f"{acc.get(skill, float('nan')):>5.2f}|{check}"


def _share_cell(stats: dict[str, Any] | None, skill: str) -> str:
    """'0.85 ±0.08' (share and standard error) of one skill, or '-' when it was not measured."""
    if not stats or skill not in stats.get("per_skill", {}):
        return f"{'-':^11s}"
    return f"{stats['per_skill'][skill]:.2f} ±{stats['se_per_skill'][skill]:.2f}"


def _degenerate_note(tables: list[dict[str, Any] | None]) -> list[str]:
    """A footer for shares of exactly 0 or 1, whose standard error is 0: their 95% Wilson interval instead."""
    from .evaluate import wilson_interval

    found: dict[int, set[float]] = {}
    for table in filter(None, tables):
        for skill, p in table["per_skill"].items():
            if p in (0.0, 1.0) and skill != "all":
                found.setdefault(table["n_per_skill"][skill], set()).add(p)
    if not found:
        return []
    lines = ["± is 0 at 0.00 and 1.00; read the 95% Wilson interval there instead:"]
    for n in sorted(found):
        spans = [
            f"{p:.2f} -> [{lo:.2f}, {hi:.2f}]"
            for p in sorted(found[n])
            for lo, hi in [wilson_interval(round(p * n), n)]
        ]
        lines.append(f"  n = {n}: " + ", ".join(spans))
    return lines


def skill_comparison_table(result: dict[str, Any]) -> list[str]:
    """Per-skill rows of one `evaluate_run` result: n, then base and tuned reward accuracy and generation check,
    each as share ± binomial standard error sqrt(p(1-p)/n), so small-n differences are read as noisy."""
    from .evaluate import with_overall

    models = [w for w in ("base", "tuned") if w in result]
    acc = {w: with_overall(result[w]["reward_accuracy"]) for w in models}
    gen = {w: with_overall(result[w].get("generation_stats")) for w in models}
    skills = sorted({k for w in models for k in (acc[w] or {}).get("per_skill", {}) if k != "all"}) + ["all"]
    head = " ".join(f"{w:>11s}" for w in models)
    lines = [
        "held-out pairs per skill: share ± standard error (binomial, sqrt(p(1-p)/n))",
        f"{'':14s} {'':>4s}  {'reward accuracy':^{12 * len(models)}s}  {'generation check':^{12 * len(models)}s}",
        f"{'skill':14s} {'n':>4s}  {head}  {head}",
    ]
    for skill in skills:
        n = next((a["n_per_skill"][skill] for a in acc.values() if a and skill in a["n_per_skill"]), 0)
        cells = [_share_cell(acc[w], skill) for w in models] + [_share_cell(gen[w], skill) for w in models]
        lines.append(
            f"{skill[:14]:14s} {n:>4d}  " + " ".join(cells[: len(models)]) + "  " + " ".join(cells[len(models) :])
        )
        gen_n = next((g["n_per_skill"].get(skill) for g in gen.values() if g), None)
        if gen_n is not None and gen_n != n:
            lines[-1] += f"  (generation n = {gen_n})"
    if not any(gen.values()):
        lines.append("generation checks not run (with_generation=False)")
    return lines + _degenerate_note([*acc.values(), *gen.values()])
