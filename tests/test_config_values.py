"""Config values as people type them: every field converts text to its type, and refuses what cannot be used.

The table below has one row per ORPOConfig field; a test fails when a field is added without a row, so a new
knob cannot skip these checks.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from orpo_kit.cli import main
from orpo_kit.config import ORPOConfig, parse_overrides, resolve_config
from orpo_kit.config_values import ConfigError

# field: (valid text as typed on a command line, the value it must become, invalid text or None).
# None: every text is valid for that free-text field; its invalid value is a YAML boolean instead (below).
CASES: dict[str, tuple[str, object, str | None]] = {
    "model_name_or_path": ("tiny", "tiny", ""),
    "tokenizer_name_or_path": ("null", None, None),
    "model_config_overrides": (
        "{hidden_size: 128, num_hidden_layers: 2}",
        {"hidden_size": 128, "num_hidden_layers": 2},
        "[1, 2]",
    ),
    "trust_remote_code": ("False", False, "maybe"),
    "allow_pickle_weights": ("no", False, "2"),
    "random_weights": ("yes", True, "sometimes"),
    "attn_implementation": ("eager", "eager", ""),
    "use_lora": ("TRUE", True, "yes please"),
    "lora_r": ("8", 8, "8.5"),
    "lora_alpha": ("16", 16, "0"),
    "lora_dropout": ("0.05", 0.05, "1"),
    "lora_target_modules": ("[q_proj, v_proj]", ["q_proj", "v_proj"], "[q_proj"),
    "gradient_checkpointing": ("on", True, "sometimes"),
    "load_in_4bit": ("off", False, "4"),
    "bnb_4bit_quant_type": ("fp4", "fp4", "int4"),
    "bnb_4bit_use_double_quant": ("1", True, "double"),
    "bnb_4bit_compute_dtype": ("float16", "float16", "fp16"),
    "data": ("pairs.jsonl", "pairs.jsonl", ""),
    "eval_data": ("", None, None),
    "eval_fraction": (".2", 0.2, "1.5"),
    "data_format": ("implicit", "implicit", "xml"),
    "column_map": (
        "{prompt: question, chosen: response_j}",
        {"prompt": "question", "chosen": "response_j"},
        "{answer: x}",
    ),
    "data_policy": ("{bad_order: raise}", {"bad_order": "raise"}, "strict"),
    "max_bad_row_fraction": ("0.2", 0.2, "20%"),
    "data_split": ("train_prefs", "train_prefs", None),
    "eval_data_split": ("None", None, None),
    "min_score_margin": ("1e-3", 0.001, "a lot"),
    "min_completion_tokens": ("4", 4, "0"),
    "max_train_pairs": ("1_000", 1000, "-5"),
    "max_eval_pairs": ("null", None, "ten"),
    "max_length": ("1e3", 1000, "1"),
    "max_prompt_length": ("32", 32, "5000"),
    "orpo_lambda": ("0.5", 0.5, "abc"),
    "nll_tokens": ("prompt_and_response", "prompt_and_response", "all"),
    "prefix_sharing": ("false", False, "nope"),
    "chunked_logps": ("true", True, "chunked"),
    "logps_chunk_size": ("128", 128, "0"),
    "group_by_length": ("yes", True, "by length"),
    "packing": ("no", False, "packed"),
    "fused_swiglu": ("true", True, "fast"),
    "learning_rate": ("3e-4", 3e-4, "-1e-3"),
    "weight_decay": ("0.01", 0.01, "-0.1"),
    "adam_beta1": ("0.8", 0.8, "1"),
    "adam_beta2": ("0.95", 0.95, "1.5"),
    "adam_epsilon": ("1E-6", 1e-6, "0"),
    "max_grad_norm": ("0.5", 0.5, "nan"),
    "max_skipped_steps": ("0", 0, "-1"),
    "lr_scheduler_type": ("cosine", "cosine", "cosinus"),
    "warmup_steps": ("10", 10, "1.5"),
    "warmup_ratio": ("0.1", 0.1, "2"),
    "per_device_train_batch_size": ("2", 2, "0"),
    "per_device_eval_batch_size": ("16", 16, "many"),
    "gradient_accumulation_steps": ("4", 4, "0"),
    "max_steps": ("3", 3, "abc"),
    "stop_at_step": ("2", 2, "500"),
    "eval_steps": ("5", 5, "0"),
    "logging_steps": ("1", 1, "-1"),
    "save_steps": ("10", 10, "0.5"),
    "save_total_limit": ("2", 2, "0"),
    "metric_for_best_model": ("loss", "eval_loss", "eval_accuracy"),
    "greater_is_better": ("false", False, "higher"),
    "output_dir": ("runs/x", "runs/x", ""),
    "report_to": ("tensorboard,wandb", ["tensorboard", "wandb"], "tensorbored"),
    "seed": ("7", 7, "-1"),
    "device": ("cpu", "cpu", "tpu"),
    "mixed_precision": ("bf16", "bf16", "fp8"),
    "cpu_return_freed_memory": ("true", True, "always"),
}


def test_every_field_has_a_case() -> None:
    assert set(CASES) == {f.name for f in dataclasses.fields(ORPOConfig)}


@pytest.mark.parametrize("key", sorted(CASES))
def test_valid_text_becomes_the_fields_type(key: str) -> None:
    text, expected, _ = CASES[key]
    cfg = resolve_config("tiny", overrides=parse_overrides([f"{key}={text}"]))
    assert getattr(cfg, key) == expected and type(getattr(cfg, key)) is type(expected)
    # the same value in a YAML file and in Python gives the same config
    assert getattr(ORPOConfig(**{**dataclasses.asdict(resolve_config("tiny")), key: text}), key) == getattr(cfg, key)


@pytest.mark.parametrize("key", sorted(k for k, case in CASES.items() if case[2] is not None))
def test_invalid_text_is_one_line_naming_key_and_value_with_exit_code_2(key: str, tmp_path: Path, capsys) -> None:
    bad = CASES[key][2]
    assert main(["train", "--preset", "tiny", "--output-dir", str(tmp_path / "run"), f"{key}={bad}"]) == 2
    assert not (tmp_path / "run").exists(), "refused before anything is written"
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith(f"orpo-kit train: error: {key}=") and "from the command line" in err, err


@pytest.mark.parametrize("key", sorted(k for k, case in CASES.items() if case[2] is None))
def test_free_text_fields_refuse_a_yaml_boolean(key: str, tmp_path: Path, capsys) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"{key}: yes\n")
    assert main(["train", "--preset", "tiny", "--config", str(recipe), "--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"orpo-kit train: error: {key}=True: expected text (put quotes around it in YAML) (from {recipe})"


def test_yaml_1_1_exponents_are_floats_in_files(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("learning_rate: 1e-3\nadam_epsilon: 1e-8\nmin_score_margin: 5e-1\n")
    cfg = resolve_config("tiny", recipe)
    assert (cfg.learning_rate, cfg.adam_epsilon, cfg.min_score_margin) == (1e-3, 1e-8, 0.5)


def test_python_values_are_converted_and_checked_too() -> None:
    assert ORPOConfig(learning_rate="3e-4", max_steps="10", use_lora="true").learning_rate == 3e-4
    with pytest.raises(ConfigError, match=r"^warmup_ratio=2.0: must be in \[0, 1\]$"):
        ORPOConfig(warmup_ratio=2)
    with pytest.raises(ConfigError, match=r"^max_steps=True: expected a whole number"):
        ORPOConfig(max_steps=True)


def test_errors_name_the_source_that_set_the_value(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("warmup_ratio: 3\n")
    with pytest.raises(ConfigError, match=rf"^warmup_ratio=3.0: must be in \[0, 1\] \(from {recipe}\)$"):
        resolve_config("tiny", recipe)


def test_flags_then_key_value_later_wins(tmp_path: Path) -> None:
    """The README's order: preset < --config < flags < KEY=VALUE."""
    from orpo_kit.cli import build_parser

    recipe = tmp_path / "r.yaml"
    recipe.write_text("max_steps: 7\nlearning_rate: 1e-4\n")
    args = build_parser().parse_args(
        [
            "train",
            "--preset",
            "tiny",
            "--config",
            str(recipe),
            "--max-steps",
            "5",
            "--output-dir",
            "a",
            "max_steps=3",
            "output_dir=b",
        ]
    )
    flags = [f"{k}={getattr(args, k)}" for k in ("max_steps", "output_dir")]
    cfg = resolve_config(args.preset, args.config, parse_overrides(flags + args.overrides))
    assert (cfg.max_steps, cfg.output_dir, cfg.learning_rate) == (3, "b", 1e-4)
    cfg = resolve_config("tiny", recipe, parse_overrides(["max_steps=5"]))  # a flag alone beats the file
    assert cfg.max_steps == 5


def test_a_presets_prompt_limit_follows_a_smaller_max_length_but_a_given_one_is_checked() -> None:
    cfg = resolve_config("mistral-7b-qlora", overrides=parse_overrides(["max_length=128"]))
    assert (cfg.max_length, cfg.max_prompt_length) == (128, 64)
    with pytest.raises(ConfigError, match=r"^max_prompt_length=128: must be smaller than max_length \(128\)"):
        resolve_config("tiny", overrides=parse_overrides(["max_length=128", "max_prompt_length=128"]))


def test_the_console_script_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    """A real process: what the user sees in the terminal."""
    for bad in ("learning_rate=abc", "warmup_ratio=2", "max_steps=abc"):
        done = subprocess.run(
            [sys.executable, "-m", "orpo_kit", "train", "--preset", "tiny", "--output-dir", str(tmp_path / "r"), bad],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, done.stderr
        lines = [ln for ln in done.stderr.splitlines() if ln.startswith("orpo-kit")]
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert lines[0].startswith(f"orpo-kit train: error: {bad.split('=')[0]}="), lines
        assert not (tmp_path / "r").exists(), "nothing is written before the config is valid"
