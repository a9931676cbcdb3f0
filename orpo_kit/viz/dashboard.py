"""Training dashboards: a live figure during a run (a TrainerCallback) and figures that compare runs.

Figures are plain `matplotlib.figure.Figure` objects, not registered with pyplot: nothing is shown twice in a
notebook, nothing needs a display. Show one as a cell's last expression, or pass `path` to save a PNG.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ..procmem import rss_bytes
from ..train import Trainer, TrainerCallback, TrainResult, read_metrics
from .style import ALARM, CHOSEN, DPI, OKABE_ITO, PALETTE, REJECTED, house_style

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
    "train": OKABE_ITO["blue"],
    "eval": OKABE_ITO["orange"],
    "chosen": CHOSEN,
    "rejected": REJECTED,
    "eval chosen": CHOSEN,
    "eval rejected": REJECTED,
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


# ---- the SFT alarm -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RejectedRiseAlarm:
    """Held-out rejected log-probs rose with the chosen ones: the model makes both answers more likely, what
    supervised fine-tuning does (notebook 03, λ = 0) and what ORPO's odds-ratio term exists to stop."""

    since_step: int  # first evaluation of the unbroken stretch, up to the last one, where both stayed risen
    start_step: int  # the evaluation both are measured from (the first one; step 0 is before training)
    last_step: int
    chosen_rise: float  # mean log-prob per token, last evaluation minus the first
    rejected_rise: float

    @property
    def message(self) -> str:
        """One line for a figure or a log."""
        return (
            f"rejected log-probs rising with chosen since step {self.since_step}: rejected {self.rejected_rise:+.2f}, "
            f"chosen {self.chosen_rise:+.2f} per token (step {self.start_step} → {self.last_step})"
        )


def rejected_rise_alarm(
    records: Sequence[Record], min_rise: float = 0.1, patience: int = 2
) -> RejectedRiseAlarm | None:
    """The alarm when, at each of the last `patience` evaluations, the held-out chosen and rejected mean log-probs
    (`eval_logps/chosen`, `eval_logps/rejected`) both stand at least `min_rise` above the first evaluation; else
    None. A rejected log-prob that falls, or wobbles by less than `min_rise`, raises nothing."""
    if patience < 1 or min_rise <= 0:
        raise ValueError(f"patience must be >= 1 and min_rise > 0, got patience={patience}, min_rise={min_rise}")
    by_step = {
        r["step"]: (float(r["eval_logps/chosen"]), float(r["eval_logps/rejected"]))
        for r in records
        if r.get("eval_logps/chosen") is not None and r.get("eval_logps/rejected") is not None
    }
    evals = sorted(by_step.items())
    if len(evals) < 1 + patience:
        return None
    start, (chosen0, rejected0) = evals[0]
    risen: list[int] = []  # the evaluations, up to now, where both have stayed risen
    for step, (chosen, rejected) in evals[1:]:
        both = chosen - chosen0 >= min_rise and rejected - rejected0 >= min_rise
        risen = risen + [step] if both else []
    if len(risen) < patience:
        return None
    last, (chosen, rejected) = evals[-1]
    return RejectedRiseAlarm(risen[0], start, last, chosen - chosen0, rejected - rejected0)


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


LOGPS_PANEL = "log-probs (mean per token)"


@house_style
def plot_training(
    records: Sequence[Record], fig: Figure | None = None, title: str | None = None, memory_label: str | None = None
) -> Figure:
    """The panels of a run's records (metrics.jsonl or live) that have data: losses, log-probs, accuracy, time,
    memory, learning rate; the SFT alarm (`rejected_rise_alarm`) shaded on the log-probs and in the title."""
    fig = fig if fig is not None else Figure(figsize=(13, 6.5))
    fig.clear()
    panels = {panel: series for panel, series in dashboard_series(records).items() if series}
    if not panels:  # nothing logged yet
        fig.text(0.5, 0.5, "no records yet", ha="center", va="center")
        return fig
    ncols = min(4, len(panels))
    axes = fig.subplots(-(-len(panels) // ncols), ncols, squeeze=False).ravel()
    alarm = rejected_rise_alarm(records)
    for ax, (panel, series) in zip(axes, panels.items(), strict=False):
        for label, (steps, values) in series.items():
            is_eval = label.startswith("eval")  # markers at the evaluations; train lines thinner beneath them
            style = {"marker": "o", "ms": 4} if is_eval else {"lw": 1.2, "alpha": 0.8}
            ax.plot(steps, values, color=_COLORS.get(label), label=label, **style)
        name = f"{memory_label} (GiB)" if panel == "memory (GiB)" and memory_label else panel
        ax.set_title(textwrap.fill(name, 22))
        ax.set_xlabel("step")
        if len(series) > 1:
            ax.legend()
        if alarm is not None and panel == LOGPS_PANEL:
            _shade_alarm(ax, alarm)
    for ax in axes[len(panels) :]:
        fig.delaxes(ax)
    last = records[-1]["step"] if records else 0
    head = title or f"step {last}"
    if alarm is not None:
        fig.suptitle(f"{head}\n⚠ {alarm.message}", bbox={"facecolor": ALARM, "edgecolor": "black"})
    else:
        fig.suptitle(head)
    fig.tight_layout()
    return fig


def _shade_alarm(ax: Any, alarm: RejectedRiseAlarm) -> None:
    """Shade the evaluations where the alarm holds and flag the panel's title."""
    ax.axvspan(alarm.since_step, alarm.last_step, color=ALARM, alpha=0.35, zorder=0)
    ax.set_title(f"⚠ {ax.get_title()}", bbox={"facecolor": ALARM, "edgecolor": "black"})


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
        figsize: tuple[float, float] = (13, 6.5),
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
            self.fig.savefig(self.path, dpi=DPI)
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
        fig.savefig(path, dpi=DPI)
    return fig


@house_style
def plot_logps_over_training(results: dict[float, list[Record]], path: str | Path | None = None) -> Figure:
    """Held-out mean log-probs of chosen (solid) and rejected (dashed) answers over training, one colour per λ
    (left), and their gap chosen − rejected (right). Runs where `rejected_rise_alarm` fires get their rejected
    points ringed and a note. `results` as returned by experiments.compare_lambdas."""
    fig = Figure(figsize=(13, 5.5))
    left, right = fig.subplots(1, 2)
    alarms = []
    for i, (lam, records) in enumerate(results.items()):
        color = PALETTE[i % len(PALETTE)]
        steps, chosen = _eval(records, "eval_logps/chosen")
        _, rejected = _eval(records, "eval_logps/rejected")
        left.plot(steps, chosen, "o-", color=color, label=f"{_lambda_label(lam)} chosen")
        left.plot(steps, rejected, "s--", color=color, label=f"{_lambda_label(lam)} rejected")
        gaps = [c - r for c, r in zip(chosen, rejected, strict=True)]
        right.plot(steps, gaps, "o-", color=color, label=_lambda_label(lam))
        alarm = rejected_rise_alarm(records)
        if alarm is not None:
            ringed = [(s, r) for s, r in zip(steps, rejected, strict=True) if s >= alarm.since_step]
            left.scatter(*zip(*ringed, strict=True), s=160, facecolors="none", edgecolors="black", lw=1.5, zorder=3)
            rise = f"rejected {alarm.rejected_rise:+.2f}, chosen {alarm.chosen_rise:+.2f}"
            alarms.append(f"{_lambda_label(lam)}: {rise}")
    left.set(title="held-out mean log-prob per token", xlabel="step", ylabel="log-prob")
    right.set(title="gap: chosen − rejected", xlabel="step", ylabel="log-prob difference")
    right.axhline(0.0, color="grey", lw=0.8)
    left.legend(loc="lower right")
    right.legend(loc="upper left")
    if alarms:
        fig.suptitle(
            "\n".join(["⚠ held-out rejected log-probs rising with chosen (ringed)", *alarms]),
            bbox={"facecolor": ALARM, "edgecolor": "black"},
        )
    return _save(fig, path)


@house_style
def plot_lambda_sweep(results: dict[float, list[Record]], path: str | Path | None = None) -> Figure:
    """Runs that differ in λ: train loss, held-out NLL (comparable across λ) and held-out reward accuracy."""
    fig = Figure(figsize=(13, 4.5))
    axes = fig.subplots(1, 3)
    panels = (
        ("loss", "train loss (NLL + λ·L_OR)", "-"),
        ("eval_nll_loss", "eval nll_loss", "o-"),
        ("eval_rewards/accuracies", "eval reward accuracy", "o-"),
    )
    for i, (lam, records) in enumerate(results.items()):
        for ax, (key, title, style) in zip(axes, panels, strict=True):
            steps, values = _eval(records, key)
            ax.plot(steps, values, style, color=PALETTE[i % len(PALETTE)], label=_lambda_label(lam))
            ax.set(title=title, xlabel="step")
    axes[2].set_ylim(-0.03, 1.03)
    axes[0].legend()
    return _save(fig, path)
