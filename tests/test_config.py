"""The config: presets, YAML, aliases, overrides and clear errors."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from orpo_kit.config import ORPOConfig, parse_overrides, preset_names, resolve_config


def test_later_sources_win(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("orpo_lambda: 0.3\nmax_steps: 7\n")
    cfg = resolve_config("tiny", recipe, {"max_steps": 9})
    assert (cfg.orpo_lambda, cfg.max_steps, cfg.model_name_or_path) == (0.3, 9, "tiny")


def test_beta_is_an_alias_for_orpo_lambda() -> None:
    assert resolve_config(overrides={"beta": 0.25}).orpo_lambda == 0.25
    assert ORPOConfig().replace(beta=0.5).orpo_lambda == 0.5


def test_unknown_key_names_the_source_and_suggests(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("learning_rat: 1e-4\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: unknown config key 'learning_rat'; did you mean 'learning_rate'"):
        resolve_config(config_file=recipe)


def test_overrides_parse_as_yaml() -> None:
    assert parse_overrides(["use_lora=true", "lora_r=8", "report_to=[tensorboard]", "eval_data="]) == {
        "use_lora": True,
        "lora_r": 8,
        "report_to": ["tensorboard"],
        "eval_data": None,
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_overrides(["oops"])


def test_yaml_round_trip(tmp_path: Path) -> None:
    cfg = resolve_config("tiny", overrides={"orpo_lambda": 0.7})
    cfg.save_yaml(tmp_path / "c.yaml")
    assert ORPOConfig.from_yaml(tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize("bad", [{"nll_tokens": "all"}, {"max_steps": 0}, {"orpo_lambda": -1}, {"device": "tpu"}])
def test_bad_values_fail_at_once(bad: dict) -> None:
    with pytest.raises(ValueError):
        ORPOConfig(**bad)


def test_presets_are_listed_and_unknown_ones_named() -> None:
    assert "tiny" in preset_names()
    with pytest.raises(ValueError, match="unknown preset 'nope'; available: .*tiny"):
        resolve_config("nope")


def test_the_mistral_preset_quotes_the_official_recipe_and_sources_its_lora_values() -> None:
    text = (resources.files("orpo_kit.presets") / "mistral-7b-qlora.yaml").read_text(encoding="utf-8")
    header = " ".join(line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#"))
    official = header[header.index("run_mistral_orpo_beta.sh") :][:300]
    for fact in ("full FT", "lr 5e-6", "inverse_sqrt", "warm-up 200", "5 epochs", "= 32", "1792", "2048", "cleaned"):
        assert fact in official, f"the official Mistral-ORPO-beta recipe is quoted without {fact!r}: {official}"
    sources = ("paper", "repo", "authors", "TRL", "axolotl", "labonne", "Unsloth")
    for key in ("learning_rate", "lr_scheduler_type", "warmup_steps", "lora_r", "lora_alpha", "lora_dropout"):
        line = next(row for row in text.splitlines() if row.startswith(f"{key}:"))
        assert any(name in line.partition("#")[2] for name in sources), f"{key}: no source named: {line}"
