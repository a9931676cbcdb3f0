"""Two teaching aids: what trivial rules score on a preference set (orpo_kit.data.bias), on pairs whose answer is
known by construction, and the alarm for held-out rejected log-probs rising with the chosen ones
(orpo_kit.viz.dashboard.rejected_rise_alarm), on synthetic metrics records."""

from __future__ import annotations

import math
import random

import matplotlib.pyplot as plt
import pytest
from matplotlib.collections import PathCollection
from matplotlib.patches import Rectangle

from orpo_kit.data import (
    LengthStats,
    RuleScore,
    bias_baseline_lines,
    bias_baselines,
    format_checks,
    pairs_from_rows,
    rule_votes,
)
from orpo_kit.viz.dashboard import LOGPS_PANEL, plot_logps_over_training, plot_training, rejected_rise_alarm

# --- bias baselines --------------------------------------------------------------------------------------------

KEYS = ("prompt", "chosen", "rejected", "skill")
ROWS = [
    dict(zip(KEYS, row, strict=True))
    for row in [
        # "long": the chosen answer is longer (two pairs) or of equal length (one); no format instruction.
        ("Why is the sky blue?", "Rayleigh scattering of sunlight.", "Magic.", "long"),
        ("What is rain?", "Water falling from clouds.", "Sky.", "long"),
        ("2 + 2?", "2 + 2 = 4.", "2 + 2 = 5.", "long"),
        # "form": the prompt asks for a form; only the chosen answer has it.
        ("Capital of France? Answer in capital letters only.", "PARIS.", "Paris.", "form"),
        ("Largest ocean? Start your answer with 'Answer:'.", "Answer: Pacific.", "Pacific.", "form"),
        ("Answer in one word: colour of grass?", "Green.", "It is usually green.", "form"),
        ("Opposite of hot? Put your answer in quotation marks.", '"Cold."', "Cold.", "form"),
    ]
]


@pytest.fixture(scope="module")
def pairs():
    return pairs_from_rows(ROWS)


def test_rule_score_counts_a_tie_as_half() -> None:
    score = RuleScore(n=4, wins=2, ties=1)
    assert score.accuracy == 2.5 / 4 and score.decided == 0.75
    assert score.stderr == pytest.approx(math.sqrt(0.625 * 0.375 / 4))
    assert math.isnan(RuleScore(0, 0, 0).accuracy)


def test_format_checks_read_the_prompts_instructions() -> None:
    assert format_checks("What is the capital of France?") == []
    cases = {
        "Answer in capital letters only.": ("PARIS.", "Paris."),
        "Answer in lowercase letters only.": ("paris.", "Paris."),
        "Start your answer with 'Answer:'.": ("Answer: Paris.", "Paris."),
        "End your answer with the word DONE.": ("Paris. DONE.", "Paris."),
        "Put your answer in quotation marks.": ('"Paris."', "Paris."),
        "Answer as a bullet point.": ("- Paris.", "Paris."),
        "Reply with a single word: capital of France?": ("Paris.", "The capital is Paris."),
        "Define Paris in one short sentence.": ("Paris is a city.", "Paris is a city. It is big."),
        "Describe Paris in at most 3 words.": ("Big old city.", "A big and old city."),
    }
    for prompt, (passes, fails) in cases.items():
        (check,) = format_checks(prompt)
        assert check[1](passes) and not check[1](fails), (prompt, check[0])


def test_rule_votes_for_one_pair(pairs) -> None:
    assert rule_votes(pairs[0], 30, 6) == {"longer wins": 1, "shorter wins": -1, "format check": 0}
    assert rule_votes(pairs[3], 6, 6) == {"longer wins": 0, "shorter wins": 0, "format check": 1}
    assert rule_votes(pairs[5], 6, 20) == {"longer wins": -1, "shorter wins": 1, "format check": 1}


def test_format_check_reads_the_last_user_turn() -> None:
    (pair,) = pairs_from_rows(
        [
            {
                "chosen": [
                    {"role": "user", "content": "Answer in capital letters only."},
                    {"role": "assistant", "content": "OK."},
                    {"role": "user", "content": "Now in lowercase letters only: capital of France?"},
                    {"role": "assistant", "content": "paris."},
                ],
                "rejected": [
                    {"role": "user", "content": "Answer in capital letters only."},
                    {"role": "assistant", "content": "OK."},
                    {"role": "user", "content": "Now in lowercase letters only: capital of France?"},
                    {"role": "assistant", "content": "PARIS."},
                ],
            }
        ]
    )
    assert rule_votes(pair, 6, 6)["format check"] == 1


def test_bias_baselines_on_pairs_with_known_answers(pairs) -> None:
    table = bias_baselines(pairs)
    assert list(table) == ["longer wins", "shorter wins", "format check"]
    assert list(table["longer wins"]) == ["all", "form", "long"]
    # long: chosen longer twice, once the same length (a tie); form: the chosen answer is longer once
    # (the quotes), shorter once (one word), of equal length once (capitals) and longer once ('Answer:').
    assert table["longer wins"]["long"] == RuleScore(n=3, wins=2, ties=1)
    assert table["longer wins"]["long"].accuracy == pytest.approx(2.5 / 3)
    assert table["shorter wins"]["long"] == RuleScore(n=3, wins=0, ties=1)
    assert table["longer wins"]["form"] == RuleScore(n=4, wins=2, ties=1)
    assert table["format check"]["form"] == RuleScore(n=4, wins=4, ties=0)
    assert table["format check"]["long"] == RuleScore(n=3, wins=0, ties=3)  # no instruction: a coin flip
    assert table["format check"]["all"].accuracy == pytest.approx((4 + 1.5) / 7)
    for rule in table:  # 'all' is the sum of the skills
        assert table[rule]["all"].n == 7
        assert table[rule]["all"].wins == table[rule]["form"].wins + table[rule]["long"].wins


def test_bias_baselines_use_token_lengths_when_given(pairs) -> None:
    # Token counts that reverse the characters' verdict on every pair.
    lengths = LengthStats(prompt=[1] * 7, chosen=[1, 1, 1, 1, 1, 1, 1], rejected=[2, 2, 2, 2, 2, 2, 2])
    table = bias_baselines(pairs, lengths)
    assert table["shorter wins"]["all"] == RuleScore(n=7, wins=7, ties=0)
    with pytest.raises(ValueError, match="lengths measure 7 pairs but 6 pairs"):
        bias_baselines(pairs[:6], lengths)


def test_bias_baseline_lines(pairs) -> None:
    lines = bias_baseline_lines(bias_baselines(pairs))
    assert len(lines) == 4 and lines[0].split()[:3] == ["skill", "n", "longer"]
    assert lines[2].split() == ["form", "4", "62.5", "±", "24.2", "37.5", "±", "24.2", "100.0", "±", "0.0", "100%"]


# --- the rejected-rise alarm ----------------------------------------------------------------------------------


def eval_run(chosen: list[float], rejected: list[float], every: int = 10) -> list[dict]:
    """Metrics records: an evaluation every `every` steps from step 0, train records between them."""
    records = []
    for i, (c, r) in enumerate(zip(chosen, rejected, strict=True)):
        if i:
            records.append({"step": i * every - 1, "loss": 2.0, "logps/chosen": c, "logps/rejected": r})
        records.append({"step": i * every, "eval_loss": 2.0, "eval_logps/chosen": c, "eval_logps/rejected": r})
    return records


def test_alarm_when_rejected_rises_with_chosen() -> None:
    records = eval_run([-2.0, -1.95, -1.7, -1.5, -1.3], [-2.5, -2.45, -2.3, -2.1, -2.0])
    alarm = rejected_rise_alarm(records)
    assert alarm is not None
    assert (alarm.start_step, alarm.since_step, alarm.last_step) == (0, 20, 40)  # step 10: under min_rise
    assert alarm.chosen_rise == pytest.approx(0.7) and alarm.rejected_rise == pytest.approx(0.5)
    assert "since step 20: rejected +0.50, chosen +0.70" in alarm.message


def test_no_alarm_when_orpo_pushes_rejected_down() -> None:
    assert rejected_rise_alarm(eval_run([-2.0, -1.8, -1.6, -1.4, -1.2], [-2.5, -2.6, -2.8, -3.0, -3.2])) is None


def test_no_alarm_on_noise() -> None:
    rng = random.Random(0)
    flat = eval_run([-2.0 + rng.gauss(0, 0.03) for _ in range(12)], [-2.5 + rng.gauss(0, 0.03) for _ in range(12)])
    assert rejected_rise_alarm(flat) is None


def test_alarm_only_while_it_holds() -> None:
    # Both rose, then the rejected log-prob fell back: the last evaluation clears the alarm.
    assert rejected_rise_alarm(eval_run([-2.0, -1.7, -1.5, -1.3], [-2.5, -2.2, -2.1, -2.45])) is None
    # One evaluation above the threshold is not enough with patience 2; enough with patience 1.
    once = eval_run([-2.0, -2.0, -1.5], [-2.5, -2.5, -2.2])
    assert rejected_rise_alarm(once) is None and rejected_rise_alarm(once, patience=1) is not None
    assert rejected_rise_alarm(eval_run([-2.0], [-2.5])) is None
    with pytest.raises(ValueError, match="patience"):
        rejected_rise_alarm(once, patience=0)


def test_dashboards_show_the_alarm() -> None:
    sft = eval_run([-2.0, -1.7, -1.5, -1.3], [-2.5, -2.2, -2.1, -2.0])
    orpo = eval_run([-2.0, -1.8, -1.6, -1.4], [-2.5, -2.6, -2.8, -3.0])
    fig = plot_training(sft)
    assert "⚠ rejected log-probs rising with chosen since step 10" in fig.get_suptitle()
    (panel,) = [ax for ax in fig.axes if LOGPS_PANEL in ax.get_title().replace("\n", " ")]
    assert panel.get_title().startswith("⚠")
    assert [(p.get_x(), p.get_x() + p.get_width()) for p in panel.patches if isinstance(p, Rectangle)] == [(10, 30)]
    calm = plot_training(orpo)
    assert "⚠" not in calm.get_suptitle() and not any(ax.patches for ax in calm.axes)
    both = plot_logps_over_training({0.0: sft, 1.0: orpo})
    assert "λ=0 (SFT only): rejected +0.50, chosen +0.70" in both.get_suptitle()
    assert "λ=1" not in both.get_suptitle()
    (ringed,) = [c for c in both.axes[0].collections if isinstance(c, PathCollection)]
    assert [tuple(p) for p in ringed.get_offsets()] == [(10, -2.2), (20, -2.1), (30, -2.0)]
    assert plot_logps_over_training({1.0: orpo}).get_suptitle() == ""
    plt.close("all")
