"""Which orders (and extra votes) the judge spends on each comparison.

A pairwise judge has a position bias, so a comparison is normally judged in both orders and averaged (the judge's
``swap="both"``): two judge passes per comparison. With ``second_order="adaptive"`` ([`~pairing.ComparisonConfig`]):

1. **First order.** Every comparison once, in the order the schedule gave it (each completion shown first in half of
   its comparisons, [`~schedules.orient`]; a completion compared with a reference is shown first for every other
   such completion, so the position bias cancels over the batch instead of within the pair).
2. **Second order**, only for the comparisons whose first verdict failed to parse, is within ``second_order_margin``
   of 0.5, or decides the order of its two members: were that verdict pure position bias (0.5 instead), the two
   would swap places in the group's mean-win ranking. Taken in that priority (failed, then closest to 0.5), within the
   group's ``max_judge_calls_per_group`` budget.
3. **Extra votes** (``extra_votes > 0``): comparisons still within the margin after both orders are judged again in
   both orders with ``extra_votes`` sampled rationales each, budget permitting.

Each comparison's runs are then combined into one [`~judge.PairJudgment`] as if the judge had made them in one call
([`~judge.combine_runs`]).

[`judge_comparisons`] is a generator so that one plan drives a synchronous judge ([`run_sync`]) and the server's
asynchronous batcher alike: it yields ``(questions, responses_1, responses_2, overrides)`` for each round and is sent
the judgments back; it returns the judgments, one per comparison, and a [`JudgeCost`].
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

from .judge.results import JudgeRun, PairJudgment, combine_runs
from .pairing import ComparisonConfig, components, usable

_FLIP = {"AB": "BA", "BA": "AB"}


@dataclass
class JudgeCost:
    """What judging a batch cost.

    Attributes:
        judge_calls (`int`): Judge passes made (one order of one comparison, one vote).
        all_pairs_calls (`int`): Passes that every pair of every group in both orders (and every reference comparison
            in both orders) would have cost, with one vote.
        second_orders (`int`): Comparisons judged in their second order.
        extra_votes (`int`): Comparisons judged again with extra votes.
        groups (`int`): Groups compared within (the budget's unit).
    """

    judge_calls: int = 0
    all_pairs_calls: int = 0
    second_orders: int = 0
    extra_votes: int = 0
    groups: int = 0

    @property
    def saved(self) -> float:
        """Share of the all-pairs, both-orders passes saved (negative when more were spent)."""
        return 1.0 - self.judge_calls / self.all_pairs_calls if self.all_pairs_calls else 0.0

    def to_dict(self) -> dict:
        return {
            "judge_calls": self.judge_calls,
            "all_pairs_calls": self.all_pairs_calls,
            "saved": self.saved,
            "second_orders": self.second_orders,
            "extra_votes": self.extra_votes,
            "groups": self.groups,
        }


def flipped(jd):
    """The judgment of the same pair seen from the other response (``prob`` -> ``1 - prob``, runs' orders swapped)."""
    if jd is None:
        return None
    out = copy.copy(jd)
    if not math.isnan(jd.prob):
        out.prob = 1.0 - jd.prob
    out.label = {"A": "B", "B": "A"}.get(jd.label, jd.label)
    if jd.runs:
        out.runs = [
            JudgeRun(_FLIP.get(r.order, r.order), r.prob_first, r.label, r.rationale, r.failure, r.text)
            for r in jd.runs
        ]
    return out


def merged(parts):
    """One judgment from several judgments of the same pair (same orientation): their runs combined."""
    parts = [p for p in parts if p is not None]
    if len(parts) == 1:
        return parts[0]
    if all(p.runs for p in parts):
        runs = sorted((r for p in parts for r in p.runs), key=lambda r: r.order)
        return combine_runs(runs, ("A", "B"))
    scored = [p for p in parts if not math.isnan(p.prob)]  # judges that return no runs: average their verdicts
    if not scored:
        return parts[0]
    prob = sum(p.prob for p in scored) / len(scored)
    return PairJudgment(prob, "A" if prob >= 0.5 else "B", None, [r for p in scored for r in p.runs])


def _calls(jd) -> int:
    return max(1, len(jd.runs)) if jd is not None and getattr(jd, "runs", None) is not None else 1


def _all_pairs_calls(n_groups_sizes, references: int) -> int:
    return sum(g * (g - 1) for g in n_groups_sizes) + 2 * references


def _reorders(i, j, p, sums, counts) -> bool:
    """Whether replacing the verdict ``p`` (P(i beats j)) by 0.5 swaps i and j in the mean-win ranking."""
    if not counts[i] or not counts[j]:
        return False
    before = sums[i] / counts[i] - sums[j] / counts[j]
    after = (sums[i] - p + 0.5) / counts[i] - (sums[j] - (1 - p) + 0.5) / counts[j]
    return (before > 0) != (after > 0) or (before < 0) != (after < 0)


def judge_comparisons(
    comparisons, settings: ComparisonConfig | None = None, overrides: dict | None = None, use_failed: bool = False
):
    """Generator: the judge calls of a batch's comparisons (see the module docstring).

    Args:
        comparisons: From [`~pairing.plan`]: ``(i, question, response_i, other, j)``.
        settings ([`~pairing.ComparisonConfig`], *optional*): ``second_order``, its margin, budget and extra votes.
        overrides (`dict`, *optional*): Keyword arguments of every judge call (``mode``, ``votes``...).
        use_failed (`bool`): Count unparsed verdicts as usable (the reward's ``on_failure="prob"``).

    Yields ``(questions, responses_1, responses_2, overrides)``; send back the judgments. Returns
    ``(judgments, JudgeCost)``.
    """
    settings = settings or ComparisonConfig()
    overrides = dict(overrides or {})
    links = [(c[0], c[4]) for c in comparisons]
    groups = components(max([k for link in links for k in link if k is not None], default=-1) + 1, links)
    references = sum(c[4] is None for c in comparisons)
    cost = JudgeCost(all_pairs_calls=_all_pairs_calls([len(g) for g in groups], references), groups=len(groups))
    if not comparisons:
        return [], cost
    if settings.second_order == "always":
        judgments = yield (
            [c[1] for c in comparisons],
            [c[2] for c in comparisons],
            [c[3] for c in comparisons],
            overrides,
        )
        cost.judge_calls = sum(_calls(jd) for jd in judgments)
        return list(judgments), cost
    if overrides.get("swap") not in (None, "both"):
        raise ValueError(
            f"`second_order='adaptive'` chooses the orders itself; it cannot be combined with swap={overrides['swap']!r}."
        )
    one = {**overrides, "swap": "none"}

    # 1. first order: within groups as the schedule oriented them; references alternate which side goes first
    flip, seen = [], 0
    for c in comparisons:
        if c[4] is None:
            flip.append(seen % 2 == 1)
            seen += 1
        else:
            flip.append(False)
    shown = [(c[3], c[2]) if f else (c[2], c[3]) for c, f in zip(comparisons, flip)]
    out = yield ([c[1] for c in comparisons], [s[0] for s in shown], [s[1] for s in shown], one)
    parts = [[flipped(jd) if f else jd] for jd, f in zip(out, flip)]
    cost.judge_calls = sum(_calls(jd) for jd in out)

    # 2. second order where it matters, within each group's budget
    group_of = {}
    for g, members in enumerate(groups):
        for k in members:
            group_of[k] = g
    spent = [0] * len(groups)
    for k, c in enumerate(comparisons):
        if c[4] is not None:
            spent[group_of[c[0]]] += _calls(out[k])
    budget = settings.max_judge_calls_per_group
    n = max(group_of, default=-1) + 1
    sums, counts = [0.0] * n, [0] * n
    for c, part in zip(comparisons, parts):
        jd = part[0]
        if c[4] is not None and usable(jd, use_failed):
            sums[c[0]] += jd.prob
            sums[c[4]] += 1 - jd.prob
            counts[c[0]] += 1
            counts[c[4]] += 1
    wanted = []  # (priority, k)
    for k, (c, part) in enumerate(zip(comparisons, parts)):
        jd = part[0]
        if not usable(jd):  # unparsed (even when its answer-slot probability counts) or not judged
            wanted.append(((0, 0.0), k))
        elif abs(jd.prob - 0.5) < settings.second_order_margin:
            wanted.append(((1, abs(jd.prob - 0.5)), k))
        elif c[4] is not None and _reorders(c[0], c[4], jd.prob, sums, counts):
            wanted.append(((2, abs(jd.prob - 0.5)), k))
    second = []
    per_order = overrides.get("votes") or 1  # passes of one order (the votes of a call's override, else one)
    for _, k in sorted(wanted):
        c = comparisons[k]
        if c[4] is not None:
            g = group_of[c[0]]
            if budget is not None and spent[g] + per_order > budget:
                continue
            spent[g] += per_order
        second.append(k)
    if second:
        # the other order: what was shown second now goes first
        out = yield (
            [comparisons[k][1] for k in second],
            [shown[k][1] for k in second],
            [shown[k][0] for k in second],
            one,
        )
        for k, jd in zip(second, out):
            parts[k].append(jd if flip[k] else flipped(jd))
            cost.judge_calls += _calls(jd)
        cost.second_orders = len(second)

    # 3. extra votes for the comparisons still near 0.5
    judgments = [merged(p) for p in parts]
    if settings.extra_votes > 0:
        votes = {**overrides, "swap": "both", "votes": settings.extra_votes}
        third = []
        for k in second:
            jd, c = judgments[k], comparisons[k]
            if not usable(jd, use_failed) or abs(jd.prob - 0.5) >= settings.second_order_margin:
                continue
            if c[4] is not None:
                g = group_of[c[0]]
                if budget is not None and spent[g] + 2 * settings.extra_votes > budget:
                    continue
                spent[g] += 2 * settings.extra_votes
            third.append(k)
        if third:
            out = yield (
                [comparisons[k][1] for k in third],
                [comparisons[k][2] for k in third],
                [comparisons[k][3] for k in third],
                votes,
            )
            for k, jd in zip(third, out):
                parts[k].append(jd)
                judgments[k] = merged(parts[k])
                cost.judge_calls += _calls(jd)
            cost.extra_votes = len(third)
    return judgments, cost


def run_sync(
    judge,
    comparisons,
    settings: ComparisonConfig | None = None,
    overrides: dict | None = None,
    use_failed: bool = False,
):
    """``(judgments, JudgeCost)`` of [`judge_comparisons`] with ``judge.judge`` called directly."""
    steps = judge_comparisons(comparisons, settings, overrides, use_failed)
    try:
        q, a, b, kw = next(steps)
        while True:
            q, a, b, kw = steps.send(judge.judge(q, a, b, **kw))
    except StopIteration as stop:
        return stop.value


async def run_async(
    judge_pairs,
    comparisons,
    settings: ComparisonConfig | None = None,
    overrides: dict | None = None,
    use_failed: bool = False,
):
    """[`run_sync`] for an ``async judge_pairs(questions, responses_1, responses_2, **overrides)``."""
    steps = judge_comparisons(comparisons, settings, overrides, use_failed)
    try:
        q, a, b, kw = next(steps)
        while True:
            q, a, b, kw = steps.send(await judge_pairs(q, a, b, **kw))
    except StopIteration as stop:
        return stop.value
