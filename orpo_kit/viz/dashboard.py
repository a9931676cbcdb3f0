"""Training dashboards: a live figure during a run (a TrainerCallback) and figures that compare runs.

Figures are plain `matplotlib.figure.Figure` objects, not registered with pyplot: nothing is shown twice in a
notebook, nothing needs a display. Show one as a cell's last expression, or pass `path` to save a PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ..procmem import rss_bytes
from ..train import Trainer, TrainerCallback, TrainResult, read_metrics

Record = dict[str, Any]
GIB = 2**30

# Panel title -> (record key, legend label) pairs. Eval keys are the train keys prefixed with "eval_".
PANELS: dict[str, tuple[tuple[str, str], ...]] = {
    "loss": (("loss", "train"), ("eval_loss", "eval")),
    "nll_loss": (("nll_loss", "train"), ("eval_nll_loss", "eval")),
    "log_odds_ratio (mean log σ)": (("log_odds_ratio", "train"), ("eval_log_odds_ratio", "eval")),
    "log-probs (mean per token)": (
        ("logps/chosen", "chosen"),
        ("logps/rejected", "rejected"),
        ("eval_logps/chosen", "eval chosen"),
        ("eval_logps/rejected", "eval rejected"),
    ),
    "reward accuracy": (("rewards/accuracies", "train"), ("eval_rewards/accuracies", "eval")),
    "step time (s)": (("step_time", "step"),),
    "memory (GiB)": (("memory_gib", "memory"),),
    "learning rate": (("learning_rate", "lr"),),
}
_COLORS = {
    "chosen": "tab:green",
    "rejected": "tab:red",
    "eval chosen": "tab:green",
    "eval rejected": "tab:red",
    "eval": "tab:orange",
}


# ---- memory -------------------------------------------------------------------------------------------
def process_rss_bytes() -> int | None:
    """Resident memory of this process (orpo_kit.procmem), None where the OS does not say."""
    return rss_bytes()


def memory_used(device: Any = None) -> tuple[int | None, str]:
    """(bytes, what was measured): peak CUDA memory allocated by tensors on a CUDA device, else process RSS."""
    import torch

    if device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated(device)), "CUDA peak allocated"
    return process_rss_bytes(), "process RSS"


# ---- training figure ----------------------------------------------------------------------------------
def dashboard_series(records: Sequence[Record]) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """What the dashboard draws: per panel, per legend label, (steps, values) of the records that have it."""
    out: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    for title, keys in PANELS.items():
        panel = {}
        for key, label in keys:
            points = [(r["step"], float(r[key])) for r in records if r.get(key) is not None]
            if points:
                panel[label] = ([s for s, _ in points], [v for _, v in points])
        out[title] = panel
    return out


def plot_training(
    records: Sequence[Record], fig: Figure | None = None, title: str | None = None, memory_label: str | None = None
) -> Figure:
    """Eight panels of a run's records (metrics.jsonl or live): losses, log-probs, accuracy, time, memory."""
    fig = fig if fig is not None else Figure(figsize=(13, 5.6))
    fig.clear()
    axes = fig.subplots(2, 4).ravel()
    for ax, (panel, series) in zip(axes, dashboard_series(records).items(), strict=True):
        for label, (steps, values) in series.items():
            is_eval = label.startswith("eval")
            ax.plot(
                steps,
                values,
                "o-" if is_eval else "-",
                ms=3,
                lw=1.8 if is_eval else 1.0,
                color=_COLORS.get(label),
                label=label,
                alpha=1.0 if is_eval else 0.8,
            )
        ax.set_title(panel if panel != "memory (GiB)" or not memory_label else f"{memory_label} (GiB)", fontsize=9)
        ax.tick_params(labelsize=7)
        if len(series) > 1:
            ax.legend(fontsize=6)
        if not series:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, fontsize=8)
    for ax in axes[4:]:
        ax.set_xlabel("step", fontsize=8)
    last = records[-1]["step"] if records else 0
    fig.suptitle(title or f"step {last}", fontsize=10)
    fig.tight_layout()
    return fig


def _in_ipython() -> bool:
    """Whether this runs in a Jupyter kernel (a notebook, nbval's included), where figures can be displayed."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return getattr(get_ipython(), "kernel", None) is not None


def _record_key(record: Record) -> tuple[int, bool, bool]:
    """Identifies a logged record within a run: its step and whether it has train and eval metrics."""
    return record.get("step", 0), "loss" in record, "eval_loss" in record


class LiveDashboard(TrainerCallback):
    """Redraws `plot_training` while a run trains, every `every` logged records and once at the end.

    In a notebook the figure is one output updated in place (an IPython display handle), so the cell's other
    output (prints, a progress bar) stays. Without IPython it draws nothing unless `path` is given, where it
    writes a PNG at each redraw. Memory (GiB) is measured at each record: peak CUDA allocation on a GPU,
    the process's resident memory on CPU. A resumed run's earlier records are read from metrics.jsonl.
    """

    def __init__(
        self,
        every: int = 5,
        path: str | Path | None = None,
        title: str | None = None,
        figsize: tuple[float, float] = (13, 5.6),
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        self.every, self.path, self.title = every, Path(path) if path is not None else None, title
        self.fig = Figure(figsize=figsize)
        self.records: list[Record] = []
        self.memory_label: str | None = None
        self.draws = 0
        self._drawn_at = 0
        self._handle: Any = None
        self._fresh = True  # draw at the first record of each train() call

    def on_train_begin(self, trainer: Trainer) -> None:
        """A new display in the running cell; on resume, the run's earlier records."""
        self._handle, self._fresh = None, True
        if trainer.step > 0:
            measured = {_record_key(r): r.get("memory_gib") for r in self.records}  # memory is not in the file
            self.records = [
                {**r, "memory_gib": measured.get(_record_key(r))}
                for r in read_metrics(trainer.run_dir)
                if r.get("step", 0) <= trainer.step
            ]
            self._drawn_at = len(self.records)
        else:
            self.records, self._drawn_at = [], 0

    def on_log(self, trainer: Trainer, record: Record) -> None:
        """Keep the record (with memory); redraw when `every` records arrived since the last drawing."""
        used, self.memory_label = memory_used(trainer.accelerator.device)
        self.records.append({**record, "memory_gib": used / GIB if used is not None else None})
        if self._fresh or len(self.records) - self._drawn_at >= self.every:
            self.redraw()

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None:
        """Last drawing, so the figure shows the whole run (or where it was interrupted)."""
        self.redraw(title=f"{'interrupted at' if result.interrupted else 'finished'} step {result.steps}")

    def redraw(self, title: str | None = None) -> None:
        """Draw the records into the figure and show it (update in place) or save it."""
        plot_training(self.records, fig=self.fig, title=title or self.title, memory_label=self.memory_label)
        self.draws, self._drawn_at, self._fresh = self.draws + 1, len(self.records), False
        if self.path is not None:
            self.fig.savefig(self.path, dpi=90)
        if _in_ipython():
            from IPython.display import display

            if self._handle is None:
                self._handle = display(self.fig, display_id=True)
            else:
                self._handle.update(self.fig)


# ---- comparing runs -----------------------------------------------------------------------------------
def _eval(records: Sequence[Record], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if key in r]
    return [s for s, _ in points], [v for _, v in points]


def _lambda_label(lam: float) -> str:
    return f"λ={lam:g}" + (" (SFT only)" if lam == 0 else "")


def _save(fig: Figure, path: str | Path | None) -> Figure:
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def plot_logps_over_training(results: dict[float, list[Record]], path: str | Path | None = None) -> Figure:
    """Held-out mean log-probs of chosen (solid) and rejected (dashed) answers over training, one colour per λ
    (left), and their gap chosen − rejected (right). `results` as returned by experiments.compare_lambdas."""
    fig = Figure(figsize=(11, 4))
    left, right = fig.subplots(1, 2)
    for i, (lam, records) in enumerate(results.items()):
        color = f"C{i}"
        steps, chosen = _eval(records, "eval_logps/chosen")
        _, rejected = _eval(records, "eval_logps/rejected")
        left.plot(steps, chosen, "o-", color=color, ms=4, label=f"{_lambda_label(lam)} chosen")
        left.plot(steps, rejected, "s--", color=color, ms=4, label=f"{_lambda_label(lam)} rejected")
        gaps = [c - r for c, r in zip(chosen, rejected, strict=True)]
        right.plot(steps, gaps, "o-", color=color, ms=4, label=_lambda_label(lam))
    left.set(title="held-out mean log-prob per token", xlabel="step", ylabel="log-prob")
    right.set(title="gap: chosen − rejected", xlabel="step", ylabel="log-prob difference")
    right.axhline(0.0, color="grey", lw=0.8)
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    return _save(fig, path)


def plot_lambda_sweep(results: dict[float, list[Record]], path: str | Path | None = None) -> Figure:
    """Runs that differ in λ: train loss, held-out NLL (comparable across λ) and held-out reward accuracy."""
    fig = Figure(figsize=(12, 3.6))
    axes = fig.subplots(1, 3)
    panels = (
        ("loss", "train loss (NLL + λ·L_OR)", "-"),
        ("eval_nll_loss", "eval nll_loss", "o-"),
        ("eval_rewards/accuracies", "eval reward accuracy", "o-"),
    )
    for i, (lam, records) in enumerate(results.items()):
        for ax, (key, title, style) in zip(axes, panels, strict=True):
            steps, values = _eval(records, key)
            ax.plot(steps, values, style, color=f"C{i}", ms=4, label=_lambda_label(lam))
            ax.set(title=title, xlabel="step")
    axes[2].set_ylim(-0.03, 1.03)
    axes[0].legend(fontsize=7)
    return _save(fig, path)
