"""What a hurried new user breaks, one test per defect (numbered as in the list of defects they come from)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orpo_kit.cli import main
from orpo_kit.config import ORPOConfig, resolve_config
from orpo_kit.data import DataSourceError, load_pairs, split_train_eval
from orpo_kit.runs import find_checkpoint
from orpo_kit.train import Trainer


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _rows(n: int, split=lambda i: None) -> list[dict]:
    rows = []
    for i in range(n):
        row = {"prompt": f"Question {i}?", "chosen": f"Good answer {i}.", "rejected": f"Bad answer {i}."}
        if split(i) is not None:
            row["split"] = split(i)
        rows.append(row)
    return rows


# 2: an empty --output-dir (an unset shell variable) is refused before anything is written
def test_2_an_empty_output_dir_is_refused(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--preset", "tiny", "--output-dir", ""]) == 2
    assert "output_dir='': must not be empty" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# 5: split labels in their common names, any case; a partly labelled file is an error naming a row
@pytest.mark.parametrize("eval_name", ["eval", "EVAL", "test", "validation", "Dev"])
def test_5_split_labels_are_read_in_their_common_names(tmp_path: Path, eval_name: str) -> None:
    path = _write(tmp_path / "p.jsonl", _rows(20, lambda i: eval_name if i % 4 == 0 else "Train"))
    train, evals = split_train_eval(load_pairs(path)[0], 0.1, 0)
    assert len(train) == 15 and {int(p.prompt.split()[1][:-1]) for p in evals} == {0, 4, 8, 12, 16}


def test_5_a_partly_labelled_file_is_an_error_naming_a_row(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.jsonl", _rows(20, lambda i: None if i == 7 else ("eval" if i < 4 else "train")))
    with pytest.raises(ValueError, match=r"1 of 20 pairs have no usable split label .*p\.jsonl, line 8: split None"):
        split_train_eval(load_pairs(path)[0], 0.1, 0)
    odd = _write(tmp_path / "q.jsonl", _rows(8, lambda i: "holdout" if i == 0 else "train"))
    with pytest.raises(ValueError, match=r"q\.jsonl, line 1: split 'holdout'"):
        split_train_eval(load_pairs(odd)[0], 0.1, 0)


# 8: a loss as the best-model metric means lower is better; an unknown metric name is refused
def test_8_the_best_model_direction_follows_the_metric_name() -> None:
    assert resolve_config("tiny", overrides={"metric_for_best_model": "eval_loss"}).greater_is_better is False
    assert resolve_config("tiny", overrides={"metric_for_best_model": "loss"}).greater_is_better is False
    assert ORPOConfig().greater_is_better is True  # eval_rewards/accuracies
    assert ORPOConfig(metric_for_best_model="eval_loss", greater_is_better=True).greater_is_better is True  # asked
    with pytest.raises(ValueError, match="metric_for_best_model='eval_accuracy': expected an eval metric"):
        ORPOConfig(metric_for_best_model="eval_accuracy")


def test_8_best_json_names_the_lowest_eval_loss(tmp_path: Path) -> None:
    from orpo_kit import checkpoint as ckpt
    from orpo_kit.train import read_metrics

    cfg = resolve_config(
        "tiny",
        overrides={
            "output_dir": str(tmp_path / "run"),
            "max_steps": 6,
            "save_steps": 2,
            "eval_steps": 2,
            "max_eval_pairs": 8,
            "device": "cpu",
            "metric_for_best_model": "eval_loss",
        },
    )
    Trainer(cfg).train()
    losses = {r["step"]: r["eval_loss"] for r in read_metrics(tmp_path / "run") if "eval_loss" in r and r["step"]}
    best = json.loads((tmp_path / "run" / "checkpoints" / ckpt.BEST_FILE).read_text())
    assert best["value"] == min(losses.values()) and best["checkpoint"] == f"step-{min(losses, key=losses.get):06d}"


# 14: invalid YAML names the file and the line
def test_14_invalid_yaml_names_the_file_and_line(tmp_path: Path, capsys) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("learning_rate: 1e-3\nlora_target_modules: [q_proj\n")
    assert main(["train", "--preset", "tiny", "--config", str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"orpo-kit train: error: {recipe}, line ") and "not valid YAML" in err and "\n" not in err
    assert main(["train", "--preset", "tiny", "lora_target_modules=[q_proj"]) == 2
    assert "lora_target_modules='[q_proj': expected a list such as [a, b]" in capsys.readouterr().err


# 15: a path that looks local is never sent to the hub; upper-case extensions are files too
def test_15_a_missing_local_file_is_named_not_looked_up_on_the_hub(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("mydata.txt", "data/sub/pairs", "./pairs", "mydata.jsonl"):
        with pytest.raises(DataSourceError, match=r"preference data not found: |unsupported file type"):
            load_pairs(name)
    upper = _write(tmp_path / "PAIRS.JSONL", _rows(3))
    assert len(load_pairs(upper)[0]) == 3


def test_15_key_value_before_a_flag_is_accepted(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--preset",
                "tiny",
                "device=cpu",
                "--output-dir",
                str(run),
                "--max-steps",
                "1",
                "eval_steps=1",
                "max_eval_pairs=4",
            ]
        )
        == 0
    )
    assert (run / "checkpoints" / "step-000001").is_dir()


# 17: negative sizes, impossible sampling settings, and a checkpoint named inside the run
def test_17_negative_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="max_train_pairs=-5: must be at least 1"):
        ORPOConfig(max_train_pairs=-5)
    with pytest.raises(ValueError, match=r"eval_fraction=-0.1: must be in \(0, 1\)"):
        ORPOConfig(eval_fraction=-0.1)


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--top-p", "5"], "--top-p 5: must be in (0, 1]"),
        (["--temperature", "-1"], "--temperature -1: must be at least 0"),
    ],
)
def test_17_generate_refuses_impossible_sampling_settings(tmp_path: Path, capsys, flags, message) -> None:
    assert main(["generate", str(tmp_path), *flags]) == 2
    assert message in capsys.readouterr().err


def test_17_a_checkpoint_is_looked_up_by_name_inside_the_run(tmp_path: Path) -> None:
    folder = tmp_path / "run" / "checkpoints" / "step-000002"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text("{}")
    assert find_checkpoint(tmp_path / "run", "step-000002") == folder
