"""Shared pieces of the example scripts (`examples/ppo_with_gram.py`, `examples/grpo_with_gram.py`,
`examples/best_of_n.py`): `TrlParser` argument dataclasses for the prompts and the judge, and their loaders.

Everything defaults to offline: no dataset name means a few built-in prompts, no model path means the embedded
SmolLM2-135M-Instruct (`trl_gram.default_model`). A Hub name is only contacted when the user passes one.
"""

import os
from dataclasses import dataclass, field

import torch
from datasets import Dataset, load_dataset, load_from_disk

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
class JudgeArguments:
    judge_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Judge model (local folder or Hub id). Default: the embedded SmolLM2."}
    )
    judge_adapter: str | None = field(default=None, metadata={"help": "PEFT adapter to put on the judge."})
    judge_mode: str = field(
        default="direct",
        metadata={
            "help": "'direct' (label read in one forward pass, GRAM v1 style) or 'reason' (rationale first, GRAM-R2).",
            "choices": ["direct", "reason"],
        },
    )
    judge_max_new_tokens: int = field(default=256, metadata={"help": "Rationale length cap (reason mode)."})
    judge_swap: str = field(
        default="both",
        metadata={
            "help": "Position debiasing: both orders, one random order, or none.",
            "choices": ["both", "random", "none"],
        },
    )
    judge_votes: int = field(default=1, metadata={"help": "Sampled rationales per order (reason mode)."})
    judge_load_in_4bit: bool = field(default=False, metadata={"help": "Load the judge in 4-bit NF4 (bitsandbytes)."})
    judge_device: str | None = field(
        default=None, metadata={"help": "Device of the judge (e.g. 'cuda:1'). Default: this process's device."}
    )
    judge_dtype: str = field(default="auto", metadata={"help": "Judge dtype: 'auto', 'bfloat16', 'float32', ..."})
    judge_backend: str = field(
        default="transformers",
        metadata={
            "help": "Judge engine ('vllm': vllm.LLM; 'openai': the engines of --judge_engine_urls).",
            "choices": ["auto", "transformers", "vllm", "openai"],
        },
    )
    judge_engine_urls: list[str] = field(
        default_factory=list, metadata={"help": "judge_backend openai: the engines' base URLs (e.g. vllm serve)."}
    )
    judge_served_model_name: str | None = field(
        default=None, metadata={"help": "judge_backend openai: the engines' model name (default: the judge model)."}
    )
    judge_tensor_parallel_size: int = field(default=1, metadata={"help": "GPUs one vLLM judge is split over."})
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


def load_judge(args: JudgeArguments, device=None, **config_fields):
    """A `GramJudge` from the judge arguments (`device` defaults to this process's device; `judge_backend="vllm"`
    loads it into `vllm.LLM`)."""
    from accelerate import PartialState

    from trl_gram.judge import load_judge as load

    if args.judge_backend == "vllm":
        placement = dict(tensor_parallel_size=args.judge_tensor_parallel_size)
    elif args.judge_backend == "openai":
        placement = dict(engine_urls=args.judge_engine_urls, served_model_name=args.judge_served_model_name)
    else:
        placement = dict(device=args.judge_device or device or PartialState().device)
    return load(
        args.judge_model_name_or_path,
        backend=args.judge_backend,
        adapter=args.judge_adapter,
        load_in_4bit=args.judge_load_in_4bit,
        dtype=args.judge_dtype,
        **placement,
        mode=args.judge_mode,
        swap=args.judge_swap,
        votes=args.judge_votes,
        max_new_tokens=args.judge_max_new_tokens,
        **config_fields,
    )


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
