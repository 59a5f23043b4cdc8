"""The models of a [`GramSelfTrainer`] run and the in-process training of one stage.

[`ModelSource`] gives fresh copies of the base model and loads stage checkpoints (full models or LoRA adapters over the
base). [`train_stage`] trains one stage's judge with [`GramRewardTrainer`] and marks its checkpoint finished
(``checkpoint/.done``); an interrupted training resumes from the last ``Trainer`` checkpoint under ``<stage>/trainer``.
"""

from __future__ import annotations

import copy
import weakref
from pathlib import Path

from datasets import Dataset
from transformers import AutoModelForCausalLM
from transformers.trainer_utils import IntervalStrategy, get_last_checkpoint

from .config import GramRewardConfig

DONE = ".done"


class ModelSource:
    """Where the models of a run come from.

    Args:
        base (`str` or `PreTrainedModel`):
            A path/id (reloaded whenever a fresh copy is needed) or a loaded causal LM (deep-copied).
        args ([`GramRewardConfig`]):
            The run's training arguments (``model_init_kwargs``, ``device``).
        quantization_config (*optional*):
            Applied when the base model is loaded from a path.
    """

    def __init__(self, base, args: GramRewardConfig, quantization_config=None):
        self.base, self.args, self.quantization_config = base, args, quantization_config
        self._paths: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loaded model -> its checkpoint

    def path_of(self, model) -> str | None:
        """The checkpoint folder ``model`` was loaded from by [`~ModelSource.load`] (``None`` for other models)."""
        try:
            return self._paths.get(model)
        except TypeError:  # not weak-referenceable
            return None

    def fresh(self):
        """A fresh copy of the base model."""
        if isinstance(self.base, str):
            kwargs = dict(self.args.model_init_kwargs or {})
            if self.quantization_config is not None:
                kwargs["quantization_config"] = self.quantization_config
            return AutoModelForCausalLM.from_pretrained(self.base, **kwargs)
        return copy.deepcopy(self.base)

    def load(self, path: Path, trainable: bool = False):
        """A stage checkpoint: a LoRA adapter (over a fresh base) or a full model folder."""
        if (path / "adapter_config.json").is_file():
            from peft import PeftModel

            model = PeftModel.from_pretrained(self.fresh(), str(path), is_trainable=trainable)
        else:
            model = AutoModelForCausalLM.from_pretrained(str(path), **dict(self.args.model_init_kwargs or {}))
        self._paths[model] = str(path)
        return model

    def on_device(self, model):
        """``model`` on the run's device (unless it is dispatched or 4-bit), in eval mode."""
        if not getattr(model, "hf_device_map", None) and not getattr(model, "is_loaded_in_4bit", False):
            model = model.to(self.args.device)
        return model.eval()


def without_eval(args: GramRewardConfig) -> GramRewardConfig:
    """``args`` with evaluation during training turned off (stages evaluate after training)."""
    args.eval_strategy = IntervalStrategy.NO
    args.do_eval = False
    args.load_best_model_at_end = False
    return args


def is_trained(stage: Path) -> bool:
    return (stage / "checkpoint" / DONE).is_file()


def keep_start(model, tokenizer, stage: Path):
    """A stage with no training rows keeps its starting model as its checkpoint (so later stages run as usual)."""
    ckpt = stage / "checkpoint"
    model.save_pretrained(str(ckpt))
    tokenizer.save_pretrained(str(ckpt))
    (ckpt / DONE).write_text("no rows: starting model kept\n")
    return model


def train_stage(
    start, rows: list[dict], stage: Path, args: GramRewardConfig, tokenizer, template, peft_config=None, callbacks=None
):
    """Train the judge of one stage from ``start`` on ``rows``; returns the trained (unwrapped) model.

    Args:
        start (`PreTrainedModel`):
            The starting model; a model that already carries an adapter is trained as is (no new `peft_config`).
        rows (`list[dict]`):
            Training rows (``prompt``/``response_a``/``response_b``/``label``[/``rationale``]).
        stage (`Path`):
            The stage folder: ``trainer/`` holds the resumable ``Trainer`` state, ``checkpoint/`` the result.
        args ([`GramRewardConfig`]):
            Training arguments (copied; output folder and evaluation are set per stage).
        tokenizer, template, peft_config, callbacks:
            Passed to [`GramRewardTrainer`].
    """
    from .trainer import GramRewardTrainer

    targs = without_eval(copy.deepcopy(args))
    targs.output_dir = str(stage / "trainer")
    trainer = GramRewardTrainer(
        start,
        targs,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        template=template,
        peft_config=peft_config if not hasattr(start, "peft_config") else None,
        callbacks=callbacks,
    )
    last = get_last_checkpoint(targs.output_dir) if Path(targs.output_dir).is_dir() else None
    trainer.train(resume_from_checkpoint=last)
    ckpt = stage / "checkpoint"
    trainer.save_model(str(ckpt))
    tokenizer.save_pretrained(str(ckpt))
    (ckpt / DONE).write_text("finished\n")
    return trainer.accelerator.unwrap_model(trainer.model)
