"""How good are a self-training round's pseudo-labels on a synthetic control task, and does ranking them by the judge's
debiased confidence pick out the good ones?

Reads a round's ``predictions.jsonl`` (written by ``GramSelfTrainer`` before denoising: every candidate with its label,
order-averaged probability ``confidence`` and per-order votes), scores each label with the control's oracle
([`research.reproduction.harness.synthetic.is_correct`]), and prints the share of right labels among all candidates, among
those whose two orders agree, and among the top fractions ranked by the margin ``|confidence - 0.5|``. The oracle is
used for this analysis only; no training step sees it.

    python -m research.reproduction.analysis.pseudo_label_quality \\
        runs/reproduce_cpu_compare_small/synthetic/direct_st/seed0/round_01/predictions.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("predictions", help="A self-training round's predictions.jsonl (synthetic control task).")
    p.add_argument("--fractions", default="0.25,0.5,0.75,1", help="Top fractions by margin to score.")
    args = p.parse_args(argv)
    from research.reproduction.harness.synthetic import is_correct

    rows = [json.loads(line) for line in Path(args.predictions).read_text().splitlines() if line.strip()]
    scored = []
    for i, r in enumerate(rows):
        if r.get("label") not in ("A", "B"):
            continue
        better = r["response_a"] if r["label"] == "A" else r["response_b"]
        right = is_correct(better)
        if right is None:
            raise ValueError(f"row {i}: {better!r} is not a synthetic control response; this script needs one.")
        votes = [v for v in r.get("votes", []) if v is not None]
        # votes are the per-order labels mapped back to the pair's own A/B, so the orders agree when they are equal
        agree = len(votes) == 2 and votes[0] == votes[1]
        scored.append((abs(float(r["confidence"]) - 0.5), right, agree))
    if not scored:
        raise ValueError(f"{args.predictions}: no labelled candidates.")
    scored.sort(key=lambda t: -t[0])
    out = {"candidates": len(scored), "right": sum(s[1] for s in scored)}
    agreeing = [s for s in scored if s[2]]
    out["orders_agree"] = {"n": len(agreeing), "right": sum(s[1] for s in agreeing)}
    print(f"{len(scored)} labelled candidates, {out['right']} right ({100 * out['right'] / len(scored):.0f} %)")
    print(f"both orders agree: {len(agreeing)}, of which {out['orders_agree']['right']} right")
    for f in [float(x) for x in args.fractions.split(",")]:
        k = max(1, round(f * len(scored)))
        right = sum(s[1] for s in scored[:k])
        out[f"top_{f:g}"] = {"n": k, "right": right, "min_margin": scored[k - 1][0]}
        print(f"top {f:.0%} by margin: {right}/{k} right ({100 * right / k:.0f} %), margin >= {scored[k - 1][0]:.5f}")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
