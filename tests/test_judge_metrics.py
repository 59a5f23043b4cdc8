"""One metrics path: training-time evaluation, `trl-gram eval`, the reward's logs and the win rate read accuracy, swap
agreement and parse failures from `trl_gram.judge_metrics`, with the template's label words; undefined is NaN."""

import math

from trl_gram.judge import PairJudgment
from trl_gram.judge.results import JudgeRun
from trl_gram.judge_metrics import (
    judge_outcomes,
    judgment_summary,
    metrics_from_outcomes,
    pair_outcome,
    summarize_outcomes,
)


def _judgment(prob, label, agreement, failures=(None, None), first="A"):
    runs = [JudgeRun("AB", 0.5, label, failure=failures[0], first_label=first)]
    runs.append(JudgeRun("BA", 0.5, label, failure=failures[1], first_label=first))
    return PairJudgment(prob, label, agreement, runs)


def test_unreadable_probability_falls_back_on_the_template_label_words():
    """A judge whose template says "first"/"second": with no probability, its label word decides (not "A"/"B")."""
    words = ("first", "second")
    right = pair_outcome(_judgment(math.nan, "second", True, first="first"), 1, words)
    wrong = pair_outcome(_judgment(math.nan, "first", True, first="first"), 1, words)
    assert (right["correct"], right["pred"]) == (1.0, 1)
    assert (wrong["correct"], wrong["pred"]) == (0.0, 0)
    assert math.isnan(right["p_better"])


def test_runs_read_their_template_label_words():
    """Swap agreement and each run's decision with label words other than A/B: in the BA order, "2" (the first
    shown loses) means response 1 wins, so the two orders agree."""
    from trl_gram.judge import combine_runs

    runs = [JudgeRun("AB", 0.8, "1", first_label="1"), JudgeRun("BA", 0.4, "2", first_label="1")]
    jd = combine_runs(runs, ("1", "2"))
    assert jd.label == "1" and jd.agreement is True
    assert pair_outcome(jd, 0, ("1", "2"))["decisions"] == [1, 1]


def test_accuracy_agreement_and_failures_with_none_for_undefined():
    outcomes = [
        pair_outcome(_judgment(0.8, "A", True), 0),  # right
        pair_outcome(_judgment(0.5, "A", False, ("bad", None)), 0),  # exactly one half: half right
        pair_outcome(_judgment(0.3, "B", None), 0),  # wrong; one order only
    ]
    m = summarize_outcomes(outcomes)
    assert m["accuracy"] == (1.0 + 0.5 + 0.0) / 3
    assert m["swap_agreement"] == 0.5 and m["parse_failure_rate"] == 1 / 6
    empty = summarize_outcomes([])
    assert empty["num_pairs"] == 0 and math.isnan(empty["accuracy"]) and math.isnan(empty["swap_agreement"])
    assert math.isnan(empty["parse_failure_rate"])
    summary = judgment_summary([_judgment(0.7, "A", None), None])
    assert summary["pairs"] == 1 and summary["parse_failure_rate"] == 0.0 and math.isnan(summary["swap_agreement"])
    per_subset = metrics_from_outcomes(outcomes, ["x", "x", "y"])
    assert per_subset["x/accuracy"] == 0.75 and math.isnan(per_subset["y/swap_agreement"])


def test_training_eval_and_trl_gram_eval_agree_on_a_real_tiny_judge(tiny_judge):
    """The trainer's outcomes and `trl-gram eval`'s per-file report read the same numbers from one judge."""
    from trl_gram.evaluation.cli import evaluate_file
    from trl_gram.formats import Comparison, EvalData

    pairs = [{"question": "q1", "first": "good", "second": "bad", "label": 0}]
    pairs.append({"question": "q2", "first": "meh", "second": "fine", "label": 1})
    training = summarize_outcomes(judge_outcomes(tiny_judge, pairs))
    data = EvalData("pairs", "preference", 2)
    data.comparisons = [Comparison(p["question"], p["first"], p["second"], p["label"], i) for i, p in enumerate(pairs)]
    data.row_info = {0: {}, 1: {}}
    report = evaluate_file(tiny_judge, data)
    for key in ("accuracy", "swap_agreement", "parse_failure_rate"):
        shown = report["metrics"][key]  # the JSON report writes NaN as null
        assert shown == training[key] or (shown is None and math.isnan(training[key])), key
