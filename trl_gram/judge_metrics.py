"""Judge quality, measured one way everywhere: accuracy, swap agreement and parse failures.

Training-time evaluation ([`~trl_gram.training.GramRewardTrainer`], the self-training loop), `trl-gram eval` (under
each benchmark's official aggregate, [`~trl_gram.evaluation.metrics`]), the reward function's logs
([`~trl_gram.reward.GenerativeRewardFunction`]) and the win-rate callback ([`~trl_gram.win_rate.summarize`]) all
compute these numbers here:

* **accuracy**: a pair counts as correct when the judge's debiased `P(better response wins)` is above one half (exactly
  one half counts half); when no probability could be read, the parsed label decides, read with the template's label
  words (not a literal "A"/"B").
* **swap agreement**: among pairs judged in both orders with a label read in each, the share whose two orders prefer
  the same response.
* **parse-failure rate**: the share of runs (order × vote) whose output could not be parsed (0 for direct judges).

**Undefined is NaN** (`math.nan`, never `None`): a mean over nothing (no pair judged in both orders, no labeled pair,
no run) is NaN, so every metric is a float that trainers and loggers take as they are, and a comparison with it is
false (`swap_agreement >= 0.5` fails for a judge whose outputs could not be read); JSON reports write it as `null`
(`trl-gram eval`'s report); the win-rate summary, a JSON-facing report like the reward server's answers, shows it as
`None`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence


def is_undefined(value) -> bool:
    """Whether a metric value is undefined (NaN; `None` is read the same way)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def mean(values: Iterable[float | None]) -> float:
    """The mean of the defined values (`None` and NaN left out); NaN when none is defined."""
    kept = [float(v) for v in values if not is_undefined(v)]
    return sum(kept) / len(kept) if kept else math.nan


def agreement_rate(agreements: Iterable[bool | None]) -> float:
    """Swap agreement from per-pair agreements (`None`: the pair was not judged in both orders)."""
    return mean(float(a) for a in agreements if a is not None)


def failure_rate(failed_runs: int, runs: int) -> float:
    """Parse-failure rate of `runs` runs of which `failed_runs` failed (NaN when there was no run)."""
    return failed_runs / runs if runs else math.nan


def judgment_summary(judgments) -> dict:
    """Pairs, parse-failure rate over all runs, and swap agreement of [`~trl_gram.judge.PairJudgment`]s (`None`
    entries, pairs that were not judged, are left out)."""
    judgments = [jd for jd in judgments if jd is not None]
    runs = [r for jd in judgments for r in jd.runs]
    return {
        "pairs": len(judgments),
        "parse_failure_rate": failure_rate(sum(r.failure is not None for r in runs), len(runs)),
        "swap_agreement": agreement_rate(jd.agreement for jd in judgments),
    }


def pair_outcome(judgment, label: int | None, label_words: tuple[str, str] = ("A", "B")) -> dict:
    """Plain numbers for one judged comparison (`label`: index of the better response, `None` for a tie).

    Returns:
        `dict`: `correct` (a probability of exactly one half counts half), `win` (strict `p > 0.5`), `tie` (exactly
        one half), `pred` (index of the response the judge's label prefers), `gold`, `p_better`, `decisions` (each
        run's +1 right, -1 wrong, 0 unreadable), `order_right` (per presentation order, the share of its runs that were
        right), `agreement`, `failed_runs`, `runs`.
    """
    prob = judgment.prob
    has_prob = prob is not None and not math.isnan(prob)
    pred = None if judgment.label is None else (0 if judgment.label == label_words[0] else 1)
    if label is None:
        p_better, correct, win, tie = math.nan, 0.0, False, False
    elif has_prob:
        p_better = prob if label == 0 else 1.0 - prob
        win, tie = p_better > 0.5, p_better == 0.5
        correct = 1.0 if win else 0.5 if tie else 0.0
    else:
        p_better, tie = math.nan, False
        win = pred == label
        correct = float(win)
    decisions = [_decision(r, label) for r in judgment.runs]
    orders = defaultdict(list)
    for r, d in zip(judgment.runs, decisions):
        orders[r.order].append(d > 0)
    return {
        "p_better": p_better,
        "correct": correct,
        "win": win,
        "tie": tie,
        "pred": pred,
        "gold": label,
        "decisions": decisions,
        "order_right": {o: sum(v) / len(v) for o, v in orders.items()},
        "agreement": judgment.agreement,
        "failed_runs": sum(r.failure is not None for r in judgment.runs),
        "runs": len(judgment.runs),
    }


def _decision(run, label: int | None) -> int:
    """+1 when a run prefers the better response, -1 the other (or any response of a tie), 0 when unreadable."""
    if run.winner is None:
        return 0
    return 1 if label is not None and run.winner == label + 1 else -1


def summarize_outcomes(outcomes: Sequence[dict]) -> dict:
    """`num_pairs`, `accuracy` (labeled pairs), `swap_agreement`, `parse_failure_rate` and `mean_prob_better` of
    some [`pair_outcome`]s."""
    return {
        "num_pairs": len(outcomes),
        "accuracy": mean(o["correct"] for o in outcomes if o["gold"] is not None),
        "swap_agreement": agreement_rate(o["agreement"] for o in outcomes),
        "parse_failure_rate": failure_rate(sum(o["failed_runs"] for o in outcomes), sum(o["runs"] for o in outcomes)),
        "mean_prob_better": mean(o["p_better"] for o in outcomes),
    }


def judge_outcomes(judge, pairs: Sequence[dict], swap: str = "both", show_progress: bool | None = None) -> list[dict]:
    """Judge canonical pairs (`question`, `first`, `second`, `label`) and return one [`pair_outcome`] per pair."""
    if not pairs:
        return []
    judgments = judge.judge(
        [p["question"] for p in pairs],
        [p["first"] for p in pairs],
        [p["second"] for p in pairs],
        swap=swap,
        show_progress=show_progress,
    )
    template = getattr(judge, "template", None)  # a judge-like object without one reads A/B
    words = template.label_words if template is not None else ("A", "B")
    return [pair_outcome(j, p["label"], words) for j, p in zip(judgments, pairs)]


def metrics_from_outcomes(outcomes: Sequence[dict], subsets: Sequence[str] | None = None) -> dict:
    """[`summarize_outcomes`], and with `subsets` (one name per pair, more than one name) also `{subset}/{metric}`."""
    metrics = summarize_outcomes(outcomes)
    if subsets is not None:
        groups = defaultdict(list)
        for o, s in zip(outcomes, subsets):
            groups[str(s)].append(o)
        if len(groups) > 1:
            for name in sorted(groups):
                for key, value in summarize_outcomes(groups[name]).items():
                    metrics[f"{name}/{key}"] = value
    return metrics


def judge_metrics(
    judge,
    pairs: Sequence[dict],
    swap: str = "both",
    subsets: Sequence[str] | None = None,
    show_progress: bool | None = None,
) -> dict:
    """Metrics of `judge` on canonical pairs ([`metrics_from_outcomes`] of [`judge_outcomes`])."""
    return metrics_from_outcomes(judge_outcomes(judge, pairs, swap=swap, show_progress=show_progress), subsets)


def format_metrics(metrics: dict) -> str:
    """A small aligned table of metrics for the terminal."""
    width = max((len(k) for k in metrics), default=0)
    lines = []
    for key, value in metrics.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"{key.ljust(width)}  {shown}")
    return "\n".join(lines)
