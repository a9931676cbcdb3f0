"""From run records to results: medians, speed-ups, loss agreement, pass/fail checks, the table and the chart."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from ..viz.style import DPI, PALETTE, house_style
from .plan import LOSS_RTOL, TARGETS, WALL_LIMITS_S


# Slightly over 60 lines: one pass that derives every figure of a record from its repeats, kept together so the
# table's columns read from one place.
def aggregate(runs: list[dict[str, Any]], flops_params: int, matmul_gflops: float) -> list[dict[str, Any]]:
    """One record per (impl, mix, adapter): medians over repeats, ratios to TRL, matmul share."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["impl"], run["mix"], run["adapter"]), []).append(run)
    records = []
    for (impl, mix, adapter), rs in groups.items():
        ok = [r for r in rs if "error" not in r]
        rec: dict[str, Any] = {"impl": impl, "mix": mix, "adapter": adapter, "repeats": len(ok)}
        if not ok:
            rec["error"] = rs[0]["error"]
            records.append(rec)
            continue
        flops_per_token = (4 if adapter == "lora" else 6) * flops_params
        rec.update(
            pairs_per_s=statistics.median(r["pairs_per_s"] for r in ok),
            tokens_per_s=statistics.median(r["tokens_per_s"] for r in ok),
            peak_mem_gb=max(r["peak_mem_gb"] for r in ok),
            loss_step0=ok[0]["loss_step0"],
            step_time_s=statistics.median(t for r in ok for t in r["step_times_s"]),
            trainable_params=ok[0]["trainable_params"],
            flops_per_token=flops_per_token,
        )
        rec["matmul_share"] = flops_per_token * rec["tokens_per_s"] / (matmul_gflops * 1e9)
        rec["runs"] = [
            {
                k: r[k]
                for k in (
                    "repeat",
                    "pairs_per_s",
                    "tokens_per_s",
                    "peak_mem_gb",
                    "peak_growth_gb",
                    "rss_before_model_gb",
                    "step_times_s",
                    "warmup_times_s",
                    "loss_step0",
                    "setup_s",
                    "worker_wall_s",
                    "loadavg_1min",
                    "lean_heap",
                )
                if k in r
            }
            for r in ok
        ]
        if len(ok) < len(rs):
            rec["error"] = next(r["error"] for r in rs if "error" in r)
        records.append(rec)
    by_key = {(r["impl"], r["mix"], r["adapter"]): r for r in records}
    for rec in records:
        trl = by_key.get(("trl", rec["mix"], rec["adapter"]))
        if trl is not None and "pairs_per_s" in trl and "pairs_per_s" in rec:
            rec["speedup_vs_trl"] = rec["pairs_per_s"] / trl["pairs_per_s"]
            rec["mem_ratio_vs_trl"] = rec["peak_mem_gb"] / trl["peak_mem_gb"]
            growth, trl_growth = _median_growth(rec), _median_growth(trl)
            if growth is not None and trl_growth:
                rec["mem_growth_ratio_vs_trl"] = growth / trl_growth  # without the import baseline
            paired = _paired_speedups(
                groups.get((rec["impl"], rec["mix"], rec["adapter"]), []),
                groups.get(("trl", rec["mix"], rec["adapter"]), []),
            )
            if paired:
                rec["speedup_vs_trl_per_repeat"] = paired
    return records


def _median_growth(rec: dict[str, Any]) -> float | None:
    """Median over repeats of peak RSS minus RSS before the model was loaded (CPU only)."""
    values = [r["peak_growth_gb"] for r in rec.get("runs", []) if r.get("peak_growth_gb") is not None]
    return statistics.median(values) if values else None


def _paired_speedups(runs: list[dict[str, Any]], trl_runs: list[dict[str, Any]]) -> list[float]:
    """pairs/s ratio to the TRL run of the same repeat (the A / B pairs taken close together in time)."""
    trl = {r["repeat"]: r for r in trl_runs if "error" not in r}
    return [r["pairs_per_s"] / trl[r["repeat"]]["pairs_per_s"] for r in runs if "error" not in r and r["repeat"] in trl]


def loss_agreement(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Step-0 loss of TRL vs orpo_kit_trl_compat per workload (and the paper-NLL loss beside it)."""
    by_key = {(r["impl"], r["mix"], r["adapter"]): r for r in records if "loss_step0" in r}
    out = []
    for (impl, mix, adapter), trl in by_key.items():
        compat = by_key.get(("orpo_kit_trl_compat", mix, adapter))
        if impl != "trl" or compat is None:
            continue
        rel = abs(compat["loss_step0"] - trl["loss_step0"]) / abs(trl["loss_step0"])
        default = by_key.get(("orpo_kit", mix, adapter))
        out.append(
            {
                "mix": mix,
                "adapter": adapter,
                "trl": trl["loss_step0"],
                "orpo_kit_trl_compat": compat["loss_step0"],
                "rel_diff": rel,
                "passed": rel <= LOSS_RTOL,
                "orpo_kit_paper_nll": default["loss_step0"] if default else None,
            }
        )
    return out


def acceptance(
    records: list[dict[str, Any]], wall_s: float, mode: str, agreement: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The issue's targets, checked on this run's numbers."""
    by_key = {(r["impl"], r["mix"], r["adapter"]): r for r in records}
    checks = []
    for (mix, adapter), (min_speedup, max_mem) in TARGETS.items():
        rec = by_key.get(("orpo_kit", mix, adapter))
        if rec is None or "speedup_vs_trl" not in rec:
            continue
        checks.append(
            {
                "check": "speed-up vs TRL (pairs/s)",
                "mix": mix,
                "adapter": adapter,
                "value": rec["speedup_vs_trl"],
                "target": f">= {min_speedup}",
                "passed": rec["speedup_vs_trl"] >= min_speedup,
            }
        )
        checks.append(
            {
                "check": "peak memory vs TRL",
                "mix": mix,
                "adapter": adapter,
                "value": rec["mem_ratio_vs_trl"],
                "target": f"<= {max_mem}",
                "passed": rec["mem_ratio_vs_trl"] <= max_mem,
            }
        )
    for a in agreement:
        checks.append(
            {
                "check": "step-0 loss, orpo_kit_trl_compat vs TRL (relative)",
                "mix": a["mix"],
                "adapter": a["adapter"],
                "value": a["rel_diff"],
                "target": f"<= {LOSS_RTOL}",
                "passed": a["passed"],
            }
        )
    if mode in WALL_LIMITS_S:
        checks.append(
            {
                "check": f"wall time of the {mode} benchmark (s)",
                "mix": None,
                "adapter": None,
                "value": wall_s,
                "target": f"< {WALL_LIMITS_S[mode]}",
                "passed": wall_s < WALL_LIMITS_S[mode],
            }
        )
    return checks


# ---- output ---------------------------------------------------------------------------------------------
def format_table(result: dict[str, Any]) -> str:
    """The results as a fixed-width text table, then the loss agreement and the acceptance checks."""
    head = (
        "impl",
        "mix",
        "adapter",
        "pairs/s",
        "tokens/s",
        "peak GB",
        "x TRL speed",
        "x TRL mem",
        "matmul %",
        "loss step0",
    )
    rows = []
    for r in result["records"]:
        if "pairs_per_s" not in r:
            rows.append((r["impl"], r["mix"], r["adapter"], "failed", "", "", "", "", "", ""))
            continue
        rows.append(
            (
                r["impl"],
                r["mix"],
                r["adapter"],
                f"{r['pairs_per_s']:.3f}",
                f"{r['tokens_per_s']:.0f}",
                f"{r['peak_mem_gb']:.2f}",
                f"{r['speedup_vs_trl']:.2f}" if "speedup_vs_trl" in r else "",
                f"{r['mem_ratio_vs_trl']:.2f}" if "mem_ratio_vs_trl" in r else "",
                f"{100 * r['matmul_share']:.1f}",
                f"{r['loss_step0']:.6f}",
            )
        )
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    line = lambda cells: "  ".join(
        str(c).ljust(w) if i < 3 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )
    out = [line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]
    mm = result["matmul"]
    out.append(
        f"\nmatmul rate: {mm['gflops_best']:.1f} GFLOP/s ({mm['dtype']}, {mm['n']}x{mm['n']}, best of "
        f"{mm['repeats']}; median {mm['gflops_median']:.1f})"
    )
    for a in result["loss_agreement"]:
        out.append(
            f"step-0 loss {a['mix']}/{a['adapter']}: TRL {a['trl']:.7f}, orpo_kit_trl_compat "
            f"{a['orpo_kit_trl_compat']:.7f} (relative difference {a['rel_diff']:.1e})"
        )
    for c in result["acceptance"]:
        where = f" {c['mix']}/{c['adapter']}" if c["mix"] else ""
        out.append(
            f"[{'PASS' if c['passed'] else 'FAIL'}] {c['check']}{where}: {c['value']:.4g} (target {c['target']})"
        )
    if result.get("errors"):
        out.append(f"{len(result['errors'])} run(s) failed; see 'errors' in the JSON")
    return "\n".join(out)


@house_style
def plot_results(result: dict[str, Any], path: Path) -> Path:
    """Horizontal bars, one row of panels per workload: pairs/s and peak memory of each implementation run there."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in result["records"] if "pairs_per_s" in r]
    workloads = list(dict.fromkeys((r["mix"], r["adapter"]) for r in records))
    colors = {impl: PALETTE[k % len(PALETTE)] for k, impl in enumerate(dict.fromkeys(r["impl"] for r in records))}
    heights = [len([r for r in records if (r["mix"], r["adapter"]) == w]) for w in workloads]
    fig, axes = plt.subplots(
        len(workloads),
        2,
        figsize=(13, 1.6 + 0.5 * sum(heights) + 0.8 * len(workloads)),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    metrics = (
        ("pairs_per_s", "speedup_vs_trl", "pairs / s (higher is better)"),
        ("peak_mem_gb", "mem_ratio_vs_trl", "peak memory, GB (lower is better)"),
    )
    for row, (mix, adapter) in enumerate(workloads):
        rs = [r for r in records if (r["mix"], r["adapter"]) == (mix, adapter)][::-1]  # first impl on top
        for col, (key, ratio_key, title) in enumerate(metrics):
            ax = axes[row][col]
            bars = ax.barh([r["impl"] for r in rs], [r[key] for r in rs], color=[colors[r["impl"]] for r in rs])
            ax.bar_label(
                bars,
                [
                    f" {r[key]:.2f}"
                    + (f"  ({r[ratio_key]:.2f}x TRL)" if r["impl"] != "trl" and r.get(ratio_key) is not None else "")
                    for r in rs
                ],
            )
            ax.set_title(f"{mix} / {adapter}: {title}")
            ax.tick_params(axis="y", labelleft=col == 0)
            ax.grid(axis="y", visible=False)
            ax.margins(x=0.45)
    m = result["machine"]
    fig.suptitle(
        f"orpo_kit vs TRL ORPOTrainer ({result['mode']} run), {m['gpu'] or m['cpu']}, {m['torch_threads']} threads"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _trainable_params_equal(records: list[dict[str, Any]]) -> dict[str, bool]:
    """Per adapter: do all implementations train the same number of parameters?"""
    out: dict[str, set[int]] = {}
    for r in records:
        if "trainable_params" in r:
            out.setdefault(r["adapter"], set()).add(r["trainable_params"])
    return {adapter: len(counts) == 1 for adapter, counts in out.items()}
