"""The arms of the reproduction experiment, each a thin layer over the training code.

* ``zero_shot_direct`` / ``zero_shot_reason``: the base model judged as is.
* ``direct`` / ``reason``: [`~trl_gram.training.GramSelfTrainer`] with ``rounds=0`` (the initial judge trained on
  the labeled slice; in ``reason`` mode its rationales come from the preference prover = the base model told the
  label, best of ``proof_samples`` by Eq. 5).
* ``reason_oracle`` (control task only): ``reason`` trained on correct rationales written from the task's rule
  ([`~research.reproduction.harness.synthetic.oracle_rationale`]) instead of the prover's: does reasoning help when
  the rationales are right? ``reason_oracle_st`` self-trains that judge like ``reason_st`` (its own rationales for its
  pseudo-labels; only the labeled slice has oracle rationales).
* ``reason_st`` / ``reason_st_nodenoise`` / ``direct_st``: the same trainer with ``rounds`` self-training rounds on the
  unlabeled slices, pseudo-labels denoised by the paper's rules (or with every rule off); the judge writes the
  rationales of its own pseudo-labels. Round 0 is copied from the ``reason``/``direct`` arm of the same seed when it
  is finished (identical computation), so each arm × seed differs only in what it is meant to measure.
* ``adapt``: few-shot adaptation to a second domain: a judge trained on ``n`` labels of that domain, for each ``n`` in
  ``adapt_budgets``, from each of ``adapt_starts``: the base model, the self-trained judge (``adapt_source_arm``'s
  last round) and optionally the judge trained on the source labels alone. It adapts in the source arm's mode; as a
  reasoning judge, every start point reads the same rationales (written once by the base model as prover).

Every arm evaluates with the same judge settings on the same test slice (accuracy with both orders averaged, swap
agreement, parse failures: [`~trl_gram.judge_metrics.judge_metrics`]), and the hh-rlhf arms also on PandaLM
and JudgeBench samples.
"""

from __future__ import annotations

import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging

from trl_gram.judge import GramJudge, GramJudgeConfig
from trl_gram.judge_metrics import judge_metrics
from trl_gram.training.config import GramRewardConfig
from trl_gram.training.judge_examples import validate_pairs
from trl_gram.training.prover import PreferenceProver, ProverConfig
from trl_gram.training.run_folder import read_json, read_jsonl, write_json, write_jsonl
from trl_gram.training.self_training import GramSelfTrainer, SelfTrainingConfig

from .config import ReproductionConfig
from .synthetic import with_oracle_rationales

logger = logging.get_logger(__name__)


@dataclass
class ArmContext:
    """What every arm of one task × seed shares: the base model, the splits, the evaluation sets."""

    cfg: ReproductionConfig
    task: str
    seed: int
    base_path: str
    task_dir: Path
    labeled: Dataset
    unlabeled: Dataset
    test: Dataset
    ood: dict[str, Dataset] = field(default_factory=dict)
    test_fingerprint: str = ""
    _tokenizer: object = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = AutoTokenizer.from_pretrained(self.base_path)
            if self._tokenizer.pad_token is None:
                self._tokenizer.pad_token = self._tokenizer.eos_token
        return self._tokenizer

    def task_sizes(self) -> dict:
        return self.cfg.task_sizes(self.task)

    def arm_dir(self, arm: str) -> Path:
        return self.task_dir / arm / f"seed{self.seed}"


# ---------------------------------------------------------------------------------------------------------------------
# Shared machinery
# ---------------------------------------------------------------------------------------------------------------------


def eval_device() -> str:
    """Where the arms put the models they judge or prove with: the GPU when there is one (the trainer moves the models
    it trains by itself)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def judge_kwargs(cfg: ReproductionConfig) -> dict:
    return {"reason_prefix": cfg.reason_prefix, "token_budget": cfg.token_budget}


def make_judge(model, tokenizer, cfg: ReproductionConfig, mode: str, seed: int) -> GramJudge:
    """The evaluation judge: the same fields ``GramSelfTrainer`` uses to evaluate its stages."""
    config = GramJudgeConfig(
        mode=mode,
        template=cfg.judge_template(mode),
        swap="both",
        votes=1,
        max_new_tokens=cfg.judge_max_new_tokens,
        max_length=cfg.max_length,
        seed=seed,
        show_progress=True,
        **judge_kwargs(cfg),
    )
    return GramJudge(model.to(eval_device()).eval(), tokenizer, config=config)


def evaluate(model, ctx: ArmContext, mode: str, datasets: dict[str, Dataset]) -> dict[str, dict]:
    """Judge metrics of ``model`` on each named preference dataset."""
    judge = make_judge(model, ctx.tokenizer, ctx.cfg, mode, ctx.seed)
    out = {}
    for name, ds in datasets.items():
        pairs, _ = validate_pairs(ds, on_invalid="skip", name=name)
        subsets = list(ds["subset"]) if "subset" in ds.column_names and len(pairs) == len(ds) else None
        out[name] = judge_metrics(judge, pairs, swap="both", subsets=subsets)
    return out


def train_args(
    cfg: ReproductionConfig,
    out_dir: Path,
    mode: str,
    seed: int,
    task: str | None = None,
    training: dict | None = None,
    swap: str | None = None,
) -> GramRewardConfig:
    """Training arguments of one run; ``training`` (learning rate, epochs) replaces the task's own setting, ``swap``
    the training order (``"none"``: rows as given)."""
    extra = dict(cfg.extra_train_args)
    if swap is not None:
        extra["swap"] = swap
    return GramRewardConfig(
        output_dir=str(out_dir),
        mode=mode,
        **(training or cfg.task_training(task)),
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        max_length=cfg.max_length,
        judge_eval_max_new_tokens=cfg.judge_max_new_tokens,
        judge_kwargs=judge_kwargs(cfg),
        seed=seed,
        report_to=extra.pop("report_to", "none"),
        logging_steps=extra.pop("logging_steps", 5),
        save_strategy=extra.pop("save_strategy", "epoch"),
        save_total_limit=extra.pop("save_total_limit", 1),
        lr_scheduler_type=extra.pop("lr_scheduler_type", "constant_with_warmup"),
        warmup_steps=extra.pop("warmup_steps", 2),
        dataloader_num_workers=0,
        bf16=extra.pop("bf16", False),
        **extra,
    )


def peft_config(cfg: ReproductionConfig):
    if cfg.finetune != "lora":
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )


def load_checkpoint(path: str | Path, base_path: str):
    """A trained judge: a full model folder, or a LoRA adapter over ``base_path``."""
    path = Path(path)
    if (path / "adapter_config.json").is_file():
        from peft import PeftModel

        return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), str(path))
    return AutoModelForCausalLM.from_pretrained(str(path))


def materialize(path: str | Path, base_path: str, out: Path) -> str:
    """A full-model folder for a checkpoint (LoRA adapters are merged into ``base_path`` and saved under ``out``), so
    that it can serve as the base model of a new training run."""
    path = Path(path)
    if not (path / "adapter_config.json").is_file():
        return str(path)
    if not (out / ".done").is_file():
        model = load_checkpoint(path, base_path).merge_and_unload()
        model.save_pretrained(str(out))
        AutoTokenizer.from_pretrained(base_path).save_pretrained(str(out))
        (out / ".done").write_text("merged\n")
    return str(out)


def denoise_settings(cfg, denoise: bool) -> dict:
    """The SelfTrainingConfig rule fields of an arm: the recipe's thresholds, or every rule off (``*_nodenoise``)."""
    if not denoise:
        return dict(
            min_vote_agreement=0.0,
            drop_tied_votes=False,
            confidence_threshold=None,
            max_rationale_tokens=None,
            check_support=False,
        )
    return dict(
        min_vote_agreement=cfg.min_vote_agreement,
        drop_tied_votes=cfg.drop_tied_votes,
        confidence_threshold=cfg.confidence_threshold,
        max_rationale_tokens=cfg.max_rationale_tokens,
        check_support=True,
    )


def _self_trainer(
    ctx: ArmContext,
    d: Path,
    mode: str,
    rounds: int,
    denoise: bool,
    labeled,
    base=None,
    eval_ds=None,
    training=None,
    swap: str | None = None,
):
    """The arm's GramSelfTrainer; ``swap`` replaces the training order setting (``"none"``: rows as given)."""
    cfg = ctx.cfg
    sargs = SelfTrainingConfig(
        rounds=rounds,
        unlabeled_per_round=ctx.task_sizes()["unlabeled_per_round"] if rounds else None,
        rationale_source="judge",
        retrain_from="base",
        proof_samples=cfg.proof_samples,
        proof_max_new_tokens=cfg.proof_max_new_tokens,
        # Small judges' proofs often run past the token cap: keep the best (Eq. 5) even when cut off, as
        # recipes/gram_r2_cpu_smoke.yaml does; otherwise a stage can end up with no rows at all.
        proof_require_finished=False,
        prover_model=ctx.base_path,
        train_prover=False,
        final_finetune=False,
        self_train_eval_max_samples=None,
        plot=False,
        **denoise_settings(cfg, denoise),
    )
    return GramSelfTrainer(
        base or ctx.base_path,
        train_args(cfg, d, mode, ctx.seed, ctx.task, training, swap=swap),
        sargs,
        labeled_dataset=labeled,
        unlabeled_dataset=ctx.unlabeled if rounds else None,
        eval_dataset=eval_ds if eval_ds is not None else ctx.test,
        processing_class=ctx.tokenizer,
        template=cfg.judge_template(mode),
        peft_config=peft_config(cfg),
    )


def _stage_rows(history: list[dict]) -> list[dict]:
    rows = []
    for h in history:
        row = {"stage": h.get("stage"), "round": h.get("round"), "eval": h.get("eval", {})}
        for key in ("candidates", "kept", "kept_fraction", "dropped", "train_rows", "label_balance"):
            if key in h:
                row[key] = h[key]
        rows.append(row)
    return rows


def _seed_from(src: Path, dst: Path, names: list[str]) -> None:
    """Copy finished, shareable stages (e.g. ``base_eval.json``, ``round_00``) of another arm into ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        s, t = src / name, dst / name
        if t.exists() or not s.exists():
            continue
        if s.is_dir():
            if (s / "summary.json").is_file():
                shutil.copytree(s, t, ignore=shutil.ignore_patterns("trainer"))
        else:
            shutil.copy2(s, t)


# ---------------------------------------------------------------------------------------------------------------------
# Arms
# ---------------------------------------------------------------------------------------------------------------------


def run_zero_shot(ctx: ArmContext, mode: str, d: Path) -> dict:
    model = AutoModelForCausalLM.from_pretrained(ctx.base_path)
    metrics = evaluate(model, ctx, mode, {"test": ctx.test, **ctx.ood})
    write_json(d / "base_eval.json", metrics["test"])
    return {"mode": mode, "test": metrics.pop("test"), "ood": metrics, "stages": []}


def arm_mode(arm: str) -> str:
    """The judge mode of a trained arm: ``direct`` for ``direct``/``direct_st``, ``reason`` for the others."""
    return "direct" if arm.startswith("direct") else "reason"


def run_trained(ctx: ArmContext, arm: str, d: Path) -> dict:
    """``direct``, ``reason`` and the self-training arms."""
    mode = arm_mode(arm)
    rounds = ctx.cfg.rounds if arm.endswith("_st") or arm.endswith("_nodenoise") else 0
    oracle = arm.startswith("reason_oracle")
    _seed_from(ctx.arm_dir(f"zero_shot_{mode}"), d, ["base_eval.json"])
    if rounds:
        _seed_from(ctx.arm_dir("reason_oracle" if oracle else mode), d, ["round_00"])
    labeled = with_oracle_rationales(ctx.labeled, ctx.cfg.oracle_rationale, ctx.seed) if oracle else ctx.labeled
    trainer = _self_trainer(
        ctx, d, mode, rounds, denoise=arm != "reason_st_nodenoise", labeled=labeled, swap="none" if oracle else None
    )
    history = trainer.run()
    last = trainer.final_model_path
    ood = evaluate(load_checkpoint(last, ctx.base_path), ctx, mode, ctx.ood) if ctx.ood else {}
    final = read_json(Path(last).parent / "eval.json")
    result = {"mode": mode, "test": final, "ood": ood, "stages": _stage_rows(history), "checkpoint": last}
    if oracle:
        result["oracle_rationale"] = ctx.cfg.oracle_rationale
    return result


def prove_adaptation_data(ctx: ArmContext, labeled: Dataset, out: Path) -> Dataset:
    """Rationales for the adaptation labels, written once (base model as prover, Eq. 5 selection), in a seeded
    balanced order. Pairs without a valid proof are dropped."""
    path = out / "labeled_with_rationales.jsonl"
    if not path.is_file():
        cfg = ctx.cfg
        pairs, _ = validate_pairs(labeled, on_invalid="skip", name="adaptation")
        rng = random.Random(ctx.seed)
        flips = [i % 2 == 1 for i in range(len(pairs))]
        rng.shuffle(flips)
        shown = [
            (p["question"], p["second"], p["first"], 1) if f else (p["question"], p["first"], p["second"], 0)
            for p, f in zip(pairs, flips)
        ]
        prover = PreferenceProver(
            AutoModelForCausalLM.from_pretrained(ctx.base_path).to(eval_device()).eval(),
            ctx.tokenizer,
            ProverConfig(
                num_samples=cfg.proof_samples,
                max_new_tokens=cfg.proof_max_new_tokens,
                require_finished=False,  # see proof_require_finished above
                max_length=cfg.max_length,
                token_budget=cfg.token_budget,
                seed=ctx.seed,
            ),
        )
        proofs = prover.prove(
            [s[0] for s in shown], [s[1] for s in shown], [s[2] for s in shown], ["AB"[s[3]] for s in shown]
        )
        out.mkdir(parents=True, exist_ok=True)
        rows = [
            {"prompt": q, "response_a": a, "response_b": b, "label": "AB"[lab], "rationale": pr.rationale}
            for (q, a, b, lab), pr in zip(shown, proofs)
            if pr.rationale
        ]
        write_jsonl(path, rows)
    return Dataset.from_list(read_jsonl(path))


def run_adapt(ctx: ArmContext, d: Path, target_labeled: Dataset, target_test: Dataset, starts: dict) -> dict:
    """Adaptation curves: for each budget, a judge trained on that many target labels from each start point
    (``name -> checkpoint``; LoRA adapters are merged first). The mode (reasoning or direct) is the source arm's. The
    first ``n`` rows form budget ``n`` (nested budgets); a reasoning judge's rows carry rationales written once by the
    base model as prover."""
    mode = arm_mode(ctx.cfg.adapt_source_arm)
    if mode == "reason":
        rows_pool = prove_adaptation_data(ctx, target_labeled, d / "data")
    else:
        rows_pool = target_labeled
    first = ctx.cfg.adapt_budgets[0]
    curves = {}
    for name, ckpt in starts.items():
        start = materialize(ckpt, ctx.base_path, d / f"{name}_merged")  # the base model's folder passes unchanged
        points = []
        for n in ctx.cfg.adapt_budgets:
            sub = d / name / f"n{n}"
            t0 = time.time()
            rows = rows_pool.select(range(min(n, len(rows_pool))))
            if points:  # the untrained start point is judged once per start
                _seed_from(d / name / f"n{first}", sub, ["base_eval.json"])
            trainer = _self_trainer(
                ctx,
                sub,
                mode,
                0,
                True,
                labeled=rows,
                base=start,
                eval_ds=target_test,
                training=ctx.cfg.adapt_training(),
            )
            history = trainer.run()
            base_eval = next((h["eval"] for h in history if h.get("stage") == "base"), {})
            final = history[-1]["eval"]
            if not points:
                points.append({"labels": 0, "eval": base_eval})
            points.append({"labels": len(rows), "eval": final, "wall_s": time.time() - t0})
        curves[name] = points
    return {"mode": mode, "curves": curves, "train_rows": len(rows_pool), "test_pairs": len(target_test)}
