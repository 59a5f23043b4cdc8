"""Best-of-n and full ranking return the right winner and order with a judge whose preference is known."""

import pytest

from trl_gram.judge import JudgeRun, PairJudgment
from trl_gram.ranking import best_of_n, knockout, knockout_batch, linear_search, rank_all


class QualityJudge:
    """Knows each candidate's quality (the number in it): P(first better) = sigmoid(q1 - q2)."""

    def __init__(self):
        self.calls = 0

    def judge(self, questions, responses_1, responses_2, **kwargs):
        import math

        self.calls += 1
        out = []
        for a, b in zip(responses_1, responses_2):
            p = 1 / (1 + math.exp(-(int(a.split()[-1]) - int(b.split()[-1]))))
            out.append(PairJudgment(p, "A" if p >= 0.5 else "B", None, [JudgeRun("AB", p, None)]))
        return out


CANDIDATES = [f"candidate {q}" for q in (3, 9, 1, 7, 5, 8, 2)]  # best: index 1


def test_knockout_finds_the_best_in_log_rounds():
    judge = QualityJudge()
    result = knockout(judge, "q", CANDIDATES)
    assert result.winner == 1 and result.order[0] == 1
    assert judge.calls == 3  # ceil(log2 7) batched rounds
    assert len(result.comparisons) == len(CANDIDATES) - 1


def test_linear_search_and_rank_all():
    judge = QualityJudge()
    assert linear_search(judge, "q", CANDIDATES).winner == 1
    assert judge.calls == len(CANDIDATES) - 1
    ranked = rank_all(QualityJudge(), "q", CANDIDATES)
    assert ranked.order == [1, 5, 3, 4, 0, 6, 2]
    assert len(ranked.comparisons) == 21


def test_batched_knockout_over_questions_and_edge_cases():
    judge = QualityJudge()
    results = knockout_batch(judge, ["q1", "q2", "q3"], [CANDIDATES, ["x 1", "x 4"], ["only 3"]])
    assert [r.winner for r in results] == [1, 1, 0]
    assert judge.calls == 3  # rounds are shared across questions
    assert best_of_n(QualityJudge(), "q", CANDIDATES, method="all") == 1
    with pytest.raises(ValueError, match="method"):
        best_of_n(judge, "q", CANDIDATES, method="sort")
    with pytest.raises(ValueError, match=r"candidates\[0\]"):
        knockout(judge, "q", [])


def test_knockout_on_real_tiny_judge(tiny_judge):
    result = knockout(tiny_judge, "What is 2 + 3?", ["5", "6", "five", "4"], mode="direct")
    assert result.winner in range(4) and sorted(result.order) == [0, 1, 2, 3]
    assert all(0 <= p <= 1 for _, _, p in result.comparisons)
