"""GenerativeRewardFunction as the only reward of TRL 1.16's GRPOTrainer (sync and async), RLOOTrainer and the
experimental OnlineDPOTrainer, on tiny offline models: training steps run, rewards are finite, rationales reach the
completions table and the judge's metrics reach the logs."""

import math

import pytest
from datasets import Dataset
from tiny_models import tiny_llama

from trl_gram.judge import GramJudge
from trl_gram.reward import AsyncGenerativeRewardFunction, GenerativeRewardFunction

PROMPTS = ["What is 2 + 3?", "Name a colour.", "Say hello.", "Count to three."]


def _common_args(tmp_path):
    return dict(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-4,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        seed=0,
    )


@pytest.fixture
def judge(tokenizer):
    # reason mode with a short rationale budget; the random judge never writes the answer tag, so
    # on_failure="prob" keeps the probability read at the forced answer slot.
    return GramJudge(tiny_llama(tokenizer, seed=7), tokenizer, max_new_tokens=6)


def _saved_policy(tmp_path, tokenizer):
    """A tiny policy saved to disk: trainers that build a reference model reload it from this path."""
    path = tmp_path / "policy"
    tiny_llama(tokenizer, seed=1).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def _finite_rewards(trainer, name):
    rewards = list(trainer._logs["rewards"][name])
    assert rewards and all(math.isfinite(r) for r in rewards)
    return rewards


@pytest.mark.parametrize("reward_cls", [GenerativeRewardFunction, AsyncGenerativeRewardFunction])
def test_grpo_trains_with_group_reward(tmp_path, tokenizer, judge, reward_cls):
    from trl import GRPOConfig, GRPOTrainer

    reward = reward_cls(judge, reference="group", on_failure="prob", name="gram")
    args = GRPOConfig(**_common_args(tmp_path), num_generations=4, max_completion_length=8, log_completions=True)
    trainer = GRPOTrainer(
        model=tiny_llama(tokenizer, seed=1),
        reward_funcs=[reward],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": PROMPTS}),
        processing_class=tokenizer,
    )
    trainer.train()
    rewards = _finite_rewards(trainer, "gram")
    # Within each group of 4, all-pairs mean win probabilities sum to G/2.
    for g in range(0, len(rewards) - 3, 4):
        assert sum(rewards[g : g + 4]) == pytest.approx(2.0, abs=1e-4)
    rationales = list(trainer._logs["extra"]["gram_rationale"])
    assert len(rationales) == len(rewards) and all(isinstance(r, str) for r in rationales)
    logged = {k for entry in trainer.state.log_history for k in entry}
    assert "gram/parse_failure_rate" in logged and "rewards/gram/mean" in logged


def test_grpo_with_reference_column(tmp_path, tokenizer, judge):
    from trl import GRPOConfig, GRPOTrainer

    reward = GenerativeRewardFunction(judge, reference_column="reference", on_failure="prob", name="gram")
    ds = Dataset.from_dict({"prompt": PROMPTS, "reference": ["5", "red", "hello", "1 2 3"]})
    args = GRPOConfig(**_common_args(tmp_path), num_generations=2, max_completion_length=8)
    trainer = GRPOTrainer(
        model=tiny_llama(tokenizer, seed=1),
        reward_funcs=[reward],
        args=args,
        train_dataset=ds,
        processing_class=tokenizer,
    )
    trainer.train()
    _finite_rewards(trainer, "gram")


def test_rloo_trains_with_pivot_reward(tmp_path, tokenizer, judge):
    from trl import RLOOConfig, RLOOTrainer

    reward = GenerativeRewardFunction(judge, reference="pivot", on_failure="prob", name="gram")
    args = RLOOConfig(**_common_args(tmp_path), num_generations=2, max_completion_length=8)
    trainer = RLOOTrainer(
        model=_saved_policy(tmp_path, tokenizer),
        reward_funcs=[reward],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": PROMPTS}),
        processing_class=tokenizer,
    )
    trainer.train()
    logged = {k for entry in trainer.state.log_history for k in entry}
    assert any(k.startswith("rewards/gram") for k in logged)


def test_online_dpo_pairs(tmp_path, tokenizer, judge):
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    seen = []

    class Spy(GenerativeRewardFunction):
        def __call__(self, prompts, completions, **kwargs):
            out = super().__call__(prompts, completions, **kwargs)
            seen.append((list(prompts), out))
            return out

    reward = Spy(judge, reference="group", on_failure="prob", name="gram")
    args = OnlineDPOConfig(**_common_args(tmp_path), max_new_tokens=8)
    trainer = OnlineDPOTrainer(
        model=_saved_policy(tmp_path, tokenizer),
        reward_funcs=[reward],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": PROMPTS}),
        processing_class=tokenizer,
    )
    trainer.train()
    assert seen
    for prompts, out in seen:
        half = len(prompts) // 2
        assert prompts[:half] == prompts[half:]
        for i in range(half):  # completion i and i + B were judged against each other
            assert out[i] + out[i + half] == pytest.approx(1.0, abs=1e-5)
