"""Matplotlib figures of runs and evaluations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt


def plot_skill_comparison(results: list[dict[str, Any]], path: str | Path | None = None) -> Any:
    """Grouped bars: held-out reward accuracy per skill for each model (base and tuned of each run)."""
    series = []
    for res in results:
        for which in ("base", "tuned"):
            if which in res:
                acc = res[which]["reward_accuracy"]
                series.append((f"{Path(res['run']).name}:{which}", {"all": acc["all"], **acc.get("per_skill", {})}))
    skills = ["all"] + sorted({k for _, acc in series for k in acc if k != "all"})
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(skills), 3.2))
    width = 0.8 / max(1, len(series))
    for i, (name, acc) in enumerate(series):
        ax.bar([j + i * width for j in range(len(skills))], [acc.get(s, 0.0) for s in skills], width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(skills))], skills, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("reward accuracy")
    ax.set_title("held-out pairs: chosen more likely than rejected")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
