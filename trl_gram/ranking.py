"""Best-of-n and full ranking of candidate responses with a pairwise [`~trl_gram.judge.GramJudge`].

* [`knockout`]: a single-elimination tournament; each round is one batched judge call (over all questions
  at once), n − 1 comparisons in ⌈log2 n⌉ rounds.
* [`linear_search`]: the champion so far meets each next candidate, n − 1 sequential comparisons (the GRAM
  authors' best-of-n procedure; useful when candidates arrive one by one).
* [`rank_all`]: every pair, one batched call, candidates ordered by mean win probability (n(n−1)/2 comparisons);
  or, with the group-comparison settings of [`~pairing.ComparisonConfig`] (``schedule="sparse"``,
  ``aggregate="bradley_terry"``, ``second_order="adaptive"``...), fewer comparisons spent where they matter.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import adaptive, pairing
from .templates import TextOrMessages


@dataclass
class RankResult:
    """Outcome for one question.

    Attributes:
        winner: Index of the best candidate.
        order: Candidate indices from best to worst (for [`rank_all`]; only the winner first otherwise).
        scores: Per-candidate mean win probability over the comparisons it took part in.
        comparisons: ``(i, j, P(i beats j))`` for every comparison made.
        judge_calls: Judge passes spent ([`rank_all`] only).
    """

    winner: int
    order: list[int]
    scores: list[float]
    comparisons: list[tuple[int, int, float]] = field(default_factory=list)
    judge_calls: int | None = None


def _check(questions, candidates):
    if len(questions) != len(candidates):
        raise ValueError(f"`questions` has {len(questions)} items but `candidates` has {len(candidates)} lists.")
    for q, cands in enumerate(candidates):
        if len(cands) == 0:
            raise ValueError(f"`candidates[{q}]` is empty: best-of-n needs at least one candidate.")


def _scores(n: int, comparisons) -> list[float]:
    sums, counts = [0.0] * n, [0] * n
    for i, j, p in comparisons:
        sums[i] += p
        sums[j] += 1 - p
        counts[i] += 1
        counts[j] += 1
    return [s / c if c else 0.5 for s, c in zip(sums, counts)]


def _ordered(winner: int, scores: list[float]) -> list[int]:
    rest = sorted((i for i in range(len(scores)) if i != winner), key=lambda i: -scores[i])
    return [winner] + rest


def knockout_batch(
    judge, questions: Sequence[TextOrMessages], candidates: Sequence[Sequence[TextOrMessages]], **judge_kwargs
) -> list[RankResult]:
    """Knockout tournaments for many questions at once; every round is one ``judge.judge`` call."""
    _check(questions, candidates)
    alive = [list(range(len(c))) for c in candidates]
    history: list[list[tuple[int, int, float]]] = [[] for _ in candidates]
    while any(len(a) > 1 for a in alive):
        matches = []  # (question index, i, j)
        for q, players in enumerate(alive):
            matches += [(q, players[k], players[k + 1]) for k in range(0, len(players) - 1, 2)]
        out = judge.judge(
            [questions[q] for q, _, _ in matches],
            [candidates[q][i] for q, i, _ in matches],
            [candidates[q][j] for q, _, j in matches],
            **judge_kwargs,
        )
        winners: list[list[int]] = [[] for _ in candidates]
        for (q, i, j), jd in zip(matches, out):
            history[q].append((i, j, jd.prob))
            winners[q].append(i if jd.prob >= 0.5 else j)
        for q, players in enumerate(alive):
            if len(players) > 1:
                bye = [players[-1]] if len(players) % 2 else []
                alive[q] = winners[q] + bye
    results = []
    for q, cands in enumerate(candidates):
        scores = _scores(len(cands), history[q])
        results.append(RankResult(alive[q][0], _ordered(alive[q][0], scores), scores, history[q]))
    return results


def knockout(judge, question: TextOrMessages, candidates: Sequence[TextOrMessages], **judge_kwargs) -> RankResult:
    """Single-elimination tournament over ``candidates`` for one question."""
    return knockout_batch(judge, [question], [candidates], **judge_kwargs)[0]


def linear_search(judge, question: TextOrMessages, candidates: Sequence[TextOrMessages], **judge_kwargs) -> RankResult:
    """The best so far meets each next candidate in turn (n − 1 sequential comparisons)."""
    _check([question], [candidates])
    best, history = 0, []
    for k in range(1, len(candidates)):
        jd = judge.judge([question], [candidates[best]], [candidates[k]], **judge_kwargs)[0]
        history.append((best, k, jd.prob))
        if jd.prob < 0.5:
            best = k
    scores = _scores(len(candidates), history)
    return RankResult(best, _ordered(best, scores), scores, history)


def rank_all(judge, question: TextOrMessages, candidates: Sequence[TextOrMessages], **judge_kwargs) -> RankResult:
    """Full ranking: every pair judged (one batched call), ordered by mean win probability.

    Keyword arguments named like the fields of [`~pairing.ComparisonConfig`] (``schedule``, ``schedule_degree``,
    ``aggregate``, ``second_order``, ``second_order_margin``, ``max_judge_calls_per_group``, ``extra_votes``,
    ``length_control``, ``schedule_seed``) choose the comparisons and the scores; the others go to ``judge.judge``.
    """
    _check([question], [candidates])
    settings = pairing.ComparisonConfig(
        **{k: judge_kwargs.pop(k) for k in pairing.COMPARISON_FIELDS if k in judge_kwargs}
    )
    n = len(candidates)
    comparisons = pairing.comparisons_within(
        range(n),
        [question] * n,
        list(candidates),
        "group",
        settings.schedule,
        settings.schedule_degree,
        random.Random(settings.schedule_seed),
        balanced=settings.second_order == "adaptive",
    )
    judgments, cost = adaptive.run_sync(judge, comparisons, settings, judge_kwargs)
    history = [(i, j, jd.prob) for (i, _, _, _, j), jd in zip(comparisons, judgments)]
    probs = pairing.score_completions(n, comparisons, judgments, use_failed=True, method=settings.aggregate).probs
    if settings.length_control:
        probs = pairing.length_controlled(probs, [pairing.text_length(c) for c in candidates], [list(range(n))])
    scores = [0.5 if p is None else p for p in probs]
    order = sorted(range(n), key=lambda i: -scores[i])
    return RankResult(order[0], order, scores, history, cost.judge_calls)


def best_of_n(
    judge, question: TextOrMessages, candidates: Sequence[TextOrMessages], method: str = "knockout", **judge_kwargs
) -> int:
    """Index of the best candidate by ``method``: ``"knockout"``, ``"linear"`` or ``"all"``."""
    methods = {"knockout": knockout, "linear": linear_search, "all": rank_all}
    if method not in methods:
        raise ValueError(f"`method` must be one of {sorted(methods)}, got {method!r}.")
    return methods[method](judge, question, candidates, **judge_kwargs).winner
