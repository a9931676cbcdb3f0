"""orpo_kit.experiments (λ comparisons, simulated interrupts) and orpo_kit.viz.dashboard (live and comparison
figures, memory readings), on the tiny preset."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from matplotlib.figure import Figure

from orpo_kit.config import resolve_config
from orpo_kit.experiments import (
    InterruptAtStep,
    RecordCollector,
    compare_lambdas,
    eval_records,
    format_logps_summary,
    lambda_run_dir,
    logps_summary,
    skill_pairs,
    train_records,
)
from orpo_kit.train import Trainer, read_metrics
from orpo_kit.viz import dashboard
from orpo_kit.viz.dashboard import (
    PANELS,
    LiveDashboard,
    dashboard_series,
    memory_used,
    plot_lambda_sweep,
    plot_logps_over_training,
    plot_training,
    process_rss_bytes,
)


def tiny_cfg(tmp_path: Path, **overrides):
    base = {
        "output_dir": str(tmp_path / "runs"),
        "max_steps": 4,
        "logging_steps": 1,
        "eval_steps": 2,
        "save_steps": 100,
        "max_eval_pairs": 8,
        "warmup_steps": 0,
    }
    return resolve_config("tiny", overrides={**base, **overrides})


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, dict[float, list[dict]]]:
    root = tmp_path_factory.mktemp("sweep")
    return root, compare_lambdas(tiny_cfg(root), lambdas=(0.0, 1.0), eval_every=2, skills=["instructions"])


def test_compare_lambdas_returns_every_logged_record_per_lambda(sweep) -> None:
    root, results = sweep
    assert list(results) == [0.0, 1.0]
    for lam, records in results.items():
        run = lambda_run_dir(root / "runs", lam)
        assert records == read_metrics(run)  # exactly what the trainer logged
        assert yaml.safe_load((run / "config.yaml").read_text())["orpo_lambda"] == lam
        assert [r["step"] for r in eval_records(records)] == [0, 2, 4]
        assert [r["step"] for r in train_records(records)] == [1, 2, 3, 4]
        assert all("eval_logps/chosen" in r and "eval_logps/rejected" in r for r in eval_records(records))
    # Same initial weights and eval pairs: the evaluation before training is identical for every λ.
    before = [eval_records(results[lam])[0] for lam in (0.0, 1.0)]
    for key in ("eval_logps/chosen", "eval_logps/rejected", "eval_nll_loss", "eval_rewards/accuracies"):
        assert before[0][key] == before[1][key]
    # λ changes the updates: by step 4 the runs differ.
    assert results[0.0][-1]["eval_logps/rejected"] != results[1.0][-1]["eval_logps/rejected"]


def test_compare_lambdas_rejects_repeated_lambdas(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="distinct"):
        compare_lambdas(tiny_cfg(tmp_path), lambdas=(1.0, 1.0))


def test_skill_pairs_keeps_only_the_named_skills_then_applies_limits(tmp_path: Path) -> None:
    train, evals = skill_pairs(tiny_cfg(tmp_path, max_eval_pairs=5), ["instructions"])
    assert {p.skill for p in train} == {"instructions"} and {p.skill for p in evals} == {"instructions"}
    assert len(evals) == 5 and len(train) == 192
    all_train, _ = skill_pairs(tiny_cfg(tmp_path))
    assert len({p.skill for p in all_train}) == 6
    with pytest.raises(ValueError, match="not in builtin"):
        skill_pairs(tiny_cfg(tmp_path), ["poetry"])


def test_logps_summary_reads_first_and_last_evaluation(sweep) -> None:
    _, results = sweep
    rows = logps_summary(results)
    assert [r["lambda"] for r in rows] == [0.0, 1.0]
    first, last = eval_records(results[1.0])[0], eval_records(results[1.0])[-1]
    assert rows[1]["steps"] == 4
    assert rows[1]["chosen_start"] == first["eval_logps/chosen"]
    assert rows[1]["gap_end"] == pytest.approx(last["eval_logps/chosen"] - last["eval_logps/rejected"])
    text = format_logps_summary(rows)
    assert len(text.splitlines()) == 3 and "→" in text


def test_interrupt_at_step_leaves_a_checkpoint_and_resume_continues_from_it(tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path, max_steps=5, eval_steps=10, output_dir=str(tmp_path / "run"))
    result = Trainer(cfg, callbacks=[InterruptAtStep(3)]).train()
    assert result.interrupted and result.steps == 3
    assert result.last_checkpoint is not None and result.last_checkpoint.name == "step-000003"
    collector = RecordCollector()
    resumed = Trainer(cfg, callbacks=[collector]).train(resume=True)
    assert not resumed.interrupted and resumed.steps == 5
    assert [r["step"] for r in train_records(collector.records)] == [4, 5]
    assert [r["step"] for r in train_records(read_metrics(tmp_path / "run"))] == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError):
        InterruptAtStep(0)


def test_process_rss_reads_proc_when_psutil_is_missing(monkeypatch) -> None:
    with_psutil = process_rss_bytes()
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil now raises ImportError
    from_proc = process_rss_bytes()
    if Path("/proc/self/status").is_file():
        assert from_proc is not None and from_proc > 10 * 2**20
        if with_psutil is not None:
            assert abs(from_proc - with_psutil) < 0.5 * with_psutil
    used, what = memory_used("cpu")
    assert what == "process RSS" and (used is None or used > 0)


def test_dashboard_series_groups_train_and_eval_keys() -> None:
    records = [
        {"step": 0, "eval_loss": 3.0, "eval_logps/chosen": -2.0},
        {"step": 1, "loss": 2.5, "logps/chosen": -1.5, "step_time": 0.1, "memory_gib": None},
        {"step": 2, "loss": 2.0, "eval_loss": 2.8, "memory_gib": 1.5},
    ]
    series = dashboard_series(records)
    assert list(series) == list(PANELS)
    assert series["loss"] == {"train": ([1, 2], [2.5, 2.0]), "eval": ([0, 2], [3.0, 2.8])}
    assert series["log-probs (mean per token)"] == {"chosen": ([1], [-1.5]), "eval chosen": ([0], [-2.0])}
    assert series["memory (GiB)"] == {"memory": ([2], [1.5])}
    assert series["learning rate"] == {}


def test_plot_training_draws_the_panels_with_data_from_a_run(sweep) -> None:
    root, _ = sweep
    fig = plot_training(read_metrics(lambda_run_dir(root / "runs", 1.0)))
    assert isinstance(fig, Figure) and len(fig.axes) == 7  # no memory panel: metrics.jsonl holds no memory
    assert len(fig.axes[0].lines) == 2  # train and eval loss
    assert len(fig.axes[3].lines) == 4  # chosen and rejected, train and eval


def test_live_dashboard_redraws_every_n_records_and_saves_headless(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(dashboard, "_in_ipython", lambda: False)
    png = tmp_path / "dash.png"
    live = LiveDashboard(every=3, path=png)
    cfg = tiny_cfg(tmp_path, max_steps=6, eval_steps=3, output_dir=str(tmp_path / "run"))
    Trainer(cfg, callbacks=[live]).train()
    n = len(read_metrics(tmp_path / "run"))  # step 0 eval + 6 train records
    assert n == 7 and len(live.records) == n
    # first record, then records 4 and 7, then once at the end
    assert live.draws == 4
    assert png.is_file() and png.stat().st_size > 10_000
    assert all(r["memory_gib"] > 0 for r in live.records) and live.memory_label == "process RSS"
    with pytest.raises(ValueError):
        LiveDashboard(every=0)


def test_live_dashboard_updates_one_display_in_a_notebook(tmp_path: Path, monkeypatch) -> None:
    shown: list[str] = []

    class Handle:
        def update(self, obj) -> None:
            shown.append("update")

    def fake_display(obj, display_id=False):
        shown.append("display")
        return Handle()

    monkeypatch.setattr(dashboard, "_in_ipython", lambda: True)
    monkeypatch.setattr("IPython.display.display", fake_display)
    live = LiveDashboard(every=2)
    cfg = tiny_cfg(tmp_path, max_steps=3, eval_steps=10, output_dir=str(tmp_path / "run"))
    Trainer(cfg, callbacks=[live, InterruptAtStep(2)]).train()
    assert shown[0] == "display" and set(shown[1:]) == {"update"}
    # Resumed in a new cell: a new display, seeded with the run's earlier records.
    Trainer(cfg, callbacks=[live]).train(resume=True)
    assert shown.count("display") == 2
    assert [r["step"] for r in live.records] == [0, 1, 2, 3]
    assert all(r["memory_gib"] > 0 for r in live.records)  # kept from the first cell, not lost on resume
    # A new dashboard on a resumed run reads the earlier records (without memory: metrics.jsonl has none).
    fresh = LiveDashboard()
    Trainer(cfg, callbacks=[fresh]).train(resume=True)  # already at max_steps: reads the run, trains nothing
    assert [r["step"] for r in fresh.records] == [0, 1, 2, 3] and fresh.records[0]["memory_gib"] is None


def test_comparison_figures(sweep) -> None:
    _, results = sweep
    fig = plot_logps_over_training(results)
    assert len(fig.axes) == 2
    assert len(fig.axes[0].lines) == 4 and len(fig.axes[1].lines) == 2 + 1  # + the zero line
    assert fig.axes[0].lines[0].get_label() == "λ=0 (SFT only) chosen"
    fig = plot_lambda_sweep(results)
    assert len(fig.axes) == 3 and all(len(ax.lines) == 2 for ax in fig.axes)
