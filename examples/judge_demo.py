"""Judge a few real preference pairs with a GRAM-style judge and print rationale + probability.

    python examples/judge_demo.py                       # embedded default SmolLM2-135M-Instruct, offline
    python examples/judge_demo.py --model_name_or_path wangclnlp/GRAM-RR-LLaMA-3.2-3B-RewardModel --reason_prefix ""

The default model is tiny and untrained as a judge (zero-shot it mostly says "A", whatever the order): the demo
shows the mechanics — rationale, label read at the answer slot, probability, position debiasing — not a good
judge. Train one with `trl-gram train`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from importlib import resources

from trl import TrlParser

from trl_gram import GramJudge


@dataclass
class DemoArguments:
    model_name_or_path: str | None = field(default=None, metadata={"help": "Judge model; default: embedded SmolLM2."})
    pairs_file: str | None = field(
        default=None,
        metadata={"help": "JSON lines with question/chosen/rejected; default: the packaged demo pairs."},
    )
    max_new_tokens: int = field(default=96, metadata={"help": "Rationale budget in reason mode."})
    reason_prefix: str = field(
        default="<think>\nFeedback:",
        metadata={"help": "Prefill of the judge's reply (steers a zero-shot model into the format)."},
    )
    load_in_4bit: bool = field(default=False, metadata={"help": "Quantize the judge to NF4 (bitsandbytes)."})


def load_pairs(path: str | None) -> list[dict]:
    if path is None:
        text = resources.files("trl_gram").joinpath("data").joinpath("demo_pairs.jsonl").read_text(encoding="utf-8")
    else:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def main(args: DemoArguments):
    pairs = load_pairs(args.pairs_file)
    start = time.perf_counter()
    judge = GramJudge.from_pretrained(
        args.model_name_or_path,
        load_in_4bit=args.load_in_4bit,
        max_new_tokens=args.max_new_tokens,
        reason_prefix=args.reason_prefix,
    )
    print(f"judge loaded in {time.perf_counter() - start:.1f}s")
    questions = [p["question"] for p in pairs]
    chosen = [p["chosen"] for p in pairs]
    rejected = [p["rejected"] for p in pairs]

    start = time.perf_counter()
    reason = judge.judge(questions, chosen, rejected, mode="reason", show_progress=True)
    t_reason = time.perf_counter() - start
    start = time.perf_counter()
    direct = judge.judge(questions, chosen, rejected, mode="direct", show_progress=True)
    t_direct = time.perf_counter() - start

    for k, (pair, r, d) in enumerate(zip(pairs, reason, direct)):
        print(f"\n=== pair {k + 1}: {pair['question']}")
        print(f"  A (human-preferred): {pair['chosen'][:100]}")
        print(f"  B (rejected):        {pair['rejected'][:100]}")
        for run in r.runs:
            shown = "A,B" if run.order == "AB" else "B,A"
            print(
                f"  [reason, shown {shown}] label={run.label} failure={run.failure} "
                f"P(first shown better)={run.prob_first:.3f}"
            )
            print("    rationale: " + (run.rationale[:240].replace("\n", " ") or "(empty)"))
        print(f"  reason: P(A better) = {r.prob:.3f}  (debiased over both orders), swap agreement = {r.agreement}")
        print(f"  direct: P(A better) = {d.prob:.3f}  (GRAM v1 template, one forward pass per order)")
    acc_r = sum(j.prob > 0.5 for j in reason) / len(pairs)
    acc_d = sum(j.prob > 0.5 for j in direct) / len(pairs)
    print(
        f"\n{len(pairs)} pairs: reason {len(pairs) / t_reason:.2f} pairs/s (accuracy {acc_r:.2f}), "
        f"direct {len(pairs) / t_direct:.2f} pairs/s (accuracy {acc_d:.2f}), both orders each"
    )


if __name__ == "__main__":
    (demo_args,) = TrlParser((DemoArguments,)).parse_args_and_config()
    main(demo_args)
