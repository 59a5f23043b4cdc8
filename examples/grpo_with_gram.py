# Copyright 2025 The trl-gram developers. Apache-2.0.
"""GRPO (TRL's `GRPOTrainer`) with a GRAM generative reward: one import, one line.

    reward = GenerativeRewardFunction(judge, reference="group")   # then GRPOTrainer(..., reward_funcs=[reward])

`reference="group"`: every completion is judged against the others sampled for the same prompt and scores its mean
debiased win probability; `reference="pivot"` compares each with the group's first completion (cheaper);
`--reference_column COL` compares each with a dataset column (e.g. a reference answer).

With `--judge_mode direct` (the judge default is `reason`) it runs a short offline GRPO on CPU: the embedded SmolLM2-135M-Instruct as policy and judge (direct
mode), 8 built-in prompts, 4 steps of 4 completions for one prompt, then prints the reward per step and the win rate
against the starting policy at start and end ([`GramWinRateCallback`], logged as `eval_win_rate`, shown as
`eval/win_rate` by `report_to`). The group reward averages 0.5 in every group by construction: it trains, the win
rate tells progress.

    accelerate launch examples/grpo_with_gram.py --judge_mode direct

Fewer judge calls per group (``docs/reward.md``): `--schedule sparse` (each completion meets `--schedule_degree` others),
`--aggregate bradley_terry`, `--second_order adaptive`, `--max_judge_calls_per_group N`, `--length_control`
(`trl_gram.pairing.ComparisonConfig`).

Other models, data, LoRA, 4-bit, lengths: the flags of `GRPOConfig`, TRL's `ModelConfig`, and the prompt/judge
arguments of `trl_gram.script_utils`.
"""

import time
from dataclasses import dataclass, field

import torch
from trl import GRPOConfig, GRPOTrainer, ModelConfig, TrlParser
from trl.trainer.utils import get_peft_config

from trl_gram.callbacks import GramWinRateCallback
from trl_gram.judge import load_judge
from trl_gram.pairing import COMPARISON_FIELDS, ComparisonConfig
from trl_gram.reward import GenerativeRewardFunction
from trl_gram.script_utils import (
    JudgeArguments,
    PromptArguments,
    end_distributed,
    judge_spec,
    load_policy,
    load_prompt_dataset,
    reward_curve,
)

DEMO_DEFAULTS = dict(
    output_dir="outputs/grpo_with_gram",
    max_steps=4,
    per_device_train_batch_size=4,
    num_generations=4,
    max_completion_length=32,
    learning_rate=1e-6,
    logging_steps=1,
    temperature=0.9,
    log_completions=True,
    num_completions_to_print=2,
    gradient_checkpointing=False,
    bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
    save_strategy="no",
    report_to="none",
    seed=0,
)


@dataclass
class GRPOScriptArguments:
    reference: str = field(
        default="group",
        metadata={
            "help": "What each completion is judged against: its 'group' or the group's 'pivot'.",
            "choices": ["group", "pivot"],
        },
    )
    reference_column: str | None = field(
        default=None, metadata={"help": "Judge each completion against this dataset column instead of its group."}
    )
    win_rate_steps: int | None = field(
        default=None, metadata={"help": "Win rate vs the starting policy every N steps (default: at start and end)."}
    )


def main(script_args, prompt_args, judge_args, comparison_args, training_args, model_args):
    start = time.perf_counter()
    device = training_args.device  # sets up the (distributed) state before anything else uses it
    policy, tokenizer, policy_path = load_policy(model_args, device)
    judge = load_judge(judge_spec(judge_args, device), show_progress=False)
    if script_args.reference_column is not None:
        reward = GenerativeRewardFunction(
            judge, reference_column=script_args.reference_column, output=judge_args.reward_output
        )
    else:
        comparison = {f: getattr(comparison_args, f) for f in COMPARISON_FIELDS}
        reward = GenerativeRewardFunction(
            judge, reference=script_args.reference, output=judge_args.reward_output, **comparison
        )
    trainer = GRPOTrainer(
        model=policy,
        reward_funcs=[reward],
        args=training_args,
        train_dataset=load_prompt_dataset(prompt_args, tokenizer),
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    win_rate = GramWinRateCallback(trainer, judge=judge, eval_steps=script_args.win_rate_steps)
    trainer.add_callback(win_rate)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    if trainer.accelerator.is_main_process:
        history = trainer.state.log_history
        rewards = reward_curve(history)
        failures = reward_curve(history, f"{reward.__name__}/parse_failure_rate")
        print("=" * 80)
        print("GRPO with a GRAM generative reward: summary")
        print(f"  policy: {policy_path}; judge: {judge_args.judge_model or 'embedded SmolLM2'}")
        ref = script_args.reference_column and f"column {script_args.reference_column!r}" or script_args.reference
        print(f"  reference: {ref}; {trainer.state.global_step} steps in {time.perf_counter() - start:.1f} s")
        calls = reward_curve(history, f"{reward.__name__}/judge_calls")
        if calls:
            saved = reward_curve(history, f"{reward.__name__}/judge_calls_saved")
            print(
                f"  comparisons: schedule={comparison_args.schedule}, aggregate={comparison_args.aggregate}, "
                f"second_order={comparison_args.second_order}; {sum(calls) / len(calls):.1f} judge passes per step, "
                f"{100 * sum(saved) / len(saved):.0f}% fewer than all pairs in both orders"
            )
        print("  reward per step: " + " ".join(f"{r:+.4f}" for r in rewards))
        if failures:
            print(f"  judge parse-failure rate: {sum(failures) / len(failures):.3f}")
        print("\n".join("  " + line for line in win_rate.describe()))
        print(f"  policy saved to: {training_args.output_dir}")
        print("=" * 80, flush=True)
    return trainer


if __name__ == "__main__":
    parser = TrlParser(
        (GRPOScriptArguments, PromptArguments, JudgeArguments, ComparisonConfig, GRPOConfig, ModelConfig)
    )
    parser.set_defaults_with_config(**DEMO_DEFAULTS)
    end_distributed(main(*parser.parse_args_and_config()))
