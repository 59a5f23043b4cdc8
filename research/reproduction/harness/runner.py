"""``run_experiment``: every task × seed × arm of a [`ReproductionConfig`], resumable.

Layout of ``output_dir``::

    config.json                       the recipe as run
    base_model/                       the random smoke model (only with ``tiny_model``)
    speed/result.json                 LoRA vs full fine-tuning, seconds per step (``speed_check_steps > 0``)
    {task}/seed{s}/splits.json        pair ids and fingerprints of the slices
    {task}/{arm}/seed{s}/             the arm's working files, result.json, and DONE (written last)

An arm folder with ``DONE`` is never recomputed; an unfinished one resumes from its finished stages (the trainer's
own stage summaries and checkpoints).
"""

from __future__ import annotations

import time
from pathlib import Path

from datasets import Dataset
from tqdm.auto import tqdm
from transformers import AutoTokenizer
from transformers.utils import logging

from trl_gram.default_model import default_model_path
from trl_gram.training.run_folder import read_json, write_json

from .arms import ArmContext, arm_mode, run_adapt, run_trained, run_zero_shot
from .config import ReproductionConfig
from .splits import fingerprint, load_pool, make_splits, sample_eval
from .synthetic import synthetic_pool

logger = logging.get_logger(__name__)

DONE = "DONE"
ARM_ORDER = (
    "zero_shot_direct",
    "zero_shot_reason",
    "direct",
    "reason",
    "reason_oracle",
    "reason_oracle_st",
    "reason_st",
    "reason_st_nodenoise",
    "direct_st",
    "adapt",
)


def is_done(d: Path) -> bool:
    return (d / DONE).is_file()


def build_tiny_model(source: str, fields: dict, out: Path) -> str:
    """A random Llama of the shape ``fields`` with ``source``'s tokenizer, saved under ``out`` (smoke runs)."""
    if (out / DONE).is_file():
        return str(out)
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(source)
    fields = dict(fields)
    seed = fields.pop("seed", 0)
    hidden = fields.pop("hidden_size", 64)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=fields.pop("intermediate_size", hidden * 2),
        num_hidden_layers=fields.pop("num_hidden_layers", 2),
        num_attention_heads=fields.pop("num_attention_heads", 4),
        num_key_value_heads=fields.pop("num_key_value_heads", 2),
        max_position_embeddings=fields.pop("max_position_embeddings", 2048),
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        tie_word_embeddings=fields.pop("tie_word_embeddings", True),
        **fields,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    (out / DONE).write_text("built\n")
    return str(out)


def task_pool(cfg: ReproductionConfig, task: str) -> Dataset:
    if task == "hh":
        if not cfg.hh_path:
            raise ValueError("The `hh` task reads `hh_path`: name the hh-rlhf file in the config.")
        return load_pool(cfg.hh_path)
    sizes = cfg.task_sizes("synthetic")
    need = sizes["test"] + sizes["labeled"] + cfg.rounds * sizes["unlabeled_per_round"]
    return synthetic_pool(need + 8, seed=cfg.test_seed, digits=cfg.synthetic_digits, rule=cfg.synthetic_rule)


def ood_sets(cfg: ReproductionConfig) -> dict[str, Dataset]:
    out = {}
    for name, path in (("pandalm", cfg.pandalm_path), ("judgebench", cfg.judgebench_path)):
        if path and cfg.ood_max_pairs > 0:
            # JudgeBench pairs are long (code, proofs): sampled unfiltered, the judge truncates them to max_length.
            limit = cfg.ood_max_chars if name == "pandalm" else None
            out[name] = sample_eval(load_pool(path), cfg.ood_max_pairs, cfg.test_seed, limit)
    return out


def adaptation_data(cfg: ReproductionConfig, seed: int) -> tuple[Dataset, Dataset]:
    """(labeled pool of the largest budget, test slice) of the adaptation domain; the test slice ignores ``seed``."""
    budget = max(cfg.adapt_budgets)
    if cfg.adapt_domain == "pandalm":
        if not cfg.pandalm_path:
            raise ValueError(
                "`adapt` on the `pandalm` domain reads `pandalm_path`: name the PandaLM file in the config."
            )
        pool = load_pool(cfg.pandalm_path)
    else:
        size = cfg.adapt_test + budget + 8
        rule = cfg.adapt_synthetic_rule()
        pool = synthetic_pool(size, seed=cfg.test_seed + 1, digits=cfg.synthetic_digits, rule=rule)
    s = make_splits(
        pool,
        labeled=budget,
        unlabeled_per_round=0,
        rounds=0,
        test=cfg.adapt_test,
        seed=seed,
        test_seed=cfg.test_seed,
        max_chars=cfg.ood_max_chars if cfg.adapt_domain == "pandalm" else None,
    )
    return s.labeled, s.test


def make_context(cfg: ReproductionConfig, task: str, seed: int, base_path: str, root: Path, ood) -> ArmContext:
    sizes = cfg.task_sizes(task)
    splits = make_splits(
        task_pool(cfg, task),
        labeled=sizes["labeled"],
        unlabeled_per_round=sizes["unlabeled_per_round"],
        rounds=cfg.rounds,
        test=sizes["test"],
        seed=seed,
        test_seed=cfg.test_seed,
        max_chars=cfg.max_chars if task == "hh" else None,
    )
    task_dir = root / task
    (task_dir / f"seed{seed}").mkdir(parents=True, exist_ok=True)
    write_json(task_dir / f"seed{seed}" / "splits.json", {**splits.info, "ids": splits.ids()})
    return ArmContext(
        cfg=cfg,
        task=task,
        seed=seed,
        base_path=base_path,
        task_dir=task_dir,
        labeled=splits.labeled,
        unlabeled=splits.unlabeled_pool(),
        test=splits.test,
        ood=ood if task == "hh" else {},
        test_fingerprint=splits.info["test_fingerprint"],
    )


def adaptation_starts(ctx: ArmContext) -> dict[str, str]:
    """Checkpoint of each configured adaptation start point; a start whose source arm is not finished for this seed
    is left out (with a warning), ``base`` is always there."""
    source = ctx.cfg.adapt_source_arm
    arms = {"self_trained": source, "labeled_only": arm_mode(source)}
    starts = {}
    for name in ctx.cfg.adapt_starts:
        if name == "base":
            starts[name] = ctx.base_path
            continue
        d = ctx.arm_dir(arms[name])
        if is_done(d):
            starts[name] = read_json(d / "result.json")["checkpoint"]
        else:
            logger.warning(f"adapt: `{arms[name]}` is not finished for seed {ctx.seed}; no curve from {name}.")
    return starts


def run_arm(ctx: ArmContext, arm: str) -> dict | None:
    """Run one arm (skipped when its folder is finished); returns its result."""
    d = ctx.arm_dir(arm)
    if is_done(d):
        return read_json(d / "result.json")
    if arm.startswith("reason_oracle") and ctx.task != "synthetic":
        return None  # the control task alone has a rule to write correct rationales from
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if arm.startswith("zero_shot"):
        result = run_zero_shot(ctx, arm.removeprefix("zero_shot_"), d)
    elif arm == "adapt":
        if ctx.task != ctx.cfg.adapt_source_task:
            return None
        labeled, test = adaptation_data(ctx.cfg, ctx.seed)
        result = run_adapt(ctx, d, labeled, test, adaptation_starts(ctx))
        result["target_test_fingerprint"] = fingerprint(test["pair_id"])
    else:
        result = run_trained(ctx, arm, d)
    result.update(
        arm=arm,
        task=ctx.task,
        seed=ctx.seed,
        test_fingerprint=ctx.test_fingerprint,
        wall_s=round(time.time() - t0, 1),
        base_model=ctx.base_path,
    )
    write_json(d / "result.json", result)
    (d / DONE).write_text("finished\n")
    return result


def resolve_base(cfg: ReproductionConfig, root: Path) -> str:
    source = cfg.model_name_or_path or default_model_path()
    if cfg.tiny_model:
        return build_tiny_model(source, cfg.tiny_model, root / "base_model")
    return source


def run_experiment(cfg: ReproductionConfig) -> list[dict]:
    """Run (or resume) the whole experiment; returns the results of the arms run or found finished."""
    root = Path(cfg.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "config.json", cfg.to_dict())
    base = resolve_base(cfg, root)
    if cfg.speed_check_steps > 0:
        from .speed import speed_check

        speed_check(cfg, root / "speed")
    ood = ood_sets(cfg) if "hh" in cfg.tasks else {}
    arms = [a for a in ARM_ORDER if a in cfg.arms]
    results = []
    jobs = [(task, seed) for seed in cfg.seeds for task in cfg.tasks]
    for task, seed in tqdm(jobs, desc="reproduce: task x seed"):
        ctx = make_context(cfg, task, seed, base, root, ood)
        for arm in arms:
            t0 = time.time()
            result = run_arm(ctx, arm)
            if result is not None:
                results.append(result)
                logger.warning(f"reproduce: {task}/{arm}/seed{seed} done in {time.time() - t0:.0f}s")
    return results
