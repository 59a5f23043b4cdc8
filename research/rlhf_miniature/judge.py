"""The judges of the experiment: the embedded SmolLM2-135M-Instruct trained by [`~trl_gram.training.GramRewardTrainer`]
(direct mode, LoRA, compact template) on pairs in the policy's style, and the same model zero-shot."""

from __future__ import annotations

import json
import time
from pathlib import Path

from peft import LoraConfig, PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from research.reproduction.harness.config import compact_template
from trl_gram.judge import GramJudge, GramJudgeConfig
from trl_gram.judge_metrics import judge_metrics
from trl_gram.training.config import GramRewardConfig
from trl_gram.training.judge_examples import validate_pairs
from trl_gram.training.trainer import GramRewardTrainer

from .config import MiniatureConfig
from .evaluation import generate_answers
from .task import judge_pairs


def make_judge(model, tokenizer, cfg: MiniatureConfig, seed: int = 0) -> GramJudge:
    """A direct-mode [`~trl_gram.judge.GramJudge`] on ``model`` with both orders averaged (position-debiased)."""
    config = GramJudgeConfig(
        mode="direct",
        template=compact_template(reasoning=False),
        swap="both",
        max_length=cfg.judge_max_length,
        seed=seed,
        show_progress=False,
    )
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"  # the trainers move only the policy
    return GramJudge(model.to(device).eval(), tokenizer, config=config)


def pair_accuracy(judge: GramJudge, ds) -> dict:
    pairs, _ = validate_pairs(ds, name="judge_test")
    return judge_metrics(judge, pairs, swap="both", subsets=list(ds["kind"]), show_progress=True)


def judge_data(cfg: MiniatureConfig, splits: dict, base_path: str, out: Path) -> dict:
    """The judge's labeled training and test pairs, written once (the base policy's sampled answers are costly)."""
    data = {}
    for name, seed in (("judge_train", 1), ("judge_test", 2)):
        path = out / f"{name}_samples.json"
        if not path.is_file():
            tokenizer = AutoTokenizer.from_pretrained(cfg.policy_name_or_path or base_path)
            policy = AutoModelForCausalLM.from_pretrained(cfg.policy_name_or_path or base_path)
            samples = generate_answers(
                policy, tokenizer, splits[name], max_new_tokens=cfg.max_completion_length, sample=True, seed=seed
            )
            path.write_text(json.dumps(samples) + "\n")
        data[name] = judge_pairs(splits[name], json.loads(path.read_text()))
    data["judge_test"] = data["judge_test"].select(range(min(cfg.judge_eval_pairs, len(data["judge_test"]))))
    return data


def train_judge(cfg: MiniatureConfig, splits: dict, base_path: str, out: Path) -> dict:
    """Trains the judge once per run (resumable: each finished piece is read back). The rejected answers are the base policy's own wrong samples (see
    [`~research.rlhf_miniature.task.judge_pairs`])."""
    out.mkdir(parents=True, exist_ok=True)
    done = out / "judge.json"
    if done.is_file():
        return json.loads(done.read_text())
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    data = judge_data(cfg, splits, base_path, out)
    sampled = time.perf_counter()
    args = GramRewardConfig(
        output_dir=str(out / "train"),
        mode="direct",
        learning_rate=cfg.judge_learning_rate,
        num_train_epochs=cfg.judge_epochs,
        per_device_train_batch_size=cfg.judge_batch_size,
        max_length=cfg.judge_max_length,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=2,
        logging_steps=4,
        save_strategy="no",
        report_to="none",
        seed=0,
        dataloader_num_workers=0,
        bf16=False,
        judge_eval=False,
    )
    lora = LoraConfig(
        r=cfg.judge_lora_r,
        lora_alpha=cfg.judge_lora_alpha,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    trainer = GramRewardTrainer(
        base_path,
        args=args,
        train_dataset=data["judge_train"].remove_columns("kind"),
        processing_class=tokenizer,
        template=compact_template(reasoning=False),
        peft_config=lora,
    )
    trainer.train()
    trainer.model.save_pretrained(str(out / "adapter"))
    kinds = {name: {k: ds["kind"].count(k) for k in sorted(set(ds["kind"]))} for name, ds in data.items()}
    result = {
        "train_kinds": kinds["judge_train"],
        "test_kinds": kinds["judge_test"],
        "examples": data["judge_test"].select(range(min(6, len(data["judge_test"])))).to_list(),
        "seconds": {"sample": sampled - start, "train": time.perf_counter() - sampled},
        "train_loss": [h["loss"] for h in trainer.state.log_history if "loss" in h],
    }
    done.write_text(json.dumps(result, indent=2) + "\n")
    return result


def measure_judge(which: str, cfg: MiniatureConfig, splits: dict, base_path: str, out: Path) -> dict:
    """The ``"trained"`` or ``"zero_shot"`` judge's accuracy on the held-out pairs, measured once (after the arms:
    only the report reads it) and kept in ``out/{which}.json``."""
    if which not in ("trained", "zero_shot"):
        raise ValueError(f"`which` must be 'trained' or 'zero_shot', got {which!r}.")
    path = out / f"{which}.json"
    if path.is_file():
        return json.loads(path.read_text())
    data = judge_data(cfg, splits, base_path, out)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    model = (
        load_trained_judge(out, base_path) if which == "trained" else AutoModelForCausalLM.from_pretrained(base_path)
    )
    start = time.perf_counter()
    metrics = pair_accuracy(make_judge(model, tokenizer, cfg), data["judge_test"])
    metrics["seconds"] = time.perf_counter() - start
    path.write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def load_trained_judge(out: Path, base_path: str):
    """The trained judge as a plain model (LoRA merged, so judging costs what the base model costs)."""
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), str(Path(out) / "adapter"))
    return model.merge_and_unload()
