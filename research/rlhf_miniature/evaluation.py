"""Measuring a policy with the oracle: greedy answers to held-out prompts, and a [`~transformers.TrainerCallback`]
that does it at a few steps along a run and records the per-step judge reward, KL and step time from the logs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import TrainerCallback

from .task import oracle_correct, question


@torch.no_grad()
def generate_answers(
    model, tokenizer, pairs, max_new_tokens: int = 16, batch_size: int = 32, sample: bool = False, seed: int = 0
) -> list[str]:
    """The policy's answers to the questions about ``pairs`` (chat-formatted, left-padded, greedy unless ``sample``,
    which draws at temperature 1 with a fixed seed)."""
    was_training = model.training
    model.eval()
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = next(model.parameters()).device
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": question(a, b)}], tokenize=False, add_generation_prompt=True
        )
        for a, b in pairs
    ]
    out = []
    if sample:
        torch.manual_seed(seed)
    try:
        for start in tqdm(range(0, len(texts), batch_size), desc="policy answers", leave=False):
            enc = tokenizer(
                texts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(device)
            ids = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=sample,
                temperature=1.0 if sample else None,
                top_p=None,
                top_k=None,
                pad_token_id=tokenizer.pad_token_id,
            )
            out += tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out


def score_policy(model, tokenizer, pairs, max_new_tokens: int = 16, judge=None, reference_answers=None) -> dict:
    """Oracle accuracy of the policy's greedy answers on ``pairs``, the answers themselves, and, with a ``judge`` and
    ``reference_answers`` (the base policy's greedy answers), the judge's mean win probability of the answers against
    them (``judge_win_vs_base``: one yardstick of what the judge thinks for every arm, whatever its reward; an answer
    equal to its reference counts 0.5 without a judge call)."""
    answers = generate_answers(model, tokenizer, pairs, max_new_tokens=max_new_tokens)
    right = [oracle_correct(question(a, b), c) for (a, b), c in zip(pairs, answers)]
    row = {"accuracy": sum(right) / len(right), "n": len(right), "examples": answers[:6], "answers": answers}
    if judge is not None and reference_answers is not None:
        row["judge_win_vs_base"] = judge_win_rate(judge, pairs, answers, reference_answers)
    return row


def judge_win_rate(judge, pairs, answers, references) -> float:
    """Mean debiased P(answer beats reference) under ``judge``, both orders, 0.5 where the two are the same text: the
    `eval_win_rate` of [`~trl_gram.GramWinRateCallback`], computed with the same code
    ([`~trl_gram.win_rate.judge_pairs`])."""
    from trl_gram.win_rate import judge_pairs

    if len(references) != len(answers):
        raise ValueError(f"{len(references)} reference answers for {len(answers)} answers; pass one per answer.")
    prompts = [question(*pairs[i]) for i in range(len(answers))]
    zeros = [0] * len(answers)
    results = judge_pairs(judge, prompts, list(answers), list(references), zeros, zeros)
    return sum(0.5 if r.prob is None else r.prob for r in results) / len(results)  # None: no probability read


class OracleEvalCallback(TrainerCallback):
    """Scores the policy with the oracle every ``eval_every`` optimizer steps and at the end of training, and keeps one
    row per step of the judge reward, KL, judge seconds and step seconds that the trainer logged (``logging_steps=1``).
    Rows are appended to ``path`` (JSON) as they come, so a long run can be watched.

    Args:
        tokenizer: The policy's tokenizer.
        pairs: Held-out number pairs (the same for every arm).
        eval_every: Steps between oracle evaluations.
        path: Where the rows are written.
        reward_key: The log key of the reward (``"reward"`` in both trainers).
        judge / reference_answers: With both, each evaluation also records the judge's win rate of the policy's
            answers against these (the base policy's) answers.
    """

    def __init__(
        self,
        tokenizer,
        pairs,
        eval_every: int,
        path: Path,
        max_new_tokens: int = 16,
        reward_key="reward",
        judge=None,
        reference_answers=None,
    ):
        self.judge, self.reference_answers = judge, reference_answers
        self.tokenizer, self.pairs, self.eval_every = tokenizer, pairs, max(int(eval_every), 1)
        self.path, self.max_new_tokens, self.reward_key = Path(path), max_new_tokens, reward_key
        self.evals, self.logs, self.step_seconds, self.eval_seconds = [], [], [], 0.0
        self._t0 = None

    def _save(self):
        self.path.write_text(json.dumps({"evals": self.evals, "logs": self.logs, "step_seconds": self.step_seconds}))

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def _evaluate(self, state, model):
        start = time.perf_counter()
        model = getattr(model, "policy", model)  # GramPPOTrainer trains a policy + value wrapper
        row = score_policy(model, self.tokenizer, self.pairs, self.max_new_tokens, self.judge, self.reference_answers)
        row["step"] = state.global_step
        self.evals.append(row)
        self.eval_seconds += time.perf_counter() - start
        self._save()

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self._t0 is not None:
            self.step_seconds.append(time.perf_counter() - self._t0)
        if state.global_step % self.eval_every == 0 and state.global_step < state.max_steps:
            self._evaluate(state, model)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        keep = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
        if self.reward_key in keep:
            keep["step"] = state.global_step
            self.logs.append(keep)
            self._save()

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if not self.evals or self.evals[-1]["step"] != state.global_step:
            self._evaluate(state, model)
