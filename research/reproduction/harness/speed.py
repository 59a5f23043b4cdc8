"""LoRA vs full fine-tuning speed of the judge on this machine: which one is faster here.

Both runs train the same direct-judge examples for ``speed_check_steps`` optimizer steps from the same model; the first
step (allocation, warm-up) is excluded from the per-step time. Result: ``speed/result.json``.
"""

from __future__ import annotations

import time
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from trl_gram.default_model import default_model_path
from trl_gram.training.run_folder import read_json, write_json
from trl_gram.training.trainer import GramRewardTrainer

from .arms import peft_config, train_args
from .config import ReproductionConfig
from .splits import sample_eval
from .synthetic import make_arithmetic_pairs


class _StepTimer(TrainerCallback):
    def __init__(self):
        self.times = []
        self._t = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._t)


def speed_check(cfg: ReproductionConfig, out: Path) -> dict:
    """Seconds per optimizer step (and trained tokens per second) of LoRA and of full fine-tuning."""
    path = out / "result.json"
    if path.is_file():
        return read_json(path)
    out.mkdir(parents=True, exist_ok=True)
    model_path = cfg.speed_check_model or cfg.model_name_or_path or default_model_path()
    tok = AutoTokenizer.from_pretrained(model_path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    n = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * (cfg.speed_check_steps + 1)
    try:
        from .splits import load_pool

        data = sample_eval(load_pool(cfg.hh_path), n, seed=cfg.test_seed, max_chars=cfg.max_chars)
    except (ValueError, FileNotFoundError):
        data = make_arithmetic_pairs(n, seed=cfg.test_seed)
    data = data.remove_columns([c for c in data.column_names if c not in ("prompt", "chosen", "rejected")])
    result = {"model": model_path, "steps": cfg.speed_check_steps, "rows": len(data)}
    for kind in ("lora", "full"):
        args = train_args(cfg.__class__(**{**cfg.to_dict(), "finetune": kind}), out / kind, "direct", 0)
        args.max_steps = cfg.speed_check_steps + 1
        args.save_strategy = "no"
        timer = _StepTimer()
        trainer = GramRewardTrainer(
            AutoModelForCausalLM.from_pretrained(model_path),
            args,
            train_dataset=data,
            processing_class=tok,
            template=cfg.judge_template("direct"),
            peft_config=peft_config(cfg.__class__(**{**cfg.to_dict(), "finetune": kind})),
            callbacks=[timer],
        )
        tokens = sum(len(x) for x in trainer.train_dataset["input_ids"])
        t0 = time.perf_counter()
        trainer.train()
        steps = timer.times[1:] or timer.times
        per_step = sum(steps) / len(steps)
        tokens_per_step = tokens / max(len(trainer.train_dataset), 1) * args.per_device_train_batch_size
        result[kind] = {
            "s_per_step": round(per_step, 3),
            "tokens_per_s": round(tokens_per_step * args.gradient_accumulation_steps / per_step, 1),
            "total_s": round(time.perf_counter() - t0, 1),
            "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        }
    result["faster"] = min(("lora", "full"), key=lambda k: result[k]["s_per_step"])
    write_json(path, result)
    return result
