"""`GramPPOTrainer`: PPO for causal LMs with rewards in TRL's reward-function contract.

Built on `transformers.Trainer` the way TRL's `GRPOTrainer` is: the dataloader yields one rollout's prompts (repeated
for every micro-step that reuses the rollout), `_prepare_inputs` generates and scores a rollout when one is due and
returns its next shuffled micro-batch, and `compute_loss` is the clipped PPO objective. Gradient accumulation,
DDP/DeepSpeed, mixed precision, `report_to` logging, callbacks, checkpointing and `resume_from_checkpoint` are
`Trainer`'s own.
"""

import copy
import inspect
import json
import os
from collections.abc import Callable

import torch
from datasets import Dataset, IterableDataset
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
)
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging
from trl.models.utils import prepare_deepspeed, unwrap_model_for_generation
from trl.trainer.utils import (
    RepeatSampler,
    disable_dropout_in_model,
    entropy_from_logits,
    identity,
    selective_log_softmax,
)

from . import core
from .config import GramPPOConfig
from .modeling import PolicyAndValueModel, base_causal_lm, is_peft_model, position_ids_from_mask
from .reporting import PPOReporter
from .rollout import (
    RewardCaller,
    build_generation_config,
    completion_mask,
    decode_completions,
    generate_completions,
    prompts_are_conversational,
    stop_token_ids,
    tokenize_prompts,
)

logger = logging.get_logger(__name__)

PPO_STATE_FILE = "ppo_state.json"
RewardFunc = Callable | PreTrainedModel


class GramPPOTrainer(Trainer):
    """PPO trainer (policy + value function + frozen reference policy) whose rewards are any list of TRL reward
    functions, e.g. [`GenerativeRewardFunction`].

    Args:
        model (`str` or `PreTrainedModel`): the policy, a causal LM or a path to one.
        reward_funcs (callable, `PreTrainedModel`, or a list of them): rewards in TRL's contract (see
            `trl_gram.ppo.rollout`); `async def` callables are awaited, `None` outputs are handled.
        args ([`GramPPOConfig`], *optional*): training configuration.
        train_dataset ([`~datasets.Dataset`]): a map-style dataset with a `prompt` column (text or conversation); its
            other columns are passed to the reward functions.
        processing_class (`PreTrainedTokenizerBase`, *optional*): the policy's tokenizer (loaded from `model` if
            omitted).
        reward_processing_classes (*optional*): tokenizers of reward models (only for `PreTrainedModel` rewards).
        value_model (`str` or `PreTrainedModel`, *optional*): a separate value model with a `score` head
            (`AutoModelForSequenceClassification`, `num_labels=1`). `None`: a value head on the policy's backbone.
        ref_model (`PreTrainedModel`, *optional*): the frozen reference policy. `None`: a frozen copy of the initial
            policy, or, with PEFT, the policy with its adapter disabled (no second copy).
        callbacks (`list[TrainerCallback]`, *optional*), optimizers (*optional*): as in `Trainer`.
        peft_config (`peft.PeftConfig`, *optional*): train a PEFT adapter of the policy instead of the full model.
    """

    _tag_names = ["trl", "ppo", "trl-gram"]

    def __init__(
        self,
        model: str | PreTrainedModel,
        reward_funcs: RewardFunc | list[RewardFunc],
        args: GramPPOConfig | None = None,
        train_dataset: Dataset | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        reward_processing_classes=None,
        value_model: str | PreTrainedModel | None = None,
        ref_model: PreTrainedModel | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple = (None, None),
        peft_config=None,
    ):
        if args is None:
            name = model if isinstance(model, str) else base_causal_lm(model).config._name_or_path
            args = GramPPOConfig(output_dir=f"{str(name).rstrip('/').split('/')[-1] or 'model'}-PPO")
        if not isinstance(args, GramPPOConfig):
            raise ValueError(f"`args` must be a GramPPOConfig, got {type(args).__name__}.")
        self._check_dataset(train_dataset, args)
        init_kwargs = self._model_init_kwargs(args)

        policy = AutoModelForCausalLM.from_pretrained(model, **init_kwargs) if isinstance(model, str) else model
        if processing_class is None:
            processing_class = AutoTokenizer.from_pretrained(base_causal_lm(policy).config._name_or_path)
        if not isinstance(processing_class, PreTrainedTokenizerBase):
            raise ValueError("`processing_class` must be a tokenizer (PreTrainedTokenizerBase).")
        if processing_class.pad_token is None:
            processing_class.pad_token = processing_class.eos_token
        self.eos_token_ids = stop_token_ids(processing_class, base_causal_lm(policy))

        # Reference policy: explicit, the adapter-disabled policy (PEFT), or a frozen copy taken before training
        peft_reference = peft_config is not None or is_peft_model(policy)
        if ref_model is None and args.kl_coef > 0 and not peft_reference:
            if isinstance(model, str):
                ref_model = AutoModelForCausalLM.from_pretrained(model, **init_kwargs)
            else:
                ref_model = copy.deepcopy(policy)
        base = base_causal_lm(policy)
        if (getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False)) and not (
            peft_reference
        ):
            raise ValueError("The policy is quantized (4/8-bit): it can only be trained with a `peft_config` (LoRA).")
        if peft_config is not None:
            if is_peft_model(policy):
                raise ValueError("`model` is already a PeftModel: do not pass `peft_config` as well.")
            from peft import get_peft_model

            policy = get_peft_model(policy, peft_config)
        if isinstance(value_model, str):
            value_model = AutoModelForSequenceClassification.from_pretrained(value_model, num_labels=1, **init_kwargs)
        if value_model is not None and value_model.config.pad_token_id is None:
            value_model.config.pad_token_id = processing_class.pad_token_id
        for m in (policy, value_model, ref_model):
            if m is not None and args.disable_dropout:
                disable_dropout_in_model(m)
        if ref_model is not None:
            ref_model.eval().requires_grad_(False)

        wrapper = PolicyAndValueModel(policy, value_model)
        super().__init__(
            model=wrapper,
            args=args,
            data_collator=identity,
            train_dataset=train_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        self.model_accepts_loss_kwargs = False  # compute_loss returns a micro-batch mean: Trainer scales it for GA

        self.ref_model = ref_model
        if ref_model is not None:
            if self.is_deepspeed_enabled:
                self.ref_model = prepare_deepspeed(ref_model, self.accelerator)
            elif not getattr(ref_model, "is_quantized", False):
                self.ref_model = ref_model.to(self.accelerator.device)

        if not isinstance(reward_funcs, (list, tuple)):
            reward_funcs = [reward_funcs]
        reward_funcs = list(reward_funcs)
        for i, func in enumerate(reward_funcs):
            if isinstance(func, nn.Module):
                func.eval().requires_grad_(False)
                reward_funcs[i] = (
                    prepare_deepspeed(func, self.accelerator) if self.is_deepspeed_enabled else func.to(args.device)
                )
        self.reward_caller = RewardCaller(reward_funcs, reward_processing_classes)
        self.reward_func_names = self.reward_caller.names
        if args.reward_weights is not None:
            if len(args.reward_weights) != len(reward_funcs):
                raise ValueError(
                    f"`reward_weights` has {len(args.reward_weights)} values for {len(reward_funcs)} reward functions."
                )
            self.reward_weights = torch.tensor(args.reward_weights, dtype=torch.float32)
        else:
            self.reward_weights = torch.ones(len(reward_funcs), dtype=torch.float32)

        self.generation_config = build_generation_config(args, processing_class, self.eos_token_ids, greedy=False)
        self.greedy_generation_config = build_generation_config(
            args, processing_class, self.eos_token_ids, greedy=True
        )
        self.running_scores = core.RunningMoments()
        self._step = 0
        self._rollout = None
        self._micro_batches = None
        self.reporter = PPOReporter(self.accelerator, self.reward_func_names, args.kl_coef, args.log_completions)

    # ------------------------------------------------------------------------------------------------------------------
    # Setup helpers
    # ------------------------------------------------------------------------------------------------------------------
    @staticmethod
    def _model_init_kwargs(args: GramPPOConfig) -> dict:
        kwargs = dict(args.model_init_kwargs or {})
        dtype = kwargs.get("dtype")
        if isinstance(dtype, str) and dtype not in ("auto",):
            kwargs["dtype"] = getattr(torch, dtype)
        return kwargs

    @staticmethod
    def _check_dataset(dataset, args: GramPPOConfig) -> None:
        if dataset is None:
            raise ValueError("`train_dataset` is required: a dataset with a `prompt` column.")
        if isinstance(dataset, IterableDataset):
            raise ValueError(
                "`train_dataset` must be a map-style `datasets.Dataset` (IterableDataset is not supported)."
            )
        columns = dataset.column_names if isinstance(dataset, Dataset) else list(dataset[0])
        if "prompt" not in columns:
            raise ValueError(f"`train_dataset` needs a `prompt` column; it has {columns}.")
        needed = args.rollout_batch_size * args.world_size
        if len(dataset) < needed:
            raise ValueError(
                f"`train_dataset` has {len(dataset)} prompts, but one rollout takes {needed} (per_device_train_batch_size"
                f" {args.per_device_train_batch_size} x gradient_accumulation_steps {args.gradient_accumulation_steps} x "
                f"num_mini_batches {args.num_mini_batches} x {args.world_size} processes)."
            )

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["prompt"]

    def get_train_dataloader(self):
        # One dataloader batch = one rollout's prompts on this process; it is repeated for every micro-step that
        # reuses the rollout, and `_prepare_inputs` generates only on the first of them.
        return self._get_dataloader(
            dataset=self.train_dataset,
            description="Training",
            batch_size=self.args.rollout_batch_size,
            sampler_fn=self._get_train_sampler,
            is_training=True,
        )

    def _get_train_sampler(self, dataset=None):
        dataset = self.train_dataset if dataset is None else dataset
        return RepeatSampler(
            data_source=dataset,
            mini_repeat_count=1,
            batch_size=self.args.rollout_batch_size * self.accelerator.num_processes,
            repeat_count=self.args.gradient_accumulation_steps * self.args.steps_per_rollout,
            shuffle=True,
            seed=self.args.seed,
        )

    def _reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.reporter.reduce_sum(tensor)

    # ------------------------------------------------------------------------------------------------------------------
    # Rollouts
    # ------------------------------------------------------------------------------------------------------------------
    def train(self, *args, **kwargs):
        self._rollout = self._micro_batches = None  # never reuse a rollout across `train()` calls
        return super().train(*args, **kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._step += 1
        return loss

    def _prepare_inputs(self, generation_batch):
        micro_per_epoch = self.args.gradient_accumulation_steps * self.args.num_mini_batches
        micro_per_rollout = micro_per_epoch * self.args.num_ppo_epochs
        if self._rollout is None:  # first call, or resumed from a checkpoint: line up with the optimizer steps done
            self._step = self.state.global_step * self.args.gradient_accumulation_steps
        position = self._step % micro_per_rollout
        if position == 0 or self._rollout is None:
            self._rollout = self._make_rollout(generation_batch)
            self._micro_batches = None
        if position % micro_per_epoch == 0 or self._micro_batches is None:  # a new PPO epoch: reshuffle
            size = len(self._rollout["input_ids"])
            order = torch.randperm(size, device=self._rollout["input_ids"].device)
            chunks = order.chunk(micro_per_epoch)
            self._micro_batches = [{k: v[idx] for k, v in self._rollout.items()} for idx in chunks]
        return self._micro_batches[position % micro_per_epoch]

    def _forward_logprobs(self, model_fn, input_ids, attention_mask, completion_ids, batch_size):
        """Log-probs (and entropies) of the completion tokens under `model_fn(input_ids, attention_mask, K)`."""
        logprobs, entropies, values = [], [], []
        length = completion_ids.size(1)
        for start in range(0, len(input_ids), batch_size):
            chunk = slice(start, start + batch_size)
            logits, chunk_values = model_fn(input_ids[chunk], attention_mask[chunk], length)
            logits = logits.float() / self.args.temperature
            logprobs.append(selective_log_softmax(logits, completion_ids[chunk]))
            entropies.append(entropy_from_logits(logits))
            if chunk_values is not None:
                values.append(chunk_values)
        return torch.cat(logprobs), torch.cat(entropies), (torch.cat(values) if values else None)

    @torch.no_grad()
    def _make_rollout(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        args, device, tokenizer = self.args, self.accelerator.device, self.processing_class
        prompts = [row["prompt"] for row in batch]
        columns = {k: [row.get(k) for row in batch] for k in batch[0] if k not in ("prompt", "completion")}
        conversational = prompts_are_conversational(prompts)
        prompt_ids, prompt_mask = tokenize_prompts(
            tokenizer, prompts, args.max_prompt_length, args.chat_template_kwargs
        )
        prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
        forward_bs = args.rollout_forward_batch_size or len(prompts)

        with unwrap_model_for_generation(
            self.model_wrapped, self.accelerator, gather_deepspeed3_params=args.ds3_gather_for_generation
        ) as unwrapped:
            policy = unwrapped.policy
            was_training = policy.training
            policy.eval()
            completion_ids = generate_completions(policy, prompt_ids, prompt_mask, self.generation_config, forward_bs)
            greedy_ids = None
            if args.greedy_reference:
                greedy_ids = generate_completions(
                    policy, prompt_ids, prompt_mask, self.greedy_generation_config, forward_bs
                )
            policy.train(was_training)

        mask, has_eos = completion_mask(completion_ids, self.eos_token_ids)
        completion_ids = completion_ids.masked_fill(mask == 0, tokenizer.pad_token_id)
        completions, completion_ids_list = decode_completions(tokenizer, completion_ids, mask, conversational)
        references = None
        if greedy_ids is not None:
            greedy_mask, _ = completion_mask(greedy_ids, self.eos_token_ids)
            references, _ = decode_completions(tokenizer, greedy_ids, greedy_mask, conversational)

        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, mask], dim=1)
        unwrapped = self.accelerator.unwrap_model(self.model_wrapped)
        with self.compute_loss_context_manager():
            old_logprobs, entropy, old_values = self._forward_logprobs(
                lambda ids, am, k: unwrapped(ids, am, logits_to_keep=k),
                input_ids,
                attention_mask,
                completion_ids,
                forward_bs,
            )
            if args.kl_coef > 0:
                ref_logprobs = self._reference_logprobs(
                    unwrapped, input_ids, attention_mask, completion_ids, forward_bs
                )
            else:
                ref_logprobs = old_logprobs

        rewards_per_func = self.reward_caller(
            prompts,
            completions,
            completion_ids_list,
            columns=columns,
            references=references,
            trainer_state=self.state,
            log_extra=self.reporter.log_extra,
            log_metric=self.reporter.log_metric,
        ).to(device)
        raw_scores, valid = core.combine_rewards(
            rewards_per_func, self.reward_weights, has_eos, args.missing_eos_penalty
        )
        scores = self._normalize_scores(raw_scores, valid)
        loss_mask = mask * valid.unsqueeze(1).long()

        kl = core.kl_penalty(old_logprobs, ref_logprobs, args.kl_estimator) * mask
        rewards = core.token_rewards(scores, kl, loss_mask, args.kl_coef)
        advantages, returns = core.compute_gae(rewards, old_values, loss_mask, args.gamma, args.lam)
        if args.whiten_advantages:
            advantages = core.masked_whiten(advantages, loss_mask, reduce=self._reduce_sum)

        rollout = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "completion_ids": completion_ids,
            "loss_mask": loss_mask,
            "old_logprobs": old_logprobs,
            "old_values": old_values,
            "advantages": advantages,
            "returns": returns,
        }
        self.reporter.record_rollout(
            {
                **rollout,
                "mask": mask,
                "has_eos": has_eos,
                "valid": valid,
                "rewards_per_func": rewards_per_func,
                "raw_scores": raw_scores,
                "scores": scores,
                "kl": kl,
                "entropy": entropy,
            },
            {"prompts": prompts, "completions": completions, "references": references},
        )
        return rollout

    def _reference_logprobs(self, unwrapped, input_ids, attention_mask, completion_ids, batch_size):
        if self.ref_model is not None:
            ref = self.ref_model
            # Same computation as the policy's (only the last k + 1 positions go through the LM head)
            accepts_keep = "logits_to_keep" in inspect.signature(self.accelerator.unwrap_model(ref).forward).parameters

            def ref_fn(ids, am, k):
                keep = {"logits_to_keep": k + 1} if accepts_keep else {}
                out = ref(
                    input_ids=ids, attention_mask=am, position_ids=position_ids_from_mask(am), use_cache=False, **keep
                )
                return out.logits[:, -(k + 1) : -1], None

            return self._forward_logprobs(ref_fn, input_ids, attention_mask, completion_ids, batch_size)[0]
        with unwrapped.policy.disable_adapter():  # PEFT: the base model is the reference
            return self._forward_logprobs(
                lambda ids, am, k: (unwrapped.policy_logits(ids, am, logits_to_keep=k)[0][:, :-1], None),
                input_ids,
                attention_mask,
                completion_ids,
                batch_size,
            )[0]

    def _normalize_scores(self, scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        mode = self.args.reward_normalization
        if mode == "batch":
            mean, var = core.masked_mean_var(scores, valid, reduce=self._reduce_sum)
            scores = (scores - mean) / torch.sqrt(var + 1e-8)
        elif mode == "running":
            v, s64 = valid.double(), scores.double()
            stats = self._reduce_sum(torch.stack([(s64 * v).sum(), (s64**2 * v).sum(), v.sum()]))
            self.running_scores.update(*stats.tolist())
            scores = scores / max(self.running_scores.std, 1e-4)
        if self.args.reward_clip is not None:
            scores = scores.clamp(-self.args.reward_clip, self.args.reward_clip)
        return torch.where(valid, scores, torch.zeros_like(scores))

    # ------------------------------------------------------------------------------------------------------------------
    # Loss
    # ------------------------------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if return_outputs:
            raise ValueError("GramPPOTrainer does not return outputs from compute_loss.")
        args = self.args
        completion_ids, loss_mask = inputs["completion_ids"], inputs["loss_mask"]
        logits, values = model(inputs["input_ids"], inputs["attention_mask"], logits_to_keep=completion_ids.size(1))
        logits = logits.float() / args.temperature
        logprobs = selective_log_softmax(logits, completion_ids)
        pg_loss, pg_stats = core.policy_loss(
            logprobs, inputs["old_logprobs"], inputs["advantages"], loss_mask, args.cliprange
        )
        vf_loss, vf_stats = core.value_loss(
            values, inputs["old_values"], inputs["returns"], loss_mask, args.cliprange_value
        )
        loss = pg_loss + args.vf_coef * vf_loss
        if args.entropy_coef > 0:
            entropy = core.masked_mean(entropy_from_logits(logits), loss_mask)
            loss = loss - args.entropy_coef * entropy
        else:
            with torch.no_grad():
                entropy = core.masked_mean(entropy_from_logits(logits), loss_mask)
        self.reporter.record_update(
            {
                "loss/policy": pg_loss,
                "loss/value": vf_loss,
                "policy/entropy": entropy,
                "policy/clipfrac": pg_stats["clipfrac"],
                "policy/approx_kl": pg_stats["approx_kl"],
                "policy/ratio": pg_stats["ratio"],
                "value/clipfrac": vf_stats["clipfrac"],
            }
        )
        return loss

    # ------------------------------------------------------------------------------------------------------------------
    # Logging and checkpoints
    # ------------------------------------------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        logs.update(self.reporter.pop_metrics())
        super().log(logs, start_time)
        if self.accelerator.is_main_process:
            self.reporter.flush_table(
                self.state.global_step,
                self.args.output_dir,
                self.args.num_completions_to_print,
                list(self.args.report_to or []),
            )
        else:
            self.reporter.table.clear()

    def _save(self, output_dir: str | None = None, state_dict=None):
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        logger.info(f"Saving policy and value function to {output_dir}")
        self.accelerator.unwrap_model(self.model).save(output_dir, state_dict=state_dict)
        self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            with open(os.path.join(folder, PPO_STATE_FILE), "w") as f:
                json.dump({"running_scores": self.running_scores.state_dict()}, f)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        model = self.model if model is None else model
        logger.info(f"Loading policy and value function from {resume_from_checkpoint}")
        self.accelerator.unwrap_model(model).load(resume_from_checkpoint)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        path = os.path.join(checkpoint, PPO_STATE_FILE) if checkpoint else None
        if path and os.path.isfile(path):
            with open(path) as f:
                self.running_scores.load_state_dict(json.load(f)["running_scores"])
        self._rollout = None  # regenerate from the restored weights

    def __del__(self):
        caller = getattr(self, "reward_caller", None)
        if caller is not None:
            caller.close()
