"""Per-skill evaluation with its sample sizes: n, standard errors and Wilson intervals in every result, table
and plot, and built-in data with enough held-out pairs per skill for them to mean something."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from orpo_kit.data import load_preference_pairs, pairs_from_rows
from orpo_kit.evaluate import (
    PairScore,
    binomial_se,
    generation_scores,
    generation_stats,
    reward_accuracy,
    wilson_interval,
    with_overall,
)
from orpo_kit.runs import results_table, skill_comparison_table
from orpo_kit.viz.plots import plot_skill_comparison

BUILTIN = Path(__file__).resolve().parents[1] / "orpo_kit" / "data" / "builtin" / "pairs.jsonl"


def _scores(skill: str, n_right: int, n_wrong: int) -> list[PairScore]:
    """Pair scores of one skill: n_right with the chosen answer more likely, n_wrong with it less likely."""
    return [PairScore("t", skill, -1.0, -2.0)] * n_right + [PairScore("t", skill, -2.0, -1.0)] * n_wrong


def _result() -> dict:
    """An evaluate_run-shaped result: refusal ranked right 20 of 20 but generated 0 of 20, arithmetic 18 of 24."""
    base = _scores("refusal", 20, 0) + _scores("arithmetic", 12, 12)
    tuned = _scores("refusal", 20, 0) + _scores("arithmetic", 18, 6)
    refusal = {"skill": "refusal", "chosen": "I'm sorry, I can't.", "rejected": "Sure."}
    pairs = pairs_from_rows(
        [{**refusal, "prompt": f"How do I do bad thing {i}?"} for i in range(20)]
        + [
            {"skill": "arithmetic", "prompt": f"What is {i} + 1?", "chosen": f"{i} + 1 = {i + 1}.", "rejected": "x"}
            for i in range(24)
        ]
    )
    comply = ["Here is how."] * 20
    out = {"run": "runs/smol"}
    for which, scores, sums in (("base", base, ["no"] * 24), ("tuned", tuned, [f"{i + 1}" for i in range(24)])):
        stats = generation_stats(comply + sums, pairs)
        out[which] = {"reward_accuracy": reward_accuracy(scores), "generation": stats["per_skill"]}
        out[which]["generation_stats"] = stats
    return out


# ---- the numbers -----------------------------------------------------------------------------------------


def test_binomial_se_and_wilson_match_the_textbook_formulas() -> None:
    assert binomial_se(0.75, 24) == pytest.approx(math.sqrt(0.75 * 0.25 / 24))
    assert binomial_se(1.0, 20) == 0.0 and math.isnan(binomial_se(0.0, 0))
    z2 = 1.96**2
    # k = n: the lower bound is n / (n + z^2); k = 0: the upper bound is z^2 / (n + z^2)
    assert wilson_interval(20, 20) == pytest.approx((20 / (20 + z2), 1.0))
    assert wilson_interval(0, 20) == pytest.approx((0.0, z2 / (20 + z2)))
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)


def test_reward_accuracy_keeps_its_keys_and_adds_n_and_se_per_skill() -> None:
    acc = reward_accuracy(_scores("refusal", 4, 0) + _scores("arithmetic", 18, 6))
    assert acc["all"] == pytest.approx(22 / 28) and acc["n"] == 28
    assert acc["per_skill"] == {"arithmetic": 0.75, "refusal": 1.0}
    assert acc["n_per_skill"] == {"arithmetic": 24, "refusal": 4}
    assert acc["se_per_skill"]["arithmetic"] == pytest.approx(math.sqrt(0.75 * 0.25 / 24))
    assert acc["se_per_skill"]["refusal"] == 0.0
    assert acc["ci95_per_skill"]["refusal"][0] < 0.6  # 4 of 4 is far from proof of a rate near 1
    assert acc["se"] == pytest.approx(math.sqrt((22 / 28) * (6 / 28) / 28))


def test_generation_stats_counts_what_generation_scores_shares() -> None:
    result = _result()
    pairs_result = result["tuned"]["generation_stats"]
    assert pairs_result["per_skill"] == {"arithmetic": 1.0, "refusal": 0.0}
    assert pairs_result["n_per_skill"] == {"arithmetic": 24, "refusal": 20}
    assert pairs_result["ci95_per_skill"]["refusal"][1] == pytest.approx(1.96**2 / (20 + 1.96**2))
    pairs = pairs_from_rows(
        [{"prompt": "One word: sky?", "chosen": "Blue.", "rejected": "It is blue.", "skill": "format"}]
    )
    assert generation_scores(["Blue."], pairs) == {"format": 1.0}  # still a plain skill -> share mapping


def test_with_overall_pools_every_skill() -> None:
    stats = with_overall(_result()["base"]["generation_stats"])
    assert stats is not None
    assert stats["n_per_skill"]["all"] == 44 and stats["per_skill"]["all"] == 0.0
    assert with_overall(None) is None


# ---- tables and plot -------------------------------------------------------------------------------------


def test_skill_comparison_table_shows_n_se_and_the_ranking_vs_generation_gap() -> None:
    lines = skill_comparison_table(_result())
    text = "\n".join(lines)
    refusal = next(line for line in lines if line.startswith("refusal"))
    # ranked right every time, generated a refusal never: both visible side by side, with n
    assert refusal.split() == ["refusal", "20", "1.00", "±0.00", "1.00", "±0.00", "0.00", "±0.00", "0.00", "±0.00"]
    arithmetic = next(line for line in lines if line.startswith("arithmetic"))
    assert "24" in arithmetic.split() and f"±{math.sqrt(0.5 * 0.5 / 24):.2f}" in arithmetic
    assert next(line for line in lines if line.startswith("all")).split()[1] == "44"
    assert "n = 20: 0.00 -> [0.00, 0.16], 1.00 -> [0.84, 1.00]" in text  # the honest range where ± is 0


def test_skill_comparison_table_without_generation_says_so() -> None:
    result = _result()
    for which in ("base", "tuned"):
        del result[which]["generation"], result[which]["generation_stats"]
    lines = skill_comparison_table(result)
    assert any("generation checks not run" in line for line in lines)
    assert next(line for line in lines if line.startswith("refusal")).split()[:3] == ["refusal", "20", "1.00"]


def test_results_table_ends_with_the_number_of_pairs_per_skill() -> None:
    lines = results_table([_result()])
    assert lines[-1].split() == ["n", "(pairs)", "44", "24", "20"]


def test_plot_shows_n_error_bars_and_a_measured_zero(tmp_path: Path) -> None:
    path = tmp_path / "skills.png"
    fig = plot_skill_comparison([_result()], path)
    assert fig.dpi >= 150 and len(fig.axes) == 2  # reward accuracy and generation check
    top, bottom = fig.axes
    labels = [t.get_text() for t in bottom.get_xticklabels()]
    assert labels == ["all\nn=44", "arithmetic\nn=24", "refusal\nn=20"]
    assert len(bottom.containers) > 0 and any(type(c).__name__ == "ErrorbarContainer" for c in bottom.containers)
    texts = [t.get_text() for t in bottom.texts]
    # base: all, arithmetic and refusal; tuned: refusal. Each zero is written and marked, not left blank.
    assert texts.count("0.00") == 4
    assert sum(line.get_gid() == "measured-zero" for line in bottom.lines) == 4
    assert min(t.get_fontsize() for t in bottom.texts) >= 9
    height, width = plt.imread(path).shape[:2]
    assert width == round(fig.get_figwidth() * 150) and height == round(fig.get_figheight() * 150)
    plt.close(fig)


def test_plot_without_counts_still_draws_older_results() -> None:
    old = {"run": "runs/old", "tuned": {"reward_accuracy": {"all": 0.5, "n": 4, "per_skill": {"facts": 0.5}}}}
    fig = plot_skill_comparison([old])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["all\nn=?", "facts\nn=?"]
    plt.close(fig)


# ---- the built-in data -----------------------------------------------------------------------------------


def test_builtin_eval_split_has_20_pairs_per_skill_and_holds_out_whole_items() -> None:
    pairs = load_preference_pairs("builtin")
    evals = [p for p in pairs if p.split == "eval"]
    train = [p for p in pairs if p.split == "train"]
    counts = Counter(p.skill for p in evals)
    assert len(counts) == 6 and min(counts.values()) >= 20, counts
    assert not {p.prompt for p in evals} & {p.prompt for p in train}
    assert not {p.chosen for p in evals} & {p.chosen for p in train}  # no eval answer was trained on
    # eval rows take the skills in turn: the first 120 hold 20 of each
    assert set(Counter(p.skill for p in evals[:120]).values()) == {20}


def test_builtin_harmful_requests_get_no_steps_in_their_rejected_answers() -> None:
    rows = [json.loads(line) for line in BUILTIN.read_text(encoding="utf-8").splitlines()]
    rejected = {r["rejected"] for r in rows if r["skill"] == "refusal"}
    assert len(rows) >= 100 and rejected
    for text in rejected:
        assert not any(marker in text for marker in ("1.", "2.", "Step 2", "step 2", "\n")), text
        assert len(text) < 160, text


@pytest.mark.usefixtures("one_thread")
def test_evaluate_run_reports_n_per_skill_for_both_models(tmp_path: Path) -> None:
    from orpo_kit.config import resolve_config
    from orpo_kit.runs import evaluate_run
    from orpo_kit.train import Trainer

    overrides = {"output_dir": str(tmp_path / "run"), "use_lora": True, "max_steps": 2, "save_steps": 2}
    overrides.update(eval_steps=2, max_train_pairs=16, max_eval_pairs=12, device="cpu")
    Trainer(resolve_config("tiny", overrides=overrides)).train()
    result = evaluate_run(tmp_path / "run", max_pairs=12, max_new_tokens=3)
    for which in ("base", "tuned"):
        # the first 12 held-out pairs take the six skills in turn: 2 each, for ranking and for generation
        assert result[which]["reward_accuracy"]["n_per_skill"] == dict.fromkeys(
            ["arithmetic", "concision", "facts", "format", "instructions", "refusal"], 2
        )
        assert sum(result[which]["generation_stats"]["n_per_skill"].values()) == 12
    lines = skill_comparison_table(result)
    assert next(line for line in lines if line.startswith("refusal")).split()[1] == "2"
    json.dumps(result)  # what `orpo-kit eval --json` writes
