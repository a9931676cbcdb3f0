"""What trivial rules score on preference pairs: the reward-accuracy baselines a trained model has to beat.

A reward accuracy (the share of pairs whose chosen answer the model finds more likely) means little alone: if
"the shorter answer wins" already picks the chosen answer in 95% of a skill's pairs, a model at 95% there may
have learned nothing but length. Three rules that never read whether an answer is right:

- **longer wins** / **shorter wins**: the answer with more / fewer tokens (or characters) is picked;
- **format check**: the answer that passes more of the format instructions the prompt itself states (in the
  manner of IFEval's verifiable instructions: capital or lowercase letters, start or end with given words,
  quotation marks, a bullet point, one word, one sentence, at most N words). It checks the form, never the
  content, so it shows how much of a skill the surface of the answers gives away.

A rule that cannot tell two answers apart (same length; no format instruction, or both pass the same number)
is a tie, counted as half a win: a coin flip. So 50% means "no information", on every rule.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .formats import PreferencePair
from .stats import LengthStats

RULES = ("longer wins", "shorter wins", "format check")
_QUOTES_OPEN, _QUOTES_CLOSE = "\"'“‘«", "\"'”’»"
_BULLETS = ("- ", "* ", "• ")


@dataclass(frozen=True)
class RuleScore:
    """How one rule did on a group of pairs: it picked the chosen answer `wins` times, could not decide `ties`
    times, and picked the rejected answer in the rest."""

    n: int
    wins: int
    ties: int

    @property
    def accuracy(self) -> float:
        """Share of pairs where the rule picks the chosen answer, a tie counting half (0.5 = no information)."""
        return (self.wins + 0.5 * self.ties) / self.n if self.n else math.nan

    @property
    def stderr(self) -> float:
        """Binomial standard error of `accuracy`: sqrt(p (1 - p) / n)."""
        return math.sqrt(self.accuracy * (1 - self.accuracy) / self.n) if self.n else math.nan

    @property
    def decided(self) -> float:
        """Share of pairs the rule could tell apart at all."""
        return (self.n - self.ties) / self.n if self.n else math.nan


def _words(text: str) -> list[str]:
    return text.split()


def format_checks(prompt: str) -> list[tuple[str, Callable[[str], bool]]]:
    """The format instructions a prompt states, each as (name, check of an answer); [] when it states none."""
    p = prompt.lower()
    checks: list[tuple[str, Callable[[str], bool]]] = []
    if re.search(r"\b(capital letters|uppercase|all caps)\b", p):
        checks.append(("capital letters", lambda a: any(c.isalpha() for c in a) and a == a.upper()))
    if re.search(r"\blower ?case\b", p):
        checks.append(("lowercase", lambda a: any(c.isalpha() for c in a) and a == a.lower()))
    start = re.search(r"\bstart (?:your (?:answer|reply|response) )?with ['\"‘“](.+?)['\"’”]", prompt, re.I)
    if start:
        prefix = start.group(1)
        checks.append((f"starts with {prefix!r}", lambda a: a.strip().startswith(prefix)))
    end = re.search(
        r"\bend (?:your (?:answer|reply|response) )?with (?:the word )?['\"‘“]?([^\s'\"’”.]+)", prompt, re.I
    )
    if end:
        suffix = end.group(1)
        checks.append((f"ends with {suffix!r}", lambda a: a.strip().rstrip(".!").endswith(suffix)))
    if re.search(r"\b(quotation marks|in quotes|double quotes)\b", p):
        checks.append(
            (
                "in quotes",
                lambda a: len(a.strip()) > 1 and a.strip()[0] in _QUOTES_OPEN and a.strip()[-1] in _QUOTES_CLOSE,
            )
        )
    if "bullet" in p:
        checks.append(("bullet point", lambda a: a.strip().startswith(_BULLETS)))
    if re.search(r"\b(one|a single) word\b", p):  # lenient: "Carbon dioxide." is one answer
        checks.append(("one word", lambda a: 0 < len(_words(a)) <= 2))
    if re.search(r"\b(one|a single)( short)? sentence\b", p):
        checks.append(("one sentence", lambda a: len(re.findall(r"[.!?](?:\s|$)", a.strip())) <= 1))
    limit = re.search(r"\b(?:in|at most|no more than) (\d+) words\b", p)
    if limit:
        most = int(limit.group(1))
        checks.append((f"at most {most} words", lambda a: len(_words(a)) <= most))
    return checks


def _last_user_text(pair: PreferencePair) -> str:
    """The instruction the answers reply to: the last user message (the whole prompt when there is none)."""
    users = [m["content"] for m in pair.prompt_messages if m["role"] == "user"]
    return users[-1] if users else pair.prompt


def rule_votes(pair: PreferencePair, chosen_length: int, rejected_length: int) -> dict[str, int]:
    """Each rule's pick for one pair: +1 the chosen answer, -1 the rejected one, 0 a tie."""
    sign = (chosen_length > rejected_length) - (chosen_length < rejected_length)
    checks = format_checks(_last_user_text(pair))
    passed = [sum(check(answer) for _, check in checks) for answer in (pair.chosen, pair.rejected)]
    return {
        "longer wins": sign,
        "shorter wins": -sign,
        "format check": (passed[0] > passed[1]) - (passed[0] < passed[1]),
    }


def bias_baselines(
    pairs: Sequence[PreferencePair], lengths: LengthStats | None = None
) -> dict[str, dict[str, RuleScore]]:
    """Per rule (`RULES`), per group ('all', then each skill): how often the rule picks the chosen answer.

    Lengths are token counts from `lengths` (`length_stats` on the same pairs, in order), else characters."""
    if lengths is not None and lengths.n_pairs != len(pairs):
        raise ValueError(
            f"lengths measure {lengths.n_pairs} pairs but {len(pairs)} pairs were given: "
            "pass the pairs that length_stats measured"
        )
    groups: dict[str, list[dict[str, int]]] = {"all": []}
    for i, pair in enumerate(pairs):
        sizes = (lengths.chosen[i], lengths.rejected[i]) if lengths else (len(pair.chosen), len(pair.rejected))
        votes = rule_votes(pair, *sizes)
        groups["all"].append(votes)
        groups.setdefault(pair.skill or "(none)", []).append(votes)
    names = ["all"] + sorted(k for k in groups if k != "all")
    return {
        rule: {
            name: RuleScore(
                len(groups[name]), sum(v[rule] > 0 for v in groups[name]), sum(v[rule] == 0 for v in groups[name])
            )
            for name in names
        }
        for rule in RULES
    }


def bias_baseline_lines(table: dict[str, dict[str, RuleScore]]) -> list[str]:
    """`bias_baselines` as aligned text: accuracy ± standard error (in %) per rule, and the share of pairs the
    format check could decide at all."""
    groups = list(next(iter(table.values())))
    out = [f"{'skill':14s} {'n':>5s}" + "".join(f" {rule:>14s}" for rule in table) + f" {'format decides':>15s}"]
    for name in groups:
        cells = "".join(
            f" {100 * s.accuracy:7.1f} ± {100 * s.stderr:4.1f}" for s in (table[rule][name] for rule in table)
        )
        decides = table["format check"][name].decided if "format check" in table else math.nan
        out.append(f"{name:14s} {table[RULES[0]][name].n:5d}{cells} {decides:15.0%}")
    return out
