"""Shared pieces of the example scripts (`examples/ppo_with_gram.py`, `examples/grpo_with_gram.py`,
`examples/best_of_n.py`): `TrlParser` argument dataclasses for the prompts and the judge, their loaders, and the
teardown of a multi-process run (`end_distributed`).

Everything defaults to offline: no dataset name means a few built-in prompts, no model path means the embedded
SmolLM2-135M-Instruct (`trl_gram.default_model`). A Hub name is only contacted when the user passes one.
"""

import gc
import os
from dataclasses import dataclass, field

import torch
from datasets import Dataset, load_dataset, load_from_disk

from trl_gram.judge.spec import judge_arguments

DEMO_PROMPTS = [
    "Give me one tip to sleep better.",
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a prime number is in one sentence.",
    "Suggest a name for a friendly robot.",
    "How do I boil an egg?",
    "Why is the sky blue? Answer briefly.",
    "Name three fruits that are red.",
]


@dataclass
class PromptArguments:
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Prompts: a local .json/.jsonl/.csv/.parquet file, a `save_to_disk` folder, or a Hub dataset name "
            "(needs network). Default: 8 built-in prompts."
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    dataset_split: str = field(default="train", metadata={"help": "Dataset split."})
    prompt_column: str = field(default="prompt", metadata={"help": "Column holding the prompts (text or chat)."})
    max_prompts: int | None = field(default=None, metadata={"help": "Use only the first N prompts."})
    chat_prompts: bool = field(
        default=True,
        metadata={"help": "Send plain-text prompts as a user turn when the policy's tokenizer has a chat template."},
    )


@dataclass
class JudgeArguments(judge_arguments()):
    """The judge of the example scripts: every [`~trl_gram.judge.JudgeSpec`] field prefixed `judge_` (`--judge_model`,
    `--judge_mode`, `--judge_backend`, ...; `--judge_model_name_or_path` still works), plus the reward scale.
    `args.spec()` is the [`~trl_gram.judge.JudgeSpec`]; load it with [`~trl_gram.judge.load_judge`]."""

    reward_output: str = field(
        default="centered",
        metadata={
            "help": "Reward scale: 'prob' (win probability), 'centered' (prob - 0.5) or 'logit'.",
            "choices": ["prob", "centered", "logit"],
        },
    )


def default_model(state=None) -> str:
    """Path of the embedded SmolLM2 (converted once; the main process first under `accelerate launch`)."""
    from accelerate import PartialState

    from trl_gram.default_model import default_model_path

    with (state or PartialState()).main_process_first():
        return default_model_path()


def load_prompt_dataset(args: PromptArguments, tokenizer=None) -> Dataset:
    """The prompts as a `Dataset` with a `prompt` column (plus the file's other columns)."""
    name = args.dataset_name
    if name is None:
        dataset = Dataset.from_dict({"prompt": DEMO_PROMPTS})
    elif os.path.isdir(name):
        dataset = load_from_disk(name)
    elif os.path.isfile(name):
        ext = name.rsplit(".", 1)[-1].lower()
        builder = {"jsonl": "json", "json": "json", "csv": "csv", "parquet": "parquet"}.get(ext)
        if builder is None:
            raise ValueError(f"`dataset_name={name!r}`: unsupported file type {ext!r} (json, jsonl, csv, parquet).")
        dataset = load_dataset(builder, data_files=name, split="train")
    else:
        dataset = load_dataset(name, args.dataset_config, split=args.dataset_split)
    if hasattr(dataset, "keys"):  # a DatasetDict saved to disk
        dataset = dataset[args.dataset_split]
    if args.prompt_column not in dataset.column_names:
        raise ValueError(f"`prompt_column={args.prompt_column!r}` is not a column of {dataset.column_names}.")
    if args.prompt_column != "prompt":
        if "prompt" in dataset.column_names:
            dataset = dataset.remove_columns("prompt")
        dataset = dataset.rename_column(args.prompt_column, "prompt")
    if args.max_prompts is not None:
        dataset = dataset.select(range(min(args.max_prompts, len(dataset))))
    if len(dataset) == 0:
        raise ValueError(f"`dataset_name={name!r}` has no prompts.")
    chat = args.chat_prompts and tokenizer is not None and getattr(tokenizer, "chat_template", None)
    if chat and isinstance(dataset[0]["prompt"], str):
        dataset = dataset.map(lambda row: {"prompt": [{"role": "user", "content": row["prompt"]}]})
    return dataset


def judge_spec(args: JudgeArguments, device=None):
    """The [`~trl_gram.judge.JudgeSpec`] of the judge arguments, on this process's device unless `--judge_device`
    names one (each process of `accelerate launch` judges on its own device)."""
    from accelerate import PartialState

    spec = args.spec()
    if spec.device is None:
        spec.device = str(device or PartialState().device)
    return spec


def load_policy(model_args, device=None):
    """`(model, tokenizer, path)` from TRL's `ModelConfig` (4/8-bit through its quantization fields); the embedded
    SmolLM2 when `model_name_or_path` is unset."""
    from accelerate import PartialState
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.utils import get_quantization_config

    state = PartialState()
    path = model_args.model_name_or_path or default_model(state)
    kwargs = dict(revision=model_args.model_revision, attn_implementation=model_args.attn_implementation)
    if model_args.dtype not in (None, "auto"):
        kwargs["dtype"] = getattr(torch, model_args.dtype)
    quantization_config = get_quantization_config(model_args)
    if quantization_config is not None:
        kwargs.update(quantization_config=quantization_config, device_map={"": str(device or state.device)})
    tokenizer = AutoTokenizer.from_pretrained(path, revision=model_args.model_revision)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    return model, tokenizer, path


def reward_curve(log_history: list[dict], key: str = "reward") -> list[float]:
    """The logged values of `key`, in order (entries without it, or with None, skipped)."""
    return [h[key] for h in log_history if h.get(key) is not None]


def end_distributed(trainer=None) -> None:
    """Tear a multi-process run's process group down, in order, while every rank is still alive; a no-op in a single
    process. Call it last in a script started by `accelerate launch`.

    Left to interpreter shutdown, a gloo worker thread can abort a rank after its work is done ("terminate called
    without an active exception", exit -6), or hang it: the DDP wrapper's reducer owns a gloo group whose destructor
    joins a worker thread. So the trainer's DDP wrapper is released first (its reducer goes with it), the ranks meet at a
    barrier, and only then is the default group destroyed.
    """
    import torch.distributed as dist
    from accelerate import PartialState

    if not (dist.is_available() and dist.is_initialized()):
        return
    state = PartialState()
    state.wait_for_everyone()
    if trainer is not None:
        trainer.model_wrapped = trainer.model  # drop the DDP wrapper, and with it the reducer's process group
        trainer.accelerator.free_memory()
    gc.collect()
    state.wait_for_everyone()
    state.destroy_process_group()
