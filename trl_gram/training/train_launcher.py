"""Runs one training of [`GramSelfTrainer`] in another process: ``<train_command> -m trl_gram.cli train --config
<stage>/train.yaml`` (e.g. ``accelerate launch --config_file ...`` to train on several accelerators).

The stage's rows go to ``<stage>/train.jsonl``; ``train.yaml`` holds every [`GramRewardConfig`] field that differs
from its default, the caller's extra keys (e.g. the CLI's model arguments) and the stage's model, data and output
folder. The checkpoint is marked finished (``checkpoint/.done``) once the process exits cleanly.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys
from pathlib import Path

from transformers.utils import logging

from .config import GramRewardConfig
from .run_folder import write_jsonl

logger = logging.get_logger(__name__)

_NOT_COPIED = ("output_dir", "logging_dir", "hub_token", "resume_from_checkpoint")


def changed_fields(args: GramRewardConfig) -> dict:
    """The fields of ``args`` that differ from [`GramRewardConfig`]'s defaults (tokens unmasked)."""
    defaults = {
        f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        for f in dataclasses.fields(GramRewardConfig)
        if f.init
    }
    values = args.to_dict()
    values.update({k: getattr(args, k) for k in values if k.endswith("_token")})  # to_dict masks these
    return {
        k: v
        for k, v in values.items()
        if k in defaults and v != defaults[k] and k not in _NOT_COPIED and not k.startswith("_")
    }


def train_config(
    args: GramRewardConfig, model: str, stage: Path, check_rationale_label: bool, extra: dict | None = None
) -> dict:
    """The ``train.yaml`` content of one stage's training from ``model``."""
    config = {
        **changed_fields(args),
        **(extra or {}),
        "model_name_or_path": str(model),
        "dataset_name": str(stage / "train.jsonl"),
        "output_dir": str(stage / "checkpoint"),
        "eval_strategy": "no",
        "check_rationale_label": check_rationale_label,
    }
    if isinstance(args.template, str) or args.template is None:
        config["template"] = args.template
    return config


def launch_training(train_command: str, rows: list[dict], stage: Path, config: dict) -> None:
    """Write the stage's rows and ``train.yaml``, run the training process, and mark its checkpoint finished.

    Args:
        train_command (`str`):
            The launcher, e.g. ``"python"`` or ``"accelerate launch --config_file multi_gpu.yaml"``.
        rows (`list[dict]`):
            Training rows of the stage.
        stage (`Path`):
            The stage folder.
        config (`dict`):
            The training settings (see [`train_config`]).
    """
    import yaml

    write_jsonl(stage / "train.jsonl", rows)
    (stage / "train.yaml").write_text(yaml.safe_dump(config, sort_keys=True))
    cmd = shlex.split(train_command) + ["-m", "trl_gram.cli", "train", "--config", str(stage / "train.yaml")]
    logger.warning(f"Launching: {' '.join(cmd)}")
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    (stage / "checkpoint" / ".done").write_text("finished\n")
