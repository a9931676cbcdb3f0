"""Views of the ORPO loss for notebook 02. Every number comes from `orpo_kit.loss` (orpo_loss, odds_ratio_terms,
log_odds, log1mexp) and autograd; nothing here re-implements the objective."""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any
from unittest import mock

import matplotlib.pyplot as plt
import torch

from .. import loss as loss_module
from ..loss import PairLogps, log1mexp, log_odds, odds_ratio_terms, orpo_loss
from .style import house_style


def _grad(t: torch.Tensor) -> float:
    """The gradient of a scalar leaf after backward."""
    if t.grad is None:
        raise RuntimeError("no gradient: call backward first")
    return t.grad.item()


def _check_probability(name: str, p: float) -> None:
    """Probabilities strictly between 0 and 1 (log 0 and infinite odds have no gradient to show)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"{name} must be strictly between 0 and 1, got {p}")


def _pair_logps(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor) -> PairLogps:
    """A PairLogps for given mean log-probs; the NLL is the paper's (and `_reduce`'s default): -mean chosen logp."""
    zero = chosen_logps.new_zeros(())
    return PairLogps(chosen_logps, rejected_logps, -chosen_logps.mean(), zero, zero)


def loss_terms(p_chosen: float, p_rejected: float, lam: float) -> dict[str, float]:
    """Every term of the ORPO loss for one pair whose completions have per-token probability p (exp of the mean
    log-prob), computed in float64 by `orpo_loss`, with autograd gradients w.r.t. the two mean log-probs.

    Keys: p_chosen, p_rejected, lam, logp_chosen, logp_rejected, log_odds_chosen, log_odds_rejected,
    log_odds_ratio (d), odds_ratio (exp d), nll, odds_ratio_loss (L_OR = -log sigmoid d), loss (nll + lam * L_OR),
    delta (the paper's gradient weight 1 / (1 + odds ratio)), grad_logp_chosen, grad_logp_rejected (d loss / d logp).
    """
    _check_probability("p_chosen", p_chosen)
    _check_probability("p_rejected", p_rejected)
    if lam < 0:
        raise ValueError(f"lam (the odds-ratio weight) must be >= 0, got {lam}")
    chosen = torch.tensor([math.log(p_chosen)], dtype=torch.float64, requires_grad=True)
    rejected = torch.tensor([math.log(p_rejected)], dtype=torch.float64, requires_grad=True)
    pair = _pair_logps(chosen, rejected)
    loss, _ = orpo_loss(pair, lam)
    loss.backward()
    or_loss, d = odds_ratio_terms(chosen.detach(), rejected.detach())
    return {
        "p_chosen": p_chosen,
        "p_rejected": p_rejected,
        "lam": lam,
        "logp_chosen": chosen.item(),
        "logp_rejected": rejected.item(),
        "log_odds_chosen": log_odds(chosen.detach()).item(),
        "log_odds_rejected": log_odds(rejected.detach()).item(),
        "log_odds_ratio": d.item(),
        "odds_ratio": math.exp(d.item()),
        "nll": pair.nll_loss.item(),
        "odds_ratio_loss": or_loss.item(),
        "loss": loss.item(),
        "delta": torch.sigmoid(-d).item(),  # 1 / (1 + exp(d)) = 1 / (1 + odds ratio)
        "grad_logp_chosen": _grad(chosen),
        "grad_logp_rejected": _grad(rejected),
    }


def loss_terms_text(terms: dict[str, float]) -> str:
    """`loss_terms` as lines; 'loss = ' appears exactly once (the total), with 4 decimals."""
    t = terms
    return "\n".join(
        [
            f"p(chosen) = {t['p_chosen']:.2f}, p(rejected) = {t['p_rejected']:.2f}, λ = {t['lam']:.2f}",
            f"log odds: chosen {t['log_odds_chosen']:+.4f}, rejected {t['log_odds_rejected']:+.4f}, "
            f"ratio d = {t['log_odds_ratio']:+.4f} (odds ratio {t['odds_ratio']:.4f})",
            f"NLL term = {t['nll']:.4f}",
            f"odds-ratio term L_OR = {t['odds_ratio_loss']:.4f}  (λ · L_OR = {t['lam'] * t['odds_ratio_loss']:.4f})",
            f"loss = {t['loss']:.4f}",
            f"gradient weight δ(d) = 1/(1 + odds ratio) = {t['delta']:.4f}",
            f"d total / d logp(chosen) = {t['grad_logp_chosen']:+.4f}, "
            f"d total / d logp(rejected) = {t['grad_logp_rejected']:+.4f}",
        ]
    )


def loss_terms_html(terms: dict[str, float]) -> str:
    """`loss_terms_text` as HTML for a widget: the text a browser test reads, with the total in bold."""
    lines = loss_terms_text(terms).splitlines()
    body = "<br>".join(f"<b>{line}</b>" if line.startswith("loss = ") else line for line in lines)
    return f'<div class="orpo-loss-terms" style="font-family:monospace">{body}</div>'


def odds_table(probabilities: Sequence[float]) -> list[dict[str, float]]:
    """p, odds p / (1 - p) and log odds (from `orpo_kit.loss.log_odds`) for a few probabilities."""
    logps = torch.tensor([math.log(p) for p in probabilities], dtype=torch.float64)
    lo = log_odds(logps)
    return [{"p": p, "odds": math.exp(v), "log_odds": v} for p, v in zip(probabilities, lo.tolist(), strict=True)]


@house_style
def plot_probability_odds(n_points: int = 200) -> Any:
    """One number three ways against p: log p (what the model gives, on (-inf, 0)), odds p / (1 - p) on (0, inf),
    and log odds (`orpo_kit.loss.log_odds`) on the whole real line."""
    p = torch.linspace(0.005, 0.995, n_points, dtype=torch.float64)
    lo = log_odds(p.log())
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, values, title in (
        (axes[0], p.log(), "log p (mean log-prob)"),
        (axes[1], lo.exp(), "odds = p / (1 - p)"),
        (axes[2], lo, "log odds = log p - log(1 - p)"),
    ):
        ax.plot(p, values)
        ax.set_title(title)
        ax.set_xlabel("p (per-token probability)")
        ax.axvline(0.5, color="k", linestyle=":", linewidth=0.8)
    axes[1].set_yscale("log")
    axes[2].axhline(0, color="k", linewidth=0.5)
    fig.tight_layout()
    return fig


def odds_ratio_gradient(p_chosen: float, p_rejected: float) -> dict[str, float]:
    """Autograd gradients of L_OR (`odds_ratio_terms`) w.r.t. the two mean log-probs, next to the paper's form
    (eq. 9-10): grad = delta(d) * h(d) with delta = 1 / (1 + odds ratio) and h = -1/(1-p_w) for the chosen,
    +1/(1-p_l) for the rejected log-prob."""
    _check_probability("p_chosen", p_chosen)
    _check_probability("p_rejected", p_rejected)
    chosen = torch.tensor([math.log(p_chosen)], dtype=torch.float64, requires_grad=True)
    rejected = torch.tensor([math.log(p_rejected)], dtype=torch.float64, requires_grad=True)
    or_loss, d = odds_ratio_terms(chosen, rejected)
    or_loss.sum().backward()
    delta = torch.sigmoid(-d).item()  # 1 / (1 + exp(d)) = 1 / (1 + odds ratio)
    return {
        "p_chosen": p_chosen,
        "p_rejected": p_rejected,
        "log_odds_ratio": d.item(),
        "delta": delta,
        "grad_logp_chosen": _grad(chosen),
        "grad_logp_rejected": _grad(rejected),
        "paper_grad_logp_chosen": -delta / (1.0 - p_chosen),
        "paper_grad_logp_rejected": delta / (1.0 - p_rejected),
    }


@house_style
def plot_odds_ratio_term(lo: float = -8.0, hi: float = 8.0, n_points: int = 200) -> Any:
    """L_OR = -log sigmoid(d) and its gradient weight delta(d) = 1/(1 + e^d) against the log odds ratio d."""
    d = torch.linspace(lo, hi, n_points, dtype=torch.float64).requires_grad_(True)
    chosen_logps = torch.nn.functional.logsigmoid(d)  # p = sigmoid(d) has log odds d
    rejected_logps = torch.full_like(chosen_logps, math.log(0.5))  # p = 0.5 has log odds 0
    or_loss, _ = odds_ratio_terms(chosen_logps, rejected_logps)
    (grad,) = torch.autograd.grad(or_loss.sum(), d)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(d.detach(), or_loss.detach(), label="L_OR = -log σ(d)")
    ax.plot(d.detach(), -grad, label="δ(d) = -dL_OR/dd = 1/(1 + odds ratio)")
    ax.axvline(0, color="k", linewidth=0.5)
    ax.set_xlabel("d = log odds(chosen) - log odds(rejected)")
    ax.legend()
    fig.tight_layout()
    return fig


def compare_log1mexp(xs: Sequence[float], dtype: torch.dtype = torch.float32) -> list[dict[str, float]]:
    """log(1 - exp(x)) and its gradient, naive (`torch.log(1 - torch.exp(x))`) vs `orpo_kit.loss.log1mexp`,
    in `dtype`; x is a mean log-prob (x -> 0 means a very confident model)."""
    rows = []
    for x in xs:
        values = {}
        for name, fn in (("naive", naive_log1mexp), ("stable", log1mexp)):
            t = torch.tensor(x, dtype=dtype, requires_grad=True)
            out = fn(t)
            out.backward()
            values[name], values[f"{name}_grad"] = out.item(), _grad(t)
        rows.append({"x": x, **values})
    return rows


def naive_log1mexp(x: torch.Tensor) -> torch.Tensor:
    """The textbook form log(1 - exp(x)): what `log1mexp` replaces (shown only to compare)."""
    return torch.log(1 - torch.exp(x))


def compare_odds_ratio_gradients(
    chosen_logp: float,
    rejected_logp: float,
    dtype: torch.dtype = torch.float32,
) -> dict[str, dict[str, float]]:
    """L_OR and its gradients from `odds_ratio_terms` as shipped ('stable') and with `log1mexp` swapped for
    `naive_log1mexp` ('naive', patched for this call only): what a confident model does to the naive form."""
    out = {}
    for name, patch in (
        ("naive", mock.patch.object(loss_module, "log1mexp", naive_log1mexp)),
        ("stable", nullcontext()),
    ):
        chosen = torch.tensor([chosen_logp], dtype=dtype, requires_grad=True)
        rejected = torch.tensor([rejected_logp], dtype=dtype, requires_grad=True)
        with patch:
            or_loss, d = odds_ratio_terms(chosen, rejected)
        or_loss.sum().backward()
        out[name] = {
            "log_odds_ratio": d.item(),
            "odds_ratio_loss": or_loss.item(),
            "grad_logp_chosen": _grad(chosen),
            "grad_logp_rejected": _grad(rejected),
        }
    return out


def compare_log1mexp_lines(rows: list[dict[str, float]]) -> list[str]:
    """`compare_log1mexp` as aligned text (6 significant digits)."""
    out = [f"{'x = logp':>9s} {'naive':>12s} {'naive grad':>12s} {'log1mexp':>12s} {'grad':>12s}"]
    out += [
        f"{r['x']:9.0e} {r['naive']:12.6g} {r['naive_grad']:12.6g} {r['stable']:12.6g} {r['stable_grad']:12.6g}"
        for r in rows
    ]
    return out
