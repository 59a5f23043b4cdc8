"""[`GramWinRateCallback`]: the win rate of the policy being trained against the starting policy, judged by GRAM.

A group-relative GRAM reward (``reference="group"``) averages 0.5 in every group whatever the policy does: the right
training signal, but no progress signal. This callback supplies one, the way TRL's former ``WinRateCallback`` did:
at train start, every ``eval_steps`` and at train end it generates greedy completions of the current policy on a
fixed prompt set and has a GRAM judge compare each (both orders) with the **starting policy's** completion, generated
once at train start and cached (or with a reference column of the data). The numbers of [`~trl_gram.win_rate.summarize`]
(win rate and its standard error, swap agreement, parse failures, lengths, reward-hacking flags) go through
[`~transformers.Trainer.log`], so ``report_to`` (wandb, tensorboard, trackio, ...) and ``trainer.state.log_history``
see them, and a completions table (one row per prompt) is written to ``output_dir/win_rate/`` and to wandb/trackio.

Works with TRL's [`~trl.GRPOTrainer`], [`~trl.RLOOTrainer`], [`~trl.experimental.online_dpo.OnlineDPOTrainer`] and
[`~trl_gram.ppo.GramPPOTrainer`]. Under several processes the prompts are split across ranks and the verdicts
gathered. With PEFT the starting policy is the policy with its adapter disabled (no second copy).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random

import torch
from accelerate.utils import gather_object
from transformers import GenerationConfig, Trainer, TrainerCallback
from transformers.utils import logging
from trl.models.utils import unwrap_model_for_generation

from .ppo.modeling import PolicyAndValueModel, is_peft_model
from .ppo.rollout import completion_mask, generate_completions, stop_token_ids, tokenize_prompts
from .reward import GenerativeRewardFunction
from .templates import question_to_text, response_to_text
from .win_rate import (
    LOGGED,
    HackingThresholds,
    PairResult,
    RemoteJudge,
    describe_history,
    flag_message,
    flags_fired,
    judge_pairs,
    summarize,
    write_table,
)

logger = logging.get_logger(__name__)

REFERENCE_FILE = "reference.json"


class GramWinRateCallback(TrainerCallback):
    r"""Logs the policy's win rate against the starting policy, judged by a GRAM judge.

    ```python
    >>> trainer = GRPOTrainer(model=..., reward_funcs=[reward], ...)
    >>> trainer.add_callback(GramWinRateCallback(trainer, judge=reward.judge, eval_steps=50))
    >>> trainer.train()  # logs eval_win_rate (shown as eval/win_rate by wandb, tensorboard, trackio), ...
    ```

    Args:
        trainer ([`~transformers.Trainer`]):
            The trainer the callback is attached to (the callback reads its model, processing class, accelerator,
            datasets and arguments).
        judge ([`~trl_gram.judge.GramJudge`], [`~trl_gram.reward.GenerativeRewardFunction`], `str` or `None`):
            The judge: a loaded judge, a reward function (its judge is used), the URL of a trl-gram reward server
            (``"http://host:8000"``, its ``/judge`` endpoint) or a
            [`~trl_gram.serving.remote_reward.RemoteGenerativeRewardFunction`] (the same server), a model path, or
            `None` for the embedded default (both loaded on this process's device at first use).
        dataset ([`~datasets.Dataset`] or `list`, *optional*):
            The prompts (a dataset with a `"prompt"` column, or a list of prompts). Default: the trainer's evaluation
            dataset, else a seeded sample of `num_prompts` train prompts.
        num_prompts (`int`, *optional*):
            Use at most this many prompts (default: all of `dataset` / the evaluation dataset, 32 train prompts).
        reference_column (`str`, *optional*):
            Compare with this column of the prompt dataset (e.g. a reference answer) instead of the starting policy.
        eval_steps (`int` or `float`, *optional*):
            Evaluate every this many optimizer steps (a float below 1: that fraction of `max_steps`). Default: the
            trainer's `eval_steps` when `eval_strategy="steps"`, else only at train start and end.
        max_new_tokens (`int`, *optional*):
            Completion length cap. Default: the trainer's `max_completion_length` (or `max_new_tokens`), else 256.
        batch_size (`int`, *optional*):
            Prompts per generation batch (default: `per_device_eval_batch_size`).
        thresholds ([`~trl_gram.win_rate.HackingThresholds`], *optional*):
            When the reward-hacking flags fire.
        metric_prefix (`str`, *optional*, defaults to `"eval_"`):
            Prefix of the logged keys (`eval_win_rate`, ...; `report_to` integrations show `eval/win_rate`).
        seed (`int`, *optional*, defaults to `0`):
            Seed of the train-prompt sample.
        judge_kwargs (`dict`, *optional*):
            Keyword arguments for [`~trl_gram.judge.load_judge`] (a path or `None` judge; e.g.
            `{"backend": "openai", "engine_urls": [...]}` judges on engines) or for
            [`~trl_gram.win_rate.RemoteJudge`] (a URL judge, e.g. `{"api_key": ...}`).
    """

    def __init__(
        self,
        trainer: Trainer,
        judge=None,
        *,
        dataset=None,
        num_prompts: int | None = None,
        reference_column: str | None = None,
        eval_steps: int | float | None = None,
        max_new_tokens: int | None = None,
        batch_size: int | None = None,
        thresholds: HackingThresholds | None = None,
        metric_prefix: str = "eval_",
        seed: int = 0,
        judge_kwargs: dict | None = None,
    ):
        if eval_steps is not None and not eval_steps > 0:
            raise ValueError(f"`eval_steps` must be positive, got {eval_steps!r}.")
        if num_prompts is not None and num_prompts < 1:
            raise ValueError(f"`num_prompts` must be positive, got {num_prompts!r}.")
        self.trainer = trainer
        self.reference_column = reference_column
        self.eval_steps = eval_steps
        self.thresholds = thresholds or HackingThresholds()
        self.metric_prefix = metric_prefix
        self.judge_kwargs = dict(judge_kwargs or {})
        args = trainer.args
        self.max_new_tokens = max_new_tokens or (
            getattr(args, "max_completion_length", None) or getattr(args, "max_new_tokens", None) or 256
        )
        self.batch_size = batch_size or args.per_device_eval_batch_size
        self.prompts, self.references = self._select_prompts(dataset, num_prompts, seed)
        usable = judge is None or isinstance(judge, (str, GenerativeRewardFunction))
        usable = usable or callable(getattr(judge, "judge", None)) or isinstance(getattr(judge, "url", None), str)
        if not usable:
            raise ValueError(f"`judge` must be a GramJudge, a reward function, a URL, a path or None; got {judge!r}.")
        self._judge_spec = judge
        self._judge = None
        self.reference_completions: list[str] | None = None
        self.reference_lengths: list[int] | None = None
        self.baseline: dict | None = None
        self.history: list[dict] = []  # {"step": ..., **summary} per evaluation
        self.tables: dict[int, list[dict]] = {}  # step -> one row per prompt
        self._last_step = None
        self._policy_is_reference_at = None  # the step at which the reference was generated by the policy itself
        self._warned: set[str] = set()

    # ---------------------------------------------------------------------------------------------------------------
    # Setup
    # ---------------------------------------------------------------------------------------------------------------
    def _select_prompts(self, dataset, num_prompts, seed):
        source = "dataset"
        if dataset is None:
            dataset, source = self.trainer.eval_dataset, "the trainer's eval_dataset"
            if isinstance(dataset, dict):  # several eval datasets: the first one
                dataset = next(iter(dataset.values()))
        if dataset is None:
            dataset, source = self.trainer.train_dataset, "the trainer's train_dataset"
            if dataset is None:
                raise ValueError("No prompts: pass `dataset`, or give the trainer an eval or train dataset.")
            if not hasattr(dataset, "__len__"):
                raise ValueError(
                    f"{source} is an iterable dataset: pass the prompts as `dataset` (a list or Dataset)."
                )
            num_prompts = num_prompts or 32
            rows = list(range(len(dataset)))
            random.Random(seed).shuffle(rows)
            rows = sorted(rows[:num_prompts])
        else:
            rows = list(range(min(num_prompts or len(dataset), len(dataset))))
        if isinstance(dataset, (list, tuple)):
            if self.reference_column is not None:
                raise ValueError("`reference_column` needs `dataset` to be a dataset with that column, not a list.")
            return [dataset[i] for i in rows], None
        columns = getattr(dataset, "column_names", None) or list(dataset[0])
        for column in ["prompt"] + ([self.reference_column] if self.reference_column else []):
            if column not in columns:
                raise ValueError(f"{source} has no {column!r} column (it has {columns}).")
        prompts = [dataset[i]["prompt"] for i in rows]
        references = None
        if self.reference_column is not None:
            references = []
            for i in rows:
                value = dataset[i][self.reference_column]
                if value is None:
                    raise ValueError(f"Row {i} of {source} has no `{self.reference_column}` value.")
                references.append(response_to_text(value, f"{self.reference_column}[{i}]"))
        if not prompts:
            raise ValueError(f"{source} has no prompts.")
        return prompts, references

    @property
    def judge(self):
        """The judge, loaded on first use."""
        if self._judge is None:
            spec = self._judge_spec
            if isinstance(spec, str) and spec.startswith(("http://", "https://")):
                self._judge = RemoteJudge(spec, **self.judge_kwargs)
            elif spec is None or isinstance(spec, str):
                from .judge import load_judge

                kwargs = dict(self.judge_kwargs)
                if kwargs.get("backend", "transformers") == "transformers":
                    kwargs.setdefault("device", self.trainer.accelerator.device)
                self._judge = load_judge(spec, **kwargs)
            elif isinstance(spec, GenerativeRewardFunction):
                self._judge = spec.judge
            elif callable(getattr(spec, "judge", None)):
                self._judge = spec
            elif isinstance(getattr(spec, "url", None), str):  # a remote reward: the same server's /judge endpoint
                base = spec.url.rstrip("/")
                base = base.rsplit("/", 1)[0] if base.rsplit("/", 1)[-1] in ("reward", "get_reward") else base
                kwargs = {"api_key": getattr(spec, "api_key", None), **self.judge_kwargs}
                self._judge = RemoteJudge(base, **kwargs)
        return self._judge

    @property
    def tokenizer(self):
        processing_class = self.trainer.processing_class
        return getattr(processing_class, "tokenizer", processing_class)

    # ---------------------------------------------------------------------------------------------------------------
    # Generation
    # ---------------------------------------------------------------------------------------------------------------
    def _shard(self) -> list[int]:
        """This process's slice of the prompt indices (contiguous, in rank order)."""
        with self.trainer.accelerator.split_between_processes(list(range(len(self.prompts)))) as indices:
            return list(indices)

    @contextlib.contextmanager
    def _policy(self, base: bool = False):
        """The current policy ready to generate (unwrapped, eval mode); ``base=True``: its adapter disabled."""
        trainer = self.trainer
        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as unwrapped:
            policy = unwrapped.policy if isinstance(unwrapped, PolicyAndValueModel) else unwrapped
            was_training = policy.training
            policy.eval()
            try:
                with policy.disable_adapter() if base else contextlib.nullcontext():
                    yield policy
            finally:
                policy.train(was_training)

    @torch.no_grad()
    def _generate(self, model, indices: list[int]) -> tuple[list[str], list[int]]:
        """Greedy completions (text) of the prompts at `indices`, and their lengths in tokens."""
        if not indices:
            return [], []
        tokenizer = self.tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        eos_ids = stop_token_ids(tokenizer, model)
        config = GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=eos_ids,
            bos_token_id=tokenizer.bos_token_id,
            use_cache=True,
            disable_compile=True,
        )
        args = self.trainer.args
        prompt_ids, prompt_mask = tokenize_prompts(
            tokenizer,
            [self.prompts[i] for i in indices],
            getattr(args, "max_prompt_length", None),
            getattr(args, "chat_template_kwargs", None),
        )
        device = next(model.parameters()).device
        ids = generate_completions(model, prompt_ids.to(device), prompt_mask.to(device), config, self.batch_size)
        mask, _ = completion_mask(ids, eos_ids)
        is_stop = torch.isin(ids, torch.tensor(eos_ids, device=ids.device))
        keep = mask.bool() & ~is_stop  # the completion's text tokens, the stop token not counted
        rows = [row[m].tolist() for row, m in zip(ids, keep)]
        return tokenizer.batch_decode(rows, skip_special_tokens=True), [len(r) for r in rows]

    def _reference_model(self):
        """The trainer's frozen reference model when it is the starting policy (not synced), else `None`."""
        ref = getattr(self.trainer, "ref_model", None)
        if ref is None or getattr(self.trainer.args, "sync_ref_model", False) or self.trainer.is_deepspeed_enabled:
            return None
        return self.trainer.accelerator.unwrap_model(ref)

    def _prepare_reference(self, state) -> None:
        """The starting policy's completions: a reference column, the cached file of a resumed run, the PEFT base,
        the trainer's reference model (resumed runs), or the policy itself at train start."""
        if self.references is not None:
            self.reference_completions = list(self.references)
            self.reference_lengths = [len(self.tokenizer.encode(r, add_special_tokens=False)) for r in self.references]
            return
        resumed = state.global_step > 0
        if resumed and self._load_reference():
            return
        indices = self._shard()
        unwrapped = self.trainer.accelerator.unwrap_model(self.trainer.model)
        policy = unwrapped.policy if isinstance(unwrapped, PolicyAndValueModel) else unwrapped
        ref_model = self._reference_model() if resumed else None
        if is_peft_model(policy):
            with self._policy(base=True) as base:
                texts, lengths = self._generate(base, indices)
        elif ref_model is not None:
            was_training = ref_model.training
            texts, lengths = self._generate(ref_model.eval(), indices)
            ref_model.train(was_training)
        else:
            if resumed:
                logger.warning(
                    f"GramWinRateCallback: resumed at step {state.global_step} without the starting policy's cached "
                    f"completions ({self._reference_path()}), a PEFT base or a reference model: the win rate is "
                    "measured against the resumed policy."
                )
            with self._policy() as policy:
                texts, lengths = self._generate(policy, indices)
            self._policy_is_reference_at = state.global_step
        self.reference_completions = gather_object(texts)
        self.reference_lengths = gather_object(lengths)
        self._save_reference()

    def _reference_path(self) -> str:
        return os.path.join(self.trainer.args.output_dir, "win_rate", REFERENCE_FILE)

    def _prompt_keys(self) -> list[str]:
        return [json.dumps(p, sort_keys=True, ensure_ascii=False) for p in self.prompts]

    def _save_reference(self) -> None:
        if not self.trainer.accelerator.is_main_process or self.references is not None:
            return
        path = self._reference_path()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        payload = {
            "prompts": self._prompt_keys(),
            "completions": self.reference_completions,
            "lengths": self.reference_lengths,
            "baseline": self.baseline,
        }
        with open(path + ".tmp", "w") as f:
            json.dump(payload, f, ensure_ascii=False)
        os.replace(path + ".tmp", path)

    def _load_reference(self) -> bool:
        path = self._reference_path()
        if not os.path.isfile(path):
            return False
        with open(path) as f:
            payload = json.load(f)
        if payload.get("prompts") != self._prompt_keys():
            logger.warning(f"GramWinRateCallback: {path} was written for other prompts; not reused.")
            return False
        self.reference_completions, self.reference_lengths = payload["completions"], payload["lengths"]
        self.baseline = payload.get("baseline")
        return True

    # ---------------------------------------------------------------------------------------------------------------
    # Events
    # ---------------------------------------------------------------------------------------------------------------
    def _interval(self, args, state) -> int | None:
        if self.eval_steps is not None:
            steps = self.eval_steps
            return max(math.ceil(state.max_steps * steps), 1) if steps < 1 else int(steps)
        if args.eval_strategy == "steps":
            return state.eval_steps
        return None

    def on_train_begin(self, args, state, control, **kwargs):
        if self.reference_completions is None:
            self._prepare_reference(state)
        self.evaluate(state)

    def on_step_end(self, args, state, control, **kwargs):
        interval = self._interval(args, state)
        if interval and state.global_step % interval == 0:
            self.evaluate(state)

    def on_train_end(self, args, state, control, **kwargs):
        self.evaluate(state)

    # ---------------------------------------------------------------------------------------------------------------
    # Evaluation
    # ---------------------------------------------------------------------------------------------------------------
    def evaluate(self, state) -> dict | None:
        """Generate, judge, gather and log once for `state.global_step` (a second call at the same step does
        nothing). Returns the summary."""
        if self._last_step == state.global_step:
            return None
        self._last_step = state.global_step
        indices = self._shard()
        if self._policy_is_reference_at == state.global_step:  # the same policy just generated the reference
            current = [self.reference_completions[i] for i in indices]
            lengths = [self.reference_lengths[i] for i in indices]
        else:
            with self._policy() as policy:
                current, lengths = self._generate(policy, indices)
        results = judge_pairs(
            self.judge,
            [self.prompts[i] for i in indices],
            current,
            [self.reference_completions[i] for i in indices],
            lengths,
            [self.reference_lengths[i] for i in indices],
        )
        results = [PairResult(**r) for r in gather_object([r.to_dict() for r in results])]
        current = gather_object(current)
        summary = summarize(results, self.baseline, self.thresholds)
        if self.baseline is None and summary["num_judged"]:
            self.baseline = summary
            self._save_reference()
        self.history.append({"step": state.global_step, **summary})
        rows = [
            {
                "step": state.global_step,
                "prompt": question_to_text(prompt),
                "current": cur,
                "reference": ref,
                "p_current_better": res.prob,
                "rationale": res.rationale,
            }
            for prompt, cur, ref, res in zip(self.prompts, current, self.reference_completions, results)
        ]
        self.tables[state.global_step] = rows
        self._warn_flags(summary, state.global_step)
        metrics = {self.metric_prefix + k: summary[k] for k in LOGGED if summary.get(k) is not None}
        # `Trainer.log` itself, not the trainer's override (GRPO's and PPO's would flush their training metrics here);
        # and the trainer's own logging due at this step still happens (`on_log` clears `should_log`)
        should_log = self.trainer.control.should_log
        Trainer.log(self.trainer, metrics)
        self.trainer.control.should_log = should_log
        self._write_table(rows, state.global_step)
        return summary

    def describe(self) -> list[str]:
        """Lines for a printed summary: the win rate at each evaluation, and the flags that fired."""
        against = f"column {self.reference_column!r}" if self.reference_column else "the starting policy"
        header = (
            f"{self.metric_prefix.replace('_', '/')}win_rate vs {against} on {len(self.prompts)} prompts (greedy):"
        )
        return describe_history(self.history, header)

    def _warn_flags(self, summary: dict, step: int) -> None:
        for flag in flags_fired([summary]):
            if flag not in self._warned:
                self._warned.add(flag)
                logger.warning(
                    f"GramWinRateCallback, step {step}: possible reward hacking: {flag_message(summary, flag)}"
                )

    def _write_table(self, rows: list[dict], step: int) -> None:
        if self.trainer.accelerator.is_main_process:
            args = self.trainer.args
            write_table(rows, os.path.join(args.output_dir, "win_rate"), step, list(args.report_to or []))
