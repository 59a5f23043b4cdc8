"""What a [`~trl_gram.judge.GramJudge`] returns: one [`JudgeRun`] per pass over a pair in one order, combined into
one [`PairJudgment`] per pair ([`combine_runs`])."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from ..parsing import NO_ANSWER


@dataclass
class JudgeRun:
    """One judge pass over a pair in one presentation order.

    Attributes:
        order: ``"AB"`` (response_1 shown first) or ``"BA"``.
        prob_first: Probability of the label of the response shown first, from the label-token logits.
        label: Label word parsed from the output, in the shown order (``first_label``: the first shown is better); in
            direct mode the more probable label.
        rationale: The rationale text (empty in direct mode).
        failure: Why the output could not be parsed, else ``None``.
        text: The raw generated text.
        first_label: The template's label word for the response shown first (``"A"`` for the GRAM templates).
    """

    order: str
    prob_first: float
    label: str | None
    rationale: str = ""
    failure: str | None = None
    text: str = ""
    first_label: str = "A"

    @property
    def prob_response_1(self) -> float:
        return self.prob_first if self.order == "AB" else 1.0 - self.prob_first

    @property
    def winner(self) -> int | None:
        """1 or 2: which response this run prefers (in the pair's own order), ``None`` if unparsed."""
        if self.label is None:
            return None
        first_wins = self.label == self.first_label
        return 1 if first_wins == (self.order == "AB") else 2


@dataclass
class PairJudgment:
    """The judge's verdict on one pair.

    Attributes:
        prob: ``P(response_1 is better)``, averaged over orders and votes.
        label: ``"A"`` if response_1 wins, ``"B"`` if response_2 wins (majority of parsed runs, ties broken by
            ``prob``), ``None`` when no run could be parsed.
        agreement: With both orders judged, whether the two orders prefer the same response (``None`` when an order
            has no parsed label or only one order was judged).
        runs: Every pass, in order ``AB`` runs then ``BA`` runs.
    """

    prob: float
    label: str | None
    agreement: bool | None
    runs: list[JudgeRun]

    @property
    def rationale(self) -> str:
        return self.runs[0].rationale if self.runs else ""

    @property
    def failure(self) -> str | None:
        """``None`` when at least one run was parsed, else the most common failure reason."""
        failures = [r.failure for r in self.runs]
        if any(f is None for f in failures):
            return None
        return Counter(failures).most_common(1)[0][0] if failures else NO_ANSWER

    @property
    def parse_failure_rate(self) -> float:
        return sum(r.failure is not None for r in self.runs) / max(len(self.runs), 1)


def combine_runs(runs: list[JudgeRun], label_words: tuple[str, str]) -> PairJudgment:
    """Average the runs of one pair into a [`PairJudgment`]."""
    probs = [r.prob_response_1 for r in runs if not math.isnan(r.prob_first)]
    prob = sum(probs) / len(probs) if probs else math.nan
    winners = [r.winner for r in runs if r.winner is not None]
    label = None
    if winners:
        ones, twos = winners.count(1), winners.count(2)
        label = label_words[0] if ones > twos or (ones == twos and prob >= 0.5) else label_words[1]
    agreement = None
    by_order = {}
    for order in ("AB", "BA"):
        w = [r.winner for r in runs if r.order == order]
        if w:
            by_order[order] = None if None in w else Counter(w).most_common(1)[0][0]
    if len(by_order) == 2 and None not in by_order.values():
        agreement = by_order["AB"] == by_order["BA"]
    return PairJudgment(prob=prob, label=label, agreement=agreement, runs=runs)
