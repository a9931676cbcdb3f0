"""Per-token log-prob views (orpo_kit.viz.token_view) and the chat view (orpo_kit.viz.chat_view).

One tiny LoRA run (a few steps, seconds) is trained per module and shared. The per-token numbers are checked
against an independent path: their mean must equal `score_pairs` (the loss's own reduction), and "base" must
equal the model with its adapter switched off.
"""

from __future__ import annotations

import html
from pathlib import Path

import pytest
import torch

from orpo_kit.config import resolve_config
from orpo_kit.data import tokenize_pairs
from orpo_kit.evaluate import score_pairs
from orpo_kit.runs import load_run, side_by_side
from orpo_kit.train import Trainer, load_train_eval
from orpo_kit.viz.chat_view import answers_html, chat_html, chat_panel, prompt_logits
from orpo_kit.viz.token_view import (
    VIEWS,
    align_pairs,
    completion_token_logps,
    format_logp_table,
    logp_table,
    logp_table_summary,
    pair_pager,
    render_pair_html,
    summarize_pair_tokens,
    token_logp_changes,
    token_texts,
    top_token_changes,
)

TOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    run_dir = tmp_path_factory.mktemp("token-view") / "run"
    cfg = resolve_config(
        "tiny",
        overrides={
            "output_dir": str(run_dir),
            "use_lora": True,
            "lora_r": 8,
            "lora_alpha": 16,
            "learning_rate": 5e-3,
            "warmup_steps": 0,
            "max_steps": 4,
            "save_steps": 4,
            "eval_steps": 4,
            "per_device_train_batch_size": 4,
            "max_train_pairs": 16,
            "max_eval_pairs": 6,
            "device": "cpu",
        },
    )
    Trainer(cfg).train()
    return load_run(run_dir)


@pytest.fixture(scope="module")
def data(run):
    cfg = run.cfg
    evals = load_train_eval(cfg)[1]
    tokenized = tokenize_pairs(run.tokenizer, evals, cfg.max_length, cfg.max_prompt_length, cfg.min_completion_tokens)
    return evals, tokenized


@pytest.fixture(scope="module")
def views(run, data):
    return token_logp_changes(run.model, run.tokenizer, *data, batch_size=4)


def test_token_logps_average_to_score_pairs(run, data) -> None:
    evals, tokenized = data
    per_token = completion_token_logps(run.model, tokenized, run.tokenizer.pad_token_id, batch_size=4)
    scores = score_pairs(run.model, tokenized, run.tokenizer.pad_token_id, batch_size=3)
    assert len(per_token) == len(tokenized) == len(scores)
    for (chosen, rejected), tok, score in zip(per_token, tokenized, scores, strict=True):
        assert len(chosen) == len(tok.chosen_ids) and len(rejected) == len(tok.rejected_ids)
        assert all(x <= 0 for x in chosen + rejected)
        assert sum(chosen) / len(chosen) == pytest.approx(score.chosen_logp, abs=TOL)
        assert sum(rejected) / len(rejected) == pytest.approx(score.rejected_logp, abs=TOL)


def test_base_is_the_adapter_switched_off_and_training_moved_tokens(run, data, views) -> None:
    evals, tokenized = data
    with run.model.disable_adapter():
        base = completion_token_logps(run.model, tokenized, run.tokenizer.pad_token_id)
    tuned = completion_token_logps(run.model, tokenized, run.tokenizer.pad_token_id)
    for v, (bc, br), (tc, tr) in zip(views, base, tuned, strict=True):
        torch.testing.assert_close(torch.tensor(v.chosen.base), torch.tensor(bc))
        torch.testing.assert_close(torch.tensor(v.rejected.tuned), torch.tensor(tr))
        torch.testing.assert_close(torch.tensor(v.chosen.delta), torch.tensor(tc) - torch.tensor(bc))
        assert v.margin_after == pytest.approx(v.chosen.mean_tuned - v.rejected.mean_tuned)
    assert max(abs(d) for v in views for d in v.chosen.delta) > 1e-3  # the adapter changed something
    assert [v.prompt for v in views] == [p.prompt for p in evals] and [v.index for v in views] == list(
        range(len(evals))
    )


def test_a_given_base_model_and_a_model_without_adapter(run, data) -> None:
    evals, tokenized = data
    same = token_logp_changes(run.model, run.tokenizer, evals[:2], tokenized[:2], base_model=run.model)
    assert all(abs(d) < 1e-6 for v in same for d in v.chosen.delta + v.rejected.delta)
    with pytest.raises(ValueError, match="no LoRA adapter"):
        token_logp_changes(run.model.get_base_model(), run.tokenizer, evals[:1], tokenized[:1])


def test_token_texts_rebuild_the_completion(run, data) -> None:
    for tok in data[1]:
        for ids in (tok.chosen_ids, tok.rejected_ids):
            texts = token_texts(run.tokenizer, ids)
            assert len(texts) == len(ids) and "".join(texts) == run.tokenizer.decode(ids, skip_special_tokens=False)


def test_align_pairs_follows_dropped_pairs_and_names_strangers(data) -> None:
    evals, tokenized = data
    kept = [tokenized[0], tokenized[2]]
    assert align_pairs(evals, kept) == [evals[0], evals[2]]
    with pytest.raises(ValueError, match="no pair with the same origin"):
        align_pairs(evals[1:], tokenized)


def test_render_pair_html(views) -> None:
    v = views[0]
    for model in VIEWS:
        page = render_pair_html(v, model)
        assert html.escape(v.prompt) in page and 'class="legend"' in page
        assert page.count("<span title=") == len(v.chosen.tokens) + len(v.rejected.tokens)
        assert "<|im_end|>" not in page and "&lt;|im_end|&gt;" in page  # token text is escaped
    assert "under the tuned model" in render_pair_html(v, "tuned") and "tuned − base" in render_pair_html(v)
    assert render_pair_html(v, "base") != render_pair_html(v, "tuned")
    with pytest.raises(ValueError, match="model must be one of"):
        render_pair_html(v, "after")


def test_summaries_and_top_changes(views) -> None:
    text = summarize_pair_tokens(views[1])
    assert text.startswith("pair 1 ") and "chosen" in text and "margin" in text
    top = top_token_changes(views, k=3)
    rose, fell = [m[3] for m in top["rose"]], [m[3] for m in top["fell"]]
    assert rose == sorted(rose, reverse=True) and fell == sorted(fell) and len(rose) == len(fell) == 3
    assert rose[0] == max(d for v in views for d in v.chosen.delta + v.rejected.delta)


def test_logp_table_matches_the_token_views(run, data, views) -> None:
    rows = logp_table(run.model, run.tokenizer, *data)
    assert len(rows) == len(views)
    for row, v in zip(rows, views, strict=True):
        assert row["skill"] == v.skill and row["prompt"] == v.prompt
        assert row["base_chosen"] == pytest.approx(v.chosen.mean_base, abs=TOL)
        assert row["tuned_rejected"] == pytest.approx(v.rejected.mean_tuned, abs=TOL)
        assert row["margin_after"] == pytest.approx(v.margin_after, abs=TOL)
    table = format_logp_table(rows, max_rows=2).splitlines()
    assert len(table) == 4 and "margin_before" in table[0] and table[-1] == f"... {len(rows) - 2} more rows"
    summary = logp_table_summary(rows)
    assert summary.startswith(f"{len(rows)} held-out pairs") and f"/{len(rows)} pairs" in summary


def test_pair_pager_pages_and_switches(views) -> None:
    box = pair_pager(views)
    (previous, slider, following), toggle, shown = box.children[0].children, box.children[1], box.children[2]
    assert slider.description == "pair" and list(toggle.options) == list(VIEWS)
    assert html.escape(views[0].prompt) in shown.value
    following.click()
    assert slider.value == 1 and html.escape(views[1].prompt) in shown.value
    toggle.value = "base"
    assert shown.value == render_pair_html(views[1], "base")
    previous.click()
    previous.click()
    assert slider.value == 0 and shown.value == render_pair_html(views[0], "base")
    slider.value = len(views) - 1
    following.click()
    assert slider.value == len(views) - 1


def test_answers_html_escapes_and_shows_both() -> None:
    page = answers_html([{"prompt": "a < b?", "base": "<b>no</b>", "tuned": ""}], {"temperature": 0.0})
    assert "a &lt; b?" in page and "&lt;b&gt;no&lt;/b&gt;" in page and "(empty answer)" in page
    assert "temperature = 0.0" in page and page.count("<b>base</b>") == page.count("<b>tuned</b>") == 1


def test_chat_html_is_side_by_side(run) -> None:
    prompt = "What is 2 + 2?"
    page = chat_html(run, prompt, max_new_tokens=4)
    rows = side_by_side(run, [prompt], max_new_tokens=4, temperature=0.0, top_p=1.0, seed=0)
    assert page == answers_html(rows, {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 4, "seed": 0})
    with pytest.raises(ValueError, match="prompt is empty"):
        chat_html(run, "  ")


def test_chat_panel_generate_button(run) -> None:
    box = chat_panel(run, prompt="Name a colour.", max_new_tokens=4)
    text, sliders, button, shown = box.children
    assert [s.description for s in sliders.children] == ["temperature", "top-p", "max new tokens"]
    assert button.description == "generate"
    text.value = "What is 3 + 4?"
    button.click()
    assert shown.value == chat_html(run, "What is 3 + 4?", 0.0, 1.0, 4)


def test_prompt_logits(run) -> None:
    logits = prompt_logits(run.model, run.tokenizer, "Hello")
    assert logits.dtype == torch.float32 and logits.shape[0] == 1 and logits.shape[-1] == run.model.config.vocab_size
    with run.model.disable_adapter():
        base = prompt_logits(run.model, run.tokenizer, "Hello")
    assert (logits - base).abs().max() > 1e-4
    torch.testing.assert_close(prompt_logits(run.model, run.tokenizer, "Hello"), logits)


def test_run_fixture_is_an_adapter(run) -> None:
    assert run.is_adapter and Path(run.checkpoint).name.startswith("step-")


def test_the_summary_names_each_direction_and_the_scatter_draws_every_answer() -> None:
    from orpo_kit.viz.token_view import plot_logp_before_after

    row = {"base_chosen": -2.0, "tuned_chosen": -1.5, "base_rejected": -1.332, "tuned_rejected": -1.353}
    rows = [
        {**row, "margin_before": -0.668, "margin_after": -0.147},
        {**row, "margin_before": -0.668, "margin_after": -0.147},
    ]
    lines = logp_table_summary(rows).splitlines()
    assert (
        lines[1].endswith("(rose)")
        and lines[2].endswith("-1.332 ->   -1.353 (fell)")
        and lines[3].endswith("(widened)")
    )
    fig = plot_logp_before_after(rows)
    assert [len(c.get_offsets()) for c in fig.axes[0].collections] == [2, 2]
