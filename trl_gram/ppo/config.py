"""`GramPPOConfig`: the training arguments of [`GramPPOTrainer`]."""

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import TrainingArguments

KL_ESTIMATORS = ("k1", "k2", "k3")
REWARD_NORMALIZATIONS = ("none", "batch", "running")


def _has_accelerator() -> bool:
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and hasattr(accelerator, "is_available"):
        return bool(accelerator.is_available())
    return torch.cuda.is_available()


@dataclass
class GramPPOConfig(TrainingArguments):
    r"""
    Configuration class for [`GramPPOTrainer`], a PPO trainer that takes its rewards through the same contract as
    TRL's `GRPOTrainer.reward_funcs` (so [`GenerativeRewardFunction`] plugs in unchanged).

    Only the PPO-specific parameters are listed here; see [`~transformers.TrainingArguments`] for the rest. Defaults
    that differ from `TrainingArguments`: `learning_rate=3e-6`, `logging_steps=10`, `remove_unused_columns=False`,
    `dataloader_pin_memory=False`, `bf16=None` (auto: on when the accelerator supports it, off on CPU).

    Batch sizes. On each process, one *rollout* samples `per_device_train_batch_size * gradient_accumulation_steps *
    num_mini_batches` prompts (see [`GramPPOConfig.rollout_batch_size`]). Its samples are then reused for
    `num_ppo_epochs` epochs, each split into `num_mini_batches` minibatches; every minibatch is one optimizer step made
    of `gradient_accumulation_steps` micro-batches of `per_device_train_batch_size` samples. So one rollout is
    `num_ppo_epochs * num_mini_batches` optimizer steps, and `max_steps` counts optimizer steps, as everywhere in
    `Trainer`.

    Parameters:
        > Models

        model_init_kwargs (`dict[str, Any]` or `str`, *optional*):
            Keyword arguments for `from_pretrained` when the policy (and value/reference models) are given as paths.
        disable_dropout (`bool`, *optional*, defaults to `True`):
            Set every dropout probability of the policy, value and reference models to 0, so that the log-probabilities
            computed at rollout time and at update time agree.

        > Generation (rollouts)

        max_prompt_length (`int` or `None`, *optional*, defaults to `512`):
            Prompts longer than this (in tokens) are truncated from the left. `None` keeps them whole.
        max_completion_length (`int`, *optional*, defaults to `128`):
            Maximum number of generated tokens per completion.
        temperature (`float`, *optional*, defaults to `0.7`):
            Sampling temperature. The policy's log-probabilities are computed at the same temperature.
        top_p (`float`, *optional*, defaults to `1.0`):
            Nucleus sampling threshold.
        top_k (`int`, *optional*, defaults to `0`):
            Top-k sampling; `0` disables it.
        min_p (`float` or `None`, *optional*):
            Minimum token probability, relative to the most likely token.
        repetition_penalty (`float`, *optional*, defaults to `1.0`):
            Repetition penalty passed to `generate`.
        generation_kwargs (`dict[str, Any]` or `str`, *optional*):
            Extra keyword arguments for [`~transformers.GenerationConfig`] (override the fields above).
        rollout_forward_batch_size (`int` or `None`, *optional*):
            Micro-batch size for generation and for the no-gradient forward passes of a rollout. `None` processes a
            whole rollout at once.
        ds3_gather_for_generation (`bool`, *optional*, defaults to `True`):
            Under DeepSpeed ZeRO-3, gather the policy weights for generation (faster; needs memory for the full
            model).
        chat_template_kwargs (`dict[str, Any]` or `str`, *optional*):
            Extra keyword arguments for `apply_chat_template` when prompts are conversations.

        > The GRAM recipe

        greedy_reference (`bool`, *optional*, defaults to `False`):
            Also generate one greedy ("reference") response per prompt in each rollout, with the same policy, and pass
            them to every reward function as `references=` (one per completion). With
            [`GenerativeRewardFunction`] this scores each sampled response by its debiased win probability against the
            policy's own greedy output (a ReMax-style baseline, as in GRAM).

        > Rewards

        reward_weights (`list[float]` or `None`, *optional*):
            Weight of each reward function; `None` weighs them all 1. A function returning `None` for a sample is left
            out of that sample's weighted sum; a sample that no function scored is left out of the update.
        reward_clip (`float` or `None`, *optional*):
            Clip the (normalized) score of each sample to `[-reward_clip, reward_clip]`.
        reward_normalization (`str`, *optional*, defaults to `"none"`):
            `"none"`, `"batch"` (standardize the scores of each rollout over all processes) or `"running"` (divide by
            a running standard deviation over all rollouts so far, kept in checkpoints).
        missing_eos_penalty (`float` or `None`, *optional*):
            Subtracted from the score of a completion that did not finish with an EOS token within
            `max_completion_length`.

        > PPO

        num_ppo_epochs (`int`, *optional*, defaults to `4`):
            Number of passes over each rollout.
        num_mini_batches (`int`, *optional*, defaults to `1`):
            Number of minibatches (optimizer steps) per PPO epoch.
        kl_coef (`float`, *optional*, defaults to `0.05`):
            Coefficient of the per-token KL penalty against the reference policy, added to the rewards.
        kl_estimator (`str`, *optional*, defaults to `"k1"`):
            Per-token KL estimator: `"k1"` (log-ratio), `"k2"` (half squared log-ratio) or `"k3"` (non-negative,
            unbiased).
        cliprange (`float`, *optional*, defaults to `0.2`):
            Clip range of the policy ratio.
        cliprange_value (`float` or `None`, *optional*, defaults to `0.2`):
            Clip range of the value update around the rollout's values; `None` disables value clipping.
        vf_coef (`float`, *optional*, defaults to `0.1`):
            Weight of the value loss.
        entropy_coef (`float`, *optional*, defaults to `0.0`):
            Weight of an entropy bonus (subtracted from the loss).
        gamma (`float`, *optional*, defaults to `1.0`):
            Discount factor.
        lam (`float`, *optional*, defaults to `0.95`):
            GAE lambda.
        whiten_advantages (`bool`, *optional*, defaults to `True`):
            Standardize the advantages of each rollout (statistics over all processes).

        > Logging

        log_completions (`bool`, *optional*, defaults to `False`):
            Print a table of sampled prompts, completions, references, rewards and the columns that reward functions
            add with `log_extra` (e.g. the judge's rationales) at each logging step, send it to wandb/trackio when they
            are in `report_to`, and save it as parquet under `output_dir/completions/`.
        num_completions_to_print (`int` or `None`, *optional*, defaults to `4`):
            Number of rows of that table printed to the console (`None`: all).
    """

    _VALID_DICT_FIELDS = TrainingArguments._VALID_DICT_FIELDS + [
        "model_init_kwargs",
        "generation_kwargs",
        "chat_template_kwargs",
    ]

    # Overridden TrainingArguments defaults
    learning_rate: float = field(default=3e-6, metadata={"help": "The initial learning rate for AdamW."})
    logging_steps: float = field(
        default=10,
        metadata={"help": "Log every X optimizer steps (an integer, or a float in [0, 1): ratio of total steps)."},
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Keep False: reward functions receive every dataset column besides `prompt`."},
    )
    dataloader_pin_memory: bool = field(
        default=False,
        metadata={"help": "Pin dataloader memory. Off: the dataloader only yields prompts (Python objects)."},
    )
    bf16: bool | None = field(
        default=None,
        metadata={
            "help": "Use bf16 mixed precision. None (default): on when the accelerator supports bf16, off on CPU."
        },
    )

    # Models
    model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Keyword arguments for `from_pretrained` when models are given as paths."},
    )
    disable_dropout: bool = field(
        default=True,
        metadata={"help": "Set all dropout probabilities of the policy, value and reference models to 0."},
    )

    # Generation
    max_prompt_length: int | None = field(
        default=512, metadata={"help": "Truncate prompts to this many tokens (from the left); None keeps them whole."}
    )
    max_completion_length: int = field(default=128, metadata={"help": "Maximum number of generated tokens."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (also used for log-probs)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold."})
    top_k: int = field(default=0, metadata={"help": "Top-k sampling; 0 disables it."})
    min_p: float | None = field(default=None, metadata={"help": "Minimum relative token probability."})
    repetition_penalty: float = field(default=1.0, metadata={"help": "Repetition penalty for `generate`."})
    generation_kwargs: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Extra GenerationConfig fields (override the ones above)."}
    )
    rollout_forward_batch_size: int | None = field(
        default=None,
        metadata={"help": "Micro-batch size for generation and rollout forward passes; None: the whole rollout."},
    )
    ds3_gather_for_generation: bool = field(
        default=True, metadata={"help": "Under DeepSpeed ZeRO-3, gather the policy weights for generation."}
    )
    chat_template_kwargs: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Extra keyword arguments for `apply_chat_template`."}
    )

    # GRAM recipe
    greedy_reference: bool = field(
        default=False,
        metadata={
            "help": "Generate a greedy response per prompt each rollout and pass it to the rewards as `references` "
            "(GRAM/ReMax-style baseline for GenerativeRewardFunction)."
        },
    )

    # Rewards
    reward_weights: list[float] | None = field(
        default=None, metadata={"help": "Weight of each reward function (default: all 1)."}
    )
    reward_clip: float | None = field(
        default=None, metadata={"help": "Clip each (normalized) score to [-reward_clip, reward_clip]."}
    )
    reward_normalization: str = field(
        default="none",
        metadata={
            "help": "'none', 'batch' (standardize each rollout) or 'running' (divide by a running std).",
            "choices": list(REWARD_NORMALIZATIONS),
        },
    )
    missing_eos_penalty: float | None = field(
        default=None, metadata={"help": "Subtracted from the score of completions without an EOS token."}
    )

    # PPO
    num_ppo_epochs: int = field(default=4, metadata={"help": "Passes over each rollout."})
    num_mini_batches: int = field(default=1, metadata={"help": "Minibatches (optimizer steps) per PPO epoch."})
    kl_coef: float = field(default=0.05, metadata={"help": "Coefficient of the per-token KL penalty."})
    kl_estimator: str = field(
        default="k1",
        metadata={"help": "Per-token KL estimator: 'k1', 'k2' or 'k3'.", "choices": list(KL_ESTIMATORS)},
    )
    cliprange: float = field(default=0.2, metadata={"help": "Clip range of the policy ratio."})
    cliprange_value: float | None = field(
        default=0.2, metadata={"help": "Clip range of the value update; None disables value clipping."}
    )
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss."})
    entropy_coef: float = field(default=0.0, metadata={"help": "Weight of the entropy bonus."})
    gamma: float = field(default=1.0, metadata={"help": "Discount factor."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda."})
    whiten_advantages: bool = field(default=True, metadata={"help": "Standardize the advantages of each rollout."})

    # Logging
    log_completions: bool = field(
        default=False, metadata={"help": "Print/log a table of sampled completions, references and rewards."}
    )
    num_completions_to_print: int | None = field(
        default=4, metadata={"help": "Rows of the completions table printed to the console (None: all)."}
    )

    def __post_init__(self):
        if not self.use_cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _has_accelerator():
            # Several processes and no accelerator (e.g. `accelerate launch --multi_gpu` on a CPU machine): run them
            # on CPU over gloo instead of as independent single-process runs.
            self.use_cpu = True
        if self.bf16 is None:
            self.bf16 = bool(
                not self.fp16 and not self.use_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
            )
        super().__post_init__()
        positive_ints = ("max_completion_length", "num_ppo_epochs", "num_mini_batches")
        for name in positive_ints:
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}.")
        for name in ("max_prompt_length", "rollout_forward_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"`{name}` must be >= 1 or None, got {value}.")
        if self.temperature <= 0:
            raise ValueError(f"`temperature` must be > 0, got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"`top_p` must be in (0, 1], got {self.top_p}.")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"`kl_estimator` must be one of {KL_ESTIMATORS}, got {self.kl_estimator!r}.")
        if self.reward_normalization not in REWARD_NORMALIZATIONS:
            raise ValueError(
                f"`reward_normalization` must be one of {REWARD_NORMALIZATIONS}, got {self.reward_normalization!r}."
            )
        if self.cliprange <= 0:
            raise ValueError(f"`cliprange` must be > 0, got {self.cliprange}.")
        if self.cliprange_value is not None and self.cliprange_value <= 0:
            raise ValueError(f"`cliprange_value` must be > 0 or None, got {self.cliprange_value}.")
        if self.reward_clip is not None and self.reward_clip <= 0:
            raise ValueError(f"`reward_clip` must be > 0 or None, got {self.reward_clip}.")
        if not 0 <= self.gamma <= 1 or not 0 <= self.lam <= 1:
            raise ValueError(f"`gamma` and `lam` must be in [0, 1], got gamma={self.gamma}, lam={self.lam}.")
        if self.kl_coef < 0 or self.vf_coef < 0:
            raise ValueError(f"`kl_coef` and `vf_coef` must be >= 0, got {self.kl_coef} and {self.vf_coef}.")
        if self.auto_find_batch_size:
            raise ValueError(
                "`auto_find_batch_size` is not supported by GramPPOTrainer: set the batch sizes explicitly."
            )

    @property
    def rollout_batch_size(self) -> int:
        """Number of prompts sampled per process in one rollout."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps * self.num_mini_batches

    @property
    def steps_per_rollout(self) -> int:
        """Optimizer steps made on each rollout."""
        return self.num_ppo_epochs * self.num_mini_batches
