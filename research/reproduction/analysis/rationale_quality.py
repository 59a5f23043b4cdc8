"""What do the training rationales of a control-task stage say? For each row of a stage's ``kept.jsonl`` (the rows a
judge was trained on, with their rationales), whether the rationale concludes for the row's label, against it, or for
neither ([`trl_gram.training.denoise.rationale_label`]), and whether the first fact it states is true, false or
absent (the control's oracle, [`research.reproduction.harness.synthetic.is_correct`]). The oracle is used for this
analysis only.

    python -m research.reproduction.analysis.rationale_quality \\
        runs/reproduce_cpu_compare_small/synthetic/reason/seed0/round_00/kept.jsonl
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("kept", nargs="+", help="kept.jsonl files of control-task stages (rows with a `rationale`).")
    args = p.parse_args(argv)
    from research.reproduction.harness.synthetic import is_correct
    from trl_gram.training.denoise import rationale_label

    out = {}
    for path in args.kept:
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        counts = Counter(rows=len(rows))
        for i, row in enumerate(rows):
            text = row.get("rationale")
            if text is None or row.get("label") not in ("A", "B"):
                raise ValueError(f"{path}, row {i}: needs a `rationale` and a `label` of 'A' or 'B'.")
            said = rationale_label(text)
            counts["concludes_" + ("neither" if said is None else "label" if said == row["label"] else "other")] += 1
            fact = is_correct(text)
            counts["fact_" + ("none" if fact is None else "true" if fact else "false")] += 1
        out[path] = dict(counts)
        print(f"{path}: {dict(counts)}")
    return out


if __name__ == "__main__":
    main()
