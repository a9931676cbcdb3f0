"""The run configuration: one dataclass holding every knob, YAML in/out, presets by name, KEY=VALUE overrides."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .config_values import ConfigError, above, at_least, between, convert, not_empty, one_of
from .loss import METRIC_NAMES, NLL_TOKEN_CHOICES

ALIASES = {"beta": "orpo_lambda"}  # TRL's name for lambda
# transformers' scheduler names (checked against transformers itself when a name is not among these)
TRACKERS = ("all", "aim", "tensorboard", "wandb", "trackio", "comet_ml", "mlflow", "clearml", "dvclive", "swanlab")
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
)


LOCAL_PATH_FIELDS = ("model_name_or_path", "tokenizer_name_or_path", "data", "eval_data")  # may name local files


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
    random_weights: bool = False  # the model's architecture with seeded random weights: full-shape checks, no download
    # LoRA (off: full fine-tuning)
    use_lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: str | list[str] = "all-linear"
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
    data_policy: str | dict[str, str] = (
        "default"  # default | raise | drop | {kind: raise|drop|keep}; orpo_kit.data.PROBLEMS
    )
    max_bad_row_fraction: float = 0.05  # default policy: refuse a file with more malformed rows than this share
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
    logps_chunk_size: int = 256  # positions per lm_head chunk: [256, V] logits at a time (never the whole [T, V])
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
    greater_is_better: bool | None = None  # None: from the metric's name, as transformers (a loss: lower is better)
    output_dir: str = "runs/orpo"
    report_to: list[str] = field(default_factory=list)  # e.g. ["tensorboard"], ["wandb"]
    # Runtime
    seed: int = 42
    device: str = "auto"  # auto: CUDA, then Apple MPS, then CPU
    mixed_precision: str = "no"  # no | bf16 | fp16
    cpu_return_freed_memory: bool = False  # CPU (glibc): large freed blocks go back to the OS: less memory, slower

    def __post_init__(self) -> None:
        """Convert every value to its field's type (text as typed: '3e-4', 'true', '[a, b]'), then check ranges."""
        hints = field_types()
        for f in dataclasses.fields(self):
            setattr(self, f.name, convert(f.name, getattr(self, f.name), hints[f.name]))
        for name, check in FIELD_CHECKS.items():
            problem = check(getattr(self, name))
            if problem:
                raise ConfigError(name, getattr(self, name), problem)
        self._check_together()

    def _check_together(self) -> None:
        """Rules that tie two fields together, and choices that need another module."""
        self.report_to = [] if self.report_to == ["none"] else self.report_to  # transformers' spelling of "no tracker"
        unknown = [t for t in self.report_to if t not in TRACKERS]
        if unknown:
            raise ConfigError(
                "report_to",
                self.report_to,
                f"unknown tracker {unknown[0]!r}; expected a list of {', '.join(TRACKERS)} (or none)",
            )
        if not self.metric_for_best_model.startswith("eval_"):  # transformers' rule: eval metrics carry the prefix
            self.metric_for_best_model = f"eval_{self.metric_for_best_model}"
        if self.metric_for_best_model.removeprefix("eval_") not in METRIC_NAMES:
            raise ConfigError(
                "metric_for_best_model",
                self.metric_for_best_model,
                f"expected an eval metric: {', '.join('eval_' + m for m in METRIC_NAMES)}",
            )
        if self.greater_is_better is None:
            self.greater_is_better = not self.metric_for_best_model.endswith("loss")
        if self.max_prompt_length >= self.max_length:
            raise ConfigError(
                "max_prompt_length",
                self.max_prompt_length,
                f"must be smaller than max_length ({self.max_length}) to leave room for the answers",
            )
        if self.min_completion_tokens >= self.max_length:
            raise ConfigError(
                "min_completion_tokens",
                self.min_completion_tokens,
                f"must be smaller than max_length ({self.max_length})",
            )
        if self.stop_at_step is not None and self.stop_at_step > self.max_steps:
            raise ConfigError("stop_at_step", self.stop_at_step, f"must be at most max_steps ({self.max_steps})")
        if self.lr_scheduler_type not in SCHEDULERS and not _transformers_knows_scheduler(self.lr_scheduler_type):
            raise ConfigError("lr_scheduler_type", self.lr_scheduler_type, f"expected one of {', '.join(SCHEDULERS)}")
        from .data.formats import FORMATS
        from .data.validate import resolve_policy

        if self.data_format not in ("auto", *FORMATS):
            raise ConfigError("data_format", self.data_format, f"expected one of auto, {', '.join(FORMATS)}")
        if self.column_map is not None and not set(self.column_map) <= {"prompt", "chosen", "rejected"}:
            raise ConfigError("column_map", self.column_map, "keys must be among prompt, chosen, rejected")
        try:
            resolve_policy(self.data_policy)
        except ValueError:
            raise ConfigError(
                "data_policy",
                self.data_policy,
                "expected default, raise, drop or a mapping {kind: raise|drop|keep} (kinds: orpo_kit.data.PROBLEMS)",
            ) from None

    def replace(self, **changes: Any) -> ORPOConfig:
        """A copy with some fields changed (aliases such as beta accepted)."""
        return dataclasses.replace(self, **_canonical(changes, source="arguments"))

    def with_absolute_paths(self) -> ORPOConfig:
        """A copy whose local model, tokenizer and data paths are absolute: a run's config.yaml then means the
        same files from any folder (eval, generate and --resume run from elsewhere)."""
        changes: dict[str, Any] = {}
        for name in LOCAL_PATH_FIELDS:
            value = getattr(self, name)
            if isinstance(value, str) and value not in ("tiny", "builtin") and Path(value).expanduser().exists():
                changes[name] = str(Path(value).expanduser().resolve())
        return dataclasses.replace(self, **changes) if changes else self

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


_FIELD_TYPES: dict[str, Any] = {}


def field_types() -> dict[str, Any]:
    """Each ORPOConfig field's declared type (resolved once)."""
    if not _FIELD_TYPES:
        _FIELD_TYPES.update(typing.get_type_hints(ORPOConfig))
    return _FIELD_TYPES


def _transformers_knows_scheduler(name: str) -> bool:
    """Whether a scheduler name outside SCHEDULERS is one this transformers version has."""
    from transformers.trainer_utils import SchedulerType

    return name in {s.value for s in SchedulerType}


POSITIVE_INTS = (
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "gradient_accumulation_steps",
    "max_steps",
    "eval_steps",
    "logging_steps",
    "save_steps",
    "save_total_limit",
    "max_prompt_length",
    "min_completion_tokens",
    "lora_r",
    "logps_chunk_size",
    "max_train_pairs",
    "max_eval_pairs",
    "stop_at_step",
)
FIELD_CHECKS = {
    **{name: at_least(1) for name in POSITIVE_INTS},
    "max_length": at_least(2),
    "max_skipped_steps": at_least(0),
    "warmup_steps": at_least(0),
    "lora_alpha": above(0),
    "lora_dropout": between(0, 1, high_open=True),
    "warmup_ratio": between(0, 1),
    "max_bad_row_fraction": between(0, 1),
    "eval_fraction": between(0, 1, low_open=True, high_open=True),
    "learning_rate": above(0),
    "weight_decay": at_least(0),
    "adam_beta1": between(0, 1, high_open=True),
    "adam_beta2": between(0, 1, high_open=True),
    "adam_epsilon": above(0),
    "max_grad_norm": above(0),
    "orpo_lambda": at_least(0),
    "seed": between(0, 2**32 - 1),
    "nll_tokens": one_of(*NLL_TOKEN_CHOICES),
    "device": one_of("auto", "cpu", "cuda", "mps"),
    "mixed_precision": one_of("no", "bf16", "fp16"),
    "bnb_4bit_quant_type": one_of("nf4", "fp4"),
    "bnb_4bit_compute_dtype": one_of("bfloat16", "float16", "float32"),
    "model_name_or_path": not_empty,
    "data": not_empty,
    "attn_implementation": not_empty,
    "output_dir": not_empty,
}


def _read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from a file, with the file named in every error."""
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{path}{where}: not valid YAML ({problem})") from None
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
        try:
            out[key] = convert(key, value, field_types()[key])
        except ConfigError as exc:
            raise ConfigError(key, value, f"{exc.expected} (from {source})") from None
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


def parse_overrides(items: list[str], source: str = "the command line") -> dict[str, Any]:
    """KEY=VALUE strings to a dict, each value converted to its field's type ('3e-4' -> 0.0003)."""
    raw: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} is not KEY=VALUE (e.g. learning_rate=3e-4)")
        raw[key.strip().replace("-", "_")] = value
    return _canonical(raw, source=source)


def resolve_config(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    overrides_source: str = "overrides",
) -> ORPOConfig:
    """Defaults, then the preset, then the YAML file, then overrides: later wins.

    A preset's `max_prompt_length` that no longer fits a smaller `max_length` given later follows it down to
    half of it (the presets' own ratio); a `max_prompt_length` you give yourself is checked, never changed.
    Other `data` than the preset's drops the preset's `eval_data` and splits, which name parts of its data.
    """
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    sources = [
        (f"preset {preset}", _read_yaml(preset_path(preset)) if preset else {}),
        (str(config_file), _read_yaml(Path(config_file)) if config_file else {}),
        (overrides_source, overrides or {}),
    ]
    for source, given in sources:
        for key, value in _canonical(given, source=source).items():
            values[key], origin[key] = value, source
    fields = {f.name: f.default for f in dataclasses.fields(ORPOConfig)}
    max_length = values.get("max_length", fields["max_length"])
    if (
        origin.get("max_prompt_length", "default") in ("default", f"preset {preset}")
        and values.get("max_prompt_length", fields["max_prompt_length"]) >= max_length
    ):
        values["max_prompt_length"] = max(1, max_length // 2)
    preset_origin = f"preset {preset}"
    if origin.get("data", preset_origin) != preset_origin:  # other data: the preset's eval set belongs to its data
        for key in ("eval_data", "eval_data_split", "data_split"):
            if origin.get(key) == preset_origin:
                values.pop(key)
    try:
        return ORPOConfig(**values)
    except ConfigError as exc:
        if exc.key in origin:
            raise ConfigError(exc.key, exc.value, f"{exc.expected} (from {origin[exc.key]})") from None
        raise
