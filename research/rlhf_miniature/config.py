"""``MiniatureConfig``: every knob of the RLHF-in-miniature experiment, read from a recipe YAML file."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from research.reproduction.harness.config import recipe_from_yaml

ARMS = (
    "grpo_group",  # GRPO, trained judge, each completion against its group (reference="group")
    "grpo_pivot",  # GRPO, trained judge, each completion against the group's first one (reference="pivot")
    "ppo_greedy",  # GramPPOTrainer, trained judge, each sample against the policy's greedy answer (GRAM recipe)
    "grpo_zero_shot",  # GRPO, the untrained judge (negative control)
    "grpo_oracle",  # GRPO, the oracle as a programmatic reward (upper bound)
    "grpo_random",  # GRPO, a seeded uniform random reward (no signal at all: what the update alone does)
)


@dataclass
class MiniatureConfig:
    """The recipe of one run of the experiment.

    Args:
        output_dir (`str`): Run folder (per-arm results, judge adapter); a finished arm is skipped on rerun.
        policy_name_or_path (`str` or `None`): The policy's start; `None` is the embedded SmolLM2-135M-Instruct.
        judge_name_or_path (`str` or `None`): The judge's base model; `None` is the embedded SmolLM2-135M-Instruct.
        arms (`list[str]`): Arms to run, in order (a subset of [`ARMS`]).
        seeds (`list[int]`): Policy seeds; every arm runs seed `seeds[0]` before any arm runs the next seed.
        split_seed (`int`): Seed of the number pairs (shared by every arm and seed).
        digits (`int`): Digits per number.
        sizes (`dict`): Number of pairs in `judge_train`, `judge_test`, `rl` (training prompts) and `eval` (held-out
            prompts the oracle scores the policy on).
        judge_*: [`~trl_gram.training.GramRewardTrainer`] settings (direct mode, LoRA, compact template);
            `judge_eval_pairs` of the `judge_test` pairs measure the judges.
        max_steps (`int`): Optimizer steps of every arm.
        prompts_per_step (`int`): Prompts per GRPO step (each sampled `num_generations` times) and per PPO rollout.
        eval_every (`int`): Steps between oracle evaluations of the policy.
    """

    output_dir: str = "runs/rlhf_miniature"
    policy_name_or_path: str | None = None
    judge_name_or_path: str | None = None
    arms: list[str] = field(default_factory=lambda: list(ARMS))
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    split_seed: int = 17
    digits: int = 2
    sizes: dict = field(default_factory=lambda: {"judge_train": 128, "judge_test": 200, "rl": 512, "eval": 64})
    # judge
    judge_learning_rate: float = 5e-4
    judge_epochs: float = 4.0
    judge_batch_size: int = 8
    judge_lora_r: int = 16
    judge_lora_alpha: int = 32
    judge_max_length: int = 512
    judge_eval_pairs: int = 100
    # policy
    policy_lora_r: int = 16
    policy_lora_alpha: int = 32
    learning_rate: float = 1e-4
    max_steps: int = 30
    prompts_per_step: int = 4
    num_generations: int = 4
    max_completion_length: int = 16
    temperature: float = 1.0
    beta: float = 0.04
    ppo_epochs: int = 2
    ppo_kl_coef: float = 0.04
    eval_every: int = 10
    eval_max_new_tokens: int = 16
    reward_output: str = "centered"

    def __post_init__(self):
        bad = [a for a in self.arms if a not in ARMS]
        if bad:
            raise ValueError(f"Unknown arm(s) {bad}; known: {list(ARMS)}.")
        if not self.seeds:
            raise ValueError("`seeds` must name at least one seed.")
        missing = [k for k in ("judge_train", "judge_test", "rl", "eval") if k not in self.sizes]
        if missing:
            raise ValueError(f"`sizes` lacks {missing}.")
        if self.num_generations < 2:
            raise ValueError(f"`num_generations` must be >= 2 (GRPO compares a group), got {self.num_generations}.")
        if self.max_steps < 1 or self.prompts_per_step < 1:
            raise ValueError("`max_steps` and `prompts_per_step` must be >= 1.")

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> MiniatureConfig:
        return recipe_from_yaml(cls, path, overrides)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
