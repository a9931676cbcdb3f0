"""Matplotlib figures of runs and evaluations."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from .style import DPI, PALETTE, house_style

COLOURS = PALETTE  # Okabe-Ito: distinguishable with the common colour-vision deficiencies
PANELS = {
    "reward_accuracy": "reward accuracy\n(chosen more likely)",
    "generation": "generation check\n(greedy answer passes)",
}


def _model_stats(model: dict[str, Any], panel: str) -> dict[str, Any] | None:
    """One model's per-skill stats for a panel, with 'all' (shares only when older results lack counts)."""
    from ..evaluate import with_overall

    raw = model.get("reward_accuracy") if panel == "reward_accuracy" else model.get("generation_stats")
    stats = with_overall(raw)
    if stats is not None:
        return stats
    shares = model.get("generation", {}) if panel == "generation" else {}
    if panel == "reward_accuracy" and raw:
        shares = {"all": raw["all"], **raw.get("per_skill", {})}
    return {"per_skill": dict(shares), "n_per_skill": {}, "ci95_per_skill": {}} if shares else None


def _series(results: list[dict[str, Any]], panel: str) -> list[tuple[str, dict[str, Any]]]:
    """(model name, stats) for base and tuned of each run that measured the panel's quantity."""
    out = []
    for res in results:
        for which in ("base", "tuned"):
            stats = _model_stats(res[which], panel) if which in res else None
            if stats is not None:
                out.append((f"{Path(res['run']).name}:{which}", stats))
    return out


def _tick_label(skill: str, series: list[tuple[str, dict[str, Any]]]) -> str:
    """A skill's name with the number of pairs behind its bars ('n=20', or 'n=20/24' when models differ)."""
    ns = sorted({str(s["n_per_skill"][skill]) for _, s in series if skill in s["n_per_skill"]}, key=int)
    return f"{skill}\nn={'/'.join(ns)}" if ns else f"{skill}\nn=?"


def _draw_panel(ax: Any, series: list[tuple[str, dict[str, Any]]], skills: list[str], ylabel: str) -> None:
    """Bars with 95% Wilson error bars; each bar's value written at its foot, so 0.00 reads as measured."""
    width = 0.8 / max(1, len(series))
    for i, (name, stats) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        for j, skill in enumerate(skills):
            x = j + (i - (len(series) - 1) / 2) * width
            value = stats["per_skill"].get(skill)
            if value is None:
                ax.text(x, 0.02, "n/a", ha="center", va="bottom", fontsize=12, rotation=90, color="0.4")
                continue
            ax.bar(x, value, width, color=colour, label=name if j == 0 else None)
            lo, hi = stats["ci95_per_skill"].get(skill, (math.nan, math.nan))
            if not math.isnan(lo):
                ax.errorbar(
                    x,
                    value,
                    yerr=[[max(0.0, value - lo)], [max(0.0, hi - value)]],
                    fmt="none",
                    ecolor="0.15",
                    capsize=3,
                    lw=1.2,
                )
            label_y = 0.02
            if value == 0.0:  # a measured zero: a thick mark on the axis, its value above the error bar
                ax.plot(x, 0.0, marker="_", markersize=14, mew=3, color=colour, clip_on=False, gid="measured-zero")
                label_y = (0.0 if math.isnan(hi) else hi) + 0.02
            ax.text(
                x, label_y, f"{value:.2f}", ha="center", va="bottom", fontsize=12, rotation=90,
                bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8),
            )  # fmt: skip
    ax.set_xticks(range(len(skills)), [_tick_label(s, series) for s in skills], fontsize=12)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(ylabel, fontsize=12)
    ax.tick_params(axis="y", labelsize=11)
    ax.grid(axis="y", alpha=0.3)


@house_style
def plot_skill_comparison(results: list[dict[str, Any]], path: str | Path | None = None, dpi: int = DPI) -> Any:
    """Grouped bars per skill for each model (base and tuned of each run): held-out reward accuracy and, when
    measured, the generation check; n under each skill, 95% Wilson intervals as error bars."""
    panels = [(key, _series(results, key)) for key in PANELS]
    panels = [(key, series) for key, series in panels if series]
    skill_names = {k for _, series in panels for _, s in series for k in s["per_skill"] if k != "all"}
    skills = ["all", *sorted(skill_names)]
    height = 3.4 * len(panels) + 0.9  # inches: the panels, then title and legend on top
    fig, axes = plt.subplots(len(panels), 1, figsize=(1.5 + 1.3 * len(skills), height), dpi=dpi, squeeze=False)
    for ax, (key, series) in zip(axes[:, 0], panels, strict=True):
        _draw_panel(ax, series, skills, PANELS[key])
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.suptitle("held-out pairs per skill (error bars: 95% Wilson interval)", fontsize=13, y=1 - 0.08 / height)
    fig.legend(
        handles, labels, loc="upper center", bbox_to_anchor=(0.5, 1 - 0.4 / height), ncol=min(4, len(labels)),
        fontsize=12, frameon=False,
    )  # fmt: skip
    fig.tight_layout()
    fig.subplots_adjust(top=1 - 0.85 / height)
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig
