"""Rollout pieces of PPO: tokenizing prompts, sampling (and greedy reference) completions, and calling the rewards.

Rewards follow TRL's reward-function contract (the one of `GRPOTrainer.reward_funcs`): each is called as
`f(prompts=, completions=, completion_ids=, trainer_state=, log_extra=, log_metric=, **dataset_columns)` and returns
one `float` or `None` per completion; `async def` callables are awaited (all of them concurrently) on a background
event loop; a `PreTrainedModel` sequence classifier is also accepted, with its tokenizer. With the GRAM recipe the
call also gets `references=` (the policy's greedy response to the same prompt, one per completion).
"""

import asyncio
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from transformers import GenerationConfig, PreTrainedTokenizerBase
from trl.data_utils import is_conversational
from trl.trainer.utils import (
    get_callable_name,
    is_async_callable,
    pad,
    shutdown_event_loop_in_daemon,
    start_event_loop_in_daemon,
)

RESERVED_REWARD_KWARGS = ("prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric")


# ----------------------------------------------------------------------------------------------------------------------
# Prompts and completions
# ----------------------------------------------------------------------------------------------------------------------
def prompts_are_conversational(prompts: Sequence) -> bool:
    return len(prompts) > 0 and is_conversational({"prompt": prompts[0]})


def tokenize_prompts(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence,
    max_prompt_length: int | None = None,
    chat_template_kwargs: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded `(input_ids, attention_mask)` of the prompts; conversations go through the chat template (with a
    generation prompt), and prompts longer than `max_prompt_length` keep their last tokens."""
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, (str, list)) or (isinstance(prompt, str) and not prompt.strip()):
            raise ValueError(
                f"Row {i} of the batch has an invalid `prompt` ({prompt!r}): expected a non-empty string or a list "
                "of chat messages."
            )
    if prompts_are_conversational(prompts):
        texts = [
            tokenizer.apply_chat_template(
                p, tokenize=False, add_generation_prompt=True, **(chat_template_kwargs or {})
            )
            for p in prompts
        ]
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    else:
        ids = tokenizer(list(prompts))["input_ids"]
    if max_prompt_length is not None:
        ids = [row[-max_prompt_length:] for row in ids]
    tensors = [torch.tensor(row, dtype=torch.long) for row in ids]
    input_ids = pad(tensors, padding_value=tokenizer.pad_token_id, padding_side="left")
    attention_mask = pad([torch.ones_like(t) for t in tensors], padding_value=0, padding_side="left")
    return input_ids, attention_mask


def stop_token_ids(tokenizer: PreTrainedTokenizerBase, model: nn.Module) -> list[int]:
    """Every id that ends a completion: the tokenizer's EOS and the model's `generation_config.eos_token_id`(s)."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.insert(0, tokenizer.eos_token_id)
    if not ids:
        raise ValueError("The tokenizer has no `eos_token` and the model no `generation_config.eos_token_id`.")
    return ids


def completion_mask(completion_ids: torch.Tensor, eos_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """`(mask, has_eos)`: `mask[b, t]` is 1 up to and including the first stop token of row `b` (everything if it
    has none), `has_eos[b]` says whether the row has a stop token."""
    is_eos = torch.isin(completion_ids, torch.tensor(list(eos_ids), device=completion_ids.device))
    has_eos = is_eos.any(dim=1)
    length = completion_ids.size(1)
    first_eos = torch.where(has_eos, is_eos.int().argmax(dim=1), torch.full_like(has_eos, length, dtype=torch.long))
    positions = torch.arange(length, device=completion_ids.device).unsqueeze(0)
    mask = (positions <= first_eos.unsqueeze(1)).long()
    return mask, has_eos


def build_generation_config(args, tokenizer: PreTrainedTokenizerBase, eos_ids: list[int], greedy: bool):
    """`GenerationConfig` for sampled (from the config's sampling fields) or greedy rollouts."""
    kwargs = dict(
        max_new_tokens=args.max_completion_length,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos_ids,
        bos_token_id=tokenizer.bos_token_id,
        use_cache=True,
        disable_compile=True,
    )
    if greedy:
        kwargs.update(do_sample=False, repetition_penalty=args.repetition_penalty)
    else:
        kwargs.update(
            do_sample=True,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            min_p=args.min_p,
            repetition_penalty=args.repetition_penalty,
        )
        kwargs.update(args.generation_kwargs or {})
    return GenerationConfig(**kwargs)


@torch.no_grad()
def generate_completions(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    generation_config: GenerationConfig,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Completion token ids `[B, C]` (right-padded with `pad_token_id`), generated in micro-batches."""
    batch_size = batch_size or len(prompt_ids)
    chunks = []
    for start in range(0, len(prompt_ids), batch_size):
        ids, mask = prompt_ids[start : start + batch_size], prompt_mask[start : start + batch_size]
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=generation_config)
        chunks.extend(out[:, ids.size(1) :])
    return pad(chunks, padding_value=generation_config.pad_token_id, padding_side="right")


def decode_completions(
    tokenizer: PreTrainedTokenizerBase, completion_ids: torch.Tensor, mask: torch.Tensor, conversational: bool
) -> tuple[list, list[list[int]]]:
    """Completions in the prompts' format (a string, or `[{"role": "assistant", "content": ...}]`), and their token
    ids without padding (the EOS included, as in TRL)."""
    ids_list = [row[m.bool()].tolist() for row, m in zip(completion_ids, mask)]
    texts = tokenizer.batch_decode(ids_list, skip_special_tokens=True)
    if conversational:
        return [[{"role": "assistant", "content": text}] for text in texts], ids_list
    return texts, ids_list


# ----------------------------------------------------------------------------------------------------------------------
# Rewards
# ----------------------------------------------------------------------------------------------------------------------
class RewardCaller:
    """Calls a list of reward functions on a batch and returns a `[B, num_funcs]` float tensor (NaN for `None`).

    Args:
        reward_funcs: callables in TRL's contract (sync or `async def`), or `PreTrainedModel` sequence classifiers
            (their score is `logits[:, 0]` on `prompt + completion`, tokenized by the matching processing class).
        reward_processing_classes: one tokenizer per reward function (used for model rewards only), or `None`.
    """

    def __init__(self, reward_funcs: Sequence[Callable | nn.Module], reward_processing_classes=None):
        if not reward_funcs:
            raise ValueError("`reward_funcs` is empty: pass at least one reward function.")
        self.funcs = list(reward_funcs)
        for i, func in enumerate(self.funcs):
            if not (callable(func) or isinstance(func, nn.Module)):
                raise ValueError(f"`reward_funcs[{i}]` ({func!r}) is not callable.")
        self.names = []
        for func in self.funcs:
            if isinstance(func, nn.Module) and hasattr(func, "config"):
                self.names.append(str(getattr(func.config, "_name_or_path", "") or type(func).__name__).split("/")[-1])
            else:
                self.names.append(get_callable_name(func))
        if reward_processing_classes is None:
            reward_processing_classes = [None] * len(self.funcs)
        elif not isinstance(reward_processing_classes, (list, tuple)):
            reward_processing_classes = [reward_processing_classes]
        if len(reward_processing_classes) != len(self.funcs):
            raise ValueError(
                f"`reward_processing_classes` has {len(reward_processing_classes)} entries for {len(self.funcs)} "
                "reward functions."
            )
        for i, (func, proc) in enumerate(zip(self.funcs, reward_processing_classes)):
            if isinstance(func, nn.Module) and proc is None:
                raise ValueError(
                    f"`reward_funcs[{i}]` is a model: pass its tokenizer in `reward_processing_classes[{i}]`."
                )
        self.processing_classes = list(reward_processing_classes)
        self._loop_thread = self._loop = None
        if any(is_async_callable(f) for f in self.funcs if not isinstance(f, nn.Module)):
            self._loop_thread, self._loop, ready = start_event_loop_in_daemon(name="GramPPOTrainer-rewards")
            ready.wait()

    def close(self) -> None:
        shutdown_event_loop_in_daemon(self._loop_thread, self._loop)
        self._loop_thread = self._loop = None

    def _check(self, name: str, output, expected: int) -> list[float]:
        if output is None or isinstance(output, (str, bytes)) or not hasattr(output, "__len__"):
            raise ValueError(f"The reward function '{name}' returned {output!r}: expected a list of floats or None.")
        output = list(output)
        if len(output) != expected:
            raise ValueError(
                f"The reward function '{name}' returned {len(output)} rewards, but {expected} were expected (one per "
                "completion)."
            )
        values = []
        for j, value in enumerate(output):
            if value is None:
                values.append(math.nan)
                continue
            try:
                values.append(float(value))
            except (TypeError, ValueError):
                raise ValueError(f"The reward function '{name}' returned {value!r} for completion {j}.") from None
        return values

    @torch.no_grad()
    def _model_reward(self, model: nn.Module, tokenizer, prompts, completions) -> list[float]:
        if prompts_are_conversational(prompts):
            texts = [tokenizer.apply_chat_template(p + c, tokenize=False) for p, c in zip(prompts, completions)]
        else:
            texts = [p + c for p, c in zip(prompts, completions)]
        device = next(model.parameters()).device
        inputs = tokenizer(texts, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False)
        inputs = {k: v.to(device) for k, v in inputs.items()}
        return model(**inputs).logits[:, 0].float().tolist()

    def __call__(
        self,
        prompts: list,
        completions: list,
        completion_ids: list[list[int]],
        columns: dict[str, list] | None = None,
        references: list | None = None,
        **extra_kwargs: Any,
    ) -> torch.Tensor:
        """Rewards `[B, num_funcs]`. `columns` are the dataset columns (one value per completion); `extra_kwargs`
        are `trainer_state`, `log_extra` and `log_metric`."""
        columns = dict(columns or {})
        for key in list(columns):
            if key in RESERVED_REWARD_KWARGS or (references is not None and key == "references"):
                raise ValueError(
                    f"The dataset column {key!r} collides with an argument that the trainer passes to the reward "
                    "functions: rename it."
                )
        kwargs = {**columns, **extra_kwargs}
        if references is not None:
            kwargs["references"] = references
        batch = len(prompts)
        out = torch.full((batch, len(self.funcs)), math.nan)
        coroutines = []
        for i, (func, name, proc) in enumerate(zip(self.funcs, self.names, self.processing_classes)):
            if isinstance(func, nn.Module):
                out[:, i] = torch.tensor(
                    self._check(name, self._model_reward(func, proc, prompts, completions), batch)
                )
            elif is_async_callable(func):
                coroutines.append(
                    (i, name, func(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs))
                )
            else:
                result = func(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)
                out[:, i] = torch.tensor(self._check(name, result, batch))
        if coroutines:

            async def gather():
                return await asyncio.gather(*(c for _, _, c in coroutines))

            results = asyncio.run_coroutine_threadsafe(gather(), self._loop).result()
            for (i, name, _), result in zip(coroutines, results):
                out[:, i] = torch.tensor(self._check(name, result, batch))
        return out
