"""Judge evaluation on labeled pairs: accuracy, swap agreement and parse-failure rate, overall and per subset.

A pair counts as correct when the judge's debiased ``P(better response wins)`` is above one half (a tie at exactly
one half counts half); when no probability could be read, the parsed label decides. Swap agreement is the share of
pairs, among those judged in both orders with a label read in each, whose two orders prefer the same response. The
parse-failure rate is the share of runs (order × vote) whose output could not be parsed (always 0 for direct judges).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from transformers.utils import logging

logger = logging.get_logger(__name__)


def _pair_outcome(judgment, label: int) -> dict:
    prob = judgment.prob
    if prob is not None and not math.isnan(prob):
        p_better = prob if label == 0 else 1.0 - prob
        correct = 1.0 if p_better > 0.5 else 0.5 if p_better == 0.5 else 0.0
    else:
        p_better = math.nan
        want = "A" if label == 0 else "B"
        correct = float(judgment.label == want) if judgment.label is not None else 0.0
    runs = judgment.runs
    return {
        "correct": correct,
        "p_better": p_better,
        "agreement": judgment.agreement,
        "failed_runs": sum(r.failure is not None for r in runs),
        "runs": len(runs),
        "label_read": judgment.label is not None,
    }


def summarize(outcomes: Sequence[dict]) -> dict[str, float]:
    """Aggregate per-pair outcomes (from [`judge_outcomes`]) into metrics."""
    n = len(outcomes)
    if n == 0:
        return {"num_pairs": 0}
    agreements = [o["agreement"] for o in outcomes if o["agreement"] is not None]
    runs = sum(o["runs"] for o in outcomes)
    probs = [o["p_better"] for o in outcomes if not math.isnan(o["p_better"])]
    return {
        "accuracy": sum(o["correct"] for o in outcomes) / n,
        "swap_agreement": sum(agreements) / len(agreements) if agreements else math.nan,
        "parse_failure_rate": sum(o["failed_runs"] for o in outcomes) / runs if runs else 0.0,
        "mean_prob_better": sum(probs) / len(probs) if probs else math.nan,
        "num_pairs": n,
    }


def judge_outcomes(judge, pairs: Sequence[dict], swap: str = "both", show_progress: bool | None = None) -> list[dict]:
    """Judge canonical pairs (``question``, ``first``, ``second``, ``label``) and return one outcome per pair."""
    if not pairs:
        return []
    judgments = judge.judge(
        [p["question"] for p in pairs],
        [p["first"] for p in pairs],
        [p["second"] for p in pairs],
        swap=swap,
        show_progress=show_progress,
    )
    return [_pair_outcome(j, p["label"]) for j, p in zip(judgments, pairs)]


def judge_metrics(
    judge,
    pairs: Sequence[dict],
    swap: str = "both",
    subsets: Sequence[str] | None = None,
    show_progress: bool | None = None,
) -> dict[str, float]:
    """Metrics of ``judge`` on canonical pairs; with ``subsets`` (one name per pair) also ``{subset}/{metric}``."""
    outcomes = judge_outcomes(judge, pairs, swap=swap, show_progress=show_progress)
    return metrics_from_outcomes(outcomes, subsets)


def metrics_from_outcomes(outcomes: Sequence[dict], subsets: Sequence[str] | None = None) -> dict[str, float]:
    metrics = summarize(outcomes)
    if subsets is not None:
        groups = defaultdict(list)
        for o, s in zip(outcomes, subsets):
            groups[str(s)].append(o)
        if len(groups) > 1:
            for name in sorted(groups):
                for key, value in summarize(groups[name]).items():
                    metrics[f"{name}/{key}"] = value
    return metrics


def format_metrics(metrics: dict[str, float]) -> str:
    """A small aligned table of metrics for the terminal."""
    width = max((len(k) for k in metrics), default=0)
    lines = []
    for key, value in metrics.items():
        shown = f"{value:.4f}" if isinstance(value, float) and not math.isnan(value) else str(value)
        lines.append(f"{key.ljust(width)}  {shown}")
    return "\n".join(lines)
