"""What does a `reason_oracle` judge write? Judges the first ``--n`` test pairs of a recipe's control task in both
orders with a trained checkpoint, and checks each rationale written in the per-response style (``Response A says:
<claim> This is true|false. Response B says: ...``): did it copy both shown responses exactly, and is each verdict
right by the control's oracle ([`research.reproduction.harness.synthetic.is_correct`])? Prints a few rationales and the
counts.

    python -m research.reproduction.analysis.oracle_judge_check --config research/reproduction/configs/reproduce_cpu_compare_small.yaml --seed 0 \\
        --checkpoint runs/reproduce_cpu_compare_small/synthetic/reason_oracle/seed0/round_00/checkpoint
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_CHECK = re.compile(r"says: (.*?) This is (true|false)\.")


def score_rationale(text: str, shown: tuple[str, str]) -> dict:
    """Copy and verdict checks of one per-response rationale for the responses ``shown`` (A, B)."""
    from research.reproduction.harness.synthetic import is_correct

    found = _CHECK.findall(text or "")
    if len(found) != 2:
        return {"format": False, "copied": False, "verdicts_right": False, "verdicts": None}
    copied = all(claim.strip() == resp.strip() for (claim, _), resp in zip(found, shown))
    verdicts = tuple(v for _, v in found)
    right = all((v == "true") == bool(is_correct(resp)) for v, resp in zip(verdicts, shown))
    return {"format": True, "copied": copied, "verdicts_right": right, "verdicts": verdicts}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="The reproduce recipe (its control task and judge settings).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", required=True, help="A trained reason_oracle judge (LoRA adapter or full model).")
    p.add_argument("--n", type=int, default=40, help="Test pairs to judge (both orders each).")
    p.add_argument("--show", type=int, default=4, help="Rationales to print.")
    args = p.parse_args(argv)
    from research.reproduction.harness.arms import load_checkpoint, make_judge
    from research.reproduction.harness.config import ReproductionConfig
    from research.reproduction.harness.runner import make_context, resolve_base
    from trl_gram.training.judge_examples import validate_pairs

    cfg = ReproductionConfig.from_yaml(args.config)
    base = resolve_base(cfg, Path(cfg.output_dir))
    ctx = make_context(cfg, "synthetic", args.seed, base, Path(cfg.output_dir), {})
    judge = make_judge(load_checkpoint(args.checkpoint, base), ctx.tokenizer, cfg, "reason", args.seed)
    pairs, _ = validate_pairs(ctx.test.select(range(min(args.n, len(ctx.test)))))
    judgments = judge.judge([q["question"] for q in pairs], [q["first"] for q in pairs], [q["second"] for q in pairs])
    counts, patterns, shown_n = Counter(), Counter(), 0
    for pair, j in zip(pairs, judgments):
        for run in j.runs:
            shown = (pair["first"], pair["second"]) if run.order == "AB" else (pair["second"], pair["first"])
            s = score_rationale(run.rationale, shown)
            counts["runs"] += 1
            counts["format"] += s["format"]
            counts["copied"] += s["copied"]
            counts["verdicts_right"] += s["verdicts_right"]
            patterns[" / ".join(s["verdicts"]) if s["verdicts"] else "no checks"] += 1
            if shown_n < args.show:
                print(f"[{run.order}] {run.rationale!r}")
                shown_n += 1
    out = {**counts, "verdict_patterns": dict(patterns)}
    print(out)
    return out


if __name__ == "__main__":
    main()
