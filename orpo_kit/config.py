"""The run configuration: one dataclass holding every knob, YAML in/out, presets by name, KEY=VALUE overrides."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .loss import NLL_TOKEN_CHOICES

ALIASES = {"beta": "orpo_lambda"}  # TRL's name for lambda


@dataclass
class ORPOConfig:
    """Every knob of an orpo_kit run, with the field's usual names (TRL / transformers where they exist)."""

    # Model
    model_name_or_path: str = "tiny"  # "tiny" (random Mistral built from a config), a local dir or a hub name
    tokenizer_name_or_path: str | None = None  # None: same as the model ("tiny": the tokenizer in the package)
    model_config_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {hidden_size: 128} for "tiny"
    trust_remote_code: bool = False  # never run a repository's Python unless asked
    allow_pickle_weights: bool = False  # load .bin/.pt (pickle) weights only when asked; safetensors always
    attn_implementation: str = "sdpa"
    # LoRA (off: full fine-tuning)
    use_lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: Any = "all-linear"
    gradient_checkpointing: bool = False
    # 4-bit QLoRA (bitsandbytes NF4); implies LoRA
    load_in_4bit: bool = False
    bnb_4bit_quant_type: str = "nf4"
    bnb_4bit_use_double_quant: bool = True
    bnb_4bit_compute_dtype: str = "bfloat16"  # bfloat16 | float16 | float32
    # Data
    data: str = "builtin"  # "builtin", a .jsonl / .json / .parquet / .csv file, or a hub dataset name
    eval_data: str | None = None  # None: the data's own eval split, else a seeded held-out fraction
    eval_fraction: float = 0.1
    data_format: str = "auto"  # auto | standard | conversational | implicit | mapped
    column_map: dict[str, str] | None = None  # e.g. {prompt: question, chosen: response_j, rejected: response_k}
    data_policy: Any = "default"  # default | raise | drop | {kind: raise|drop}; see orpo_kit.data.PROBLEMS
    data_split: str | None = None  # split of a hub dataset / DatasetDict (default: train_prefs or train)
    eval_data_split: str | None = None  # e.g. test_prefs
    min_score_margin: float | None = None  # drop pairs whose score_chosen - score_rejected is smaller
    min_completion_tokens: int = 8  # long prompts are cut from the left so completions keep this many tokens
    max_train_pairs: int | None = None  # keep the first N training pairs (smoke runs)
    max_eval_pairs: int | None = None
    max_length: int = 512  # prompt + completion tokens
    max_prompt_length: int = 256  # longer prompts keep their end
    # ORPO
    orpo_lambda: float = 0.1  # weight of the odds-ratio term; paper 0.1 (Mistral); TRL calls it beta
    nll_tokens: str = "response"  # "response" (the paper) or "prompt_and_response" (TRL's ORPOTrainer)
    # Speed and memory (each switchable; all give the same log-probs as the plain path)
    prefix_sharing: bool = True  # one row per pair, [prompt][chosen][rejected]: each prompt computed once
    chunked_logps: bool = True  # log-probs from hidden states in chunks, never the full [B, T, V] logits
    logps_chunk_size: int = 256  # positions per lm_head chunk (recomputed in backward): [256, V] logits at a time
    group_by_length: bool = False  # batch pairs of similar length together (less padding)
    packing: bool = True  # flash-attention (no 4D masks, so no prefix sharing): a batch's sequences in one unpadded row
    fused_swiglu: bool = True  # SwiGLU MLPs keep gate and up for backward, not the SiLU output too (same values)
    # Optimisation
    learning_rate: float = 8e-6
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    max_skipped_steps: int = 3  # steps with a non-finite loss/gradient skipped (with a warning) before stopping
    lr_scheduler_type: str = "linear"  # any transformers.get_scheduler name
    warmup_steps: int = 0
    warmup_ratio: float = 0.0  # used when warmup_steps == 0
    per_device_train_batch_size: int = 4
    per_device_eval_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_steps: int = 100  # optimizer steps (the LR schedule's length)
    stop_at_step: int | None = None  # end early at this step with a checkpoint; the schedule still uses max_steps
    # Evaluation, logging, checkpoints
    eval_steps: int = 50  # also evaluates before the first step and at the end
    logging_steps: int = 1
    save_steps: int = 50
    save_total_limit: int = 3  # the newest K checkpoints are kept (and the best one), like transformers
    metric_for_best_model: str = "eval_rewards/accuracies"  # names checkpoints/best.json
    greater_is_better: bool = True
    output_dir: str = "runs/orpo"
    report_to: list[str] = field(default_factory=list)  # e.g. ["tensorboard"], ["wandb"]
    # Runtime
    seed: int = 42
    device: str = "auto"  # auto: CUDA, then Apple MPS, then CPU
    mixed_precision: str = "no"  # no | bf16 | fp16
    cpu_return_freed_memory: bool = False  # CPU (glibc): large freed blocks go back to the OS: less memory, slower

    def __post_init__(self) -> None:
        """Check values whose mistakes would only show up later."""
        if self.nll_tokens not in NLL_TOKEN_CHOICES:
            raise ValueError(f"nll_tokens must be one of {NLL_TOKEN_CHOICES}, got {self.nll_tokens!r}")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                     "max_steps", "eval_steps", "logging_steps", "save_steps", "save_total_limit"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_length", "max_prompt_length", "min_completion_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_skipped_steps < 0:
            raise ValueError(f"max_skipped_steps must be >= 0, got {self.max_skipped_steps}")
        if self.stop_at_step is not None and self.stop_at_step < 1:
            raise ValueError(f"stop_at_step must be at least 1 (or unset), got {self.stop_at_step}")
        if self.orpo_lambda < 0:
            raise ValueError(f"orpo_lambda must be >= 0, got {self.orpo_lambda}")
        if self.device not in ("auto", "cpu", "cuda", "mps"):
            raise ValueError(f"device must be auto, cpu, cuda or mps, got {self.device!r}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}")

    def replace(self, **changes: Any) -> ORPOConfig:
        """A copy with some fields changed (aliases such as beta accepted)."""
        return dataclasses.replace(self, **_canonical(changes, source="arguments"))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, ready for YAML or a tracker."""
        return dataclasses.asdict(self)

    def save_yaml(self, path: str | Path) -> None:
        """Write the resolved config (what the run really used)."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")

    @classmethod
    def from_yaml(cls, path: str | Path) -> ORPOConfig:
        """Load a YAML recipe; unknown keys are an error that names the file."""
        return cls(**_canonical(_read_yaml(Path(path)), source=str(path)))


def _read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from a file, with the file named in every error."""
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def _canonical(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Map aliases to field names and reject unknown keys with a suggestion."""
    names = [f.name for f in dataclasses.fields(ORPOConfig)]
    out: dict[str, Any] = {}
    for key, value in values.items():
        key = ALIASES.get(key, key)
        if key not in names:
            hint = difflib.get_close_matches(key, names + list(ALIASES), n=1)
            raise ValueError(f"{source}: unknown config key {key!r}" + (f"; did you mean {hint[0]!r}?" if hint else ""))
        if key in out:
            raise ValueError(f"{source}: {key!r} given twice (directly and through an alias)")
        out[key] = value
    return out


def preset_names() -> list[str]:
    """Names of the presets shipped in orpo_kit/presets."""
    return sorted(p.name[:-5] for p in resources.files("orpo_kit.presets").iterdir() if p.name.endswith(".yaml"))


def preset_path(name: str) -> Path:
    """Path of a shipped preset YAML, with the list of presets in the error."""
    path = Path(str(resources.files("orpo_kit.presets") / f"{name}.yaml"))
    if not path.is_file():
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(preset_names())}")
    return path


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """KEY=VALUE strings to a dict; values parsed as YAML (numbers, booleans, lists)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not KEY=VALUE")
        out[key.strip().replace("-", "_")] = yaml.safe_load(raw) if raw != "" else None
    return out


def resolve_config(
    preset: str | None = None, config_file: str | Path | None = None, overrides: dict[str, Any] | None = None,
) -> ORPOConfig:
    """Defaults, then the preset, then the YAML file, then overrides: later wins."""
    values: dict[str, Any] = {}
    if preset:
        values.update(_canonical(_read_yaml(preset_path(preset)), source=f"preset {preset}"))
    if config_file:
        values.update(_canonical(_read_yaml(Path(config_file)), source=str(config_file)))
    values.update(_canonical(overrides or {}, source="overrides"))
    return ORPOConfig(**values)
