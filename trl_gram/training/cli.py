"""``trl-gram train`` and ``trl-gram self-train`` (``TrlParser``: flags or ``--config x.yaml``).

Examples::

    trl-gram train --config recipes/gram_v1_finetune.yaml
    trl-gram self-train --config recipes/gram_r2_cpu_smoke.yaml
    accelerate launch --config_file recipes/accelerate/deepspeed_zero3.yaml -m trl_gram.cli self-train --config recipes/gram_r2_llama32_3b.yaml
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

TRAIN_HELP = "Train a generative judge (reason / direct / pretrain) on preference pairs."
SELF_TRAIN_HELP = "Run the GRAM-R² pipeline: prover, initial judge, self-training rounds, final fine-tune."


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
    init_adapter: str | None = field(
        default=None,
        metadata={
            "help": "A LoRA adapter folder (adapter_config.json) to go on training, over the base model, instead of "
            "a new adapter (leave `use_peft` off: the adapter brings its own LoRA settings)."
        },
    )


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


def _trainable_adapter(base_path: str, adapter: str, training_args, peft_config):
    """The base model with the LoRA adapter folder ``adapter`` loaded trainable (``init_adapter``)."""
    from pathlib import Path

    from .stage_training import ModelSource

    if not (Path(adapter) / "adapter_config.json").is_file():
        raise ValueError(f"`init_adapter={adapter!r}` is not a LoRA adapter folder (no adapter_config.json in it).")
    if peft_config is not None:
        raise ValueError(
            "`init_adapter` goes on training an existing adapter; `use_peft` would add a new one on top: "
            "leave `use_peft` (and the lora_* settings) unset."
        )
    return ModelSource(base_path, training_args).load(Path(adapter), trainable=True)


def _parse(dataclass_types, argv, prog):
    from trl import TrlParser

    return TrlParser(dataclass_types, prog=prog).parse_args_and_config(argv)


def run_train(args) -> int:
    from trl import ModelConfig, get_peft_config

    from ..formats import load_pairs
    from .config import GramRewardConfig
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
    model, peft_config = _model_path(model_args), get_peft_config(model_args)
    if script_args.init_adapter:
        model = _trainable_adapter(model, script_args.init_adapter, training_args, peft_config)
        # the model and its LoRA are built here, not by the trainer
        training_args.model_init_kwargs, peft_config = None, None
    trainer = GramRewardTrainer(
        model,
        args=training_args,
        train_dataset=train,
        eval_dataset=eval_dataset,
        peft_config=peft_config,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(
        f"Judge saved to {training_args.output_dir} ({info.get('format')} data, {len(train)} rows)."
    )
    return 0


def run_self_train(args) -> int:
    from trl import ModelConfig, get_peft_config, get_quantization_config

    from ..formats import load_pairs
    from .config import GramRewardConfig
    from .judge_examples import as_unlabeled
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
