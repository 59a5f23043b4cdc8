"""The arms: one policy start (SmolLM2-135M-Instruct + a fresh LoRA adapter), one prompt set, one step budget; the
arms differ only in the reward and the RL algorithm.

* ``grpo_group`` / ``grpo_pivot``: TRL's [`~trl.GRPOTrainer`] with the trained judge through
  [`~trl_gram.GenerativeRewardFunction`] (``reference="group"`` / ``"pivot"``).
* ``ppo_greedy``: [`~trl_gram.ppo.GramPPOTrainer`] with the trained judge, each sample judged against the policy's own
  greedy answer (``greedy_reference=True``, the GRAM recipe).
* ``grpo_zero_shot``: GRPO with the untrained judge (``reference="group"``): the negative control.
* ``grpo_oracle``: GRPO with [`~research.rlhf_miniature.task.oracle_reward`]: the upper bound.
* ``grpo_random``: GRPO with [`~research.rlhf_miniature.task.RandomReward`]: no signal at all, what the updates do
  by themselves (the zero-shot judge turned out not to be a null reward once GRPO normalizes it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from trl_gram.ppo import GramPPOConfig, GramPPOTrainer
from trl_gram.reward import GenerativeRewardFunction

from .config import MiniatureConfig
from .evaluation import OracleEvalCallback
from .judge import load_trained_judge, make_judge
from .task import RandomReward, oracle_reward, prompt_dataset


class TimedReward:
    """Wraps a reward function, adds its wall time to ``seconds`` and logs it per call as ``judge_seconds``."""

    def __init__(self, func, name: str):
        self.func, self.__name__, self.seconds, self.calls = func, name, 0.0, 0

    def __call__(self, prompts, completions, log_metric=None, **kwargs):
        start = time.perf_counter()
        out = self.func(prompts=prompts, completions=completions, log_metric=log_metric, **kwargs)
        spent = time.perf_counter() - start
        self.seconds += spent
        self.calls += 1
        if log_metric is not None:
            log_metric("judge_seconds", spent)
        return out


def arm_reward(
    arm: str, cfg: MiniatureConfig, judge_dir: Path, base_path: str, tokenizer, seed: int = 0
) -> TimedReward:
    if arm == "grpo_oracle":
        return TimedReward(oracle_reward, "oracle")
    if arm == "grpo_random":
        return TimedReward(RandomReward(seed), "random")
    model = (
        AutoModelForCausalLM.from_pretrained(base_path)
        if arm == "grpo_zero_shot"
        else load_trained_judge(judge_dir, base_path)
    )
    judge = make_judge(model, tokenizer, cfg)
    reference = {"grpo_group": "group", "grpo_zero_shot": "group", "grpo_pivot": "pivot", "ppo_greedy": None}[arm]
    return TimedReward(GenerativeRewardFunction(judge, reference=reference, output=cfg.reward_output), "gram_reward")


def lora(cfg: MiniatureConfig) -> LoraConfig:
    return LoraConfig(
        r=cfg.policy_lora_r,
        lora_alpha=cfg.policy_lora_alpha,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )


def common_args(cfg: MiniatureConfig, out: Path, seed: int) -> dict:
    return dict(
        output_dir=str(out / "trainer"),
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant",
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=seed,
        bf16=False,
        dataloader_num_workers=0,
        log_completions=False,
    )


def steps_per_rollout(arm: str, cfg: MiniatureConfig) -> int:
    """Optimizer steps per sampling round: 1 for GRPO, `ppo_epochs` for PPO."""
    return cfg.ppo_epochs if arm == "ppo_greedy" else 1


def make_trainer(arm, cfg, out, seed, policy, tokenizer, reward, train_dataset, callback):
    if arm == "ppo_greedy":
        # One rollout samples as many completions as one GRPO step (prompts_per_step * num_generations, one per
        # prompt) and makes `ppo_epochs` optimizer steps on them: the arms see the same number of samples.
        args = GramPPOConfig(
            **{**common_args(cfg, out, seed), "max_steps": cfg.max_steps * cfg.ppo_epochs},
            per_device_train_batch_size=cfg.prompts_per_step * cfg.num_generations,
            num_ppo_epochs=cfg.ppo_epochs,
            num_mini_batches=1,
            greedy_reference=True,
            kl_coef=cfg.ppo_kl_coef,
        )
        return GramPPOTrainer(
            model=policy,
            reward_funcs=reward,
            args=args,
            train_dataset=train_dataset,
            processing_class=tokenizer,
            peft_config=lora(cfg),
            callbacks=[callback],
        )
    args = GRPOConfig(
        **common_args(cfg, out, seed),
        per_device_train_batch_size=cfg.prompts_per_step * cfg.num_generations,
        num_generations=cfg.num_generations,
        beta=cfg.beta,
        gradient_checkpointing=False,
    )
    return GRPOTrainer(
        model=policy,
        reward_funcs=[reward],
        args=args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=lora(cfg),
        callbacks=[callback],
    )


def run_arm(
    arm: str,
    seed: int,
    cfg: MiniatureConfig,
    splits: dict,
    base_path: str,
    judge_dir: Path,
    out: Path,
    base_eval: dict,
) -> dict:
    """Trains one arm × seed and returns its result (also written to ``out/result.json``)."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    policy_path = cfg.policy_name_or_path or base_path
    tokenizer = AutoTokenizer.from_pretrained(policy_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    policy = AutoModelForCausalLM.from_pretrained(policy_path)
    judge_base = cfg.judge_name_or_path or base_path
    reward_tokenizer = AutoTokenizer.from_pretrained(judge_base)
    reward = arm_reward(arm, cfg, judge_dir, judge_base, reward_tokenizer, seed)
    per_rollout = steps_per_rollout(arm, cfg)
    # One yardstick for every arm: the trained judge's win rate of the policy's greedy answers against the base's.
    yardstick = (
        reward.func.judge
        if arm in ("grpo_group", "grpo_pivot", "ppo_greedy")
        else make_judge(load_trained_judge(judge_dir, judge_base), reward_tokenizer, cfg)
    )
    callback = OracleEvalCallback(
        tokenizer,
        splits["eval"],
        cfg.eval_every * per_rollout,
        out / "progress.json",
        max_new_tokens=cfg.eval_max_new_tokens,
        judge=yardstick,
        reference_answers=base_eval["answers"],
    )
    callback.evals.append({**base_eval, "step": 0, "judge_win_vs_base": 0.5})
    trainer = make_trainer(arm, cfg, out, seed, policy, tokenizer, reward, prompt_dataset(splits["rl"]), callback)
    loaded = time.perf_counter()
    trainer.train()
    end = time.perf_counter()
    train_seconds = end - loaded - callback.eval_seconds
    step_seconds = sum(callback.step_seconds)
    result = {
        "arm": arm,
        "seed": seed,
        "steps": trainer.state.global_step,
        "steps_per_rollout": per_rollout,
        "evals": callback.evals,
        "logs": callback.logs,
        "seconds": {
            "total": end - start,
            "load": loaded - start,
            "train": train_seconds,
            "oracle_eval": callback.eval_seconds,
            "judge": reward.seconds,
            "judge_share_of_step": reward.seconds / step_seconds if step_seconds else None,
        },
    }
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "DONE").write_text("done\n")
    return result
