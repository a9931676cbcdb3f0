"""What a hurried new user breaks, one test per defect (numbered as in the list of defects they come from)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orpo_kit import checkpoint as ckpt
from orpo_kit.cli import main
from orpo_kit.config import ORPOConfig, resolve_config
from orpo_kit.data import DataSourceError, load_pairs, split_train_eval
from orpo_kit.faults import STOP_AT
from orpo_kit.manifest import verify_checkpoint
from orpo_kit.runs import find_checkpoint
from orpo_kit.train import Trainer, read_metrics

ORPO_KIT = str(Path(sys.executable).with_name("orpo-kit"))  # the console script a user types
TINY = ["--preset", "tiny", "device=cpu", "max_eval_pairs=8", "eval_steps=50"]
TIMEOUT = 180


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


def _env(**extra: str) -> dict[str, str]:
    """Offline, one thread, unbuffered, no test faults unless given."""
    env = {k: v for k, v in os.environ.items() if k not in (STOP_AT, "ORPO_KIT_TEST_NAN_AT")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TQDM_DISABLE="1", PYTHONUNBUFFERED="1", **extra)
    return env


def _orpo_kit(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """A real `orpo-kit` process, as typed in a shell."""
    return subprocess.run([ORPO_KIT, *args], cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=TIMEOUT)


def _tiny_run(run: Path, steps: int = 2, **overrides) -> Path:
    """A finished tiny run (in this process: quick), to hand to the commands under test."""
    cfg = {"output_dir": str(run), "max_steps": steps, "eval_steps": steps, "max_eval_pairs": 8, "device": "cpu"}
    Trainer(resolve_config("tiny", overrides={**cfg, **overrides})).train()
    return run


# 1: merge never overwrites a folder's files: refused, or with --overwrite the old contents are moved aside
def test_1_merge_into_a_non_empty_folder_is_refused_and_overwrite_keeps_the_old_files(tmp_path: Path) -> None:
    run = _tiny_run(tmp_path / "run", use_lora=True)
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("mine")
    (out / "config.json").write_text("{}")
    refused = _orpo_kit("merge", str(run), str(out), cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert f"orpo-kit merge: error: {out} is not empty (README.md, config.json)" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert (out / "README.md").read_text() == "mine" and sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.json",
    ]
    done = _orpo_kit("merge", str(run), str(out), "--overwrite", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (aside,) = tmp_path.glob("out.replaced-*")
    assert (aside / "README.md").read_text() == "mine" and (aside / "config.json").read_text() == "{}"
    assert (out / "model.safetensors").is_file() and "mine" not in (out / "README.md").read_text()
    assert not list(tmp_path.glob(".out.partial-*"))


# 2: the current folder (or one above it) is no run folder; an empty --output-dir is refused
@pytest.mark.parametrize("where", [".", "..", "./"])
def test_2_the_current_folder_is_refused_as_output_dir(tmp_path: Path, where: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "config.yaml").write_text("mine: true\n")
    (work / "metrics.jsonl").write_text('{"mine": 1}\n')
    done = _orpo_kit("train", *TINY, "--output-dir", where, "--max-steps", "1", cwd=work)
    assert done.returncode == 2, done.stderr
    assert f"orpo-kit train: error: output_dir={where!r} is " in done.stderr and "runs/my-run" in done.stderr
    assert "Traceback" not in done.stderr
    assert (work / "config.yaml").read_text() == "mine: true\n"
    assert sorted(p.name for p in work.iterdir()) == ["config.yaml", "metrics.jsonl"]


def test_2_an_empty_output_dir_from_an_unset_variable_is_refused(tmp_path: Path) -> None:
    done = _orpo_kit("train", *TINY, "--output-dir", "", cwd=tmp_path)
    assert done.returncode == 2 and "output_dir='': must not be empty" in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []


# 3: SIGTERM and SIGHUP stop a run like Ctrl-C: the step finishes, a checkpoint is saved, exit 128 + signal
def _wait_stopped(proc: subprocess.Popen) -> None:
    """Until the process has stopped itself (SIGSTOP) at the fault point."""
    deadline = time.time() + TIMEOUT
    while time.time() < deadline and proc.poll() is None:
        if Path(f"/proc/{proc.pid}/stat").read_text().split(")")[-1].split()[0] == "T":
            return
        time.sleep(0.1)
    raise AssertionError(f"never reached the fault point: {proc.communicate()[1][-2000:]}")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
@pytest.mark.parametrize("point,sig", [("step", signal.SIGTERM), ("save", signal.SIGTERM), ("step", signal.SIGHUP)])
def test_3_sigterm_and_sighup_save_a_checkpoint_and_exit_with_128_plus_the_signal(
    tmp_path: Path, point: str, sig: int
) -> None:
    run = tmp_path / "run"
    args = ["train", *TINY, "--output-dir", str(run), "--max-steps", "4", "save_steps=2", "logging_steps=1"]
    proc = subprocess.Popen(
        [ORPO_KIT, *args],
        cwd=tmp_path,
        env=_env(**{STOP_AT: f"{point}:2"}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_stopped(proc)
    os.kill(proc.pid, sig)  # what `timeout`, SLURM, Docker or a closed terminal send
    os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 128 + sig, err[-2000:]
    name = signal.Signals(sig).name
    assert f"stopped by {name} after step 2; checkpoint {ckpt.checkpoint_path(run, 2)}; continue with --resume" in err
    assert "Traceback" not in err and "interrupted at step 2" in out
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step-000002"]
    assert verify_checkpoint(ckpt.checkpoint_path(run, 2)) == []
    if point == "save":
        return
    resumed = _orpo_kit(*args, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [r["step"] for r in read_metrics(run) if "loss" in r] == [1, 2, 3, 4]


# 4: pruning never deletes the checkpoint just written (nor the best), whatever numbers lie beside it
def test_4_pruning_keeps_the_checkpoint_just_written(tmp_path: Path) -> None:
    run = _tiny_run(tmp_path / "run", steps=2)
    for step in (200, 400, 600):  # checkpoints with higher numbers than this run's
        ckpt.checkpoint_path(run, 2).parent.joinpath(f"step-{step:06d}").mkdir()
        (ckpt.checkpoint_path(run, step) / ckpt.STATE_FILE).write_text("{}")
    trainer = Trainer(
        resolve_config("tiny", overrides={"output_dir": str(run), "max_steps": 4, "device": "cpu", "eval_steps": 9})
    )
    trainer.step = 4
    written = trainer.save()
    assert written == ckpt.checkpoint_path(run, 4) and written.is_dir()
    assert verify_checkpoint(written) == []


def test_4_a_fresh_run_over_old_checkpoints_is_refused_and_deletes_nothing(tmp_path: Path) -> None:
    run = _tiny_run(tmp_path / "run", steps=2)
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    done = _orpo_kit("train", *TINY, "--output-dir", str(run), "--max-steps", "4", cwd=tmp_path)
    assert done.returncode == 2 and "already holds a run (checkpoints step-000002)" in done.stderr, done.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before


# 13: a folder named orpo_kit in the current folder (a checkout, a tracker's log folder) shadows nothing
def test_13_a_folder_named_orpo_kit_in_the_current_folder_does_not_break_train(tmp_path: Path) -> None:
    (tmp_path / "orpo_kit").mkdir()  # what report_to=[tensorboard] writes into a run directory
    (tmp_path / "orpo_kit" / "events.out.tfevents.1").write_text("")
    (tmp_path / "orpo_kit" / "__init__.py").write_text("")  # or a package of that name: an old copy, a checkout
    done = _orpo_kit("train", *TINY, "--output-dir", "run", "--max-steps", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "C heap        : lean" in done.stdout and (tmp_path / "run" / "checkpoints" / "step-000001").is_dir()


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


# 6: --resume refuses settings the saved state depends on, allows the safe ones, and config.yaml stays true
def test_6_resume_refuses_changed_settings_and_names_each(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = _tiny_run(tmp_path / "run", steps=2, max_steps=4, stop_at_step=2, logging_steps=1)
    written = (run / "config.yaml").read_text()
    base = ["train", "--resume", "--output-dir", str(run)]
    capsys.readouterr()
    assert main([*base, "learning_rate=0.1", "seed=7", "per_device_train_batch_size=2"]) == 2
    (err,) = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert err.startswith(f"orpo-kit train: error: --resume: {ckpt.checkpoint_path(run, 2)} was trained with other")
    for name in ("learning_rate=0.003 -> 0.1", "seed=42 -> 7", "per_device_train_batch_size=8 -> 2"):
        assert name in err, err
    assert (run / "config.yaml").read_text() == written
    assert main([*base, "--max-steps", "1", "stop_at_step=null"]) == 2
    assert "max_steps=1 is below the checkpoint's step 2" in capsys.readouterr().err
    assert (run / "config.yaml").read_text() == written
    # safe changes: more steps and eval settings; the run's own config is the base (no --preset needed)
    assert main([*base, "--max-steps", "5", "eval_steps=5", "stop_at_step=null"]) == 0
    out = capsys.readouterr().out
    assert "--resume: changed settings: " in out and "max_steps: 4 -> 5" in out and "eval_steps: 2 -> 5" in out
    saved = resolve_config(None, run / "config.yaml")
    assert (saved.max_steps, saved.eval_steps, saved.model_name_or_path) == (5, 5, "tiny")
    assert [r["step"] for r in read_metrics(run) if "loss" in r] == [1, 2, 3, 4, 5]


# 9: a run's data is found from any folder: config.yaml holds absolute paths of local files
def test_9_eval_and_generate_find_the_runs_data_from_another_folder(tmp_path: Path, capsys, monkeypatch) -> None:
    work, other = tmp_path / "work", tmp_path / "other"
    work.mkdir()
    other.mkdir()
    _write(work / "pairs.jsonl", _rows(40, lambda i: "eval" if i < 8 else "train"))
    _write(other / "pairs.jsonl", [{**r, "prompt": "Impostor " + r["prompt"]} for r in _rows(40)])
    monkeypatch.chdir(work)
    _tiny_run(Path("run"), data="pairs.jsonl")
    assert resolve_config(None, work / "run" / "config.yaml").data == str(work / "pairs.jsonl")
    monkeypatch.chdir(other)
    assert main(["generate", str(work / "run"), "--max-new-tokens", "2", "--checkpoint", "latest"]) == 0
    out = capsys.readouterr().out
    assert "### Question 0?" in out and "Impostor" not in out
    assert main(["eval", str(work / "run"), "--no-generate", "--max-pairs", "4", "--checkpoint", "latest"]) == 0


# 11: generate and eval give the model the prompt's messages (system, earlier turns) as training did
def _dialogue_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        prompt = [
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": f"Count to {i}."},
            {"role": "assistant", "content": "Un, deux."},
            {"role": "user", "content": "Again?"},
        ]
        rows.append(
            {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": f"Un {i}."}],
                "rejected": [{"role": "assistant", "content": f"One {i}."}],
                "split": "eval" if i < 4 else "train",
            }
        )
    return rows


def test_11_generate_and_eval_keep_system_and_earlier_turns(tmp_path: Path, capsys, monkeypatch) -> None:
    data = _write(tmp_path / "dialogues.jsonl", _dialogue_rows(24))
    run = _tiny_run(tmp_path / "run", data=str(data))
    seen: list[list[dict]] = []
    from orpo_kit.runs import load_run

    tokenizer_class = type(load_run(run, "latest").tokenizer)
    original = tokenizer_class.apply_chat_template

    def spy(self, conversation, *args, **kwargs):
        seen.append(conversation)
        return original(self, conversation, *args, **kwargs)

    monkeypatch.setattr(tokenizer_class, "apply_chat_template", spy)
    assert main(["generate", str(run), "--max-new-tokens", "1", "--checkpoint", "latest"]) == 0
    assert main(["eval", str(run), "--max-pairs", "2", "--max-new-tokens", "1", "--checkpoint", "latest"]) == 0
    chats = [c for c in seen if isinstance(c, list) and c and isinstance(c[0], dict)]  # batched calls: lists of chats
    asked = [c for c in chats if c[-1]["role"] == "user"]
    assert asked and all([m["role"] for m in c] == ["system", "user", "assistant", "user"] for c in asked)
    assert not any("system: " in m["content"] for c in asked for m in c)


# 17: eval shows a base row for a full fine-tune too (the model the run started from)
def test_17_eval_of_a_full_fine_tune_has_a_base_row(tmp_path: Path, capsys) -> None:
    run = _tiny_run(tmp_path / "full")
    capsys.readouterr()
    assert main(["eval", str(run), "--no-generate", "--max-pairs", "4", "--checkpoint", "latest"]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith("full:")]
    assert rows == ["full:base", "full:tuned"]


# 12: with --eval-data each side's report counts its own rows; the leak check ignores case and whitespace
def test_12_eval_data_has_its_own_counts_and_a_normalised_leak_check(tmp_path: Path) -> None:
    from orpo_kit.data.stats import DataInspection
    from orpo_kit.train_data import load_train_eval

    train = _write(tmp_path / "train.jsonl", _rows(40))
    evals = [{"prompt": f"Eval question {i}?", "chosen": f"Yes {i}.", "rejected": f"No {i}."} for i in range(10)]
    evals[0]["rejected"] = evals[0]["chosen"]  # identical answers: dropped on the eval side
    evals[1]["rejected"] = evals[1]["chosen"]
    evals[2]["prompt"] = "  question 3?  "  # Question 3? of training, typed otherwise
    evals[3]["prompt"] = "QUESTION\t4?"
    evals_path = _write(tmp_path / "eval.jsonl", evals)
    cfg = resolve_config("tiny", overrides={"data": str(train), "eval_data": str(evals_path)})
    train_pairs, eval_pairs, report = load_train_eval(cfg)
    assert (len(train_pairs), len(eval_pairs)) == (40, 6)
    lines = DataInspection(report, len(train_pairs), len(eval_pairs), None, {}).lines()
    assert "rows read: 40, pairs kept: 40, dropped: 0" in lines, lines
    assert any("rows read: 10, pairs kept: 6, dropped: 4" in line for line in lines), lines
    assert any("dropped 2 x eval_overlap" in line for line in lines), lines
    assert any("dropped 2 x identical" in line for line in lines), lines
