"""Runs the experiment: splits, the base policy's score, the judge, then every arm of the first seed before any arm
of the next one. Each finished piece is kept under ``output_dir`` and skipped on rerun."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from .arms import run_arm
from .config import MiniatureConfig
from .evaluation import score_policy
from .judge import measure_judge, train_judge
from .task import make_splits

logger = logging.getLogger(__name__)


def base_path_of(cfg: MiniatureConfig) -> str:
    if cfg.judge_name_or_path is not None:
        return cfg.judge_name_or_path
    from trl_gram.default_model import default_model_path

    return default_model_path()


def base_policy_eval(cfg: MiniatureConfig, splits: dict, base_path: str, root: Path) -> dict:
    """The oracle accuracy of the untrained policy on the held-out prompts (step 0 of every arm)."""
    path = root / "base_eval.json"
    if path.is_file() and "answers" in json.loads(path.read_text()):
        return json.loads(path.read_text())
    policy_path = cfg.policy_name_or_path or base_path
    row = score_policy(
        AutoModelForCausalLM.from_pretrained(policy_path),
        AutoTokenizer.from_pretrained(policy_path),
        splits["eval"],
        cfg.eval_max_new_tokens,
    )
    path.write_text(json.dumps(row, indent=2) + "\n")
    return row


def run(
    cfg: MiniatureConfig,
    only_arms: list[str] | None = None,
    only_seeds: list[int] | None = None,
    judge_eval: tuple[str, ...] = ("trained", "zero_shot"),
) -> dict:
    """Runs (or resumes) the recipe and returns ``{"judge": ..., "base": ..., "arms": {arm: {seed: result}}}``."""
    root = Path(cfg.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    splits = make_splits(cfg.sizes, cfg.split_seed, cfg.digits)
    (root / "splits.json").write_text(json.dumps(splits) + "\n")
    base_path = base_path_of(cfg)
    base = base_policy_eval(cfg, splits, base_path, root)
    logger.info("base policy oracle accuracy: %.3f", base["accuracy"])
    selected = [a for a in cfg.arms if only_arms is None or a in only_arms]
    needs_judge = bool(selected)  # every arm's evaluations use the trained judge as a yardstick
    judge = train_judge(cfg, splits, base_path, root / "judge") if needs_judge else None
    if judge is not None:
        logger.info("judge trained in %.0f s", judge["seconds"]["train"])
    arms: dict = {}
    for seed in cfg.seeds:
        if only_seeds is not None and seed not in only_seeds:
            continue
        for arm in cfg.arms:
            if only_arms is not None and arm not in only_arms:
                continue
            out = root / f"seed{seed}" / arm
            if (out / "DONE").is_file():
                result = json.loads((out / "result.json").read_text())
            else:
                start = time.perf_counter()
                logger.info("arm %s seed %d ...", arm, seed)
                result = run_arm(arm, seed, cfg, splits, base_path, root / "judge", out, base)
                logger.info("arm %s seed %d done in %.0f s", arm, seed, time.perf_counter() - start)
            arms.setdefault(arm, {})[str(seed)] = result
    for which in judge_eval:
        if which == "trained" and not (root / "judge" / "judge.json").is_file():
            continue  # no trained judge yet (no arm of this call needed one)
        metrics = measure_judge(which, cfg, splits, base_path, root / "judge")
        logger.info("%s judge: held-out pair accuracy %.3f", which, metrics["accuracy"])
    judge = _judge(root / "judge")
    return {"judge": judge, "base": base, "arms": arms, "config": cfg.to_dict()}


def collect(root: str | Path) -> dict:
    """Everything finished under a run folder (for the report), without running anything."""
    root = Path(root)
    out = {
        "config": json.loads((root / "config.json").read_text()),
        "base": json.loads((root / "base_eval.json").read_text()),
        "judge": _judge(root / "judge"),
        "arms": {},
    }
    for done in sorted(root.glob("seed*/*/DONE")):
        result = json.loads((done.parent / "result.json").read_text())
        out["arms"].setdefault(result["arm"], {})[str(result["seed"])] = result
    return out


def _judge(d: Path) -> dict | None:
    if not (d / "judge.json").is_file():
        return None
    judge = json.loads((d / "judge.json").read_text())
    for which in ("trained", "zero_shot"):
        if (d / f"{which}.json").is_file():
            judge[which] = json.loads((d / f"{which}.json").read_text())
    return judge
