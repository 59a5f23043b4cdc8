"""Does the judge model know the synthetic control's rule? Greedy answers to the control task's questions.

The synthetic control (``research.reproduction.harness.synthetic``) asks a judge to prefer ``"37 + 48 = 85."`` over a near miss
(rule ``arithmetic``), or ``"48 is larger than 37."`` over the reverse (rule ``compare``). A judge can only learn such
a rule from a few hundred labels if the model can already do the sum or the comparison. This script asks the model
each question directly (chat template, greedy, "Answer with the number only.") and counts the right answers: the last
number of the answer must be the true result (arithmetic), or its first number the larger one (compare).

    python -m research.reproduction.analysis.arithmetic_knowledge --digits 1,2 --n 100
    python -m research.reproduction.analysis.arithmetic_knowledge --rule compare --digits 2 --n 100

Without ``--model`` the embedded SmolLM2-135M-Instruct is used (offline).
"""

from __future__ import annotations

import argparse
import json
import re

import torch


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="Model path/id (default: embedded SmolLM2-135M-Instruct).")
    p.add_argument("--rule", default="arithmetic", choices=["arithmetic", "compare"], help="Control task rule.")
    p.add_argument("--digits", default="1,2", help="Comma-separated operand sizes (digits per operand).")
    p.add_argument("--n", type=int, default=100, help="Questions per operand size.")
    p.add_argument("--seed", type=int, default=7, help="Seed of the questions.")
    p.add_argument("--max-new-tokens", type=int, default=40, help="Answer length cap.")
    p.add_argument("--batch-size", type=int, default=25)
    p.add_argument("--threads", type=int, default=1, help="torch threads.")
    return p.parse_args(argv)


def answer_number(text: str, rule: str) -> str | None:
    """The number an answer commits to: its last (arithmetic: "51 - 29 = 22") or first (compare: "48 is larger")."""
    nums = re.findall(r"-?\d+", text)
    if not nums:
        return None
    return nums[-1] if rule == "arithmetic" else nums[0]


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from research.reproduction.harness.synthetic import make_synthetic_pairs
    from trl_gram.default_model import default_model_path

    path = args.model or default_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    results = {}
    for digits in [int(d) for d in args.digits.split(",")]:
        ds = make_synthetic_pairs(args.n, seed=args.seed, digits=digits, rule=args.rule)
        if args.rule == "arithmetic":
            truth = [c.split("=")[1].strip(" .") for c in ds["chosen"]]
        else:
            truth = [c.split()[0] for c in ds["chosen"]]
        prompts = [
            tok.apply_chat_template(
                [{"role": "user", "content": f"{q} Answer with the number only."}],
                tokenize=False,
                add_generation_prompt=True,
            )
            for q in ds["prompt"]
        ]
        answers = []
        for i in range(0, len(prompts), args.batch_size):
            enc = tok(prompts[i : i + args.batch_size], return_tensors="pt", padding=True)
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=args.max_new_tokens, do_sample=False)
            answers += tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        right = sum(answer_number(a, args.rule) == t for a, t in zip(answers, truth))
        results[digits] = {"right": right, "n": len(truth), "example": [ds["prompt"][0], answers[0].strip()]}
        print(
            f"{args.rule}, {digits}-digit numbers: {right}/{len(truth)} right ({100 * right / len(truth):.0f} %); "
            f"e.g. {ds['prompt'][0]!r} -> {answers[0].strip()!r}",
            flush=True,
        )
    print(json.dumps({"model": path, "rule": args.rule, "max_new_tokens": args.max_new_tokens, "results": results}))
    return results


if __name__ == "__main__":
    main()
