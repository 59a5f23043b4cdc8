"""``trl-gram train``, ``trl-gram self-train`` and ``trl-gram eval`` (``TrlParser``: flags or ``--config x.yaml``).

Examples::

    trl-gram train --config recipes/gram_r2_cpu_smoke.yaml
    trl-gram self-train --config recipes/gram_r2_self_train_cpu_smoke.yaml
    trl-gram eval --data ../shared/data/judgebench_gpt.json --mode direct --max_samples 100
    accelerate launch --config_file recipes/accelerate/zero3.yaml -m trl_gram.cli train --config recipes/...yaml
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

TRAIN_HELP = "Train a generative judge (reason / direct / pretrain) on preference pairs."
SELF_TRAIN_HELP = "Run the GRAM-R² pipeline: prover, initial judge, self-training rounds, final fine-tune."
EVAL_HELP = "Evaluate a judge on pairwise data: accuracy, swap agreement, parse failures (per subset)."


@dataclass
class TrainScriptArguments:
    """Data of ``trl-gram train``."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Training pairs: a file (.json/.jsonl[.gz]/.parquet/.csv, hh-rlhf/PandaLM/JudgeBench or "
            "trainer layouts), a save_to_disk folder, or a Hub dataset id (needs network)."
        },
    )
    dataset_train_split: str = field(default="train", metadata={"help": "Split of a Hub/saved dataset."})
    dataset_select: str | None = field(default=None, metadata={"help": "Rows 'start:stop' of the training file."})
    eval_dataset_name: str | None = field(default=None, metadata={"help": "Held-out pairs (same forms)."})
    eval_dataset_select: str | None = field(default=None, metadata={"help": "Rows 'start:stop' of the eval file."})
    eval_split: str = field(default="train", metadata={"help": "Split of a Hub/saved eval dataset."})


@dataclass
class SelfTrainScriptArguments:
    """Data of ``trl-gram self-train`` (each a path, with an optional 'start:stop' row slice)."""

    labeled_data: str | None = field(default=None, metadata={"help": "Labeled pairs for the initial judge."})
    labeled_select: str | None = field(default=None, metadata={"help": "Rows 'start:stop' of labeled_data."})
    unlabeled_data: str | None = field(
        default=None, metadata={"help": "Unlabeled pairs (labels in the file, if any, are dropped)."}
    )
    unlabeled_select: str | None = field(default=None, metadata={"help": "Rows 'start:stop' of unlabeled_data."})
    seed_data: str | None = field(default=None, metadata={"help": "Pairs with (human) rationales."})
    seed_select: str | None = field(default=None, metadata={"help": "Rows 'start:stop' of seed_data."})
    eval_data: str | None = field(default=None, metadata={"help": "Held-out labeled pairs."})
    eval_select: str | None = field(default=None, metadata={"help": "Rows 'start:stop' of eval_data."})


@dataclass
class EvalArguments:
    """Options of ``trl-gram eval``."""

    data: list[str] = field(default_factory=list, metadata={"help": "Pairwise data file(s)/folder(s)/Hub ids."})
    select: str | None = field(default=None, metadata={"help": "Rows 'start:stop' of every data set."})
    max_samples: int | None = field(default=None, metadata={"help": "Judge at most this many pairs per data set."})
    ties: str = field(
        default="drop", metadata={"help": "PandaLM ties: drop, or keep and report.", "choices": ["drop", "keep"]}
    )
    judge_model: str | None = field(
        default=None, metadata={"help": "Judge model path/id (default: embedded SmolLM2)."}
    )
    adapter: str | None = field(default=None, metadata={"help": "PEFT adapter on the judge."})
    load_in_4bit: bool = field(default=False, metadata={"help": "Load the judge in 4 bits (bitsandbytes NF4)."})
    mode: str = field(default="reason", metadata={"help": "Judge mode.", "choices": ["reason", "direct"]})
    template: str | None = field(default=None, metadata={"help": "Template name (gram-r2, gram-v1, gram-r2-direct)."})
    swap: str = field(default="both", metadata={"help": "Orders judged.", "choices": ["both", "random", "none"]})
    votes: int = field(default=1, metadata={"help": "Rationales per order (1: greedy)."})
    max_new_tokens: int = field(default=512, metadata={"help": "Rationale length cap."})
    max_length: int = field(default=4096, metadata={"help": "Prompt length cap (responses are cut to fit)."})
    token_budget: int = field(default=32768, metadata={"help": "rows x padded length per batch."})
    reason_prefix: str = field(default="", metadata={"help": "Text prefilled at the start of the judge's reply."})
    seed: int = field(default=0, metadata={"help": "Seed (sampling, swap='random')."})
    output_json: str | None = field(default=None, metadata={"help": "Write the metrics to this JSON file."})
    backend: str = field(
        default="transformers",
        metadata={"help": "Judge engine (vllm: `vllm.LLM`).", "choices": ["auto", "transformers", "vllm"]},
    )
    tensor_parallel_size: int = field(default=1, metadata={"help": "GPUs one vLLM engine is split over."})


def add_parser(subparsers) -> None:
    for name, help_text, handler in (
        ("train", TRAIN_HELP, run_train),
        ("self-train", SELF_TRAIN_HELP, run_self_train),
        ("eval", EVAL_HELP, run_eval),
    ):
        sub = subparsers.add_parser(name, help=help_text, add_help=False)
        sub.set_defaults(_raw=True, _run=handler)


def run(args):  # the module contract; every subparser above binds its own handler
    return args._run(args)


def _model_init_kwargs(model_args, training_args) -> dict:
    import torch
    from trl import get_quantization_config

    kwargs = dict(revision=model_args.model_revision, attn_implementation=model_args.attn_implementation)
    dtype = model_args.dtype
    kwargs["dtype"] = dtype if dtype in ("auto", None) else getattr(torch, dtype)
    quantization = get_quantization_config(model_args)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": training_args.device}
    kwargs.update(training_args.model_init_kwargs or {})
    return {k: v for k, v in kwargs.items() if v is not None}


def _model_path(model_args) -> str:
    if model_args.model_name_or_path:
        return model_args.model_name_or_path
    from ..default_model import default_model_path

    return default_model_path()


def _parse(dataclass_types, argv, prog):
    from trl import TrlParser

    return TrlParser(dataclass_types, prog=prog).parse_args_and_config(argv)


def run_train(args) -> int:
    from trl import ModelConfig, get_peft_config

    from .config import GramRewardConfig
    from .datasets import load_pairs
    from .trainer import GramRewardTrainer

    script_args, training_args, model_args = _parse(
        (TrainScriptArguments, GramRewardConfig, ModelConfig), args.argv, "trl-gram train"
    )
    if not script_args.dataset_name:
        raise ValueError("`dataset_name` (the training pairs) is required.")
    train, info = load_pairs(
        script_args.dataset_name, script_args.dataset_train_split, select=script_args.dataset_select
    )
    eval_dataset = None
    if script_args.eval_dataset_name:
        eval_dataset, _ = load_pairs(
            script_args.eval_dataset_name, script_args.eval_split, select=script_args.eval_dataset_select
        )
    training_args.model_init_kwargs = _model_init_kwargs(model_args, training_args)
    trainer = GramRewardTrainer(
        _model_path(model_args),
        args=training_args,
        train_dataset=train,
        eval_dataset=eval_dataset,
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(
        f"Judge saved to {training_args.output_dir} ({info.get('format')} data, {len(train)} rows)."
    )
    return 0


def run_self_train(args) -> int:
    from trl import ModelConfig, get_peft_config, get_quantization_config

    from .config import GramRewardConfig
    from .datasets import as_unlabeled, load_pairs
    from .self_training import GramSelfTrainer, SelfTrainingConfig

    script_args, sargs, training_args, model_args = _parse(
        (SelfTrainScriptArguments, SelfTrainingConfig, GramRewardConfig, ModelConfig),
        args.argv,
        "trl-gram self-train",
    )

    def load(path, select):
        return load_pairs(path, select=select)[0] if path else None

    if not script_args.labeled_data:
        raise ValueError("`labeled_data` is required.")
    unlabeled = load(script_args.unlabeled_data, script_args.unlabeled_select)
    if unlabeled is not None and "response_a" not in unlabeled.column_names:
        unlabeled = as_unlabeled(unlabeled, seed=training_args.seed)
    init_kwargs = _model_init_kwargs(model_args, training_args)
    training_args.model_init_kwargs = {k: v for k, v in init_kwargs.items() if k != "quantization_config"}
    extra = {k: v for k, v in vars(model_args).items() if k != "model_name_or_path" and v is not None}
    trainer = GramSelfTrainer(
        _model_path(model_args),
        training_args,
        sargs,
        labeled_dataset=load(script_args.labeled_data, script_args.labeled_select),
        unlabeled_dataset=unlabeled,
        seed_dataset=load(script_args.seed_data, script_args.seed_select),
        eval_dataset=load(script_args.eval_data, script_args.eval_select),
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
        train_config_extra=extra,
    )
    history = trainer.run()
    for h in history:
        print(json.dumps({k: v for k, v in h.items() if k != "checkpoint"}))
    print(f"Final judge: {trainer.final_model_path}")
    return 0


def run_eval(args) -> int:
    from ..judge import load_judge
    from .data import validate_pairs
    from .datasets import load_pairs
    from .evaluation import format_metrics, judge_metrics

    (eargs,) = _parse((EvalArguments,), args.argv, "trl-gram eval")
    if not eargs.data:
        raise ValueError("Pass at least one `--data` file.")
    vllm_only = dict(tensor_parallel_size=eargs.tensor_parallel_size) if eargs.backend == "vllm" else {}
    judge = load_judge(
        eargs.judge_model,
        backend=eargs.backend,
        adapter=eargs.adapter,
        load_in_4bit=eargs.load_in_4bit,
        **vllm_only,
        mode=eargs.mode,
        template=eargs.template,
        swap=eargs.swap,
        votes=eargs.votes,
        max_new_tokens=eargs.max_new_tokens,
        max_length=eargs.max_length,
        token_budget=eargs.token_budget,
        reason_prefix=eargs.reason_prefix,
        seed=eargs.seed,
        show_progress=True,
    )
    results = {}
    for path in eargs.data:
        ds, info = load_pairs(path, ties=eargs.ties, select=eargs.select)
        if "tie" in ds.column_names:
            ds = ds.filter(lambda row: not row["tie"])
        if eargs.max_samples is not None:
            ds = ds.select(range(min(eargs.max_samples, len(ds))))
        pairs, skipped = validate_pairs(ds, label_words=judge.template.label_words, on_invalid="skip", name=path)
        subsets = [ds[p["row"]]["subset"] for p in pairs] if "subset" in ds.column_names else None
        metrics = judge_metrics(judge, pairs, swap=eargs.swap, subsets=subsets, show_progress=True)
        metrics.update({"ties": info.get("ties", 0), "skipped_rows": sum(skipped.values())})
        results[path] = metrics
        print(f"== {path} ({info.get('format')}) ==\n{format_metrics(metrics)}")
    if eargs.output_json:
        Path(eargs.output_json).write_text(json.dumps(results, indent=2) + "\n")
    return 0
