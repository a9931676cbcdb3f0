"""Per-token log-probs of chosen and rejected answers before vs after training: data, HTML, a pager widget.

"Before" is the base model (the LoRA adapter switched off with `model.disable_adapter()`, or a separate
`base_model`); "after" is the tuned model. Each completion token gets its log-prob under both, and the
change Δ = tuned − base says which tokens training made more (green) or less (red) likely.
The per-token numbers come from `orpo_kit.forward.token_logps`, the function the ORPO loss reads its log-probs
through, so their mean over a completion is exactly the mean log-prob `score_pairs` and the loss use.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..data import PreferencePair, TokenizedPair
from ..evaluate import score_pairs
from ..forward import token_logps
from ..scoring import scoring_batches
from .style import CHOSEN, REJECTED, house_style

VIEWS = ("base", "tuned", "change")  # what colours the tokens: log-prob under a model, or the change
LOGP_FLOOR = -10.0  # base / tuned views: log-probs at or below this are fully red, 0 (p = 1) is fully green


@dataclass
class CompletionTokens:
    """One completion (chosen or rejected): its tokens and their log-probs under the base and tuned models."""

    tokens: list[str]
    base: list[float]
    tuned: list[float]

    @property
    def delta(self) -> list[float]:
        """Per-token change of log-prob, tuned − base (positive: training made the token more likely)."""
        return [t - b for b, t in zip(self.base, self.tuned, strict=True)]

    @property
    def mean_base(self) -> float:
        """Mean log-prob under the base model (the `logp` of the ORPO paper)."""
        return sum(self.base) / len(self.base)

    @property
    def mean_tuned(self) -> float:
        """Mean log-prob under the tuned model."""
        return sum(self.tuned) / len(self.tuned)


@dataclass
class PairTokens:
    """A held-out pair with per-token log-probs of both completions, before and after training."""

    index: int
    origin: str
    skill: str | None
    prompt: str
    chosen: CompletionTokens
    rejected: CompletionTokens

    @property
    def margin_before(self) -> float:
        """Mean log-prob of chosen minus rejected under the base model."""
        return self.chosen.mean_base - self.rejected.mean_base

    @property
    def margin_after(self) -> float:
        """Mean log-prob of chosen minus rejected under the tuned model."""
        return self.chosen.mean_tuned - self.rejected.mean_tuned


@torch.no_grad()
def completion_token_logps(
    model: torch.nn.Module,
    tokenized: list[TokenizedPair],
    pad_token_id: int,
    batch_size: int = 8,
) -> list[tuple[list[float], list[float]]]:
    """Log-prob of every completion token of each pair under `model`: a (chosen, rejected) list per pair."""
    out: list[tuple[list[float], list[float]]] = []
    for chunk, batch in scoring_batches(model, tokenized, batch_size, pad_token_id=pad_token_id):
        targets, logps, _ = token_logps(model, batch, chunked=True)  # what the loss reads, token by token
        seq, logps = targets.sequence.cpu(), logps.cpu()
        n = len(chunk)
        out.extend((logps[seq == i].tolist(), logps[seq == n + i].tolist()) for i in range(n))
    return out


@contextlib.contextmanager
def base_of(model: Any, base_model: Any = None) -> Iterator[Any]:
    """The model before training: `base_model` when given, else `model` with its LoRA adapter switched off."""
    if base_model is not None:
        yield base_model
        return
    if not hasattr(model, "disable_adapter"):
        raise ValueError(
            "this model has no LoRA adapter to switch off (a full fine-tuning run?); "
            "pass base_model= (for example the run's base loaded with transformers)"
        )
    with model.disable_adapter():
        yield model


def token_texts(tokenizer: Any, ids: list[int]) -> list[str]:
    """Each token's text as it appears in the decoded completion (multi-byte characters land on their last token)."""
    texts, previous = [], ""
    for n in range(1, len(ids) + 1):
        decoded = tokenizer.decode(ids[:n], skip_special_tokens=False)
        texts.append(decoded[len(previous) :] if decoded.startswith(previous) else tokenizer.decode(ids[n - 1 : n]))
        previous = decoded
    return texts


def align_pairs(pairs: list[PreferencePair], tokenized: list[TokenizedPair]) -> list[PreferencePair]:
    """The pair behind each tokenized pair, matched by origin (tokenize_pairs may drop pairs that cannot fit)."""
    by_origin = {p.origin: p for p in pairs}
    missing = [t.origin for t in tokenized if t.origin not in by_origin]
    if missing:
        raise ValueError(
            f"{len(missing)} tokenized pairs have no pair with the same origin, e.g. {missing[0]!r}; "
            "pass the pairs that were tokenized"
        )
    return [by_origin[t.origin] for t in tokenized]


def token_logp_changes(
    model: Any,
    tokenizer: Any,
    pairs: list[PreferencePair],
    tokenized: list[TokenizedPair],
    base_model: Any = None,
    batch_size: int = 8,
) -> list[PairTokens]:
    """Per-token log-probs of each pair's chosen and rejected completion under the base and the tuned model."""
    pad = tokenizer.pad_token_id
    tuned = completion_token_logps(model, tokenized, pad, batch_size)
    with base_of(model, base_model) as before:
        base = completion_token_logps(before, tokenized, pad, batch_size)
    out = []
    for i, (pair, tok) in enumerate(zip(align_pairs(pairs, tokenized), tokenized, strict=True)):
        chosen = CompletionTokens(token_texts(tokenizer, tok.chosen_ids), base[i][0], tuned[i][0])
        rejected = CompletionTokens(token_texts(tokenizer, tok.rejected_ids), base[i][1], tuned[i][1])
        out.append(PairTokens(i, tok.origin, pair.skill, pair.prompt, chosen, rejected))
    return out


def top_token_changes(views: list[PairTokens], k: int = 5) -> dict[str, list[tuple[int, str, str, float]]]:
    """The k largest rises and falls of per-token log-prob over all pairs: (pair, chosen|rejected, token, Δ)."""
    moves = [
        (v.index, side, tok, d)
        for v in views
        for side in ("chosen", "rejected")
        for tok, d in zip(getattr(v, side).tokens, getattr(v, side).delta, strict=True)
    ]
    moves.sort(key=lambda m: m[3])
    return {"rose": moves[::-1][:k], "fell": moves[:k]}


def summarize_pair_tokens(view: PairTokens, k: int = 3) -> str:
    """Plain text: the pair, mean log-probs before -> after, and the k tokens with the largest and smallest Δ."""
    lines = [f"pair {view.index} ({view.skill or 'no skill'}): {view.prompt[:60]!r}"]
    for side in ("chosen", "rejected"):
        c: CompletionTokens = getattr(view, side)
        moved = sorted(zip(c.delta, c.tokens, strict=True))
        fmt = lambda items: ", ".join(f"{t!r} {d:+.2f}" for d, t in items)
        lines.append(
            f"  {side:8s} {len(c.tokens):3d} tokens  mean logp {c.mean_base:7.3f} -> {c.mean_tuned:7.3f}"
            f"  | largest Δ: {fmt(moved[::-1][:k])} | smallest Δ: {fmt(moved[:k])}"
        )
    lines.append(f"  margin (chosen - rejected) {view.margin_before:+.3f} -> {view.margin_after:+.3f}")
    return "\n".join(lines)


def _rgba(value: float) -> tuple[float, float, float, float]:
    """Background for a value in [-1, 1] as RGBA in [0, 1]: red below 0, green above, stronger further from 0."""
    v = max(-1.0, min(1.0, value))
    r, g, b = (0, 150, 60) if v >= 0 else (210, 40, 40)
    return r / 255, g / 255, b / 255, round(0.75 * abs(v), 3)


def _colour(value: float) -> str:
    """`_rgba` as a CSS colour."""
    r, g, b, a = _rgba(value)
    return f"rgba({round(r * 255)}, {round(g * 255)}, {round(b * 255)}, {a:.3f})"


def _shown(text: str) -> str:
    """Token text made visible in HTML: newlines as ↵, escaped."""
    return html.escape(text.replace("\n", "↵"))


def _token_values(c: CompletionTokens, view: str, scale: float) -> list[float]:
    """Each token's colour value in [-1, 1]: Δ / scale ("change"), else its log-prob from LOGP_FLOOR (-1) to 0 (+1)."""
    if view == "change":
        return [d / scale for d in c.delta]
    logps = c.base if view == "base" else c.tuned
    return [1.0 + 2.0 * max(lp, LOGP_FLOOR) / -LOGP_FLOOR for lp in logps]


def _token_spans(c: CompletionTokens, view: str, scale: float) -> str:
    """One coloured <span> per token, its numbers in the tooltip."""
    spans = []
    values = _token_values(c, view, scale)
    for tok, b, t, d, value in zip(c.tokens, c.base, c.tuned, c.delta, values, strict=True):
        tip = f"base {b:.3f}, tuned {t:.3f}, Δ {d:+.3f}"
        spans.append(
            f'<span title="{tip}" style="background:{_colour(value)};padding:1px 0;'
            f'border-radius:2px;white-space:pre-wrap">{_shown(tok)}</span>'
        )
    return "".join(spans)


def _legend_labels(view: str, scale: float) -> tuple[str, str]:
    """What full red and full green mean in the chosen view."""
    if view == "change":
        return f"Δ logp ≤ −{scale:.2f} (less likely after training)", f"Δ logp ≥ +{scale:.2f} (more likely)"
    return f"logp ≤ {LOGP_FLOOR:.0f} under {view}", f"logp ≈ 0 (p ≈ 1) under {view}"


def _legend(view: str, scale: float) -> str:
    """Colour key for the chosen view."""
    low, high = _legend_labels(view, scale)
    swatch = '<span style="background:{};padding:0 8px;margin:0 4px"> </span>'
    return (
        f'<div class="legend" style="font-size:85%;margin-top:6px">legend: {swatch.format(_colour(-1))}{low} '
        f"{swatch.format(_colour(0))}no change / middle {swatch.format(_colour(1))}{high}; "
        "hover a token for its numbers</div>"
    )


def _check_view(view: PairTokens, model: str, scale: float | None) -> tuple[str, float]:
    """The colouring (checked) and the Δ of full colour (default: the pair's largest |Δ|)."""
    if model not in VIEWS:
        raise ValueError(f"model must be one of {VIEWS}, got {model!r}")
    if scale is None:
        scale = max([abs(d) for c in (view.chosen, view.rejected) for d in c.delta] + [1e-6])
    return model, scale


def _showing(model: str) -> str:
    """What the colours of a view show, in words."""
    return "Δ logp (tuned − base)" if model == "change" else f"logp under the {model} model"


def render_pair_html(view: PairTokens, model: str = "change", scale: float | None = None) -> str:
    """HTML of one pair: its prompt, then chosen and rejected tokens coloured by log-prob under `model`
    ("base" or "tuned") or by the change Δ = tuned − base ("change"; `scale` = the Δ of full colour, default
    the pair's largest |Δ|), with a legend."""
    model, scale = _check_view(view, model, scale)
    parts = [
        f'<div class="orpo-pair" style="font-family:sans-serif;line-height:1.7">'
        f"<div><b>pair {view.index}</b> · skill: {html.escape(view.skill or '-')} · showing: "
        f"{_showing(model)}</div>",
        f"<div><b>prompt:</b> {html.escape(view.prompt)}</div>",
    ]
    for side in ("chosen", "rejected"):
        c: CompletionTokens = getattr(view, side)
        parts.append(
            f"<div><b>{side}</b> (mean logp base {c.mean_base:.3f} → tuned {c.mean_tuned:.3f}, "
            f"Δ {c.mean_tuned - c.mean_base:+.3f})<br>{_token_spans(c, model, scale)}</div>"
        )
    parts.append(
        f"<div>margin chosen − rejected: {view.margin_before:+.3f} before → {view.margin_after:+.3f} after</div>"
    )
    parts.append(_legend(model, scale) + "</div>")
    return "".join(parts)


def pair_tokens_png(
    view: PairTokens, model: str = "change", scale: float | None = None, note: str | None = None
) -> bytes:
    """`render_pair_html` as a PNG: the same text, tokens on the same colours, and the legend; for renderers that
    strip inline styles (code-hosting sites), so the colours still reach the reader."""
    from .static import Span, spans_png

    model, scale = _check_view(view, model, scale)
    paragraphs = [
        [Span(f"pair {view.index} · skill: {view.skill or '-'} · showing: {_showing(model)}", bold=True)],
        [Span("prompt: ", bold=True), Span(view.prompt)],
    ]
    for side in ("chosen", "rejected"):
        c: CompletionTokens = getattr(view, side)
        head = (
            f"{side} (mean logp base {c.mean_base:.3f} → tuned {c.mean_tuned:.3f}, Δ {c.mean_tuned - c.mean_base:+.3f})"
        )
        paragraphs.append([Span(head, bold=True)])
        values = _token_values(c, model, scale)
        paragraphs.append([Span(t.replace("\n", "↵\n"), _rgba(v)) for t, v in zip(c.tokens, values, strict=True)])
    paragraphs.append(
        [Span(f"margin chosen − rejected: {view.margin_before:+.3f} before → {view.margin_after:+.3f} after")]
    )
    low, high = _legend_labels(model, scale)
    paragraphs.append(
        [
            Span("legend: "),
            Span("  ", _rgba(-1)),
            Span(f" {low}  "),
            Span("  ", _rgba(0)),
            Span(" no change / middle  "),
        ]
        + [Span("  ", _rgba(1)), Span(f" {high}")]
    )
    return spans_png(paragraphs, note)


def logp_table(
    model: Any,
    tokenizer: Any,
    pairs: list[PreferencePair],
    tokenized: list[TokenizedPair],
    base_model: Any = None,
    batch_size: int = 8,
) -> list[dict[str, Any]]:
    """One row per held-out pair: skill, prompt, base / tuned mean log-probs of chosen and rejected, margins
    before and after (from `orpo_kit.evaluate.score_pairs`)."""
    aligned = align_pairs(pairs, tokenized)
    tuned = score_pairs(model, tokenized, tokenizer.pad_token_id, batch_size, pairs=aligned)
    with base_of(model, base_model) as before:
        base = score_pairs(before, tokenized, tokenizer.pad_token_id, batch_size, pairs=aligned)
    return [
        {
            "pair": i,
            "skill": p.skill,
            "prompt": p.prompt,
            "base_chosen": b.chosen_logp,
            "base_rejected": b.rejected_logp,
            "tuned_chosen": t.chosen_logp,
            "tuned_rejected": t.rejected_logp,
            "margin_before": b.chosen_logp - b.rejected_logp,
            "margin_after": t.chosen_logp - t.rejected_logp,
        }
        for i, (p, b, t) in enumerate(zip(aligned, base, tuned, strict=True))
    ]


TABLE_COLUMNS = ("base_chosen", "base_rejected", "tuned_chosen", "tuned_rejected", "margin_before", "margin_after")


def format_logp_table(rows: list[dict[str, Any]], max_rows: int | None = None, prompt_width: int = 34) -> str:
    """Plain-text table of `logp_table` rows (numbers to 3 decimals)."""
    head = f"{'pair':>4s} {'skill':12s} {'prompt':{prompt_width}s} " + " ".join(f"{c:>14s}" for c in TABLE_COLUMNS)
    lines = [head]
    for r in rows[:max_rows]:
        prompt = r["prompt"].replace("\n", " ")[:prompt_width]
        lines.append(
            f"{r['pair']:>4d} {(r['skill'] or '-')[:12]:12s} {prompt:{prompt_width}s} "
            + " ".join(f"{r[c]:>14.3f}" for c in TABLE_COLUMNS)
        )
    if max_rows is not None and len(rows) > max_rows:
        lines.append(f"... {len(rows) - max_rows} more rows")
    return "\n".join(lines)


def logp_table_summary(rows: list[dict[str, Any]]) -> str:
    """What training did over the table: mean log-probs and margin before -> after, and which way pairs moved."""
    n = len(rows)
    mean = lambda key: sum(r[key] for r in rows) / n
    count = lambda test: sum(1 for r in rows if test(r))
    return "\n".join(
        [
            f"{n} held-out pairs",
            f"mean chosen logp   {mean('base_chosen'):8.3f} -> {mean('tuned_chosen'):8.3f} "
            f"({_moved(mean('base_chosen'), mean('tuned_chosen'))})",
            f"mean rejected logp {mean('base_rejected'):8.3f} -> {mean('tuned_rejected'):8.3f} "
            f"({_moved(mean('base_rejected'), mean('tuned_rejected'))})",
            f"mean margin        {mean('margin_before'):8.3f} -> {mean('margin_after'):8.3f} "
            f"({_moved(mean('margin_before'), mean('margin_after'), 'widened', 'narrowed')})",
            f"chosen became more likely in {count(lambda r: r['tuned_chosen'] > r['base_chosen'])}/{n} pairs, "
            f"rejected in {count(lambda r: r['tuned_rejected'] > r['base_rejected'])}/{n}",
            f"margin widened in {count(lambda r: r['margin_after'] > r['margin_before'])}/{n} pairs; "
            f"chosen preferred (reward accuracy) {count(lambda r: r['margin_before'] > 0)}/{n} -> "
            f"{count(lambda r: r['margin_after'] > 0)}/{n}",
        ]
    )


def _moved(before: float, after: float, up: str = "rose", down: str = "fell") -> str:
    """The direction of a change in words, as printed (so text about it can be checked against the output)."""
    return up if round(after, 3) > round(before, 3) else down if round(after, 3) < round(before, 3) else "unchanged"


@house_style
def plot_logp_before_after(rows: list[dict[str, Any]]) -> Any:
    """Each answer of the `logp_table` rows as a dot: mean log-prob under the base model (x) and the tuned one
    (y), chosen and rejected in their colours; above the diagonal it became more likely."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 6))
    for side, colour in (("chosen", CHOSEN), ("rejected", REJECTED)):
        xs, ys = [r[f"base_{side}"] for r in rows], [r[f"tuned_{side}"] for r in rows]
        ax.scatter(xs, ys, s=30, c=colour, marker="o" if side == "chosen" else "s", label=f"{side} (n={len(rows)})")
    lo = min(min(r[k] for k in ("base_chosen", "base_rejected", "tuned_chosen", "tuned_rejected")) for r in rows)
    ax.plot([lo, 0], [lo, 0], "k--", lw=1)
    ax.set_xlabel("mean log-prob before (base)")
    ax.set_ylabel("mean log-prob after (tuned)")
    ax.set_title("held-out answers: above the diagonal = more likely")
    ax.legend()
    fig.tight_layout()
    return fig


def pair_pager(views: list[PairTokens], model: str = "change") -> Any:
    """A widget to page through pairs (slider "pair", buttons "previous" / "next") and switch the colouring
    between "base", "tuned" and "change"; every update calls `render_pair_html`. Displayed, it also saves the
    shown pair as a PNG (`pair_tokens_png`) for readers of the saved notebook."""
    import ipywidgets as widgets

    from .static import STATIC_NOTE, StaticView, static_copy_box

    if not views:
        raise ValueError("no pairs to show")
    slider = widgets.IntSlider(value=0, min=0, max=len(views) - 1, description="pair", continuous_update=False)
    previous, following = widgets.Button(description="previous"), widgets.Button(description="next")
    toggle = widgets.ToggleButtons(options=list(VIEWS), value=model, description="model")
    shown = widgets.HTML(render_pair_html(views[0], model))

    def update(_: Any = None) -> None:
        shown.value = render_pair_html(views[slider.value], toggle.value)

    def snapshot() -> StaticView:
        view = views[slider.value]
        text = f"pair {slider.value} of {len(views)}, coloured by {toggle.value}\n{summarize_pair_tokens(view)}"
        return StaticView(text, png=pair_tokens_png(view, toggle.value, note=STATIC_NOTE))

    previous.on_click(lambda _: setattr(slider, "value", max(slider.min, slider.value - 1)))
    following.on_click(lambda _: setattr(slider, "value", min(slider.max, slider.value + 1)))
    slider.observe(update, names="value")
    toggle.observe(update, names="value")
    return static_copy_box([widgets.HBox([previous, slider, following]), toggle, shown], snapshot)
