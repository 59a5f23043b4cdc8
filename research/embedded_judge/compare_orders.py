"""Paired comparison of two judges on the same held-out pairs, from two ``order_probabilities.py`` reports.

A pair is right for a judge when its debiased log-odds s = (l_AB - l_BA) / 2 points to the labelled response (s = 0,
a tie, is right for neither). Per set and pooled: how many pairs only the first judge gets right, how many only the
second, and the exact two-sided McNemar p-value (a binomial test on the discordant pairs).

    python research/embedded_judge/compare_orders.py runs/embedded_judge/orders/final_100.json \\
        runs/embedded_judge/orders/zero_shot_100.json
"""

from __future__ import annotations

import argparse
import json
from math import comb


def right(record: dict) -> bool:
    s = (record["logodds_first_ab"] - record["logodds_first_ba"]) / 2
    return (s > 0 and record["label"] == 0) or (s < 0 and record["label"] == 1)


def mcnemar_p(only_first: int, only_second: int) -> float:
    """Exact two-sided p of ``only_first`` successes in ``only_first + only_second`` fair coin flips."""
    n, k = only_first + only_second, min(only_first, only_second)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2**n)


def compare(first: list[dict], second: list[dict], together: tuple[str, ...] = ()) -> dict[str, dict]:
    """Counts per set, pooled, and for the sets named in ``together`` as one group."""
    if len(first) != len(second) or any(a["set"] != b["set"] for a, b in zip(first, second)):
        raise ValueError(
            "The two reports do not judge the same pairs in the same order (rerun with the same --pairs)."
        )
    groups: dict[str, list[tuple[bool, bool]]] = {}
    for a, b in zip(first, second):
        groups.setdefault(a["set"], []).append((right(a), right(b)))
        groups.setdefault("pooled", []).append((right(a), right(b)))
        if a["set"] in together:
            groups.setdefault(" + ".join(together), []).append((right(a), right(b)))
    out = {}
    for name, rows in groups.items():
        only_first = sum(x and not y for x, y in rows)
        only_second = sum(y and not x for x, y in rows)
        out[name] = {
            "pairs": len(rows),
            "only_first": only_first,
            "only_second": only_second,
            "p": mcnemar_p(only_first, only_second),
        }
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("first", help="order_probabilities.py report of the first judge")
    p.add_argument("second", help="order_probabilities.py report of the second judge")
    p.add_argument("--together", nargs="*", default=["hh_rlhf", "pandalm"], help="Sets also counted as one group.")
    args = p.parse_args(argv)
    reports = [json.load(open(path))["per_pair"] for path in (args.first, args.second)]
    for name, row in compare(*reports, tuple(args.together)).items():
        print(
            f"{name:18s} pairs {row['pairs']:4d}  only first {row['only_first']:3d}  only second "
            f"{row['only_second']:3d}  McNemar p = {row['p']:.3f}"
        )


if __name__ == "__main__":
    main()
