"""GramPPOTrainer with the generative reward (a tiny random judge): the GRAM recipe hands the policy's greedy
responses to the judge as the second response of every pair, and the judge's rationales and parse-failure rate reach
the logs."""

import glob
import math

import pandas as pd
from ppo_utils import ppo_config, prompt_dataset
from tiny_models import tiny_llama

from trl_gram.judge import GramJudge, GramJudgeConfig
from trl_gram.ppo import GramPPOTrainer
from trl_gram.reward import AsyncGenerativeRewardFunction, GenerativeRewardFunction


class JudgeSpy:
    """Wraps `judge.judge` to record the pairs it is asked about."""

    def __init__(self, judge):
        self.pairs = []
        self._judge = judge.judge
        judge.judge = self

    def __call__(self, questions, responses_1, responses_2, **kwargs):
        self.pairs.append((list(questions), list(responses_1), list(responses_2)))
        return self._judge(questions, responses_1, responses_2, **kwargs)


def test_ppo_with_direct_judge_scores_against_greedy_references(tokenizer, tmp_path):
    judge = GramJudge(tiny_llama(tokenizer, seed=7), tokenizer, config=GramJudgeConfig(mode="direct"))
    spy = JudgeSpy(judge)
    reward = GenerativeRewardFunction(judge)
    seen_references = []

    def references_probe(prompts, completions, references, **kwargs):
        seen_references.append(list(references))
        return [None] * len(completions)  # adds nothing to the score (a None reward is left out of the sum)

    args = ppo_config(
        tmp_path / "out",
        max_steps=3,
        num_ppo_epochs=1,
        greedy_reference=True,
        log_completions=True,
        num_completions_to_print=1,
    )
    trainer = GramPPOTrainer(
        tiny_llama(tokenizer),
        [reward, references_probe],
        args=args,
        train_dataset=prompt_dataset(12),
        processing_class=tokenizer,
    )
    trainer.train()

    assert len(spy.pairs) == 3 == len(seen_references)  # one judge call per rollout
    for (questions, firsts, seconds), refs in zip(spy.pairs, seen_references):
        assert seconds == refs  # each sample is compared with the policy's greedy response to the same prompt
        assert len(questions) == len(firsts) == trainer.args.rollout_batch_size
    logs = [h for h in trainer.state.log_history if "reward" in h]
    assert len(logs) == 3
    for h in logs:
        assert 0.0 <= h["rewards/gram_reward/mean"] <= 1.0  # a win probability
        assert h["gram_reward/parse_failure_rate"] == 0.0  # direct mode reads the label: never fails
        assert h["frac_unscored"] == 0.0
    tables = sorted(glob.glob(str(tmp_path / "out" / "completions" / "*.parquet")))
    frame = pd.concat(pd.read_parquet(t) for t in tables)
    assert {"prompt", "completion", "reference", "reward:gram_reward", "extra:gram_reward_rationale"} <= set(frame)
    assert len(frame) == 3 * trainer.args.rollout_batch_size


def test_ppo_with_reasoning_judge_handles_parse_failures(tokenizer, tmp_path):
    """A random judge in reason mode never writes a parsable verdict: every reward is None, the rollout is left out
    of the update, and the parse-failure rate is logged as 1."""
    judge = GramJudge(
        tiny_llama(tokenizer, seed=3), tokenizer, config=GramJudgeConfig(mode="reason", max_new_tokens=8)
    )
    reward = AsyncGenerativeRewardFunction(judge, on_failure=None)
    args = ppo_config(tmp_path / "out", max_steps=2, num_ppo_epochs=1, greedy_reference=True)
    trainer = GramPPOTrainer(
        tiny_llama(tokenizer), reward, args=args, train_dataset=prompt_dataset(8), processing_class=tokenizer
    )
    trainer.train()
    logs = [h for h in trainer.state.log_history if "reward" in h]
    assert len(logs) == 2
    for h in logs:
        assert h["gram_reward/parse_failure_rate"] == 1.0
        assert h["rewards/gram_reward/none_frac"] == 1.0
        assert h["frac_unscored"] == 1.0
        assert h["reward"] is None  # no scored sample: the mean is undefined and not logged as NaN
    assert all(math.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)
