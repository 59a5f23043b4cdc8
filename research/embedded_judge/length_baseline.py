"""How far a length rule goes on the embedded judge's data: the share of pairs, among those whose two responses differ
in length (characters), where the longer response is the human label, on each whole shared file and on the first
``--heldout_pairs`` rows of each held-out slice written by ``prepare_data.py``.

    python research/embedded_judge/length_baseline.py --data ../shared/data --slices runs/embedded_judge/data
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from prepare_data import FILES

from trl_gram.formats import load_pairs


def longer_wins(pairs) -> tuple[float, int]:
    """Share of pairs with responses of different lengths whose chosen response is the longer one, and their count."""
    decided = [
        len(str(r["chosen"])) > len(str(r["rejected"])) for r in pairs if len(r["chosen"]) != len(r["rejected"])
    ]
    return (sum(decided) / len(decided) if decided else float("nan")), len(decided)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--slices", default="runs/embedded_judge/data")
    p.add_argument("--heldout_pairs", type=int, default=60)
    a = p.parse_args(argv)
    for name, file in FILES.items():
        ds, _ = load_pairs(str(Path(a.data) / file), ties="drop")
        share, n = longer_wins(ds)
        line = f"{name}: longer response preferred in {share:.3f} of {n} pairs (whole file)"
        held = Path(a.slices) / f"heldout_{name}.jsonl"
        if held.is_file():
            rows = [json.loads(x) for x in held.read_text().splitlines()[: a.heldout_pairs]]
            share, n = longer_wins(rows)
            line += f"; {share:.3f} of {n} (first {a.heldout_pairs} held-out rows)"
        print(line)


if __name__ == "__main__":
    main()
