# Copyright 2025 The trl-gram developers. Apache-2.0.
"""Best-of-n with a GRAM judge: sample n responses per prompt from a policy, let the pairwise judge pick the best
(`trl_gram.ranking`: a knockout tournament, the GRAM authors' linear search, or all pairs).

With `--judge_mode direct` (the judge default is `reason`) it runs offline on CPU: the embedded SmolLM2-135M-Instruct as policy and judge (direct mode),
2 built-in prompts, 4 samples each, knockout:

    accelerate launch examples/best_of_n.py --judge_mode direct

    accelerate launch examples/best_of_n.py --model_name_or_path <policy> --judge_model <GRAM-R2> \
        --judge_mode reason --dataset_name prompts.jsonl --n 8 --method linear --output_file best.jsonl

    # sampling and judging on vLLM (one engine when policy and judge are the same model)
    python examples/best_of_n.py --backend vllm --judge_backend vllm
"""

import json
import os
import time
from dataclasses import dataclass, field

import torch
from accelerate import PartialState
from trl import ModelConfig, TrlParser
from trl.data_utils import is_conversational

from trl_gram.judge import load_judge
from trl_gram.pairing import COMPARISON_FIELDS, ComparisonConfig
from trl_gram.ranking import knockout, linear_search, rank_all
from trl_gram.script_utils import JudgeArguments, PromptArguments, judge_spec, load_policy, load_prompt_dataset

METHODS = {"knockout": knockout, "linear": linear_search, "all": rank_all}


@dataclass
class BestOfNArguments:
    n: int = field(default=4, metadata={"help": "Samples per prompt."})
    method: str = field(
        default="knockout",
        metadata={
            "help": "'knockout' (n-1 comparisons in log2 n rounds), 'linear' or 'all' (every pair, or the pairs of "
            "--schedule; with --aggregate, --second_order...).",
            "choices": list(METHODS),
        },
    )
    num_prompts: int = field(default=2, metadata={"help": "How many prompts of the dataset to answer."})
    max_new_tokens: int = field(default=48, metadata={"help": "Length cap of each sample."})
    temperature: float = field(default=0.9, metadata={"help": "Sampling temperature."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    output_file: str | None = field(default=None, metadata={"help": "Write one JSON line per prompt here."})
    backend: str = field(
        default="transformers",
        metadata={
            "help": "Engine that samples the candidates ('vllm': vllm.LLM; pair it with --judge_backend vllm).",
            "choices": ["transformers", "vllm"],
        },
    )


@torch.no_grad()
def sample(model, tokenizer, prompt, n, max_new_tokens, temperature):
    if is_conversational({"prompt": prompt}):
        text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    else:
        inputs = tokenizer(prompt, return_tensors="pt")
    inputs = inputs.to(model.device)
    out = model.generate(
        **inputs,
        do_sample=True,
        temperature=temperature,
        max_new_tokens=max_new_tokens,
        num_return_sequences=n,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    return tokenizer.batch_decode(out[:, inputs["input_ids"].size(1) :], skip_special_tokens=True)


def prompt_ids(tokenizer, prompt) -> list[int]:
    if is_conversational({"prompt": prompt}):
        return tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=False)
    return tokenizer(prompt)["input_ids"]


def vllm_sampler(judge, policy_path, judge_path, args):
    """Sample on vLLM: the judge's own engine when the policy is the judge's model, else a second engine."""
    from trl_gram.judge.backends.vllm import VLLMBackend

    same = judge.backend.name == "vllm" and os.path.abspath(policy_path) == os.path.abspath(judge_path)
    engine = judge.backend if same else VLLMBackend.load(policy_path, seed=args.seed)

    def sample_vllm(prompt):
        ids = prompt_ids(engine.tokenizer, prompt)
        out = engine.sample(
            [ids], args.n, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=1.0, seed=args.seed
        )
        return [text for text, _ in out[0]]

    return engine.tokenizer, sample_vllm


def main(args, prompt_args, judge_args, comparison_args, model_args):
    if args.n < 1:
        raise ValueError(f"`n` must be >= 1, got {args.n}.")
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    judge = load_judge(judge_spec(judge_args), show_progress=False)
    if args.backend == "vllm":
        from trl_gram.default_model import default_model_path

        policy_path = model_args.model_name_or_path or default_model_path()
        judge_path = judge_args.judge_model or default_model_path()
        tokenizer, draw = vllm_sampler(judge, policy_path, judge_path, args)
    else:
        policy, tokenizer, policy_path = load_policy(model_args)
        if not getattr(policy, "is_loaded_in_4bit", False):
            policy.to(PartialState().device)
        policy.eval()

        def draw(prompt):
            return sample(policy, tokenizer, prompt, args.n, args.max_new_tokens, args.temperature)

    prompts = load_prompt_dataset(prompt_args, tokenizer)["prompt"][: args.num_prompts]
    results = []
    for prompt in prompts:
        candidates = draw(prompt)
        comparison = {f: getattr(comparison_args, f) for f in COMPARISON_FIELDS} if args.method == "all" else {}
        ranked = METHODS[args.method](judge, prompt, candidates, **comparison)
        results.append({"prompt": prompt, "candidates": candidates, "winner": ranked.winner, "scores": ranked.scores})
        question = prompt[-1]["content"] if isinstance(prompt, list) else prompt
        print("=" * 80)
        print(f"Prompt: {question}")
        for i, (cand, score) in enumerate(zip(candidates, ranked.scores)):
            mark = "*" if i == ranked.winner else " "
            print(f" {mark} [{i}] win prob {score:.3f}: {cand.strip()[:200]!r}")
        print(f"Best of {args.n} ({args.method}, {len(ranked.comparisons)} comparisons): candidate {ranked.winner}")
    print("=" * 80)
    print(f"policy: {policy_path}; {len(results)} prompts in {time.perf_counter() - start:.1f} s")
    if args.output_file:
        with open(args.output_file, "w") as f:
            for row in results:
                f.write(json.dumps(row) + "\n")
        print(f"results written to {args.output_file}")
    return results


if __name__ == "__main__":
    parser = TrlParser((BestOfNArguments, PromptArguments, JudgeArguments, ComparisonConfig, ModelConfig))
    main(*parser.parse_args_and_config())
