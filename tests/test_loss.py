"""The ORPO loss against an independent float64 implementation of the paper's formulas, and its properties."""

from __future__ import annotations

import math

import mpmath
import pytest
import torch
import torch.nn.functional as F
from plain_path import pair_logps_from_logits

from orpo_kit.logprobs import LogpTargets, pair_logps_from_token_logps, selected_token_logps
from orpo_kit.loss import METRIC_NAMES, PairLogps, log1mexp, orpo_loss


def reference_orpo(chosen: list[float], rejected: list[float], nll: float, lam: float) -> tuple[float, float, float]:
    """The paper's equations with 50-digit arithmetic (mpmath): (loss, mean log sigma(d), mean d)."""
    mpmath.mp.dps = 50
    ds, log_sigmas = [], []
    for lc, lr in zip(chosen, rejected, strict=True):
        p_c, p_r = mpmath.exp(mpmath.mpf(lc)), mpmath.exp(mpmath.mpf(lr))  # 1 - p via expm1 below
        d = mpmath.log(p_c / -mpmath.expm1(lc)) - mpmath.log(p_r / -mpmath.expm1(lr))  # log odds ratio
        ds.append(d)
        log_sigmas.append(mpmath.log(1 / (1 + mpmath.exp(-d))))
    n = len(ds)
    l_or = -sum(log_sigmas) / n
    return float(nll + lam * l_or), float(sum(log_sigmas) / n), float(sum(ds) / n)


def random_logps(n: int, seed: int) -> torch.Tensor:
    """Mean log-probs spanning near-certain (-1e-7) to hopeless (-50)."""
    gen = torch.Generator().manual_seed(seed)
    body = -torch.exp(torch.empty(n - 4).uniform_(math.log(1e-7), math.log(50.0), generator=gen))
    return torch.cat([torch.tensor([-1e-7, -50.0, -0.6931, -0.6932]), body])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("lam", [0.0, 0.1, 1.0])
def test_orpo_loss_matches_float64_reference(dtype: torch.dtype, lam: float) -> None:
    chosen = random_logps(64, seed=1).to(dtype).requires_grad_()
    rejected = random_logps(64, seed=2).flip(0).to(dtype).requires_grad_()
    nll = -chosen.mean()
    pair = PairLogps(chosen, rejected, nll, torch.tensor(0.0), torch.tensor(0.0))
    loss, metrics = orpo_loss(pair, lam)
    ref_loss, ref_log_sigma, ref_d = reference_orpo(chosen.tolist(), rejected.tolist(), float(nll.detach()), lam)
    rtol = 1e-6 if dtype == torch.float64 else 1e-5
    assert math.isclose(loss.item(), ref_loss, rel_tol=rtol)
    assert math.isclose(metrics["log_odds_ratio"].item(), ref_log_sigma, rel_tol=rtol)
    assert math.isclose(metrics["log_odds_chosen"].item(), ref_d, rel_tol=rtol, abs_tol=1e-6)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(chosen.grad).all() and torch.isfinite(rejected.grad).all()
    assert set(metrics) == set(METRIC_NAMES)


def test_log1mexp_is_stable_where_the_naive_form_fails() -> None:
    x = torch.tensor([-1e-7, -1e-20, -0.5, -0.6931, -0.7, -5.0, -50.0, -700.0], dtype=torch.float64, requires_grad=True)
    y = log1mexp(x)
    mpmath.mp.dps = 50
    expected = [float(mpmath.log1p(-mpmath.exp(mpmath.mpf(v)))) for v in x.tolist()]
    torch.testing.assert_close(y, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0)
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
    x32 = torch.tensor([-1e-7, -1e-9], dtype=torch.float32)
    assert not torch.isfinite(torch.log(1 - torch.exp(x32))).all()  # the naive form breaks here...
    assert torch.isfinite(log1mexp(x32)).all()  # ...the stable one does not


def test_log1mexp_at_zero_stays_finite() -> None:
    x = torch.zeros(3, requires_grad=True)
    y = log1mexp(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()


def test_accuracy_is_defined_on_logps_so_it_works_at_lambda_zero() -> None:
    chosen, rejected = torch.tensor([-1.0, -2.0, -3.0, -4.0]), torch.tensor([-2.0, -1.0, -4.0, -5.0])
    _, metrics = orpo_loss(PairLogps(chosen, rejected, -chosen.mean(), torch.tensor(0.0), torch.tensor(0.0)), 0.0)
    assert metrics["rewards/accuracies"].item() == 0.75
    assert metrics["rewards/chosen"].item() == 0.0  # TRL-style reward = lambda * logp


def naive_token_logps(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log-softmax of the whole vocabulary, then the next token's entry: [N, T-1]."""
    return torch.log_softmax(logits[:, :-1].double(), -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)


def make_batch(pad_id: int = 7) -> tuple[torch.Tensor, ...]:
    """Two pairs, rows [c0, c1, r0, r1], right-padded with pad == an id that also ends completions."""
    rows = [([1, 2, 3], [4, 5, pad_id]), ([1, 9], [6, pad_id]), ([1, 2, 3], [8, pad_id]), ([1, 9], [4, 4, 5, pad_id])]
    width = max(len(p) + len(c) for p, c in rows)
    ids = torch.full((4, width), pad_id)
    attn, comp = torch.zeros(4, width, dtype=torch.long), torch.zeros(4, width, dtype=torch.long)
    for i, (p, c) in enumerate(rows):
        ids[i, : len(p) + len(c)] = torch.tensor(p + c)
        attn[i, : len(p) + len(c)] = 1
        comp[i, len(p) : len(p) + len(c)] = 1
    return ids, attn, comp


def test_pair_logps_match_naive_log_softmax_and_keep_eos_when_pad_equals_eos() -> None:
    ids, attn, comp = make_batch()
    logits = torch.randn(4, ids.shape[1], 11, generator=torch.Generator().manual_seed(0))
    out = pair_logps_from_logits(logits, ids, attn, comp, nll_tokens="response")
    tok = naive_token_logps(logits, ids)
    m = comp[:, 1:].double()
    expected = (tok * m).sum(-1) / m.sum(-1)
    torch.testing.assert_close(out.chosen_logps.double(), expected[:2], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.rejected_logps.double(), expected[2:], rtol=1e-6, atol=1e-6)
    assert m.sum(-1).tolist() == [3, 2, 2, 4]  # the final pad-id (= eos) token of every completion counts
    torch.testing.assert_close(out.nll_loss.double(), -expected[:2].mean(), rtol=1e-6, atol=1e-6)


def test_trl_nll_is_cross_entropy_over_prompt_and_response_of_chosen_rows() -> None:
    ids, attn, comp = make_batch()
    logits = torch.randn(4, ids.shape[1], 11, generator=torch.Generator().manual_seed(1))
    out = pair_logps_from_logits(logits, ids, attn, comp, nll_tokens="prompt_and_response")
    labels = torch.where(attn == 1, ids, -100)[:2, 1:]
    ce = F.cross_entropy(logits[:2, :-1].reshape(-1, 11), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.nll_loss, ce, rtol=1e-6, atol=1e-7)


def test_selected_token_logps_chunks_agree_with_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    logits = torch.randn(50, 13, generator=torch.Generator().manual_seed(2))
    targets = torch.randint(0, 13, (50,), generator=torch.Generator().manual_seed(3))
    whole, _ = selected_token_logps(logits, targets)
    monkeypatch.setattr("orpo_kit.logprobs._ROWS_PER_CHUNK", 7)
    chunked, _ = selected_token_logps(logits, targets)
    torch.testing.assert_close(whole, chunked)
    torch.testing.assert_close(whole, torch.log_softmax(logits, -1)[torch.arange(50), targets])


def test_zero_completion_tokens_is_an_error_not_nan() -> None:
    """Pair 0's rejected completion (sequence 2) has no token: its mean would be 0 / 0."""
    targets = LogpTargets(
        positions=torch.arange(3),
        token_ids=torch.zeros(3, dtype=torch.long),
        sequence=torch.tensor([0, 1, 3]),
        num_pairs=2,
    )
    with pytest.raises(ValueError, match="no completion tokens"):
        pair_logps_from_token_logps(torch.full((3,), -1.0), torch.zeros(3), targets)


def test_unknown_nll_tokens_is_rejected() -> None:
    ids, attn, comp = make_batch()
    with pytest.raises(ValueError, match="nll_tokens"):
        pair_logps_from_logits(torch.zeros(4, ids.shape[1], 11), ids, attn, comp, nll_tokens="everything")
