"""The house figure style (orpo_kit.viz.style) on every figure function, and the figure fixes that came with it:
length limits beyond the data, the length-bias scatter by skill, dashboard panels only where there is data."""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt
import pytest
from matplotlib.collections import PathCollection
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image

from orpo_kit.bench import report
from orpo_kit.data import DataReport, LengthStats, pairs_from_rows
from orpo_kit.viz import data_view, loss_view
from orpo_kit.viz.dashboard import plot_lambda_sweep, plot_logps_over_training, plot_training
from orpo_kit.viz.style import DPI, PALETTE, TICK_PT, TITLE_PT

ROWS = [
    {"prompt": "Capital of Poland?", "chosen": "Warsaw.", "rejected": "Krakow, I think.", "skill": "facts"},
    {"prompt": "2 + 2?", "chosen": "2 + 2 = 4.", "rejected": "2 + 2 = 5.", "skill": "arithmetic"},
    {
        "prompt": "Answer in one word: sky colour?",
        "chosen": "Blue.",
        "rejected": "It is blue, mostly.",
        "skill": "format",
    },
]
STATS = LengthStats(prompt=[5, 6, 9], chosen=[4, 8, 3], rejected=[7, 8, 9])


def run_records(steps: int = 4, memory: bool = True) -> list[dict]:
    """Records as the trainer logs them: an evaluation every 2 steps (step 0 first), a train record each step."""
    records: list[dict] = []
    for step in range(steps + 1):
        if step:
            records.append(
                {
                    "step": step,
                    "loss": 3.0 - 0.1 * step,
                    "nll_loss": 2.5,
                    "log_odds_ratio": -0.7,
                    "logps/chosen": -2.0 + 0.1 * step,
                    "logps/rejected": -2.2,
                    "rewards/accuracies": 0.5,
                    "step_time": 0.1,
                    "learning_rate": 1e-4,
                    **({"memory_gib": 1.0} if memory else {}),
                }
            )
        if step % 2 == 0:
            records.append(
                {"step": step, "eval_loss": 3.0, "eval_logps/chosen": -2.0 + 0.1 * step, "eval_logps/rejected": -2.2}
            )
    return records


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def bench_result() -> dict:
    rec = {"impl": "orpo_kit", "mix": "uf_like", "adapter": "lora", "pairs_per_s": 2.0, "peak_mem_gb": 1.0}
    trl = {**rec, "impl": "trl", "pairs_per_s": 1.0}
    return {
        "mode": "quick",
        "records": [{**rec, "speedup_vs_trl": 2.0, "mem_ratio_vs_trl": 1.0}, trl],
        "machine": {"gpu": None, "cpu": "test cpu", "torch_threads": 1},
    }


def all_figures(monkeypatch, tmp_path: Path) -> dict[str, Figure]:
    """One figure from every figure function of the package except viz.plots."""
    pairs = pairs_from_rows(ROWS)
    dropped = DataReport(source="x", rows_read=10, kept=8)
    dropped.dropped.update({"tie": 1, "bad_order": 1})
    results = {0.0: run_records(), 1.0: run_records()}
    kept: list[Figure] = []
    monkeypatch.setattr(plt, "close", kept.append)  # plot_results closes its figure after saving it
    report.plot_results(bench_result(), tmp_path / "bench.png")
    return {
        "length_histograms": data_view.plot_length_histograms(STATS, 256, 128),
        "length_bias": data_view.plot_length_bias(STATS, pairs),
        "dropped_by_kind": data_view.plot_dropped_by_kind(dropped),
        "probability_odds": loss_view.plot_probability_odds(20),
        "odds_ratio_term": loss_view.plot_odds_ratio_term(n_points=20),
        "training": plot_training(run_records()),
        "logps_over_training": plot_logps_over_training(results),
        "lambda_sweep": plot_lambda_sweep(results),
        "bench_results": kept[0],
    }


def visible_texts(fig: Figure) -> list[Text]:
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def test_every_figure_has_the_house_dpi_fonts_and_palette(monkeypatch, tmp_path: Path) -> None:
    default_tick_size = mpl.rcParams["xtick.labelsize"]
    for name, fig in all_figures(monkeypatch, tmp_path).items():
        assert fig.dpi >= 150, name
        texts = visible_texts(fig)
        assert texts, name
        small = [(t.get_text(), t.get_fontsize()) for t in texts if t.get_fontsize() < TICK_PT]
        assert not small, f"{name}: text under {TICK_PT} pt: {small}"
        for ax in fig.axes:
            ticks = [t for t in ax.get_xticklabels() + ax.get_yticklabels() if t.get_text()]
            assert all(t.get_fontsize() >= TICK_PT for t in ticks), name
            if ax.get_title():
                assert ax.title.get_fontsize() >= TITLE_PT, name
            data_lines = [line for line in ax.lines if not line.get_label().startswith("_")]
            assert all(to_hex(line.get_color()).upper() in PALETTE for line in data_lines), name
    assert mpl.rcParams["xtick.labelsize"] == default_tick_size  # the style does not leak into the caller's


def test_tick_labels_keep_the_style_when_drawn_later() -> None:
    fig = loss_view.plot_probability_odds(20)
    fig.set_size_inches(20, 6)  # a later drawing makes new ticks: they copy the first, house-styled one
    fig.draw_without_rendering()
    assert all(t.get_fontsize() >= TICK_PT for ax in fig.axes for t in ax.get_xticklabels())


def test_saved_figures_have_the_house_dpi(tmp_path: Path) -> None:
    results = {0.0: run_records()}
    for path in (
        report.plot_results(bench_result(), tmp_path / "bench.png"),
        plot_logps_over_training(results, tmp_path / "logps.png") and tmp_path / "logps.png",
        plot_lambda_sweep(results, tmp_path / "sweep.png") and tmp_path / "sweep.png",
    ):
        dpi = Image.open(path).info["dpi"]
        assert round(dpi[0]) == DPI, path


def test_length_histograms_let_the_data_set_the_range() -> None:
    fig = data_view.plot_length_histograms(STATS, max_length=256, max_prompt_length=128)
    for ax, limit in zip(fig.axes, (128, 256, 256), strict=True):
        assert ax.get_xlim()[1] < 20 < limit  # the longest length is 9: the axis ends near it
        assert not ax.lines  # no line at the limit
        notes = [t.get_text() for t in ax.texts]
        assert any(f"{limit}" in note and "off the axis" in note for note in notes)
    inside = data_view.plot_length_histograms(STATS, max_length=8, max_prompt_length=128)
    assert [line.get_xdata()[0] for line in inside.axes[1].lines] == [8]  # a limit the data reach: a line
    assert inside.axes[1].get_legend().get_texts()[0].get_text() == "max_length 8"
    assert not inside.axes[0].lines


def test_length_bias_has_one_colour_and_marker_per_skill() -> None:
    pairs = pairs_from_rows(ROWS)
    fig = data_view.plot_length_bias(STATS, pairs)
    ax = fig.axes[0]
    points = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(points) == 3
    assert len({to_hex(c.get_facecolor()[0]) for c in points}) == 3
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:3] == ["arithmetic (n=1, 0% longer)", "facts (n=1, 0% longer)", "format (n=1, 0% longer)"]
    assert len(data_view.plot_length_bias(STATS).axes[0].collections) == 1  # without pairs: one colour
    with pytest.raises(ValueError, match="stats measure 3 pairs but 2 pairs"):
        data_view.plot_length_bias(STATS, pairs[:2])


def test_training_dashboard_draws_only_panels_with_data() -> None:
    from_file = plot_training(run_records(memory=False))  # metrics.jsonl has no memory
    titles = [ax.get_title() for ax in from_file.axes]
    assert len(titles) == 7 and not any("memory" in t or "GiB" in t for t in titles)
    assert not any("no data" in t.get_text() for t in visible_texts(from_file))
    live = plot_training(run_records(memory=True), memory_label="process RSS")
    assert len(live.axes) == 8 and any("process RSS" in ax.get_title() for ax in live.axes)
    only_eval = plot_training([{"step": 0, "eval_loss": 3.0}])
    assert [ax.get_title() for ax in only_eval.axes] == ["loss"]
    assert not plot_training([]).axes
