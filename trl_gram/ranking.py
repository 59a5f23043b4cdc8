"""Best-of-n and full ranking of candidate responses with a pairwise [`~trl_gram.judge.GramJudge`].

* [`knockout`]: a single-elimination tournament; each round is one batched judge call (over all questions
  at once), n − 1 comparisons in ⌈log2 n⌉ rounds.
* [`linear_search`]: the champion so far meets each next candidate, n − 1 sequential comparisons (the GRAM
  authors' best-of-n procedure; useful when candidates arrive one by one).
* [`rank_all`]: every pair, one batched call, candidates ordered by mean win probability (n(n−1)/2 comparisons).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .templates import TextOrMessages


@dataclass
class RankResult:
    """Outcome for one question.

    Attributes:
        winner: Index of the best candidate.
        order: Candidate indices from best to worst (for [`rank_all`]; only the winner first otherwise).
        scores: Per-candidate mean win probability over the comparisons it took part in.
        comparisons: ``(i, j, P(i beats j))`` for every comparison made.
    """

    winner: int
    order: list[int]
    scores: list[float]
    comparisons: list[tuple[int, int, float]] = field(default_factory=list)


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
    """Full ranking: every pair judged (one batched call), ordered by mean win probability."""
    _check([question], [candidates])
    n = len(candidates)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    out = (
        judge.judge(
            [question] * len(pairs),
            [candidates[i] for i, _ in pairs],
            [candidates[j] for _, j in pairs],
            **judge_kwargs,
        )
        if pairs
        else []
    )
    history = [(i, j, jd.prob) for (i, j), jd in zip(pairs, out)]
    scores = _scores(n, history)
    order = sorted(range(n), key=lambda i: -scores[i])
    return RankResult(order[0], order, scores, history)


def best_of_n(
    judge, question: TextOrMessages, candidates: Sequence[TextOrMessages], method: str = "knockout", **judge_kwargs
) -> int:
    """Index of the best candidate by ``method``: ``"knockout"``, ``"linear"`` or ``"all"``."""
    methods = {"knockout": knockout, "linear": linear_search, "all": rank_all}
    if method not in methods:
        raise ValueError(f"`method` must be one of {sorted(methods)}, got {method!r}.")
    return methods[method](judge, question, candidates, **judge_kwargs).winner
