"""Where does a direct-mode judge's decision come from? Per-order probabilities on the held-out sets.

``trl-gram eval`` reports the accuracy of the position-debiased probability and the swap agreement; this script
judges the same comparisons (read by the same reader, judged by the same ``GramJudge.judge``, scored by the same
``pair_outcome``, so its accuracy and agreement equal the eval's) and also keeps each order's probability that the
response shown first is better. From them it reports, per set:

- the judge's **position bias** b and **content signal** s: with l_AB and l_BA a pair's log-odds that the response
  shown first is better in each order, b = (l_AB + l_BA) / 2 (the true preference cancels, so it needs no label) and
  s = (l_AB - l_BA) / 2 (the position-debiased log-odds that response 1 is better); the report gives the mean b and
  the mean |s| per set (a pure position judge has |s| = 0);
- **calibrated** per-order figures: each order's decision after subtracting a position bias estimated on
  ``--calibration`` pairs (unseen warm-up rows by default; labels unused), the per-order accuracy and swap agreement
  a judge with that one constant would have. The debiased probability's ranking is unchanged by it.

    python research/embedded_judge/order_probabilities.py --adapter runs/embedded_judge/warmup_top \\
        --pairs 60 --out runs/embedded_judge/orders/warmup_top.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from trl_gram import GramJudge
from trl_gram.formats.files import read_eval_file
from trl_gram.judge_metrics import pair_outcome, summarize_outcomes
from trl_gram.pairing import transform

SETS = ("hh_rlhf", "pandalm", "judgebench")


def order_logits(judge: GramJudge, comps) -> list[tuple[float, float, object]]:
    """Per comparison: log-odds that the first shown is better in order AB and in order BA, and the judgment."""
    judgments = judge.judge(
        [c.question for c in comps], [c.first for c in comps], [c.second for c in comps], swap="both"
    )
    out = []
    for j in judgments:
        by_order = {r.order: transform(r.prob_first, "logit") for r in j.runs}
        out.append((by_order["AB"], by_order["BA"], j))
    return out


def mean_tilt(rows) -> float:
    """The mean position tilt b = (l_AB + l_BA) / 2 of some ``order_logits`` rows."""
    return sum(l_ab + l_ba for l_ab, l_ba, _ in rows) / (2 * len(rows))


def figures(rows, comps, bias: float) -> dict:
    """`trl-gram eval`'s figures of these comparisons ([`summarize_outcomes`] of their [`pair_outcome`]s), plus the
    mean tilt, the mean |s| and the per-order figures after subtracting ``bias``."""
    metrics = summarize_outcomes([pair_outcome(j, c.label) for (_, _, j), c in zip(rows, comps)])
    n = len(rows)
    # response 1 = comps' `first`; its log-odds in AB is l_ab, in BA it is -l_ba
    right_ab = right_ba = agree = 0
    for (l_ab, l_ba, _), c in zip(rows, comps):
        first_better = c.label == 0
        ab = (l_ab - bias) > 0  # AB: response 1 shown first, judged better
        ba = (l_ba - bias) < 0  # BA: response 2 shown first, judged worse, i.e. response 1 better
        right_ab += ab == first_better
        right_ba += ba == first_better
        agree += ab == ba
    return {
        "num_pairs": n,
        "accuracy": metrics["accuracy"],
        "swap_agreement": metrics["swap_agreement"],
        "position_bias_logodds": mean_tilt(rows),
        "content_logodds": sum(abs(l_ab - l_ba) / 2 for l_ab, l_ba, _ in rows) / n,
        "calibrated_order_accuracy": (right_ab + right_ba) / (2 * n),
        "calibrated_swap_agreement": agree / n,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="runs/embedded_judge/data")
    p.add_argument("--adapter", default=None, help="LoRA adapter folder (default: the zero-shot base).")
    p.add_argument("--pairs", type=int, default=60, help="First rows of each held-out set.")
    p.add_argument("--calibration", default="warmup.jsonl:2000:2060", help="file:start:stop of the bias estimate.")
    p.add_argument("--max_length", type=int, default=1024)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    data = Path(a.data)
    judge = GramJudge.from_pretrained(None, adapter=a.adapter, mode="direct", max_length=a.max_length)
    name, start, stop = a.calibration.split(":")
    calib = read_eval_file(str(data / name), select=f"{start}:{stop}").comparisons
    bias = mean_tilt(order_logits(judge, calib))
    report = {"adapter": a.adapter, "calibration": a.calibration, "bias_logodds": bias, "sets": {}}
    pooled_rows, pooled_comps, pooled_sets = [], [], []
    for s in SETS:
        comps = read_eval_file(str(data / f"heldout_{s}.jsonl"), max_samples=a.pairs).comparisons
        rows = order_logits(judge, comps)
        report["sets"][s] = figures(rows, comps, bias)
        pooled_rows += rows
        pooled_comps += comps
        pooled_sets += [s] * len(comps)
        print(s, json.dumps(report["sets"][s]), flush=True)
    report["pooled"] = figures(pooled_rows, pooled_comps, bias)
    report["per_pair"] = [
        {"set": s, "logodds_first_ab": r[0], "logodds_first_ba": r[1], "label": c.label}
        for s, r, c in zip(pooled_sets, pooled_rows, pooled_comps)
    ]
    print("pooled", json.dumps(report["pooled"]), "calibration bias", f"{bias:.4f}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
